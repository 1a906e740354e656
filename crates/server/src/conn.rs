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
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tower::ServiceExt;

use crate::net::{AddressGroup, TrustedProxies};

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

/// How often a kind of refusal is logged at most.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Accepts and serves connections on `listener` until `stop` turns true; then asks every
/// connection to finish its in-flight request and close, and returns once all have (the caller
/// bounds that wait).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    proxies: Arc<TrustedProxies>,
    mut stop: watch::Receiver<bool>,
) {
    let limits = Arc::new(limits);
    let registry = Arc::new(Registry::default());
    let refusals = Refusals::default();
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
        let ticket = match registry.admit(group, activity.clone(), &limits) {
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
        let connection = serve_connection(stream, peer, activity, router.clone(), limits.clone(), stop.clone());
        let closed_tx = closed_tx.clone();
        let open = crate::metrics::open_connection();
        tokio::spawn(async move {
            connection.await;
            drop((ticket, closed_tx, open));
        });
    }
    drop(listener);
    drop(closed_tx);
    // Every connection task holds a sender: the channel closes when the last one ends.
    let _ = closed_rx.recv().await;
}

/// Which limit was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Full {
    Server,
    Address,
}

/// The open connections, for the limits: how many in all and per address group, and what each
/// is doing, so that a full server can make room.
///
/// When a limit is reached, the connection that has waited longest without a request in flight
/// — one still sending its headers (or nothing at all), or an idle keep-alive one — is closed to
/// admit the new one (of the same address group, when it is that group's share that is full).
/// A flood of slow connections therefore pushes out its own oldest members rather than every
/// newcomer: a real client, whose request arrives at once, is served. Connections with a request
/// in flight — a streamed answer (the revocation feed) until its stream ends — are never pushed
/// out; when all are busy, the newcomer is refused.
#[derive(Debug, Default)]
struct Registry(Mutex<Open>);

#[derive(Debug, Default)]
struct Open {
    next: u64,
    connections: HashMap<u64, (Option<AddressGroup>, Arc<Activity>)>,
    per_group: HashMap<AddressGroup, usize>,
}

/// A connection's place in the [`Registry`]; gives it back when dropped.
struct Ticket(Arc<Registry>, u64);

impl Registry {
    /// Admits a connection from `group` (`None`: a trusted proxy, which has no share); with the
    /// limit that was full if another connection was pushed out to make room.
    fn admit(
        self: &Arc<Self>,
        group: Option<AddressGroup>,
        activity: Arc<Activity>,
        limits: &ConnLimits,
    ) -> Result<(Ticket, Option<Full>), Full> {
        let mut open = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let group_full =
            group.is_some_and(|g| open.per_group.get(&g).copied().unwrap_or(0) >= limits.max_connections_per_address);
        let full = if group_full {
            Some(Full::Address)
        } else if open.connections.len() >= limits.max_connections {
            Some(Full::Server)
        } else {
            None
        };
        if let Some(full) = full {
            let candidates = open.connections.values().filter(|(g, _)| full == Full::Server || *g == group);
            let victim = candidates
                .filter_map(|(_, a)| a.waiting_since().map(|since| (since, a)))
                .min_by_key(|(since, _)| *since);
            let Some((_, victim)) = victim else {
                return Err(full);
            };
            victim.evict();
        }
        let id = open.next;
        open.next += 1;
        open.connections.insert(id, (group, activity));
        if let Some(group) = group {
            *open.per_group.entry(group).or_default() += 1;
        }
        Ok((Ticket(self.clone(), id), full))
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut open = self.0.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((Some(group), _)) = open.connections.remove(&self.1)
            && let Some(count) = open.per_group.get_mut(&group)
        {
            *count -= 1;
            if *count == 0 {
                open.per_group.remove(&group);
            }
        }
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    activity: Arc<Activity>,
    router: Router,
    limits: Arc<ConnLimits>,
    mut stop: watch::Receiver<bool>,
) {
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
            let response = router.clone().oneshot(request);
            futures_util::future::Either::Right(async move {
                let response = response.await?;
                Ok::<_, std::convert::Infallible>(busy.until_sent(response))
            })
        })
    };
    let io = TokioIo::new(WatchedIo { inner: stream, activity: activity.clone() });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.header_read_timeout(None).max_buf_size(limits.max_header_bytes.max(8192));
    let connection = builder.serve_connection(io, service);
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
fn head_too_large() -> axum::response::Response {
    let mut response = axum::response::Response::new(Body::empty());
    *response.status_mut() = axum::http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
    response.headers_mut().insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
    response
}

/// What a connection is doing, as far as its watchdog needs to know.
#[derive(Debug)]
struct Activity {
    started: Instant,
    /// Milliseconds since `started` of the last byte read or written.
    last_io: AtomicU64,
    /// Milliseconds since `started` of the first byte of a request whose head is not complete
    /// yet, or [`NO_HEAD`]. A fresh connection starts in this state, at 0.
    head_started: AtomicU64,
    /// Requests handed to the router and not answered yet (a streamed answer: not ended yet).
    busy: AtomicU32,
    /// Wakes the watchdog to close the connection (see `evicted`).
    evict_signal: tokio::sync::Notify,
    /// Set when the connection is to be closed to make room for another.
    evicted: AtomicBool,
}

const NO_HEAD: u64 = u64::MAX;

struct Deadline {
    at: Instant,
    why: &'static str,
}

impl Activity {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            last_io: AtomicU64::new(0),
            head_started: AtomicU64::new(0),
            busy: 0.into(),
            evict_signal: tokio::sync::Notify::new(),
            evicted: AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    fn at(&self, ms: u64) -> Instant {
        self.started + Duration::from_millis(ms)
    }

    fn read(&self, bytes: usize) {
        let now = self.now_ms();
        self.last_io.store(now, Ordering::Relaxed);
        if bytes > 0 && self.busy.load(Ordering::Acquire) == 0 {
            let _ = self.head_started.compare_exchange(NO_HEAD, now, Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    fn wrote(&self) {
        self.last_io.store(self.now_ms(), Ordering::Relaxed);
    }

    /// The head is complete; until the guard drops, the router has the request.
    fn begin_request(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(NO_HEAD, Ordering::Release);
        Busy(self.clone())
    }

    /// Since when the connection has waited without a request in flight (for its headers, or
    /// idle); `None` while a request is in flight or once it is being evicted.
    fn waiting_since(&self) -> Option<Instant> {
        if self.busy.load(Ordering::Acquire) > 0 || self.evicted.load(Ordering::Acquire) {
            return None;
        }
        match self.head_started.load(Ordering::Acquire) {
            NO_HEAD => Some(self.at(self.last_io.load(Ordering::Relaxed))),
            started => Some(self.at(started)),
        }
    }

    fn evict(&self) {
        self.evicted.store(true, Ordering::Release);
        self.evict_signal.notify_one();
    }

    /// When the connection is to be closed if nothing happens before.
    fn deadline(&self, limits: &ConnLimits) -> Deadline {
        if self.busy.load(Ordering::Acquire) > 0 {
            // The request's own clocks (the body timeout) apply; look again later.
            return Deadline { at: Instant::now() + limits.idle_timeout, why: "busy" };
        }
        match self.head_started.load(Ordering::Acquire) {
            NO_HEAD => Deadline {
                at: self.at(self.last_io.load(Ordering::Relaxed)) + limits.idle_timeout,
                why: "idle timeout",
            },
            started => Deadline { at: self.at(started) + limits.header_timeout, why: "header timeout" },
        }
    }
}

struct Busy(Arc<Activity>);

impl Busy {
    /// The connection stays busy until `response` is out: at once for a body of known length
    /// (written in one go), else until its stream ends — a feed or any other stream has its
    /// request in flight for its whole life, and is never pushed out as idle.
    fn until_sent(self, response: axum::response::Response) -> axum::response::Response {
        if hyper::body::Body::size_hint(response.body()).exact().is_some() {
            return response;
        }
        response.map(|body| Body::new(BusyBody { body, _busy: self }))
    }
}

/// A streamed response body that keeps its connection [`Busy`] until it ends or is dropped.
struct BusyBody {
    body: Body,
    _busy: Busy,
}

impl hyper::body::Body for BusyBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.last_io.store(self.0.now_ms(), Ordering::Relaxed);
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The socket, telling the connection's [`Activity`] about its reads and writes.
struct WatchedIo {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for WatchedIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if polled.is_ready() {
            self.activity.read(buf.filled().len() - before);
        }
        polled
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
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
