//! `tessera gateway`: an identity-aware reverse proxy in front of one service, in any language,
//! that keeps tessera's promise for it: a logout, a revoked session or a replayed refresh token
//! ends access within a second, open WebSockets included (README, "Protecting a service in any
//! language").
//!
//! Every request is checked here, with no call to tessera per request: the access token (from
//! `Authorization: Bearer`, or for a WebSocket handshake the subprotocol
//! `tessera.bearer.<jwt>`) by `tessera-verify`'s [`Verifier`], with its key cache and the
//! revocation feed. What passes goes to the upstream with the caller in `X-Tessera-*` headers
//! ([`tessera_verify::http::identity`]); a client's own `X-Tessera-*` headers never do.
//!
//! - [`config`]: the settings, in `tessera serve`'s layers.
//! - `forward`: the HTTP proxy (headers, streaming both ways, timeouts, `502`/`504`).
//! - `socket`: WebSockets, proxied frame by frame and closed when their session ends.
//! - `metrics`: `/.tessera/metrics`.
//!
//! The gateway serves its connections with the server's accept loop ([`tessera_server::conn`]):
//! the same header and idle timeouts and connection caps. Framing is hyper's, as RFC 9112 §6.3
//! says: several differing `Content-Length` headers are refused with `400`; with both
//! `Transfer-Encoding` and `Content-Length`, the length is dropped, the body read as chunked and
//! the connection closed after the answer. The upstream receives the request as the gateway
//! frames it, never the client's ambiguous framing.

pub mod config;
mod forward;
mod metrics;
mod socket;
mod upstream;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::FutureExt;
use futures_util::future::Either;
use tessera_server::conn::Admission;
use tessera_verify::http::token_from_headers;
use tessera_verify::{Authenticated, Verifier, VerifyError};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tower::ServiceExt;

pub use config::{GatewayArgs, GatewaySettings};
use metrics::{Metrics, Outcome};

/// What every request of the gateway shares.
pub struct Gateway {
    settings: GatewaySettings,
    verifier: Verifier,
    upstream: Arc<upstream::Upstream>,
    metrics: Arc<Metrics>,
    /// Turns true when the gateway stops: open sockets close with `1001`.
    stopping: watch::Receiver<bool>,
}

impl Gateway {
    /// Builds the verifier (which fetches the keys and waits for the feed to sync) and the
    /// upstream client.
    pub async fn new(settings: GatewaySettings, stopping: watch::Receiver<bool>) -> anyhow::Result<Arc<Self>> {
        let verifier = Verifier::builder(&settings.issuer)
            .audience(&settings.audience)
            .tessera_url(&settings.tessera_url)
            .on_feed_loss(settings.on_feed_loss)
            .max_feed_silence(settings.max_feed_silence)
            .build()
            .await
            .with_context(|| format!("cannot reach tessera at {}", settings.tessera_url))?;
        let upstream = upstream::Upstream::new(&settings.upstream.address, settings.upstream_timeout);
        Ok(Arc::new(Self { settings, verifier, upstream, metrics: Arc::new(Metrics::default()), stopping }))
    }

    /// The same gateway for another worker thread: one verifier and one set of metrics, and
    /// upstream connections of its own (a connection is driven on the thread that opened it).
    fn for_worker(&self) -> Arc<Self> {
        Arc::new(Self {
            settings: self.settings.clone(),
            verifier: self.verifier.clone(),
            upstream: upstream::Upstream::new(&self.settings.upstream.address, self.settings.upstream_timeout),
            metrics: self.metrics.clone(),
            stopping: self.stopping.clone(),
        })
    }
}

/// The gateway's requests: its own routes under `/.tessera/`, which never reach the upstream,
/// and everything else checked and proxied, straight to [`handle`] (no router on the way: that
/// is most of the gateway's requests).
pub fn service(gateway: Arc<Gateway>) -> impl tessera_server::conn::Handler {
    let own = Router::new()
        .route("/.tessera/healthz", get(healthz))
        .route("/.tessera/metrics", get(metrics::render))
        .fallback(not_here)
        .with_state(gateway.clone());
    tower::service_fn(move |request: Request| {
        if is_own(request.uri().path()) {
            Either::Left(own.clone().oneshot(request))
        } else {
            Either::Right(handle(gateway.clone(), request).map(Ok))
        }
    })
}

/// `/.tessera` and everything under `/.tessera/`.
fn is_own(path: &str) -> bool {
    path.strip_prefix("/.tessera").is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Runs the gateway on `listener` until `shutdown` resolves.
///
/// Connections are served by `--workers` threads, each with an event loop of its own taking
/// connections from the one listener: this task's, and one more thread per further worker. A
/// request, its upstream connection and its socket stay on one thread, with no hand-over between
/// threads (docs/benchmarks.md, "The gateway"). The connection caps are shared by all.
pub async fn run(
    settings: GatewaySettings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut limits = settings.connections.clone();
    // A proxied connection (a socket too) holds a file for the client and one for the upstream.
    limits.max_connections = tessera_server::fit_to_file_limit(limits.max_connections, 2);
    let admission = Admission::new(limits, Arc::new(settings.trusted_proxies.clone()));
    let shutdown_timeout = settings.shutdown_timeout;
    let gateway = Gateway::new(settings, stop_rx.clone()).await?;
    tracing::info!(
        addr = %listener.local_addr()?,
        upstream = %format!("{}://{}{}", gateway.settings.upstream.scheme, gateway.settings.upstream.authority, gateway.settings.upstream.path),
        workers = gateway.settings.workers,
        "listening"
    );
    let listener = listener.into_std()?;
    let mut others = Vec::new();
    for index in 1..gateway.settings.workers {
        let worker = (listener.try_clone()?, gateway.for_worker(), admission.clone(), stop_rx.clone());
        others.push(spawn_worker(index, worker)?);
    }
    let first = work(TcpListener::from_std(listener)?, gateway, admission, stop_rx);
    let serving = futures_util::future::join(first, futures_util::future::join_all(others));
    tokio::pin!(serving);
    tokio::select! {
        _ = &mut serving => {}
        () = shutdown => {
            // Sockets close themselves (1001) and outlive their HTTP connections: each worker
            // waits for both.
            stop_tx.send_replace(true);
            if tokio::time::timeout(shutdown_timeout, serving).await.is_err() {
                tracing::warn!(timeout = ?shutdown_timeout, "in-flight requests and sockets did not finish within the shutdown timeout");
            }
        }
    }
    tracing::info!("gateway stopped");
    Ok(())
}

/// What a worker gets: the shared listener, its gateway, the shared caps, and the stop signal.
type Worker = (std::net::TcpListener, Arc<Gateway>, Arc<Admission>, watch::Receiver<bool>);

/// A worker on a thread of its own, with a single-threaded event loop; resolves once it is done.
fn spawn_worker(index: usize, (listener, gateway, admission, stop): Worker) -> anyhow::Result<oneshot::Receiver<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (done_tx, done_rx) = oneshot::channel();
    std::thread::Builder::new().name(format!("gateway-{index}")).spawn(move || {
        runtime.block_on(async move {
            match TcpListener::from_std(listener) {
                Ok(listener) => work(listener, gateway, admission, stop).await,
                Err(e) => tracing::error!(error = %e, "a gateway worker cannot take the listener"),
            }
        });
        let _ = done_tx.send(());
    })?;
    Ok(done_rx)
}

/// One worker's accept loop, until the gateway stops and the sockets it serves have closed.
async fn work(listener: TcpListener, gateway: Arc<Gateway>, admission: Arc<Admission>, stop: watch::Receiver<bool>) {
    tessera_server::conn::serve_admitted(listener, service(gateway.clone()), admission, stop).await;
    // The sockets count across workers: a worker's event loop runs until all have closed.
    while gateway.metrics.open_sockets() > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Binds `settings.listen` and runs until `shutdown`.
pub async fn serve(
    settings: GatewaySettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener =
        TcpListener::bind(settings.listen).await.with_context(|| format!("cannot listen on {}", settings.listen))?;
    run(settings, listener, shutdown).await
}

async fn healthz(State(gateway): State<Arc<Gateway>>) -> Response {
    let stats = gateway.verifier.stats();
    let body =
        serde_json::json!({"status": "ok", "feed_connected": stats.feed_connected, "feed_stale": stats.feed_stale});
    axum::Json(body).into_response()
}

async fn not_here() -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "no such route of the gateway")
}

/// A short JSON error of the gateway's own (`502`, `504`, framing).
fn error(status: StatusCode, error: &str, description: &str) -> Response {
    (status, axum::Json(serde_json::json!({"error": error, "error_description": description}))).into_response()
}

/// Checks a request and hands it to the proxy or the socket proxy.
async fn handle(gateway: Arc<Gateway>, request: Request) -> Response {
    let Some(&ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>() else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", "the connection's peer is unknown");
    };
    let caller = match check(&gateway, request.headers(), request.uri().path()).await {
        Ok(caller) => caller,
        Err(e) => {
            gateway.metrics.count(match e {
                VerifyError::Unavailable => Outcome::Unavailable,
                VerifyError::Missing => Outcome::NoToken,
                _ => Outcome::Refused,
            });
            return e.into_response();
        }
    };
    if socket::is_upgrade(request.headers()) {
        // Boxed: the handshake's future is large, and every plain request would carry its room.
        Box::pin(socket::proxy(gateway, peer, caller, request)).await
    } else {
        forward::proxy(&gateway, peer, caller.as_ref(), request).await
    }
}

/// The caller of a request: `Ok(None)` only on a public path without a token. A token that is
/// bad, expired or of an ended session is refused on every path: it never passes as anonymous.
async fn check(gateway: &Gateway, headers: &HeaderMap, path: &str) -> Result<Option<Authenticated>, VerifyError> {
    match token_from_headers(headers)? {
        Some(token) => gateway.verifier.verify(token).await.map(Some),
        None if gateway.settings.is_public(path) => Ok(None),
        None => Err(VerifyError::Missing),
    }
}
