//! Logging: `tracing` to stdout as text or JSON lines, filtered by `RUST_LOG` (default `info`).
//!
//! Every event inside a request carries the request's id, method and path: as a `span` object in
//! JSON (`{"span":{"name":"request","request_id":…}}`), as `request{…}: ` in text. They come from
//! a task-local [`RequestFields`] set around the request's handling, not from a `tracing` span: a
//! span per request (created, entered on every poll, closed) cost a tenth of `/me`'s throughput,
//! although most requests log nothing. An event outside the request's task (a spawned task, the
//! password workers) has no request fields.
//!
//! Audit events have target `audit` and are always logged, whatever `RUST_LOG` says: the filter
//! gets an `audit=info` directive, and the metrics counter sees exactly what is logged. (One
//! global filter rather than per-layer filters: a per-layer filter can wrongly drop an event that
//! follows an `enabled!` check on the same thread, which sqlx makes before each statement.)
//! Nothing logs a token or a password: the types that hold them print `…` in `Debug`.

use std::future::Future;
use std::io::IsTerminal;

use axum::http::{Method, Uri};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::log_writer::{self, LogGuard};
use crate::metrics::AuditCounter;

/// How log lines are written: text for people, JSON lines for machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    /// The `--log-format` of a command: `text` (the default) or `json`.
    pub fn from_flag(value: Option<&str>) -> anyhow::Result<Self> {
        match value {
            None | Some("text") => Ok(Self::Text),
            Some("json") => Ok(Self::Json),
            Some(other) => anyhow::bail!("--log-format must be text or json, not `{other}`"),
        }
    }
}

/// Starts logging. Lines are written to stdout by a thread of their own, many per system call
/// ([`log_writer`]): a request no longer pays for a `write`. Nothing is dropped: when a
/// megabyte is waiting, callers wait. Keep the guard until the process ends: dropping it writes
/// out what is left.
#[must_use = "dropping the guard stops the logging thread"]
pub fn init(format: LogFormat) -> LogGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let filter = match "audit=info".parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    };
    let (stdout, guard) = log_writer::start(std::io::stdout());
    let fmt = tracing_subscriber::fmt::layer().with_writer(stdout).with_ansi(std::io::stdout().is_terminal());
    let fmt = match format {
        LogFormat::Text => fmt.event_format(WithRequest::text(tracing_subscriber::fmt::format())).boxed(),
        LogFormat::Json => {
            let json = tracing_subscriber::fmt::format()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false);
            fmt.fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                .event_format(WithRequest::json(json))
                .boxed()
        }
    };
    let result = tracing_subscriber::registry().with(filter).with(fmt).with(AuditCounter).try_init();
    // Already initialised (several servers in one process): keep the first.
    let _ = result;
    guard
}

/// What every log line of a request says about it.
#[derive(Debug, Clone)]
pub struct RequestFields {
    pub request_id: String,
    pub method: Method,
    pub uri: Uri,
}

tokio::task_local! {
    static REQUEST: RequestFields;
}

impl RequestFields {
    /// The id of the request being handled, if any.
    pub fn current_id() -> Option<String> {
        REQUEST.try_with(|fields| fields.request_id.clone()).ok()
    }

    /// Runs `work` with these fields on every event it logs.
    pub fn scope<F: Future>(self, work: F) -> impl Future<Output = F::Output> {
        REQUEST.scope(self, work)
    }
}

/// An event format that adds the current request's fields to what `inner` writes.
struct WithRequest<F> {
    inner: F,
    json: bool,
}

impl<F> WithRequest<F> {
    fn text(inner: F) -> Self {
        Self { inner, json: false }
    }

    fn json(inner: F) -> Self {
        Self { inner, json: true }
    }
}

impl<S, N, F> FormatEvent<S, N> for WithRequest<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> std::fmt::Result {
        let Ok(fields) = REQUEST.try_with(|r| (r.request_id.clone(), r.method.clone(), r.uri.path().to_owned())) else {
            return self.inner.format_event(ctx, writer, event);
        };
        let (request_id, method, path) = fields;
        if !self.json {
            write!(writer, "request{{request_id={request_id} method={method} path={path}}}: ")?;
            return self.inner.format_event(ctx, writer, event);
        }
        // The JSON line is one object: the request's fields go in before its closing brace.
        let mut line = String::new();
        self.inner.format_event(ctx, Writer::new(&mut line), event)?;
        let body = line.trim_end();
        let Some(open) = body.strip_suffix('}') else {
            return writer.write_str(&line);
        };
        let quote = |s: &str| serde_json::Value::from(s).to_string();
        let separator = if open.ends_with('{') { "" } else { "," };
        writeln!(
            writer,
            "{open}{separator}\"span\":{{\"name\":\"request\",\"request_id\":{},\"method\":{},\"path\":{}}}}}",
            quote(&request_id),
            quote(method.as_str()),
            quote(&path)
        )
    }
}

pub use tessera_core::error_chain;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn events_in_a_request_carry_its_fields_and_others_do_not() {
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
        let (json_sink, text_sink) = (Sink::default(), Sink::default());
        let json =
            tracing_subscriber::fmt::format().json().flatten_event(true).with_current_span(false).with_span_list(false);
        let subscriber = tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(json_sink.clone())
                    .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                    .event_format(WithRequest::json(json)),
            )
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(text_sink.clone())
                    .with_ansi(false)
                    .event_format(WithRequest::text(tracing_subscriber::fmt::format())),
            );
        let _default = tracing::subscriber::set_default(subscriber);
        let fields = RequestFields { request_id: "r-1".into(), method: Method::POST, uri: "/a/b?q=1".parse().unwrap() };
        fields
            .scope(async {
                tokio::task::yield_now().await;
                tracing::info!(event = "x", "inside");
            })
            .await;
        tracing::info!("outside");

        let json = String::from_utf8(json_sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = json.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines[0]["span"]["request_id"], "r-1", "{json}");
        assert_eq!(lines[0]["span"]["method"], "POST");
        assert_eq!(lines[0]["span"]["path"], "/a/b", "the query string stays out of the log");
        assert_eq!(lines[0]["event"], "x");
        assert_eq!(lines[0]["message"], "inside");
        assert!(lines[1].get("span").is_none(), "{json}");
        let text = String::from_utf8(text_sink.0.lock().unwrap().clone()).unwrap();
        assert!(text.lines().next().unwrap().starts_with("request{request_id=r-1 method=POST path=/a/b}: "), "{text}");
        assert!(!text.lines().nth(1).unwrap().contains("request_id"), "{text}");
    }

    #[test]
    fn the_chain_shows_every_cause() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let e = tessera_core::store::StoreError::unavailable(io);
        assert_eq!(error_chain(&e), "store unavailable: connection refused");
    }
}
