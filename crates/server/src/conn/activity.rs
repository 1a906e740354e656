//! What a connection is doing, as its watchdog and the limits need to know: the clocks of its
//! reads and writes, whether a request is in flight (a streamed answer until its stream ends).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::ConnLimits;

/// What a connection is doing, as far as its watchdog needs to know.
#[derive(Debug)]
pub(super) struct Activity {
    pub(super) started: Instant,
    /// Milliseconds since `started` of the last byte read or written.
    pub(super) last_io: AtomicU64,
    /// Milliseconds since `started` of the first byte of a request whose head is not complete
    /// yet, or [`NO_HEAD`]. A fresh connection starts in this state, at 0.
    pub(super) head_started: AtomicU64,
    /// Requests handed to the router and not answered yet (a streamed answer: not ended yet).
    pub(super) busy: AtomicU32,
    /// Wakes the watchdog to close the connection (see `evicted`).
    pub(super) evict_signal: tokio::sync::Notify,
    /// Set when the connection is to be closed to make room for another.
    pub(super) evicted: AtomicBool,
}

pub(super) const NO_HEAD: u64 = u64::MAX;

pub(super) struct Deadline {
    pub(super) at: Instant,
    pub(super) why: &'static str,
}

impl Activity {
    pub(super) fn new() -> Self {
        Self {
            started: Instant::now(),
            last_io: AtomicU64::new(0),
            head_started: AtomicU64::new(0),
            busy: 0.into(),
            evict_signal: tokio::sync::Notify::new(),
            evicted: AtomicBool::new(false),
        }
    }

    pub(super) fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    pub(super) fn at(&self, ms: u64) -> Instant {
        self.started + Duration::from_millis(ms)
    }

    pub(super) fn read(&self, bytes: usize) {
        let now = self.now_ms();
        self.last_io.store(now, Ordering::Relaxed);
        if bytes > 0 && self.busy.load(Ordering::Acquire) == 0 {
            let _ = self.head_started.compare_exchange(NO_HEAD, now, Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    pub(super) fn wrote(&self) {
        self.last_io.store(self.now_ms(), Ordering::Relaxed);
    }

    /// The head is complete; until the guard drops, the router has the request.
    pub(super) fn begin_request(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(NO_HEAD, Ordering::Release);
        Busy(self.clone())
    }

    /// Since when the connection has waited without a request in flight (for its headers, or
    /// idle); `None` while a request is in flight or once it is being evicted.
    pub(super) fn waiting_since(&self) -> Option<Instant> {
        if self.busy.load(Ordering::Acquire) > 0 || self.evicted.load(Ordering::Acquire) {
            return None;
        }
        match self.head_started.load(Ordering::Acquire) {
            NO_HEAD => Some(self.at(self.last_io.load(Ordering::Relaxed))),
            started => Some(self.at(started)),
        }
    }

    pub(super) fn evict(&self) {
        self.evicted.store(true, Ordering::Release);
        self.evict_signal.notify_one();
    }

    /// When the connection is to be closed if nothing happens before.
    pub(super) fn deadline(&self, limits: &ConnLimits) -> Deadline {
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

pub(super) struct Busy(Arc<Activity>);

impl Busy {
    /// The connection stays busy until `response` is out: at once for a body of known length
    /// (written in one go), else until its stream ends — a feed or any other stream has its
    /// request in flight for its whole life, and is never pushed out as idle.
    pub(super) fn until_sent(self, response: axum::response::Response) -> axum::response::Response {
        if hyper::body::Body::size_hint(response.body()).exact().is_some() {
            return response;
        }
        response.map(|body| Body::new(BusyBody { body, _busy: self }))
    }
}

/// A streamed response body that keeps its connection [`Busy`] until it ends or is dropped.
pub(super) struct BusyBody {
    pub(super) body: Body,
    pub(super) _busy: Busy,
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
pub(super) struct WatchedIo {
    pub(super) inner: TcpStream,
    pub(super) activity: Arc<Activity>,
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
