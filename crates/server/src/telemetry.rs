//! Logging: `tracing` to stdout as text or JSON lines, filtered by `RUST_LOG` (default `info`).
//!
//! Every event inside a request carries the request's span (`request_id`, method, path). Audit
//! events have target `audit`. Nothing logs a token or a password: the types that hold them
//! print `…` in `Debug`.

use std::io::IsTerminal;

use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogFormat;
use crate::metrics::AuditCounter;

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stdout).with_ansi(std::io::stdout().is_terminal());
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).with_current_span(true).with_span_list(false).boxed(),
    };
    // Audit events are counted whatever the log filter lets through; the counter's own filter
    // keeps every other callsite (sqlx logs each query at debug) off the hot path.
    let audit_only = Targets::new().with_target("audit", Level::TRACE);
    let result = tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(AuditCounter.with_filter(audit_only))
        .try_init();
    // Already initialised (several servers in one process): keep the first.
    let _ = result;
}
