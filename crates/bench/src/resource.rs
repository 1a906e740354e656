//! A small resource server inside the benchmark: an axum app on a free port of 127.0.0.1 with
//! two routes that answer the same fixed JSON body (about the size of tessera's `/me` answer):
//!
//! - `GET /bare`: no authentication at all;
//! - `GET /protected`: behind `tessera_verify`'s `verifier.require()` layer.
//!
//! It runs on a runtime of its own with one worker thread, which the verifier's background tasks
//! (the JWKS refresh and the revocation feed) share with the app, as in a real resource server.
//! The load generator has its own runtime (`--client-threads`, one by default) and tessera is
//! idle meanwhile, so `rs-bare` and `rs-layer` both give the app exactly one thread to itself,
//! and the difference between them is the layer's work on that thread and nothing else. On the
//! load generator's runtime the app would share a thread with the client, which would dilute the
//! layer's cost into the client's and make the ratio look better than it is.
//!
//! On a small machine the load generator's thread may saturate before the app's does, which
//! also pulls the throughput ratio towards 1. So [`CpuProbe`] reads the CPU time of the app's
//! thread as well: its CPU time per request is the layer's cost whichever side is the bottleneck.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use tessera_verify::Verifier;
use tokio::runtime::Runtime;
use tokio::sync::oneshot;

use crate::BoxError;
use crate::cpu::CpuProbe;

pub const BARE: &str = "/bare";
pub const PROTECTED: &str = "/protected";

/// The answer of both routes: a made-up profile shaped like tessera's `/me` envelope.
const BODY: &str = concat!(
    r#"{"success":true,"data":{"id":"0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b","email":"bench@example.com","#,
    r#""created_at":"2026-01-01T00:00:00Z","session_id":"0199a1b2-c3d4-7e5f-8a9b-6c7d8e9f0a1b"}}"#
);

/// How long the verifier may take to fetch the keys and sync the feed.
const VERIFIER_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the verifier finds tessera.
pub struct Issuer {
    /// The `iss` of the tokens.
    pub issuer: String,
    /// Where to fetch the JWKS and the feed, when not at `issuer`.
    pub tessera_url: Option<String>,
}

/// The running app; stopped (with its runtime) when dropped.
pub struct ResourceServer {
    addr: SocketAddr,
    cpu: CpuProbe,
    runtime: Option<Runtime>,
}

impl ResourceServer {
    /// Builds the verifier (keys fetched, feed synced) and starts serving.
    pub async fn start(name: &str, issuer: Issuer) -> Result<Self, BoxError> {
        // Thread names show as at most 15 bytes in /proc.
        let thread_name: String = format!("rs-{name}").chars().take(15).collect();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(thread_name.clone())
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the resource server's runtime: {e}"))?;
        let (tx, rx) = oneshot::channel();
        // Everything, the verifier's background tasks included, runs on the app's runtime.
        runtime.spawn(async move {
            let _ = tx.send(serve(issuer).await);
        });
        let cpu = CpuProbe::Threads(thread_name);
        let mut server = Self { addr: SocketAddr::from(([127, 0, 0, 1], 0)), cpu, runtime: Some(runtime) };
        server.addr = rx.await.map_err(|_| "the resource server stopped before it started")??;
        Ok(server)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn cpu_probe(&self) -> CpuProbe {
        self.cpu.clone()
    }
}

impl Drop for ResourceServer {
    fn drop(&mut self) {
        // Dropping a runtime inside another one would block it; this does not.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Builds the verifier, binds the listener and spawns the app; returns its address.
async fn serve(issuer: Issuer) -> Result<SocketAddr, BoxError> {
    let mut builder = Verifier::builder(&issuer.issuer).startup_timeout(VERIFIER_TIMEOUT);
    if let Some(url) = &issuer.tessera_url {
        builder = builder.tessera_url(url);
    }
    let feed = issuer.tessera_url.as_deref().unwrap_or(&issuer.issuer);
    let verifier = builder.build().await.map_err(|e| format!("the verifier (fed by {feed}) did not start: {e}"))?;
    let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
        .await
        .map_err(|e| format!("the resource server cannot bind 127.0.0.1: {e}"))?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router(&verifier)).await {
            eprintln!("tessera-bench: the resource server stopped: {e}");
        }
    });
    Ok(addr)
}

fn router(verifier: &Verifier) -> Router {
    Router::new().route(BARE, get(profile)).route(PROTECTED, get(profile).layer(verifier.require()))
}

async fn profile() -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], BODY)
}
