//! tessera's HTTP server: configuration, start-up, routes, extractors and error mapping.
//!
//! [`routes::router`] builds every route; [`app`] puts the layers every request passes around
//! it, over an [`AppState`] (tests drive it in process: `tests/router.rs`);
//! [`serve`] resolves stores and keys from [`Settings`], starts the background work (revocation
//! catch-up, key reload, purge) and serves until the shutdown signal, finishing in-flight
//! requests.

pub mod config;
pub mod conn;
pub mod cookies;
pub mod error;
pub mod extract;
pub mod log_writer;
pub mod metrics;
pub mod middleware;
pub mod net;
pub mod openapi;
pub mod ratelimit;
pub mod rejection;
pub mod routes;
pub mod state;
pub mod telemetry;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::http::HeaderValue;
use axum::response::IntoResponse;
use tessera_core::access::AccessTokens;
use tessera_core::clients::Clients;
use tessera_core::clock::{Clock, SystemClock};
use tessera_core::keys::KeyDir;
use tessera_core::password::PasswordHasher;
use tessera_core::refresh::RefreshTokenCodec;
use tessera_core::service::{AuthService, Maintenance};
pub use tessera_store::open::Stores;
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;

use crate::config::Settings;
use crate::cookies::CookiePolicy;
use crate::error::AppError;
use crate::ratelimit::Throttle;
pub use crate::state::{AppState, HttpPolicy};

/// The whole HTTP surface: every route ([`routes::router`]) behind the layers every request
/// passes.
pub fn app(state: AppState) -> Router {
    let origins: Vec<HeaderValue> =
        state.cookies().allowed_origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
    routes::router()
        .layer(CatchPanicLayer::custom(|_: Box<dyn std::any::Any + Send>| {
            AppError::internal(anyhow::anyhow!("handler panicked")).into_response()
        }))
        // Outermost, so that preflights are answered before routing by method.
        .layer(middleware::RequestContextLayer::new(origins))
        .with_state(state)
}

/// Builds the service and the state from settings and opened stores; `bound` is the address
/// actually listened on.
pub async fn build_state(settings: &Settings, bound: SocketAddr, db: Stores) -> anyhow::Result<AppState> {
    // Start-up reads the wall clock once; from here on everything asks the state's clock.
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let now = clock.now();
    let key_dir = KeyDir::new(settings.data_dir.join("keys"));
    key_dir.init(now)?;
    let keys = key_dir.load_keys()?;
    let refresh = RefreshTokenCodec::new(&key_dir.refresh_secret()?);

    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let hasher = PasswordHasher::start(settings.hash_params, threads, 64 * threads)?;
    let issuer = settings.issuer.clone().unwrap_or_else(|| format!("http://{bound}"));
    let own_scheme = if issuer.starts_with("https://") { "https" } else { "http" };
    for origin in cookies::origins_on_tessera_host(&issuer, &settings.allowed_origins) {
        tracing::warn!(
            origin,
            issuer = %issuer,
            "an allowed origin is tessera's own host on another port: browsers send cookies to every port of a \
             host, so the app there receives tessera's refresh cookie and can replace or delete it; give tessera \
             a hostname of its own (fine for development only)"
        );
    }
    let access = AccessTokens::new(keys, issuer, settings.audience.clone(), settings.lifetimes.access_ttl);
    let auth = AuthService::new(db.users, db.sessions, access, refresh, hasher, settings.lifetimes);
    let cookies = CookiePolicy {
        secure: !settings.insecure_cookies,
        allowed_origins: settings.allowed_origins.clone(),
        own_scheme,
    };
    let policy = HttpPolicy {
        cookies,
        login_per_address: settings
            .login_rate_limit
            .map(|rate| Throttle::new(rate, db.limits.clone(), "login-address", clock.clone())),
        login_per_account: settings
            .login_failure_limit
            .map(|rate| Throttle::new(rate, db.limits.clone(), "login-account", clock.clone())),
        allow_anonymous: settings.allow_anonymous,
        anonymous_per_address: settings
            .anonymous_rate_limit
            .map(|rate| Throttle::new(rate, db.limits.clone(), "anonymous-address", clock.clone())),
        proxies: Arc::new(settings.trusted_proxies.clone()),
        body_limit: settings.body_limit,
        body_timeout: settings.body_timeout,
    };
    Ok(AppState::with_clock(auth, Clients::new(db.clients), policy, clock))
}

/// Opens the stores `settings` name ([`tessera_store::open`]: the data directory is made
/// first). Every command that opens the stores (`serve`, `clients`) comes through here.
pub async fn open_stores(settings: &Settings) -> anyhow::Result<Stores> {
    tessera_store::open::open(tessera_store::open::Options {
        database: &settings.database,
        session_store: &settings.session_store,
        data_dir: &settings.data_dir,
        sqlite_synchronous_full: settings.sqlite_synchronous_full,
        redis_key_prefix: &settings.redis_key_prefix,
    })
    .await
}

/// Runs the server until `shutdown` resolves, then finishes in-flight requests.
pub async fn serve(settings: Settings, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let listener =
        TcpListener::bind(settings.listen).await.with_context(|| format!("cannot listen on {}", settings.listen))?;
    let bound = listener.local_addr()?;
    let db = open_stores(&settings).await?;
    let state = build_state(&settings, bound, db).await?;
    run(&settings, listener, state, shutdown).await
}

/// Serves `state` on `listener` with the background work, until `shutdown` resolves.
pub async fn run(
    settings: &Settings,
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let bound = listener.local_addr()?;
    let background = spawn_maintenance(state.clone(), KeyDir::new(settings.data_dir.join("keys")), settings).await;
    tracing::info!(addr = %bound, data_dir = %settings.data_dir.display(), "listening");
    let proxies = state.policy().proxies.clone();
    let stopping = state.clone();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut limits = settings.connections.clone();
    limits.max_connections = fit_to_file_limit(limits.max_connections, 1);
    let serving = conn::serve(listener, app(state), limits, proxies, stop_rx);
    tokio::pin!(serving);
    tokio::select! {
        () = &mut serving => {}
        () = shutdown => {
            // Long-lived streams (the revocation feed) end now, so in-flight requests can finish.
            stopping.begin_shutdown();
            stop_tx.send_replace(true);
            // In-flight requests get `shutdown_timeout`; a client that holds a request
            // half-sent cannot keep the process alive past that.
            if tokio::time::timeout(settings.shutdown_timeout, serving).await.is_err() {
                tracing::warn!(
                    timeout = ?settings.shutdown_timeout,
                    "in-flight requests did not finish within the shutdown timeout; closing their connections"
                );
            }
        }
    }
    background.abort();
    tracing::info!("stopped");
    Ok(())
}

/// Raises the soft limit on open files to the hard limit (as Go's runtime does), and returns
/// `wanted`, lowered (with a warning) if the limit still leaves no room for that many
/// connections of `files_per_connection` files each (a proxy's holds two: the client's and the
/// upstream's) plus the server's own files, so that the connection cap, not `EMFILE`, is what
/// refuses connections.
pub fn fit_to_file_limit(wanted: usize, files_per_connection: u64) -> usize {
    const RESERVED: u64 = 256;
    let Some(limit) = raise_file_limit() else {
        return wanted;
    };
    let room = limit.saturating_sub(RESERVED).max(16) / files_per_connection.max(1);
    let room = usize::try_from(room).unwrap_or(usize::MAX);
    if room < wanted {
        tracing::warn!(
            max_connections = room,
            configured = wanted,
            open_file_limit = limit,
            "the open-file limit leaves room for fewer connections than configured"
        );
    }
    wanted.min(room)
}

/// The soft limit on open files, raised to the hard limit first where it is lower.
fn raise_file_limit() -> Option<u64> {
    rlimit::increase_nofile_limit(u64::MAX).ok()
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called (from within
/// the runtime), not when the future is first polled: a signal that arrives early is never left
/// to the default action, which would end the process without a graceful stop.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).ok();
    let mut interrupt = signal(SignalKind::interrupt()).ok();
    async move {
        let received = async |s: Option<&mut tokio::signal::unix::Signal>| match s {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending::<()>().await,
        };
        tokio::select! {
            () = received(terminate.as_mut()) => {},
            () = received(interrupt.as_mut()) => {},
        }
        tracing::info!("shutting down: finishing in-flight requests");
    }
}

const KEY_RELOAD: Duration = Duration::from_secs(1);

/// Loads the sessions ended within the retention window, follows the ends the store pushes
/// ([`AuthService::follow_pushed_ends`]), and runs the service's maintenance
/// ([`Maintenance::tick`]: the revocation view and the feed's journal kept fresh, unconfirmed
/// ends retried, the hourly purge) and keeps the key set fresh, in the background. Other
/// instances' ends are read at once where the store pushes them (PostgreSQL, Redis), and every
/// `settings.revocation_poll` everywhere, the safety net for a push that was lost.
async fn spawn_maintenance(state: AppState, key_dir: KeyDir, settings: &Settings) -> tokio::task::JoinHandle<()> {
    if let Err(e) = state.auth().catch_up_revocations(state.now()).await {
        tracing::warn!(
            error = crate::telemetry::error_chain(&e),
            "could not load ended sessions; retrying in the background"
        );
    }
    let (guest_retention, revocation_poll) = (settings.guest_retention, settings.revocation_poll);
    if let Some(watcher) = state.auth().feed_watcher() {
        let state = state.clone();
        tokio::spawn(async move { state.auth().follow_pushed_ends(watcher, state.clock()).await });
    }
    tokio::spawn(async move {
        let mut maintenance = Maintenance::new(guest_retention);
        let mut known_keys = key_dir.signing_key_files().unwrap_or_default();
        let mut revocation_tick = tokio::time::interval(revocation_poll);
        let mut key_tick = tokio::time::interval(KEY_RELOAD);
        loop {
            tokio::select! {
                // An end made here is published at once; ends made elsewhere as the store pushes
                // them, or by the next poll.
                () = state.auth().session_ended_here() => {}
                _ = revocation_tick.tick() => {}
                _ = key_tick.tick() => {
                    reload_keys(&state, &key_dir, &mut known_keys);
                    continue;
                }
            }
            maintenance.tick(state.auth(), state.now()).await;
        }
    })
}

fn reload_keys(state: &AppState, key_dir: &KeyDir, known: &mut Vec<String>) {
    let Ok(files) = key_dir.signing_key_files() else {
        return;
    };
    if files == *known {
        return;
    }
    match key_dir.load_keys() {
        Ok(keys) => {
            tracing::info!(kids = ?keys.kids(), "signing keys reloaded");
            state.auth().access_tokens().replace_keys(keys);
            *known = files;
        }
        Err(e) => tracing::warn!(error = format!("{e:#}"), "could not reload signing keys; keeping the current ones"),
    }
}
