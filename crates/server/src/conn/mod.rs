//! Serving connections: the accept loop, connection limits and the timeouts of the HTTP layer.
//!
//! Every connection is served by hyper's HTTP/1 machinery behind three clocks, all kept by one
//! watchdog per connection (hyper's own header timeout is off: it also runs while a
//! connection is idle, so it cannot tell a slow request from a quiet keep-alive):
//!
//! - **header timeout**: from a request's first byte (for a fresh connection, from the accept)
//!   until its headers are complete;
//! - **idle timeout**: a keep-alive connection with no request in flight and no bytes either
//!   way for this long is closed;
//! - the **body timeout** is not here but where bodies are read (`extract::read_body`), which
//!   answers `408 REQUEST_TIMEOUT` in the envelope.
//!
//! Requests never wake the watchdog (the socket and the service only note times in atomics); it
//! looks at them at its deadline and at least every half header timeout, so the clocks are kept
//! to within that.
//!
//! When the server-wide cap or an address's share is full, the connection that has waited
//! longest without a request in flight is closed to make room ([`Registry`]); when every one
//! is busy, the newcomer is closed at once. Addresses are grouped as the login limiter groups
//! them (IPv6 by /64); the configured trusted proxies are exempt from the per-address share,
//! since all their clients share their address. Hitting a limit is logged, at most once per
//! [`LOG_EVERY`] for each kind, with a count.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::convert::Infallible;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tower::{Service, ServiceExt};

use crate::net::{AddressGroup, TrustedProxies};

mod activity;
mod registry;

use activity::{Activity, WatchedIo};
use registry::{Full, Registry};

/// Limits and timeouts of the HTTP layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnLimits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_address: usize,
    /// Largest request head (request line and headers) hyper buffers; larger ones get `431`.
    pub max_header_bytes: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 2048,
            max_connections_per_address: 128,
            max_header_bytes: 32 * 1024,
        }
    }
}

impl ConnLimits {
    /// The limits the flags name, each defaulted when not given, refused when it would turn a
    /// protection off (a zero timeout or cap).
    pub fn from_flags(
        header_timeout: Duration,
        idle_timeout: Duration,
        max_connections: Option<usize>,
        max_connections_per_address: Option<usize>,
    ) -> Result<Self, &'static str> {
        let defaults = Self::default();
        let limits = Self {
            header_timeout,
            idle_timeout,
            max_connections: max_connections.unwrap_or(defaults.max_connections),
            max_connections_per_address: max_connections_per_address.unwrap_or(defaults.max_connections_per_address),
            max_header_bytes: defaults.max_header_bytes,
        };
        if limits.header_timeout.is_zero() || limits.idle_timeout.is_zero() {
            return Err("--header-timeout and --idle-timeout must be longer than 0s");
        }
        if limits.max_connections == 0 || limits.max_connections_per_address == 0 {
            return Err("--max-connections and --max-connections-per-address must be at least 1");
        }
        Ok(limits)
    }
}

/// A request's hold on its connection's place among the open connections. A handler that takes
/// the connection over — a proxied WebSocket, once upgraded, outlives the HTTP connection's
/// task — [`keep`](Self::keep)s it, so that the socket still counts toward the connection caps
/// and is never pushed out as idle, until the returned guard drops. Requests with an `Upgrade`
/// header carry it as an extension.
#[derive(Clone)]
pub struct ConnectionHold {
    ticket: Arc<registry::Ticket>,
    activity: Arc<Activity>,
}

impl ConnectionHold {
    /// The connection stays in its place, busy, while the guard lives.
    pub fn keep(&self) -> KeptConnection {
        KeptConnection { _ticket: self.ticket.clone(), _busy: self.activity.begin_request() }
    }
}

/// See [`ConnectionHold::keep`].
pub struct KeptConnection {
    _ticket: Arc<registry::Ticket>,
    _busy: activity::Busy,
}

/// How often a kind of refusal is logged at most.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// What answers the requests of a connection: an axum `Router`, or any service of the same shape
/// (the gateway's, which sends most requests past any router).
pub trait Handler:
    Service<Request<Body>, Response = Response, Error = Infallible, Future: Send + 'static> + Clone + Send + 'static
{
}

impl<S> Handler for S where
    S: Service<Request<Body>, Response = Response, Error = Infallible, Future: Send + 'static> + Clone + Send + 'static
{
}

/// The connections of one server, however many accept loops take them (the gateway runs one
/// per worker thread): the caps, and who holds a place under them.
pub struct Admission {
    limits: Arc<ConnLimits>,
    proxies: Arc<TrustedProxies>,
    registry: Arc<Registry>,
    refusals: Refusals,
}

impl Admission {
    pub fn new(limits: ConnLimits, proxies: Arc<TrustedProxies>) -> Arc<Self> {
        Arc::new(Self {
            limits: Arc::new(limits),
            proxies,
            registry: Arc::new(Registry::default()),
            refusals: Refusals::default(),
        })
    }
}

/// Accepts and serves connections on `listener` until `stop` turns true; then asks every
/// connection to finish its in-flight request and close, and returns once all have (the caller
/// bounds that wait).
pub async fn serve(
    listener: TcpListener,
    router: impl Handler,
    limits: ConnLimits,
    proxies: Arc<TrustedProxies>,
    stop: watch::Receiver<bool>,
) {
    serve_admitted(listener, router, Admission::new(limits, proxies), stop).await;
}

/// [`serve`], under caps shared with other accept loops.
pub async fn serve_admitted(
    listener: TcpListener,
    router: impl Handler,
    admission: Arc<Admission>,
    mut stop: watch::Receiver<bool>,
) {
    let Admission { limits, proxies, registry, refusals } = &*admission;
    let (closed_tx, mut closed_rx) = tokio::sync::mpsc::channel::<()>(1);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors or similar: back off rather than spin.
                    refusals.note(Refusal::AcceptFailed, &e.to_string());
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        let group = (!proxies.contains(peer.ip())).then(|| AddressGroup::of(peer.ip()));
        let activity = Arc::new(Activity::new());
        let ticket = match registry.admit(group, activity.clone(), limits) {
            Ok((ticket, None)) => ticket,
            Ok((ticket, Some(full))) => {
                refusals.note(Refusal::Evicted(full), &peer.ip().to_string());
                ticket
            }
            Err(full) => {
                refusals.note(Refusal::Refused(full), &peer.ip().to_string());
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let hold = ConnectionHold { ticket: Arc::new(ticket), activity: activity.clone() };
        let connection = serve_connection(stream, peer, hold.clone(), router.clone(), limits.clone(), stop.clone());
        let closed_tx = closed_tx.clone();
        let open = crate::metrics::open_connection();
        tokio::spawn(async move {
            connection.await;
            drop((hold, closed_tx, open));
        });
    }
    drop(listener);
    drop(closed_tx);
    // Every connection task holds a sender: the channel closes when the last one ends.
    let _ = closed_rx.recv().await;
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    hold: ConnectionHold,
    router: impl Handler,
    limits: Arc<ConnLimits>,
    mut stop: watch::Receiver<bool>,
) {
    let activity = hold.activity.clone();
    let service = {
        let activity = activity.clone();
        let max_head = limits.max_header_bytes;
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let busy = activity.begin_request();
            // hyper's buffer limit is not exact (one read may bring more than it holds), so the
            // head's size is checked here: no head over the limit is served.
            if head_len(&request) > max_head {
                return futures_util::future::Either::Left(std::future::ready(Ok(head_too_large())));
            }
            let mut request = request.map(Body::new);
            request.extensions_mut().insert(ConnectInfo(peer));
            // Only a request that may take the connection over (an upgrade) gets the hold: no
            // other request pays for it.
            if request.headers().contains_key(hyper::header::UPGRADE) {
                request.extensions_mut().insert(hold.clone());
            }
            let response = router.clone().oneshot(request);
            futures_util::future::Either::Right(async move {
                let response = response.await?;
                Ok::<_, Infallible>(busy.until_sent(response))
            })
        })
    };
    let io = TokioIo::new(WatchedIo { inner: stream, activity: activity.clone() });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.header_read_timeout(None).max_buf_size(limits.max_header_bytes.max(8192));
    // With upgrades: the gateway proxies WebSockets over this same loop.
    let connection = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(connection);
    let mut stopping = *stop.borrow();
    if stopping {
        connection.as_mut().graceful_shutdown();
    }
    // The watchdog is never woken by requests (that would cost a task wake per request): it
    // looks again at least every half header timeout, so a deadline is kept to within that.
    let look_again = (limits.header_timeout / 2).max(Duration::from_millis(100));
    loop {
        let deadline = activity.deadline(&limits);
        let wake = deadline.at.min(Instant::now() + look_again);
        tokio::select! {
            _ = connection.as_mut() => return,
            () = stopped(&mut stop), if !stopping => {
                stopping = true;
                connection.as_mut().graceful_shutdown();
            }
            () = activity.evict_signal.notified() => {
                tracing::debug!(peer = %peer, "closing connection to make room for a new one");
                return;
            }
            () = tokio::time::sleep_until(wake) => {
                if activity.deadline(&limits).at <= Instant::now() {
                    tracing::debug!(peer = %peer, reason = deadline.why, "closing connection");
                    return;
                }
            }
        }
    }
}

/// The size of a request's head as sent: request line, headers, and the blank line.
fn head_len<B>(request: &Request<B>) -> usize {
    let target = request.uri().path_and_query().map_or(1, |p| p.as_str().len());
    let line = request.method().as_str().len() + target + "  HTTP/1.1\r\n".len();
    let fields: usize = request.headers().iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum();
    line + fields + 2
}

/// The answer to a head over the limit, as hyper gives it: a bare `431`, and the connection
/// closed (what follows the head cannot be trusted to be a request).
fn head_too_large() -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = axum::http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
    response.headers_mut().insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
    response
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Refusal {
    Refused(Full),
    Evicted(Full),
    AcceptFailed,
}

/// Logs refusals, each kind at most once per [`LOG_EVERY`], with the count since the last line.
#[derive(Debug, Default)]
struct Refusals(Mutex<HashMap<Refusal, (Option<Instant>, u64)>>);

impl Refusals {
    fn note(&self, kind: Refusal, detail: &str) {
        crate::metrics::count_refused_connection();
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (last, count) = seen.entry(kind).or_default();
        *count += 1;
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < LOG_EVERY) {
            return;
        }
        let refused = std::mem::take(count);
        *last = Some(now);
        drop(seen);
        match kind {
            Refusal::Refused(Full::Server) => tracing::warn!(
                refused,
                last_peer = detail,
                "connection limit reached and every connection busy: refusing new connections (see --max-connections)"
            ),
            Refusal::Refused(Full::Address) => tracing::warn!(
                refused,
                peer = detail,
                "an address reached its share of connections, all busy: refusing its new ones (see --max-connections-per-address)"
            ),
            Refusal::Evicted(Full::Server) => tracing::warn!(
                closed = refused,
                last_peer = detail,
                "connection limit reached: closing the longest-waiting connections to admit new ones (see --max-connections)"
            ),
            Refusal::Evicted(Full::Address) => tracing::warn!(
                closed = refused,
                peer = detail,
                "an address reached its share of connections: closing its longest-waiting ones to admit new ones (see --max-connections-per-address)"
            ),
            Refusal::AcceptFailed => tracing::warn!(refused, error = detail, "accepting a connection failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::sync::atomic::Ordering;

    use super::*;

    fn limits(total: usize, per_address: usize) -> ConnLimits {
        ConnLimits { max_connections: total, max_connections_per_address: per_address, ..ConnLimits::default() }
    }

    #[test]
    fn a_full_address_pushes_out_its_longest_waiting_connection_and_never_a_busy_one() {
        let registry = Arc::new(Registry::default());
        let limits = limits(100, 2);
        let group = Some(AddressGroup::of(IpAddr::from([192, 0, 2, 1])));
        let (oldest, busy) = (Arc::new(Activity::new()), Arc::new(Activity::new()));
        let _busy_request = busy.begin_request();
        let first = registry.admit(group, oldest.clone(), &limits).unwrap();
        let _second = registry.admit(group, busy.clone(), &limits).unwrap();
        assert!(first.1.is_none());
        let other = Some(AddressGroup::of(IpAddr::from([192, 0, 2, 2])));
        assert!(
            registry.admit(other, Arc::new(Activity::new()), &limits).unwrap().1.is_none(),
            "other addresses are not affected"
        );

        let (_third, full) = registry.admit(group, Arc::new(Activity::new()), &limits).unwrap();
        assert_eq!(full, Some(Full::Address));
        assert!(oldest.evicted.load(Ordering::Acquire), "the waiting connection made room");
        assert!(!busy.evicted.load(Ordering::Acquire), "the busy one did not");
        drop(first);
        // Now both of the group's connections are busy or being evicted: the next is refused.
        let newest = registry.0.lock().unwrap().connections.values().map(|(_, a)| a.clone()).collect::<Vec<_>>();
        let _requests: Vec<_> = newest.iter().map(|a| a.begin_request()).collect();
        assert_eq!(registry.admit(group, Arc::new(Activity::new()), &limits).err(), Some(Full::Address));
    }

    #[test]
    fn a_full_server_pushes_out_the_longest_waiting_connection_of_any_address() {
        let registry = Arc::new(Registry::default());
        let limits = limits(2, 10);
        let (a, b) = (Arc::new(Activity::new()), Arc::new(Activity::new()));
        let _ta = registry.admit(Some(AddressGroup::of(IpAddr::from([192, 0, 2, 1]))), a.clone(), &limits).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        let _tb = registry.admit(Some(AddressGroup::of(IpAddr::from([192, 0, 2, 2]))), b.clone(), &limits).unwrap();
        let (_tc, full) = registry.admit(None, Arc::new(Activity::new()), &limits).unwrap();
        assert_eq!(full, Some(Full::Server));
        assert!(a.evicted.load(Ordering::Acquire) && !b.evicted.load(Ordering::Acquire));
    }

    #[tokio::test]
    async fn a_fresh_connection_has_the_header_timeout_then_the_idle_timeout() {
        let limits = ConnLimits::default();
        let near = |a: Instant, b: Instant| a.max(b) - a.min(b) < Duration::from_millis(200);
        let activity = Arc::new(Activity::new());
        assert_eq!(activity.deadline(&limits).at, activity.started + limits.header_timeout);
        let busy = activity.begin_request();
        assert_eq!(activity.deadline(&limits).why, "busy", "a request in flight is not timed here");
        drop(busy);
        assert_eq!(activity.deadline(&limits).why, "idle timeout");
        assert!(near(activity.deadline(&limits).at, Instant::now() + limits.idle_timeout));
        activity.read(0);
        assert_eq!(activity.deadline(&limits).why, "idle timeout", "no bytes, no request");
        activity.read(5);
        assert_eq!(activity.deadline(&limits).why, "header timeout", "a new request began");
        assert!(near(activity.deadline(&limits).at, Instant::now() + limits.header_timeout));
    }
}
