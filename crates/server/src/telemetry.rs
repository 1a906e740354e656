//! Logging: `tracing` to stdout as text or JSON lines, filtered by `RUST_LOG` (default `info`).
//!
//! Every event inside a request carries the request's span (`request_id`, method, path). Audit
//! events have target `audit`. Nothing logs a token or a password: the types that hold them
//! print `…` in `Debug`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .with_ansi(std::io::stdout().is_terminal());
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    // Already initialised (tests that start several servers in one process): keep the first.
    let _ = result;
}
