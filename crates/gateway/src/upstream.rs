//! The gateway's connections to its upstream: HTTP/1.1 keep-alive connections of hyper's own
//! (`hyper::client::conn::http1`), kept idle in a stack and reused, most recent first.
//!
//! hyper-util's general client did the same with more machinery than one fixed upstream needs
//! (a pool keyed by origin, checkout futures, absolute-form to origin-form rewriting): 1.5–2 µs
//! of CPU per request, a tenth of the gateway's (docs/benchmarks.md, "The gateway").
//!
//! A connection goes back to the stack once its response body has been read to the end, so a
//! request never waits behind another's body. One that may have been closed by the upstream
//! while idle (its keep-alive timeout) is retried once on a new connection, when hyper says the
//! request was never sent. A WebSocket handshake gets a connection of its own, never reused.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::Response;
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Idle connections kept at most; more are closed as their responses end.
const MAX_IDLE: usize = 1024;

pub struct Upstream {
    /// `host:port`.
    address: String,
    connect_timeout: Duration,
    idle: Mutex<Vec<SendRequest<Body>>>,
}

impl Upstream {
    /// Connections to `address` (`host:port`, `config::Upstream::address`).
    pub fn new(address: &str, connect_timeout: Duration) -> Arc<Self> {
        Arc::new(Self { address: address.to_owned(), connect_timeout, idle: Mutex::default() })
    }

    /// Sends `request` (its URI in origin form) on an idle connection or a new one; the answer's
    /// body gives the connection back when it ends.
    pub async fn send(self: &Arc<Self>, request: Request) -> Result<Response<Body>, Error> {
        let (mut sender, reused) = match self.take_idle().await {
            Some(sender) => (sender, true),
            None => (self.connect(false).await?, false),
        };
        let response = match sender.try_send_request(request).await {
            Ok(response) => response,
            // An idle connection the upstream had closed: the request never left, so it goes again.
            Err(mut failed) if reused && failed.message().is_some() => {
                let request = failed.take_message().ok_or("the request was lost")?;
                sender = self.connect(false).await?;
                sender.send_request(request).await?
            }
            Err(failed) => return Err(failed.into_error().into()),
        };
        let upstream = self.clone();
        Ok(response.map(|body| Body::new(Returned { body, sender: Some(sender), upstream })))
    }

    /// Sends a WebSocket handshake on a connection of its own, whose upgrade the caller takes.
    pub async fn send_upgrade(&self, request: Request) -> Result<Response<Incoming>, Error> {
        let mut sender = self.connect(true).await?;
        Ok(sender.send_request(request).await?)
    }

    /// The most recent idle connection that can take a request.
    async fn take_idle(&self) -> Option<SendRequest<Body>> {
        loop {
            let mut sender = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop()?;
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    async fn connect(&self, upgrades: bool) -> Result<SendRequest<Body>, Error> {
        let tcp = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.address))
            .await
            .map_err(|_| format!("connecting to {} timed out", self.address))??;
        tcp.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(async move {
            let done = if upgrades { connection.with_upgrades().await } else { connection.await };
            if let Err(e) = done {
                tracing::debug!(error = %e, "an upstream connection ended");
            }
        });
        Ok(sender)
    }

    fn give_back(&self, sender: SendRequest<Body>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push(sender);
        }
    }
}

/// The upstream's response body, which gives its connection back when it has been read to the
/// end (dropped before that, the connection is dropped: hyper closes it).
struct Returned {
    body: Incoming,
    sender: Option<SendRequest<Body>>,
    upstream: Arc<Upstream>,
}

impl Returned {
    fn done(&mut self) {
        if let Some(sender) = self.sender.take() {
            self.upstream.give_back(sender);
        }
    }
}

impl hyper::body::Body for Returned {
    type Data = hyper::body::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) {
            self.done();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Returned {
    fn drop(&mut self) {
        // A body nobody polled because it had nothing to give (a 204, a HEAD) ended too.
        if self.body.is_end_stream() {
            self.done();
        }
    }
}
