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
use tessera_verify::http::token_from_headers;
use tessera_verify::{Authenticated, Verifier, VerifyError};
use tokio::net::TcpListener;
use tokio::sync::watch;
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
pub async fn run(
    settings: GatewaySettings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut limits = settings.connections.clone();
    // A proxied connection (a socket too) holds a file for the client and one for the upstream.
    limits.max_connections = tessera_server::fit_to_file_limit(limits.max_connections, 2);
    let proxies = Arc::new(settings.trusted_proxies.clone());
    let shutdown_timeout = settings.shutdown_timeout;
    let gateway = Gateway::new(settings, stop_rx.clone()).await?;
    tracing::info!(
        addr = %listener.local_addr()?,
        upstream = %format!("{}://{}{}", gateway.settings.upstream.scheme, gateway.settings.upstream.authority, gateway.settings.upstream.path),
        "listening"
    );
    let serving = tessera_server::conn::serve(listener, service(gateway.clone()), limits, proxies, stop_rx);
    tokio::pin!(serving);
    tokio::select! {
        () = &mut serving => {}
        () = shutdown => {
            // Sockets close themselves (1001) and outlive their HTTP connections: wait for both.
            stop_tx.send_replace(true);
            let drained = async {
                serving.await;
                while gateway.metrics.open_sockets() > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            };
            if tokio::time::timeout(shutdown_timeout, drained).await.is_err() {
                tracing::warn!(timeout = ?shutdown_timeout, "in-flight requests and sockets did not finish within the shutdown timeout");
            }
        }
    }
    tracing::info!("gateway stopped");
    Ok(())
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
