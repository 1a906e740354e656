//! `tessera-todos`: the todo API of the lesson on refreshing and signing out, a resource server
//! that trusts tessera's access tokens through `tessera-verify`.
//!
//! ```text
//! tessera-todos --listen 127.0.0.1:8081 --issuer http://127.0.0.1:8080 [--audience tessera]
//! ```
//!
//! - `GET /todos`: the caller's todos, a JSON array; `POST /todos` `{"title": "…"}` → `201`.
//!   Todos live in memory; each user sees only their own. No valid token → `401` (RFC 6750).
//! - `GET /todos/ws`: a WebSocket that pushes the caller's changes (see [`socket`]).
//! - `GET /`: the app's page, which signs in with tessera through tessera.js.
//! - `GET /healthz`, `GET /metrics` (the verifier's health in Prometheus text).

mod page;
mod socket;
mod todos;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::routing::get;
use clap::{Parser, ValueEnum};
use tessera_verify::duration::parse_duration;
use tessera_verify::{FeedLossPolicy, Verifier};

use crate::todos::Todos;

#[derive(Debug, Parser)]
#[command(name = "tessera-todos", version, about = "A todo API whose users sign in with tessera")]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "TODOS_LISTEN", default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    /// tessera's issuer URL (its `--issuer`, by default its address, e.g. http://127.0.0.1:8080).
    #[arg(long, env = "TODOS_ISSUER")]
    issuer: String,
    /// Where to reach tessera when not at the issuer URL (e.g. one instance of several behind a
    /// shared issuer name): the JWKS and the revocation feed are fetched from there.
    #[arg(long, env = "TODOS_TESSERA_URL")]
    tessera_url: Option<String>,
    /// Where browsers reach tessera, for the page's sign-in and its tessera.js
    /// [default: --tessera-url, else the issuer]. tessera must list this app's origin in its
    /// `--allowed-origins`.
    #[arg(long, env = "TODOS_TESSERA_PUBLIC_URL")]
    tessera_public_url: Option<String>,
    /// The audience tokens must carry.
    #[arg(long, env = "TODOS_AUDIENCE", default_value = "tessera")]
    audience: String,
    /// What to do when tessera's revocation feed has been silent past --max-feed-silence.
    #[arg(long, value_enum, default_value = "fail-closed")]
    on_feed_loss: FeedLoss,
    /// How long the revocation feed may be silent (e.g. 30s, 2m) before --on-feed-loss applies.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    max_feed_silence: Duration,
    /// How long to wait at start for tessera's keys and revocation feed before giving up.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    startup_timeout: Duration,
    /// Log lines as JSON objects (the default is text).
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FeedLoss {
    FailClosed,
    FailOpen,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// What every handler shares.
#[derive(Clone)]
pub struct App {
    pub todos: Arc<Todos>,
    pub verifier: Verifier,
    pub tessera_public_url: Arc<str>,
}

pub fn router(app: App) -> Router {
    Router::new()
        .route("/", get(page::index))
        .route("/todos.js", get(page::script))
        .route("/todos.css", get(page::style))
        .route("/todos", get(todos::list).post(todos::add))
        .route("/todos/ws", get(socket::upgrade))
        .route("/healthz", get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }))
        .route("/metrics", get(metrics))
        .layer(app.verifier.extension())
        .with_state(app)
}

async fn metrics(axum::extract::State(app): axum::extract::State<App>) -> String {
    let s = app.verifier.stats();
    format!(
        "# TYPE tessera_verify_feed_connected gauge\ntessera_verify_feed_connected {}\n\
         # TYPE tessera_verify_feed_silence_seconds gauge\ntessera_verify_feed_silence_seconds {}\n\
         # TYPE tessera_verify_feed_stale gauge\ntessera_verify_feed_stale {}\n\
         # TYPE tessera_verify_feed_reconnects_total counter\ntessera_verify_feed_reconnects_total {}\n\
         # TYPE tessera_verify_ended_sessions gauge\ntessera_verify_ended_sessions {}\n\
         # TYPE tessera_verify_jwks_fetches_total counter\ntessera_verify_jwks_fetches_total {}\n",
        u8::from(s.feed_connected),
        s.feed_silence.map_or(-1.0, |d| d.as_secs_f64()),
        u8::from(s.feed_stale),
        s.feed_reconnects,
        s.ended_sessions,
        s.jwks_fetches,
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stdout);
    match args.log_format {
        LogFormat::Json => logs.json().flatten_event(true).init(),
        LogFormat::Text => logs.init(),
    }
    let policy = match args.on_feed_loss {
        FeedLoss::FailClosed => FeedLossPolicy::FailClosed,
        FeedLoss::FailOpen => FeedLossPolicy::FailOpen,
    };
    let mut verifier = Verifier::builder(&args.issuer);
    if let Some(url) = &args.tessera_url {
        verifier = verifier.tessera_url(url);
    }
    let verifier = verifier
        .audience(&args.audience)
        .on_feed_loss(policy)
        .max_feed_silence(args.max_feed_silence)
        .startup_timeout(args.startup_timeout)
        .build()
        .await
        .with_context(|| format!("cannot trust tokens of {}", args.issuer))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(addr = %addr, issuer = %args.issuer, "listening");
    let public = args.tessera_public_url.or(args.tessera_url).unwrap_or_else(|| args.issuer.clone());
    let app = App { todos: Arc::new(Todos::default()), verifier, tessera_public_url: public.into() };
    axum::serve(listener, router(app)).with_graceful_shutdown(shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = terminate => {},
    }
}
