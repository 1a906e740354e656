//! `/.tessera/metrics`: requests by outcome, open sockets, sockets closed by reason, and the
//! revocation feed's health, in Prometheus' text format.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::Gateway;

/// What became of a request.
#[derive(Debug, Clone, Copy)]
pub enum Outcome {
    /// Passed to the upstream (whatever it answered).
    Forwarded,
    /// No token where one is needed: `401`.
    NoToken,
    /// A bad, expired or ended token, or two of them: `401` or `400`.
    Refused,
    /// The feed is silent and the gateway fails closed: `503`.
    Unavailable,
    /// A request target that cannot be forwarded: `400`.
    BadRequest,
    /// The upstream cannot be reached: `502`.
    BadGateway,
    /// The upstream did not answer in time: `504`.
    GatewayTimeout,
}

const OUTCOMES: [(Outcome, &str); 7] = [
    (Outcome::Forwarded, "forwarded"),
    (Outcome::NoToken, "no_token"),
    (Outcome::Refused, "refused"),
    (Outcome::Unavailable, "unavailable"),
    (Outcome::BadRequest, "bad_request"),
    (Outcome::BadGateway, "bad_gateway"),
    (Outcome::GatewayTimeout, "gateway_timeout"),
];

/// Why the gateway or a party closed a proxied socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// The session ended (`4001`).
    SessionEnded,
    /// The access token expired (`4002`).
    TokenExpired,
    /// The feed went silent while failing closed (`1013`).
    FeedLost,
    /// The gateway is stopping (`1001`).
    Shutdown,
    /// The client closed it or went away.
    Client,
    /// The upstream closed it or went away.
    Upstream,
}

const CLOSED: [(Closed, &str); 6] = [
    (Closed::SessionEnded, "session_ended"),
    (Closed::TokenExpired, "token_expired"),
    (Closed::FeedLost, "feed_lost"),
    (Closed::Shutdown, "shutdown"),
    (Closed::Client, "client"),
    (Closed::Upstream, "upstream"),
];

#[derive(Debug, Default)]
pub struct Metrics {
    outcomes: [AtomicU64; OUTCOMES.len()],
    closed: [AtomicU64; CLOSED.len()],
    open_sockets: AtomicI64,
}

impl Metrics {
    pub fn count(&self, outcome: Outcome) {
        self.outcomes[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a socket as open until the guard drops.
    pub fn open_socket(self: &Arc<Self>) -> OpenSocket {
        self.open_sockets.fetch_add(1, Ordering::Relaxed);
        OpenSocket(self.clone())
    }

    /// How many proxied sockets are open (or switching protocols) now.
    pub fn open_sockets(&self) -> i64 {
        self.open_sockets.load(Ordering::Relaxed)
    }

    pub fn count_closed(&self, why: Closed) {
        self.closed[why as usize].fetch_add(1, Ordering::Relaxed);
    }
}

pub struct OpenSocket(Arc<Metrics>);

impl Drop for OpenSocket {
    fn drop(&mut self) {
        self.0.open_sockets.fetch_sub(1, Ordering::Relaxed);
    }
}

pub async fn render(State(gateway): State<Arc<Gateway>>) -> Response {
    let m = &gateway.metrics;
    let mut out = String::new();
    out.push_str("# HELP tessera_gateway_requests_total Requests by what became of them.\n");
    out.push_str("# TYPE tessera_gateway_requests_total counter\n");
    for (i, (_, name)) in OUTCOMES.iter().enumerate() {
        let n = m.outcomes[i].load(Ordering::Relaxed);
        let _ = writeln!(out, "tessera_gateway_requests_total{{outcome=\"{name}\"}} {n}");
    }
    out.push_str("# HELP tessera_gateway_open_sockets Proxied WebSockets open now.\n");
    out.push_str("# TYPE tessera_gateway_open_sockets gauge\n");
    let _ = writeln!(out, "tessera_gateway_open_sockets {}", m.open_sockets.load(Ordering::Relaxed));
    out.push_str("# HELP tessera_gateway_sockets_closed_total Proxied WebSockets closed, by why.\n");
    out.push_str("# TYPE tessera_gateway_sockets_closed_total counter\n");
    for (i, (_, name)) in CLOSED.iter().enumerate() {
        let n = m.closed[i].load(Ordering::Relaxed);
        let _ = writeln!(out, "tessera_gateway_sockets_closed_total{{reason=\"{name}\"}} {n}");
    }
    let stats = gateway.verifier.stats();
    out.push_str("# HELP tessera_gateway_feed_connected Whether the revocation feed's stream is open.\n");
    out.push_str("# TYPE tessera_gateway_feed_connected gauge\n");
    let _ = writeln!(out, "tessera_gateway_feed_connected {}", u8::from(stats.feed_connected));
    out.push_str("# HELP tessera_gateway_feed_stale Whether the feed has been silent past --max-feed-silence.\n");
    out.push_str("# TYPE tessera_gateway_feed_stale gauge\n");
    let _ = writeln!(out, "tessera_gateway_feed_stale {}", u8::from(stats.feed_stale));
    if let Some(silence) = stats.feed_silence {
        out.push_str("# HELP tessera_gateway_feed_silence_seconds Time since the feed last spoke.\n");
        out.push_str("# TYPE tessera_gateway_feed_silence_seconds gauge\n");
        let _ = writeln!(out, "tessera_gateway_feed_silence_seconds {:.3}", silence.as_secs_f64());
    }
    out.push_str("# HELP tessera_gateway_ended_sessions Ended sessions the gateway knows of.\n");
    out.push_str("# TYPE tessera_gateway_ended_sessions gauge\n");
    let _ = writeln!(out, "tessera_gateway_ended_sessions {}", stats.ended_sessions);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_lists_follow_the_enums() {
        for (i, (outcome, _)) in OUTCOMES.iter().enumerate() {
            assert_eq!(*outcome as usize, i);
        }
        for (i, (closed, _)) in CLOSED.iter().enumerate() {
            assert_eq!(*closed as usize, i);
        }
    }
}
