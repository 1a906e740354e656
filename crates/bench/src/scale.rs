//! `scale`: docs/benchmarks.md's scale row — with 1 000 000 stored sessions, refresh's p99 no worse than
//! twice that with 1 000.
//!
//! For each store (SQLite, and Redis when `TESSERA_TEST_REDIS_URL` names one), two fresh data
//! directories (or Redis key prefixes) are filled, one with 1 000 sessions and one with
//! `--scale-sessions`, and a fresh server is started on each once its fill is done. The two
//! servers then take turns under the `refresh` load, as in the `refresh` scenario
//! (`--connections` connections, each rotating a session of its own, `--duration` after
//! `--warmup`), `--runs` rounds, so that a change in the machine's load between rounds hits both
//! sizes alike. The row's ratio is the median over the rounds of p99(large) / p99(small); the
//! table shows each size's median run by req/s, its fill time and its server's peak memory.
//!
//! The stored sessions are written with the store API the server itself uses (`tessera-store`),
//! so they have the shape of the server's: SQLite rows through `SqliteStore::create_sessions`
//! (the server's insert, 10 000 to a transaction), Redis hashes and user indexes through
//! `RedisStore::create_session`, many at once over one multiplexed connection. They are active
//! sessions of made-up ages up to 30 days, 10 to a user, whose users exist (with a hash nobody
//! can log in with). A Redis prefix is deleted afterwards (SCAN over that prefix only).
//!
//! Filling a million sessions and measuring takes minutes (several on a 2-core machine), so
//! `scale` runs only when `--only` names it.
//!
//! (Over 400 lines: filling a store with a million sessions, for each backend, and measuring it
//! are one scenario.)

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tessera_core::account::User;
use tessera_core::session::Session;
use tessera_core::store::{SessionStore, UserStore};
use tessera_core::{SessionId, Timestamp, UserId};
use tessera_store::redis::RedisStore;
use tessera_store::sqlite::SqliteStore;
use tokio::task::JoinSet;

use crate::BoxError;
use crate::report::{self, Summary, Target};
use crate::scenario::{Group, Kind, Scenario, Setup};
use crate::server::Server;

pub const SCALE: &str = "scale";
/// The small size, the row's baseline.
pub const SMALL: u64 = 1_000;
/// The most refresh's p99 may grow from [`SMALL`] sessions to the large size.
const MAX_P99_RATIO: f64 = 2.0;
const SESSIONS_PER_USER: u64 = 10;
/// Sessions per SQLite transaction.
const SQLITE_BATCH: u64 = 10_000;
/// Redis sessions written at once (their commands share one multiplexed connection).
const REDIS_WRITERS: u64 = 64;
const DAY_MS: i64 = 86_400_000;
/// A well-formed argon2id hash that matches no password anyone sends.
const NO_PASSWORD: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2NhbGVzY2FsZQ$bm8gcGFzc3dvcmQgbWF0Y2hlcyB0aGlzIGhhc2g";

/// Where the sessions live.
#[derive(Debug, Clone)]
pub enum Store {
    Sqlite,
    Redis { url: String },
}

impl Store {
    fn name(&self) -> &'static str {
        match self {
            Self::Sqlite => "SQLite",
            Self::Redis { .. } => "Redis",
        }
    }
}

/// One row: a store filled with `sessions`, and the refresh load on it.
pub struct Measurement {
    pub store: &'static str,
    pub sessions: u64,
    pub fill: Duration,
    /// The median run by req/s.
    pub summary: Summary,
    /// Failed requests over all runs.
    pub errors: u64,
    pub peak_rss_kib: Option<u64>,
    /// For the large size: the median over the runs of its p99 over the small size's p99 in the
    /// same round (the two took turns).
    pub p99_ratio: Option<f64>,
}

/// Measures every store at both sizes; rows in that order.
pub fn run(runtime: &tokio::runtime::Runtime, args: &crate::args::Args) -> Result<Vec<Measurement>, BoxError> {
    let mut stores = vec![Store::Sqlite];
    match std::env::var(crate::REDIS_URL_VAR).ok().filter(|url| !url.is_empty()) {
        Some(url) => stores.push(Store::Redis { url }),
        None => eprintln!(
            "tessera-bench: {} is not set: {SCALE} measures SQLite only (scripts/bench starts a throwaway Redis)",
            crate::REDIS_URL_VAR
        ),
    }
    let mut rows = Vec::new();
    for store in &stores {
        rows.extend(measure(runtime, args, store)?);
    }
    Ok(rows)
}

/// A server on a store filled with `sessions`.
struct Filled {
    sessions: u64,
    fill: Duration,
    server: Server,
    /// The Redis key prefix, to delete afterwards.
    prefix: Option<(String, String)>,
}

impl Drop for Filled {
    fn drop(&mut self) {
        // The server first (it is a field: dropped after this), then its keys: a stopped server
        // writes none. Killing it here keeps the order without a second runtime.
        if let Some((url, prefix)) = &self.prefix {
            self.server.kill();
            if let Err(e) = remove_prefix_blocking(url, prefix) {
                eprintln!("tessera-bench: could not delete the Redis keys under {prefix}: {e}");
            }
        }
    }
}

/// Both sizes on `store`: fills both, starts a server on each, and has them take turns run by
/// run, so that a change in the machine's load between runs (another build starting) hits
/// both sizes alike.
fn measure(
    runtime: &tokio::runtime::Runtime,
    args: &crate::args::Args,
    store: &Store,
) -> Result<Vec<Measurement>, BoxError> {
    let filled =
        [fill_and_start(runtime, args, store, SMALL)?, fill_and_start(runtime, args, store, args.scale_sessions)?];
    let scenario = Scenario {
        name: SCALE,
        groups: vec![Group {
            label: SCALE,
            kind: Kind::Refresh,
            connections: args.connections,
            target: Target::None,
            ceiling: None,
        }],
        bounds: None,
    };
    let setups = runtime.block_on(async {
        let mut setups = Vec::new();
        for f in &filled {
            setups.push(Setup::new(f.server.addr()).await?);
        }
        Ok::<_, BoxError>(setups)
    })?;
    let mut runs: [Vec<Summary>; 2] = [Vec::new(), Vec::new()];
    for run in 1..=args.runs {
        // Alternate which size goes first.
        let order = if run % 2 == 1 { [0, 1] } else { [1, 0] };
        for i in order {
            let summaries = runtime.block_on(setups[i].run_once(&scenario, args.warmup, args.duration))?;
            let s = summaries.into_iter().next().ok_or("a run without its summary")?;
            eprintln!(
                "{SCALE} {} {} run {run}/{}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
                store.name(),
                filled[i].sessions,
                args.runs,
                s.rps,
                s.p50_ms,
                s.p99_ms,
                s.errors
            );
            if let Some(error) = &s.first_error {
                eprintln!("  first error: {error}");
            }
            runs[i].push(s);
        }
    }
    let mut ratios: Vec<f64> = runs[1]
        .iter()
        .zip(&runs[0])
        .filter(|(_, small)| small.p99_ms > 0.0)
        .map(|(l, s)| l.p99_ms / s.p99_ms)
        .collect();
    ratios.sort_by(f64::total_cmp);
    let p99_ratio = ratios.get(ratios.len() / 2).copied();
    let rows = filled
        .iter()
        .zip(runs)
        .enumerate()
        .map(|(i, (f, runs))| {
            let errors = runs.iter().map(|s| s.errors).sum();
            let as_groups: Vec<Vec<Summary>> = runs.iter().map(|s| vec![s.clone()]).collect();
            let summary = runs[report::median_run(&as_groups)].clone();
            Measurement {
                store: store.name(),
                sessions: f.sessions,
                fill: f.fill,
                summary,
                errors,
                peak_rss_kib: f.server.peak_rss_kib().inspect_err(|e| eprintln!("tessera-bench: {e}")).ok(),
                p99_ratio: (i == 1).then_some(p99_ratio).flatten(),
            }
        })
        .collect();
    Ok(rows)
}

/// Fills a fresh data directory (and Redis prefix) with `sessions` sessions, then starts a
/// server on it.
fn fill_and_start(
    runtime: &tokio::runtime::Runtime,
    args: &crate::args::Args,
    store: &Store,
    sessions: u64,
) -> Result<Filled, BoxError> {
    let dir = tempfile::Builder::new()
        .prefix("tessera-bench-scale-")
        .tempdir()
        .map_err(|e| format!("cannot create a temporary data directory: {e}"))?;
    let db = dir.path().join("tessera.db");
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let prefix = format!("tessera-bench-scale-{}-{nanos}", std::process::id());
    eprintln!("tessera-bench: {SCALE}: filling {} with {sessions} sessions", store.name());
    let started = Instant::now();
    let filled = runtime.block_on(fill(store, &db, &prefix, sessions));
    let fill = started.elapsed();
    if let (Err(_), Store::Redis { url }) = (&filled, store) {
        let _ = remove_prefix_blocking(url, &prefix);
    }
    filled?;
    eprintln!("tessera-bench: {SCALE}: filled in {:.1} s", fill.as_secs_f64());

    let db_url = format!("sqlite://{}", db.display());
    let mut flags = args.server_flags();
    flags.extend(["--database-url".to_owned(), db_url.clone(), "--session-store-url".to_owned()]);
    match store {
        Store::Sqlite => flags.push(db_url),
        Store::Redis { url } => flags.extend([url.clone(), "--redis-key-prefix".to_owned(), prefix.clone()]),
    }
    let name = format!("{} {sessions}", store.name());
    let server = Server::start_in(&args.server_bin, &name, dir, &flags);
    let prefix = match store {
        Store::Sqlite => None,
        Store::Redis { url } => Some((url.clone(), prefix)),
    };
    match server {
        Ok(server) => Ok(Filled { sessions, fill, server, prefix }),
        Err(e) => {
            if let Some((url, prefix)) = &prefix {
                let _ = remove_prefix_blocking(url, prefix);
            }
            Err(e)
        }
    }
}

/// Writes `count` active sessions, and their users, where a server on `db` (and, for Redis,
/// `prefix`) finds them.
async fn fill(store: &Store, db: &Path, prefix: &str, count: u64) -> Result<(), BoxError> {
    let sql = SqliteStore::open(db, false).await?;
    let now = Timestamp::now();
    let users: Vec<UserId> = (0..count.div_ceil(SESSIONS_PER_USER)).map(|_| UserId::generate()).collect();
    for (i, &id) in users.iter().enumerate() {
        let email = format!("scale-{i}@example.com");
        let user = User {
            id,
            email: Some(email.clone()),
            email_key: Some(email),
            password_hash: Some(NO_PASSWORD.into()),
            is_anonymous: false,
            ..User::guest(now)
        };
        sql.create_user(&user).await?;
    }
    eprintln!("tessera-bench: {SCALE}: {} users stored", users.len());
    match store {
        Store::Sqlite => {
            for start in (0..count).step_by(SQLITE_BATCH as usize) {
                let batch: Vec<Session> =
                    (start..count.min(start + SQLITE_BATCH)).map(|i| session(i, &users, now)).collect();
                sql.create_sessions(&batch).await?;
            }
        }
        Store::Redis { url } => {
            let redis = RedisStore::connect(url, prefix).await?;
            let users = std::sync::Arc::new(users);
            let mut writers = JoinSet::new();
            for first in 0..REDIS_WRITERS.min(count) {
                let (redis, users) = (redis.clone(), users.clone());
                writers.spawn(async move {
                    for i in (first..count).step_by(REDIS_WRITERS as usize) {
                        redis.create_session(&session(i, &users, now)).await?;
                    }
                    Ok::<_, tessera_core::store::StoreError>(())
                });
            }
            while let Some(done) = writers.join_next().await {
                done??;
            }
        }
    }
    Ok(())
}

/// The `i`th stored session: a user's, as a login made it some days ago and refreshes since
/// have kept it (default lifetimes: refresh 30 days, absolute 90), active now.
fn session(i: u64, users: &[UserId], now: Timestamp) -> Session {
    let mut bits = mix(i);
    let mut below = |n: i64| {
        bits = mix(bits);
        i64::try_from(bits % n.unsigned_abs()).unwrap_or(0)
    };
    let created = now.as_millis() - below(30 * DAY_MS);
    let last_used = created + below(now.as_millis() - created + 1);
    let absolute = created + 90 * DAY_MS;
    let agents = [
        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
        "tessera-client/0.1.0",
    ];
    Session {
        id: SessionId::generate(),
        user_id: users[usize::try_from(i % users.len() as u64).unwrap_or(0)],
        generation: u64::try_from(below(500)).unwrap_or(0),
        created_at: Timestamp::from_millis(created),
        last_used_at: Timestamp::from_millis(last_used),
        expires_at: Timestamp::from_millis((last_used + 30 * DAY_MS).min(absolute)),
        absolute_expires_at: Timestamp::from_millis(absolute),
        ended_at: None,
        user_agent: Some(agents[usize::try_from(below(3)).unwrap_or(0)].to_owned()),
        ip: Some(format!("10.{}.{}.{}", below(256), below(256), below(256))),
    }
}

/// splitmix64: well-spread numbers from a counter, without a dependency.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Deletes every key under `prefix` (the benchmark's own, nothing else), on a runtime of its
/// own (it runs from `Drop`).
fn remove_prefix_blocking(url: &str, prefix: &str) -> Result<(), BoxError> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(remove_prefix(url, prefix))
}

async fn remove_prefix(url: &str, prefix: &str) -> Result<(), BoxError> {
    let client = redis::Client::open(url)?;
    let mut scan = client.get_multiplexed_async_connection().await?;
    let mut unlink = scan.clone();
    let mut keys: Vec<String> = Vec::new();
    let mut iter: redis::AsyncIter<String> = redis::AsyncCommands::scan_match(&mut scan, format!("{prefix}:*")).await?;
    while let Some(key) = iter.next_item().await {
        keys.push(key?);
    }
    for chunk in keys.chunks(1000) {
        let _: u64 = redis::cmd("UNLINK").arg(chunk).query_async(&mut unlink).await?;
    }
    Ok(())
}

/// The scale section of the report.
pub fn markdown(args: &crate::args::Args, rows: &[Measurement]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "## tessera benchmark: refresh with many stored sessions (`{SCALE}`)\n");
    let _ = writeln!(out, "- machine: {}", report::machine());
    let _ = writeln!(
        out,
        "- per store, two `tessera serve` on stores filled beforehand with {SMALL} and with {} active sessions \
         (10 to a user, written with tessera-store), loaded in turns with `POST /api/auth/refresh` on {} \
         connections, each rotating its own session: {} run(s) of {} s after {} s of warm-up each; the \
         median run by req/s is shown",
        args.scale_sessions,
        args.connections,
        args.runs,
        args.duration.as_secs(),
        args.warmup.as_secs()
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| sessions in | stored sessions | fill s | requests | req/s | p50 ms | p99 ms | max ms | errors | server peak MiB |"
    );
    let _ = writeln!(out, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for row in rows {
        let s = &row.summary;
        let rss = row.peak_rss_kib.map_or_else(|| "?".to_owned(), |kib| format!("{:.1}", kib as f64 / 1024.0));
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {rss} |",
            row.store,
            row.sessions,
            row.fill.as_secs_f64(),
            s.requests,
            s.rps,
            s.p50_ms,
            s.p99_ms,
            s.max_ms,
            row.errors
        );
    }
    let _ = writeln!(out);
    for pair in rows.chunks(2) {
        let [small, large] = pair else { continue };
        let Some(ratio) = large.p99_ratio else { continue };
        let clean = small.errors == 0 && large.errors == 0;
        let _ = writeln!(
            out,
            "{}: refresh p99 with {} sessions / with {}: {ratio:.2}, median of the runs' ratios \
             (target ≤ {MAX_P99_RATIO}: {}); req/s of the median runs {:.2}×",
            large.store,
            large.sessions,
            small.sessions,
            report::verdict(Some(clean && ratio <= MAX_P99_RATIO)),
            if small.summary.rps > 0.0 { large.summary.rps / small.summary.rps } else { 0.0 }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_sessions_are_active_and_consistent() {
        let now = Timestamp::now();
        let users: Vec<UserId> = (0..100).map(|_| UserId::generate()).collect();
        for i in 0..10_000 {
            let s = session(i, &users, now);
            assert!(s.is_active(now), "{s:?}");
            assert!(s.created_at <= s.last_used_at && s.last_used_at <= now, "{s:?}");
            assert!(s.expires_at <= s.absolute_expires_at, "{s:?}");
            assert!(now.as_millis() - s.created_at.as_millis() < 30 * DAY_MS, "{s:?}");
        }
    }
}
