//! Prometheus metrics at `/metrics`, in the text exposition format, without a metrics crate:
//! a handful of counters are all tessera needs.
//!
//! Audit events are counted by a `tracing` layer that watches target `audit`, so the domain
//! code emits each event once (as a log line) and the count follows from it.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use tessera_core::audit::AuditEvent;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, Layer};

static AUDIT_COUNTS: [AtomicU64; AuditEvent::ALL.len()] = [const { AtomicU64::new(0) }; AuditEvent::ALL.len()];
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
            && let Some(event) = AuditEvent::from_name(value)
        {
            AUDIT_COUNTS[event.index()].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
}

/// What the server's own state adds to the counters kept here.
pub struct Gauges {
    pub revoked_sessions: usize,
    pub signing_keys: usize,
}

/// Every metric, in Prometheus' text exposition format.
pub fn exposition(gauges: Gauges) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# HELP tessera_http_responses_total HTTP responses by status class.");
    let _ = writeln!(out, "# TYPE tessera_http_responses_total counter");
    for (i, counter) in RESPONSES.iter().enumerate() {
        let _ =
            writeln!(out, "tessera_http_responses_total{{class=\"{}xx\"}} {}", i + 1, counter.load(Ordering::Relaxed));
    }
    let _ = writeln!(out, "# HELP tessera_audit_events_total Audit events by kind.");
    let _ = writeln!(out, "# TYPE tessera_audit_events_total counter");
    for (event, counter) in AuditEvent::ALL.iter().zip(&AUDIT_COUNTS) {
        let name = event.as_str();
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
    let _ = writeln!(out, "tessera_revoked_sessions {}", gauges.revoked_sessions);
    let _ = writeln!(out, "# HELP tessera_signing_keys Signing keys loaded.");
    let _ = writeln!(out, "# TYPE tessera_signing_keys gauge");
    let _ = writeln!(out, "tessera_signing_keys {}", gauges.signing_keys);
    out
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// Logs `event` as the code does; the match is exhaustive, so a new event cannot be left out.
    fn log(event: AuditEvent) {
        use tessera_core::audit;
        match event {
            AuditEvent::UserRegistered => audit!(info, UserRegistered, user_id = "u"),
            AuditEvent::LoginSucceeded => audit!(info, LoginSucceeded, user_id = "u"),
            AuditEvent::LoginFailed => audit!(info, LoginFailed, user_id = "u"),
            AuditEvent::TokenRefreshed => audit!(info, TokenRefreshed, user_id = "u"),
            AuditEvent::RefreshTokenReused => audit!(info, RefreshTokenReused, user_id = "u"),
            AuditEvent::LoggedOut => audit!(info, LoggedOut, user_id = "u"),
            AuditEvent::SessionRevoked => audit!(info, SessionRevoked, user_id = "u"),
            AuditEvent::AnonymousSignedIn => audit!(info, AnonymousSignedIn, user_id = "u"),
            AuditEvent::UserUpgraded => audit!(info, UserUpgraded, user_id = "u"),
            AuditEvent::PasswordChanged => audit!(info, PasswordChanged, user_id = "u"),
            AuditEvent::AccountDeleted => audit!(info, AccountDeleted, user_id = "u"),
            AuditEvent::ClientAuthenticationFailed => audit!(info, ClientAuthenticationFailed, user_id = "u"),
        }
    }

    #[test]
    fn every_audit_event_is_counted() {
        let subscriber = tracing_subscriber::registry().with(AuditCounter);
        let before: Vec<u64> = AUDIT_COUNTS.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        tracing::subscriber::with_default(subscriber, || {
            for event in AuditEvent::ALL {
                log(event);
            }
            tessera_core::audit!(warn, RefreshTokenReused, session_id = "s");
        });
        for (event, (counter, before)) in AuditEvent::ALL.iter().zip(AUDIT_COUNTS.iter().zip(before)) {
            let expected = if *event == AuditEvent::RefreshTokenReused { 2 } else { 1 };
            assert_eq!(counter.load(Ordering::Relaxed) - before, expected, "{event:?}");
        }
    }
}
