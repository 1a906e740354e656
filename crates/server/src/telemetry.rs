//! Logging: `tracing` to stdout as text or JSON lines, filtered by `RUST_LOG` (default `info`).
//!
//! Every event inside a request carries the request's span (`request_id`, method, path). Audit
//! events have target `audit` and are always logged, whatever `RUST_LOG` says: the filter gets
//! an `audit=info` directive, and the metrics counter sees exactly what is logged. (One global
//! filter rather than per-layer filters: a per-layer filter can wrongly drop an event that
//! follows an `enabled!` check on the same thread, which sqlx makes before each statement.)
//! Nothing logs a token or a password: the types that hold them print `…` in `Debug`.

use std::io::IsTerminal;

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
        LogFormat::Json => fmt.json().flatten_event(true).with_current_span(true).with_span_list(false).boxed(),
    };
    let result = tracing_subscriber::registry().with(filter).with(fmt).with(AuditCounter).try_init();
    // Already initialised (several servers in one process): keep the first.
    let _ = result;
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
    fn the_chain_shows_every_cause() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let e = tessera_core::store::StoreError::unavailable(io);
        assert_eq!(error_chain(&e), "store unavailable: connection refused");
    }
}
