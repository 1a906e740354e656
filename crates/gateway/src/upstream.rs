//! The gateway's connections to its upstream: HTTP/1.1 keep-alive connections of hyper's own
//! (`hyper::client::conn::http1`), kept idle in a stack and reused, most recent first.
//!
//! hyper-util's general client did the same with more machinery than one fixed upstream needs
//! (a pool keyed by origin, checkout futures, absolute-form to origin-form rewriting): 1.5–2 µs
//! of CPU per request, a tenth of the gateway's (docs/benchmarks.md, "The gateway").
//!
//! A connection has no task of its own: the request that holds it drives it, in the task of the
//! client's connection, while it waits for the answer and while the answer's body streams. A
//! proxied request so wakes one task, not three (the client's, the upstream connection's, and
//! the client's again), and its reads and writes stay on one thread.
//!
//! A connection goes back to the stack once its response body has been read to the end, so a
//! request never waits behind another's body. One that may have been closed by the upstream
//! while idle (its keep-alive timeout) is retried once on a new connection, when hyper says the
//! request was never sent. A WebSocket handshake gets a connection of its own, never reused,
//! with a task of its own, since the socket outlives the request.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
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
    /// Boxed, so that taking one into a request's future moves a pointer, not the connection.
    #[allow(clippy::vec_box)]
    idle: Mutex<Vec<Box<Connection>>>,
}

/// One connection to the upstream: the handle requests are sent on, and the protocol state that
/// whoever holds the connection polls ([`Connection::drive`]).
struct Connection {
    sender: SendRequest<Body>,
    driver: http1::Connection<TokioIo<TcpStream>, Body>,
}

/// Why [`Connection::send`] has no answer.
enum Unsent {
    /// The request never left: it can go on another connection.
    Request(Box<Request>),
    Failed(Error),
}

impl Connection {
    /// Reads and writes what the connection can; `Ready` once it has ended (closed by the
    /// upstream, or broken).
    fn drive(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.driver).poll(cx).map(|done| {
            if let Err(e) = done {
                tracing::debug!(error = %e, "an upstream connection ended");
            }
        })
    }

    /// Polls `future` while driving the connection; `None` if the connection ended first.
    async fn drive_until<F: Future>(&mut self, future: F) -> Option<F::Output> {
        let mut future = pin!(future);
        let mut ended = false;
        poll_fn(|cx| {
            if let Poll::Ready(output) = future.as_mut().poll(cx) {
                return Poll::Ready(Some(output));
            }
            if !ended && self.drive(cx).is_ready() {
                // What the future waits on was settled by the connection's end: one more look.
                ended = true;
                return match future.as_mut().poll(cx) {
                    Poll::Ready(output) => Poll::Ready(Some(output)),
                    Poll::Pending => Poll::Ready(None),
                };
            }
            Poll::Pending
        })
        .await
    }

    /// Sends `request` and waits for the answer's head, driving the connection meanwhile.
    async fn send(&mut self, request: Request) -> Result<Response<Incoming>, Unsent> {
        let sending = self.sender.try_send_request(request);
        match self.drive_until(sending).await {
            Some(Ok(response)) => Ok(response),
            Some(Err(mut failed)) => match failed.take_message() {
                Some(request) => Err(Unsent::Request(Box::new(request))),
                None => Err(Unsent::Failed(failed.into_error().into())),
            },
            None => Err(Unsent::Failed("the upstream closed the connection".into())),
        }
    }

    /// Whether the connection can take a request, once it has settled what it was doing.
    async fn ready(&mut self) -> bool {
        poll_fn(|cx| {
            if self.drive(cx).is_ready() {
                return Poll::Ready(false);
            }
            self.sender.poll_ready(cx).map(|ready| ready.is_ok())
        })
        .await
    }
}

impl Upstream {
    /// Connections to `address` (`host:port`, `config::Upstream::address`).
    pub fn new(address: &str, connect_timeout: Duration) -> Arc<Self> {
        Arc::new(Self { address: address.to_owned(), connect_timeout, idle: Mutex::default() })
    }

    /// Sends `request` (its URI in origin form) on an idle connection or a new one; the answer's
    /// body drives the connection and gives it back when it ends.
    pub async fn send(self: &Arc<Self>, request: Request) -> Result<Response<Body>, Error> {
        let (connection, response) = match self.take_idle().await {
            Some(mut connection) => match connection.send(request).await {
                Ok(response) => (connection, response),
                // An idle connection the upstream had closed: the request never left, so it goes
                // again, on a new one.
                Err(Unsent::Request(request)) => Box::pin(self.send_on_new(*request)).await?,
                Err(Unsent::Failed(e)) => return Err(e),
            },
            None => Box::pin(self.send_on_new(request)).await?,
        };
        let upstream = self.clone();
        Ok(response.map(|body| Body::new(Returned { body, connection: Some(connection), upstream })))
    }

    async fn send_on_new(&self, request: Request) -> Result<(Box<Connection>, Response<Incoming>), Error> {
        let mut connection = self.connect().await?;
        match connection.send(request).await {
            Ok(response) => Ok((connection, response)),
            Err(Unsent::Request(_)) => Err("the upstream closed a new connection at once".into()),
            Err(Unsent::Failed(e)) => Err(e),
        }
    }

    /// Sends a WebSocket handshake on a connection of its own, whose upgrade the caller takes.
    pub async fn send_upgrade(&self, request: Request) -> Result<Response<Incoming>, Error> {
        let Connection { mut sender, driver } = *self.connect().await?;
        tokio::spawn(async move {
            if let Err(e) = driver.with_upgrades().await {
                tracing::debug!(error = %e, "an upstream connection ended");
            }
        });
        Ok(sender.send_request(request).await?)
    }

    /// The most recent idle connection that can take a request.
    async fn take_idle(&self) -> Option<Box<Connection>> {
        loop {
            let mut connection = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop()?;
            if connection.ready().await {
                return Some(connection);
            }
        }
    }

    async fn connect(&self) -> Result<Box<Connection>, Error> {
        let tcp = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.address))
            .await
            .map_err(|_| format!("connecting to {} timed out", self.address))??;
        tcp.set_nodelay(true)?;
        let (sender, driver) = http1::handshake(TokioIo::new(tcp)).await?;
        Ok(Box::new(Connection { sender, driver }))
    }

    fn give_back(&self, connection: Box<Connection>) {
        if connection.sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push(connection);
        }
    }
}

/// The upstream's response body, which drives its connection while it streams and gives the
/// connection back when it has been read to the end (dropped before that, the connection is
/// dropped: hyper closes it).
struct Returned {
    body: Incoming,
    connection: Option<Box<Connection>>,
    upstream: Arc<Upstream>,
}

impl Returned {
    fn done(&mut self) {
        if let Some(connection) = self.connection.take() {
            self.upstream.give_back(connection);
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
        let this = &mut *self;
        if let Some(connection) = &mut this.connection
            && connection.drive(cx).is_ready()
        {
            // Ended: the body has what it will ever get.
            this.connection = None;
        }
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) {
            this.done();
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
