//! Prometheus metrics at `/metrics`, in the text exposition format, without a metrics crate:
//! a handful of counters are all tessera needs.
//!
//! Audit events are counted by a `tracing` layer that watches target `audit`, so the domain
//! code emits each event once (as a log line) and the count follows from it.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, Layer};

use crate::state::AppState;

/// The audit events of SPEC §7 (and registration), in the order they are exported.
pub const AUDIT_EVENTS: [&str; 11] = [
    "user_registered",
    "login_succeeded",
    "login_failed",
    "token_refreshed",
    "refresh_token_reused",
    "logged_out",
    "session_revoked",
    "anonymous_signed_in",
    "user_upgraded",
    "password_changed",
    "account_deleted",
];

static AUDIT_COUNTS: [AtomicU64; AUDIT_EVENTS.len()] = [const { AtomicU64::new(0) }; AUDIT_EVENTS.len()];
/// Responses by status class: 1xx … 5xx.
static RESPONSES: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];

/// Connections refused by a connection limit, and connections open now.
static REFUSED_CONNECTIONS: AtomicU64 = AtomicU64::new(0);
static OPEN_CONNECTIONS: AtomicU64 = AtomicU64::new(0);

pub fn count_refused_connection() {
    REFUSED_CONNECTIONS.fetch_add(1, Ordering::Relaxed);
}

/// Counts a connection as open until the guard drops.
pub fn open_connection() -> impl Drop {
    struct Open;
    impl Drop for Open {
        fn drop(&mut self) {
            OPEN_CONNECTIONS.fetch_sub(1, Ordering::Relaxed);
        }
    }
    OPEN_CONNECTIONS.fetch_add(1, Ordering::Relaxed);
    Open
}

pub fn count_response(status: u16) {
    if let Some(counter) = RESPONSES.get(usize::from(status / 100).wrapping_sub(1)) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A `tracing` layer counting audit events by their `event` field.
pub struct AuditCounter;

impl<S: tracing::Subscriber> Layer<S> for AuditCounter {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() == "audit" {
            event.record(&mut AuditVisitor);
        }
    }
}

struct AuditVisitor;

impl Visit for AuditVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "event"
            && let Some(i) = AUDIT_EVENTS.iter().position(|e| *e == value)
        {
            AUDIT_COUNTS[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
pub async fn render(State(state): State<AppState>) -> Response {
    let mut out = String::new();
    let _ = writeln!(out, "# HELP tessera_http_responses_total HTTP responses by status class.");
    let _ = writeln!(out, "# TYPE tessera_http_responses_total counter");
    for (i, counter) in RESPONSES.iter().enumerate() {
        let _ =
            writeln!(out, "tessera_http_responses_total{{class=\"{}xx\"}} {}", i + 1, counter.load(Ordering::Relaxed));
    }
    let _ = writeln!(out, "# HELP tessera_audit_events_total Audit events by kind.");
    let _ = writeln!(out, "# TYPE tessera_audit_events_total counter");
    for (name, counter) in AUDIT_EVENTS.iter().zip(&AUDIT_COUNTS) {
        let _ = writeln!(out, "tessera_audit_events_total{{event=\"{name}\"}} {}", counter.load(Ordering::Relaxed));
    }
    let _ = writeln!(out, "# HELP tessera_open_connections Connections open now.");
    let _ = writeln!(out, "# TYPE tessera_open_connections gauge");
    let _ = writeln!(out, "tessera_open_connections {}", OPEN_CONNECTIONS.load(Ordering::Relaxed));
    let _ = writeln!(
        out,
        "# HELP tessera_connections_refused_total Connections refused, or closed to make room, by a connection limit."
    );
    let _ = writeln!(out, "# TYPE tessera_connections_refused_total counter");
    let _ = writeln!(out, "tessera_connections_refused_total {}", REFUSED_CONNECTIONS.load(Ordering::Relaxed));
    let _ = writeln!(out, "# HELP tessera_revoked_sessions Ended sessions whose access tokens may still be alive.");
    let _ = writeln!(out, "# TYPE tessera_revoked_sessions gauge");
    let _ = writeln!(out, "tessera_revoked_sessions {}", state.auth().revoked().len());
    let _ = writeln!(out, "# HELP tessera_signing_keys Signing keys loaded.");
    let _ = writeln!(out, "# TYPE tessera_signing_keys gauge");
    let _ = writeln!(out, "tessera_signing_keys {}", state.auth().access_tokens().keys().kids().len());
    let mut response = out.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
    response
}
