//! The load generator: one task per connection, sending requests back to back until the end
//! of the run and recording the latency of each successful request of the measured window.

use std::time::{Duration, Instant};

use hyper::body::Bytes;
use hyper::header::HeaderValue;

use crate::BoxError;
use crate::api;
use crate::http::Conn;

/// What a connection sends.
pub enum Load {
    /// `GET path` with a shared access token: tessera's `/api/auth/me`, or a route of the
    /// benchmark's resource server.
    Get { path: &'static str, bearer: HeaderValue },
    /// `POST /api/auth/login` for the shared account.
    Login { body: Bytes },
    /// `POST /api/auth/refresh`, rotating this connection's own session.
    Refresh { token: String },
    /// `POST /oauth/introspect` of one token (`body` is `token=…`) as a registered client.
    Introspect { body: Bytes, client: HeaderValue },
}

/// One connection and what it sends.
pub struct Worker {
    conn: Conn,
    load: Load,
}

/// A failed request. A fatal one ends the connection's run.
struct Failure {
    message: String,
    fatal: bool,
}

impl From<BoxError> for Failure {
    /// Transport errors: the connection is unusable.
    fn from(e: BoxError) -> Self {
        Self { message: format!("transport error: {e}"), fatal: true }
    }
}

/// The time frame of a run: requests started before `measure_from` are warm-up.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub measure_from: Instant,
    pub end: Instant,
}

impl Window {
    pub fn starting_now(warmup: Duration, duration: Duration) -> Self {
        let measure_from = Instant::now() + warmup;
        Self { measure_from, end: measure_from + duration }
    }
}

/// What one connection observed.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Microseconds of each successful request started in the measured window.
    pub latencies: Vec<u32>,
    /// Failed requests over the whole run, warm-up included.
    pub errors: u64,
    pub first_error: Option<String>,
    /// The connection stopped before the end of the run.
    pub stopped_early: bool,
}

impl Worker {
    pub fn new(conn: Conn, load: Load) -> Self {
        Self { conn, load }
    }

    /// Sends requests until the end of `window`.
    pub async fn run(mut self, window: Window) -> WorkerStats {
        let mut stats = WorkerStats { latencies: Vec::with_capacity(64 * 1024), ..WorkerStats::default() };
        loop {
            let started = Instant::now();
            if started >= window.end {
                break;
            }
            match self.step().await {
                Ok(()) if started >= window.measure_from => {
                    stats.latencies.push(micros(started.elapsed()));
                }
                Ok(()) => {}
                Err(failure) => {
                    stats.errors += 1;
                    stats.first_error.get_or_insert(failure.message);
                    if failure.fatal {
                        stats.stopped_early = true;
                        break;
                    }
                }
            }
        }
        stats
    }

    /// One request.
    async fn step(&mut self) -> Result<(), Failure> {
        match &mut self.load {
            Load::Get { path, bearer } => {
                let reply = self.conn.get(path, bearer).await?;
                api::expect_success(reply).map(drop).map_err(recoverable)
            }
            Load::Login { body } => {
                let reply = self.conn.post_json(api::LOGIN, body.clone()).await?;
                api::expect_success(reply).map(drop).map_err(recoverable)
            }
            Load::Introspect { body, client } => {
                let reply = self.conn.post_form(api::INTROSPECT, body.clone(), client).await?;
                let active = reply.status.is_success() && reply.body.starts_with(br#"{"active":true"#);
                if active { Ok(()) } else { Err(recoverable(format!("not active: {}", reply.describe()))) }
            }
            Load::Refresh { token } => {
                let reply = self.conn.post_json(api::REFRESH, api::refresh_body(token)?).await?;
                // The old token is spent whatever happened: without a new one the session is over.
                *token = api::rotated_refresh_token(&reply).map_err(fatal)?;
                Ok(())
            }
        }
    }
}

fn recoverable(message: String) -> Failure {
    Failure { message, fatal: false }
}

fn fatal(message: String) -> Failure {
    Failure { message: format!("{message} (session lost; connection stopped)"), fatal: true }
}

fn micros(elapsed: Duration) -> u32 {
    u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX)
}
