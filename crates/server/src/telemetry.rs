//! Logging: `tracing` to stdout as text or JSON lines, filtered by `RUST_LOG` (default `info`).
//!
//! Every event inside a request carries the request's span (`request_id`, method, path). Audit
//! events have target `audit` and are always logged, whatever `RUST_LOG` says: the filter gets
//! an `audit=info` directive, and the metrics counter sees exactly what is logged. (One global
//! filter rather than per-layer filters: a per-layer filter can wrongly drop an event that
//! follows an `enabled!` check on the same thread, which sqlx makes before each statement.)
//! Nothing logs a token or a password: the types that hold them print `…` in `Debug`.

use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing::span::Record;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FormatFields, FormattedFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogFormat;
use crate::metrics::AuditCounter;

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let filter = match "audit=info".parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    };
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stdout).with_ansi(std::io::stdout().is_terminal());
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => {
            fmt.json().flatten_event(true).with_current_span(true).with_span_list(false).fmt_fields(SpanFields).boxed()
        }
    };
    let result = tracing_subscriber::registry().with(filter).with(fmt).with(AuditCounter).try_init();
    // Already initialised (several servers in one process): keep the first.
    let _ = result;
}

/// Span fields as a JSON object, written straight into the span's buffer. The JSON formatter of
/// `tracing-subscriber` builds a map of values per span, which on a request span (one per
/// request, most of which log nothing) was a measurable share of a fast request's time.
struct SpanFields;

impl<'writer> FormatFields<'writer> for SpanFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'writer>, fields: R) -> std::fmt::Result {
        let mut pairs = JsonPairs::default();
        fields.record(&mut pairs);
        write!(writer, "{{{}}}", pairs.0)
    }

    fn add_fields(&self, current: &'writer mut FormattedFields<Self>, fields: &Record<'_>) -> std::fmt::Result {
        let mut pairs = JsonPairs::default();
        fields.record(&mut pairs);
        if pairs.0.is_empty() {
            return Ok(());
        }
        let existing = current.fields.trim_end().strip_suffix('}').unwrap_or("{").to_owned();
        let separator = if existing.len() > 1 { "," } else { "" };
        current.fields = format!("{existing}{separator}{}}}", pairs.0);
        Ok(())
    }
}

/// `"name":value` pairs, comma-separated.
#[derive(Default)]
struct JsonPairs(String);

impl JsonPairs {
    fn pair(&mut self, name: &str, value: &str) {
        if !self.0.is_empty() {
            self.0.push(',');
        }
        self.0.push_str(&serde_json::Value::from(name).to_string());
        self.0.push(':');
        self.0.push_str(value);
    }
}

impl Visit for JsonPairs {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.pair(field.name(), &serde_json::Value::from(value).to_string());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.pair(field.name(), &value.to_string());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.pair(field.name(), &value.to_string());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.pair(field.name(), if value { "true" } else { "false" });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.pair(field.name(), &serde_json::Value::from(format!("{value:?}")).to_string());
    }
}

/// An error with every cause behind it, outermost first: `store unavailable: pool timed out: …`.
/// What a log line needs; `Display` of a wrapper error alone often says only its own layer.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_fields_are_a_json_object() {
        use tracing_subscriber::fmt::MakeWriter;
        #[derive(Clone, Default)]
        struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        impl<'a> MakeWriter<'a> for Sink {
            type Writer = Sink;
            fn make_writer(&'a self) -> Self::Writer {
                self.clone()
            }
        }
        let sink = Sink::default();
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(sink.clone())
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .fmt_fields(SpanFields);
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request", request_id = %"r-1", path = "/a\"b", n = 3u64, later = tracing::field::Empty);
            span.record("later", true);
            let _entered = span.enter();
            tracing::info!(event = "x", "inside");
        });
        let line = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let value: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
        assert_eq!(value["span"]["request_id"], "r-1", "{line}");
        assert_eq!(value["span"]["path"], "/a\"b");
        assert_eq!(value["span"]["n"], 3);
        assert_eq!(value["span"]["later"], true);
        assert_eq!(value["event"], "x");
    }

    #[test]
    fn the_chain_shows_every_cause() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let e = tessera_core::store::StoreError::unavailable(io);
        assert_eq!(error_chain(&e), "store unavailable: connection refused");
    }
}
