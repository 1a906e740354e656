//! The machine's own limits, measured in the same run as the rows they bound, so that each of
//! those rows can be read as a ratio to its limit rather than as an absolute figure that moves
//! from machine to machine:
//!
//! - `ceiling-http` (bounds `me`): a trivial axum route answering a fixed copy of the body the
//!   benchmark's server gave to `GET /api/auth/me` in this run, at the same path. It runs in a
//!   process of its own ([`TrivialServer`], this binary's `serve-trivial` subcommand) on a
//!   multi-threaded tokio runtime with a worker per core, as `tessera serve` does, and takes the
//!   same load as `me`: the same connections, sending the same requests (bearer token included)
//!   from the same load generator. `me`'s ratio to it says how much of the HTTP floor tessera's
//!   own work costs.
//! - `ceiling-sqlite` (bounds `refresh` with sessions in SQLite): how fast one SQLite connection
//!   commits single-row updates one transaction at a time, in the benchmark's process. A fresh
//!   database file made by `tessera-store` (tessera's schema), connected to as tessera connects
//!   (`tessera_store::sqlite::connect_options`: WAL, tessera's durability setting,
//!   `synchronous = NORMAL` or `FULL` with `--sqlite-synchronous full`) through a pool of one
//!   connection like tessera's writer (`writer_pool_options`), and `--connections` tasks each
//!   rotating a session row of its own with the `UPDATE … WHERE id = ? AND generation = ? …
//!   RETURNING …` tessera sent per refresh before it committed rotations in groups: one
//!   statement, one autocommit transaction each. Group commit is what lets `refresh` beat it.
//! - `ceiling-argon2` (bounds `login`): argon2id with tessera's parameters (the defaults of
//!   `tessera_core::password::HashParams`, or `TESSERA_ARGON2_*` as the server reads them) hashed
//!   in a loop by one thread per core, each reusing its working memory as tessera's hashing
//!   threads do, in the benchmark's process.
//!
//! Each ceiling runs for `--warmup` plus `--duration` like a scenario, and its req/s are
//! updates or hashes per second; its latencies are those of one update or one hash.

use std::io::Read as _;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use argon2::{Algorithm, Argon2, Block, Params, Version};
use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::header::CONTENT_TYPE;
use axum::response::Response;
use axum::routing::get;
use axum::serve::ListenerExt as _;
use hyper::body::Bytes;
use sqlx::Row as _;
use sqlx::sqlite::SqlitePool;
use tessera_core::password::HashParams;
use tessera_store::sqlite::{SESSION_COLUMNS, SqliteStore};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::task::JoinSet;

use crate::BoxError;
use crate::api;
use crate::args::SERVE_TRIVIAL;
use crate::load::{Window, WorkerStats};
use crate::report::Summary;

/// How long the trivial server may take to say where it listens.
const START_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// ceiling-http

/// The HTTP ceiling's server: this binary's `serve-trivial` in a child process, killed when this
/// is dropped. It also exits by itself when the benchmark goes away (its stdin closes).
pub struct TrivialServer {
    _child: tokio::process::Child,
    addr: SocketAddr,
}

impl TrivialServer {
    /// Starts `tessera-bench serve-trivial --body BODY` and waits for its address.
    pub async fn start(body: &[u8]) -> Result<Self, BoxError> {
        let body = std::str::from_utf8(body).map_err(|_| "the /me body is not UTF-8")?;
        let exe = std::env::current_exe().map_err(|e| format!("cannot locate the tessera-bench binary: {e}"))?;
        let mut child = tokio::process::Command::new(exe)
            .args([SERVE_TRIVIAL, "--body", body])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start the trivial server: {e}"))?;
        let stdout = child.stdout.take().ok_or("the trivial server's stdout is not piped")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(START_TIMEOUT, lines.next_line())
            .await
            .map_err(|_| format!("the trivial server did not say where it listens within {START_TIMEOUT:?}"))??
            .ok_or("the trivial server exited before listening")?;
        let addr = line
            .strip_prefix("listening ")
            .and_then(|addr| addr.parse().ok())
            .ok_or_else(|| format!("unexpected first line from the trivial server: {line}"))?;
        Ok(Self { _child: child, addr })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// `tessera-bench serve-trivial --body JSON`: answers `GET /api/auth/me` with `body` as
/// `application/json` on a free port of 127.0.0.1, on a runtime like `tessera serve`'s (one worker
/// per core), with `TCP_NODELAY` as tessera sets it; and holds WebSockets open at [`SOCKET`]
/// (the gateway's upstream, `crate::gateway`), answering nothing until they close. Prints
/// `listening ADDR` on stdout, then serves until its stdin closes.
pub fn serve_trivial(body: String) -> Result<(), BoxError> {
    crate::raise_file_limit();
    // The parent holds the write end: it closes when the parent exits, however it exits.
    std::thread::Builder::new().name("stdin-watch".into()).spawn(|| {
        let _ = std::io::stdin().lock().read_to_end(&mut Vec::new());
        std::process::exit(0);
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        println!("listening {}", listener.local_addr()?);
        let body = Bytes::from(body);
        let app = Router::new()
            .route(
                api::ME,
                get(move || {
                    let body = body.clone();
                    async move { ([(CONTENT_TYPE, "application/json")], body) }
                }),
            )
            .route(SOCKET, get(hold_socket));
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, app).await?;
        Ok(())
    })
}

/// The trivial server's WebSocket route.
pub const SOCKET: &str = "/socket";

/// Keeps the socket open, reading (and dropping) what comes, until either side closes it.
async fn hold_socket(upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(|mut socket| async move { while let Some(Ok(_)) = socket.recv().await {} })
}

// ---------------------------------------------------------------------------------------------
// ceiling-sqlite

/// tessera's rotation before group commit: one session's generation moves on if it is still the
/// one the client presented, in one statement (its own autocommit transaction).
fn rotate_query() -> String {
    format!(
        "UPDATE sessions SET generation = generation + 1, last_used_at = ?1, expires_at = MIN(?2, absolute_expires_at) \
         WHERE id = ?3 AND generation = ?4 AND ended_at IS NULL AND expires_at > ?1 RETURNING {SESSION_COLUMNS}"
    )
}

/// Sessions in the table besides the rotated ones, as in a server that has been in use.
const OTHER_SESSIONS: usize = 1000;
const DAY_MS: i64 = 86_400_000;

/// One run of `ceiling-sqlite` with `tasks` tasks on a fresh database.
pub async fn sqlite(
    tasks: usize,
    synchronous_full: bool,
    warmup: Duration,
    duration: Duration,
) -> Result<Summary, BoxError> {
    let dir = tempfile::Builder::new()
        .prefix("tessera-bench-ceiling-")
        .tempdir()
        .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    // tessera's own schema, then one connection as tessera's writer connects.
    let path = dir.path().join("ceiling.db");
    drop(SqliteStore::open(&path, synchronous_full).await?);
    let pool = tessera_store::sqlite::writer_pool_options()
        .connect_with(tessera_store::sqlite::connect_options(&path, synchronous_full))
        .await?;
    let now = now_ms();
    let mut tx = pool.begin().await?;
    for i in 0..tasks + OTHER_SESSIONS {
        sqlx::query(&format!("INSERT INTO sessions ({SESSION_COLUMNS}) VALUES (?, ?, 0, ?, ?, ?, ?, NULL, ?, ?)"))
            .bind(&session_id(i)[..])
            .bind(&session_id(usize::MAX - i / 10)[..])
            .bind(now - DAY_MS)
            .bind(now - DAY_MS)
            .bind(now + 30 * DAY_MS)
            .bind(now + 90 * DAY_MS)
            .bind("tessera-bench")
            .bind("127.0.0.1")
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;

    let window = Window::starting_now(warmup, duration);
    let mut set = JoinSet::new();
    for i in 0..tasks {
        let pool = pool.clone();
        set.spawn(async move { rotate_loop(&pool, i, window).await });
    }
    let mut stats = Vec::with_capacity(tasks);
    while let Some(joined) = set.join_next().await {
        stats.push(joined?);
    }
    pool.close().await;
    Ok(Summary::merge(stats, duration))
}

/// Rotates session `i` back to back until the end of `window`.
async fn rotate_loop(pool: &SqlitePool, i: usize, window: Window) -> WorkerStats {
    let (sql, id) = (rotate_query(), session_id(i));
    let mut stats = WorkerStats { latencies: Vec::with_capacity(16 * 1024), ..WorkerStats::default() };
    let mut generation = 0i64;
    loop {
        let started = Instant::now();
        if started >= window.end {
            break;
        }
        let now = now_ms();
        let row = sqlx::query(&sql)
            .bind(now)
            .bind(now + 30 * DAY_MS)
            .bind(&id[..])
            .bind(generation)
            .fetch_optional(pool)
            .await;
        let failure = match row {
            Ok(Some(row)) => match row.try_get::<i64, _>("generation") {
                Ok(next) if next == generation + 1 => None,
                Ok(next) => Some(format!("generation {next} after {generation}")),
                Err(e) => Some(e.to_string()),
            },
            Ok(None) => Some("the session did not rotate".to_owned()),
            Err(e) => Some(e.to_string()),
        };
        if let Some(message) = failure {
            stats.errors += 1;
            stats.first_error.get_or_insert(format!("ceiling-sqlite: {message}"));
            stats.stopped_early = true;
            break;
        }
        generation += 1;
        if started >= window.measure_from {
            stats.latencies.push(micros(started.elapsed()));
        }
    }
    stats
}

/// A 16-byte id, spread over the key space like tessera's random ones.
fn session_id(i: usize) -> [u8; 16] {
    let x = (i as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835).rotate_left(64);
    x.to_be_bytes()
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

// ---------------------------------------------------------------------------------------------
// ceiling-argon2

/// tessera's argon2id parameters: the defaults, or what `TESSERA_ARGON2_*` tell the server.
pub fn argon2_params() -> HashParams {
    let defaults = HashParams::default();
    let var = |name: &str, default: u32| {
        std::env::var(name).ok().and_then(|value| value.trim().parse().ok()).unwrap_or(default)
    };
    HashParams {
        memory_kib: var("TESSERA_ARGON2_MEMORY_KIB", defaults.memory_kib),
        iterations: var("TESSERA_ARGON2_ITERATIONS", defaults.iterations),
        parallelism: var("TESSERA_ARGON2_PARALLELISM", defaults.parallelism),
    }
}

/// One run of `ceiling-argon2`: `threads` threads hashing back to back.
pub async fn argon2(threads: usize, warmup: Duration, duration: Duration) -> Result<Summary, BoxError> {
    let p = argon2_params();
    let params = Params::new(p.memory_kib, p.iterations, p.parallelism, Some(32))
        .map_err(|e| format!("invalid argon2 parameters: {e}"))?;
    let window = Window::starting_now(warmup, duration);
    let mut set = JoinSet::new();
    for i in 0..threads {
        let params = params.clone();
        set.spawn_blocking(move || hash_loop(&params, i, window));
    }
    let mut stats = Vec::with_capacity(threads);
    while let Some(joined) = set.join_next().await {
        stats.push(joined?);
    }
    Ok(Summary::merge(stats, duration))
}

/// Hashes until the end of `window` in one reused working buffer.
fn hash_loop(params: &Params, thread: usize, window: Window) -> WorkerStats {
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut memory = vec![Block::new(); params.block_count()];
    let mut out = [0u8; 32];
    let mut salt = [0u8; 16];
    salt[..8].copy_from_slice(&(thread as u64).to_be_bytes());
    let mut stats = WorkerStats::default();
    for n in 0u64.. {
        let started = Instant::now();
        if started >= window.end {
            break;
        }
        salt[8..].copy_from_slice(&n.to_be_bytes());
        if let Err(e) =
            argon2.hash_password_into_with_memory(b"correct horse battery staple", &salt, &mut out, &mut memory)
        {
            stats.errors += 1;
            stats.first_error.get_or_insert(format!("ceiling-argon2: {e}"));
            stats.stopped_early = true;
            break;
        }
        if started >= window.measure_from {
            stats.latencies.push(micros(started.elapsed()));
        }
    }
    stats
}

fn micros(elapsed: Duration) -> u32 {
    u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX)
}

// ---------------------------------------------------------------------------------------------
// The load generator's CPU

/// CPU time (user + system) of this whole process so far, threads that have exited included.
#[allow(unsafe_code)]
pub fn process_cpu() -> Option<Duration> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a `struct rusage` into the pointer it is given, which points to
    // one; RUSAGE_SELF is always valid.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: getrusage succeeded, so it filled the struct (and it was zeroed beforehand).
    let usage = unsafe { usage.assume_init() };
    let time = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).ok()?)
            .checked_add(Duration::from_micros(u64::try_from(t.tv_usec).ok()?))
    };
    time(usage.ru_utime)?.checked_add(time(usage.ru_stime)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_distinct() {
        let ids: std::collections::HashSet<[u8; 16]> = (0..10_000).map(session_id).collect();
        assert_eq!(ids.len(), 10_000);
    }

    #[test]
    fn this_process_has_used_some_cpu() {
        let mut x = 0u64;
        for i in 0..1_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(process_cpu().is_some_and(|cpu| cpu > Duration::ZERO));
    }

    #[tokio::test]
    async fn the_sqlite_ceiling_rotates_sessions() {
        let summary = sqlite(4, false, Duration::ZERO, Duration::from_millis(300)).await.unwrap();
        assert_eq!(summary.errors, 0, "{:?}", summary.first_error);
        assert!(summary.requests > 0);
    }
}
