//! Statistics of a run, the targets of each row, and the Markdown report.
//!
//! (About 400 lines: the statistics and the table they fill; the machine's description is
//! `machine.rs`, the tests `tests.rs`.)

use std::fmt::Write as _;
use std::time::Duration;

use tessera_core::password::HashParams;

use crate::load::WorkerStats;
use crate::scenario::{CEILING_ARGON2, CEILING_HTTP, CEILING_SQLITE, Ceiling};

mod gateway;
mod machine;

pub use machine::{Machine, machine, store_kinds};

/// What the spec asks of a row of the table.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// At least `min_rps` requests per second with a p99 of at most `max_p99_ms`.
    Throughput { min_rps: f64, max_p99_ms: f64 },
    /// A p99 of at most `max_ms`, whatever the throughput.
    P99 { max_ms: f64 },
    /// At least `min` times the requests per second of the row labelled `baseline`.
    Ratio { baseline: &'static str, min: f64 },
    /// A delay measured once per sample rather than a load: a p99 of at most `max_p99_ms`, and
    /// no requests per second to speak of.
    Delay { max_p99_ms: f64 },
    /// No target of its own.
    None,
}

/// The merged result of a group of connections in one run.
#[derive(Debug, Clone)]
pub struct Summary {
    pub requests: usize,
    pub errors: u64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub first_error: Option<String>,
    /// Connections that stopped before the end of the run.
    pub stopped: usize,
    /// CPU time of the resource server's thread per request of the measured window, in
    /// microseconds (`rs-*` rows only).
    pub cpu_us_per_request: Option<f64>,
    /// CPU time of the `tessera serve` process per request of the measured window, in
    /// microseconds (rows of one kind of request to tessera).
    pub server_cpu_us: Option<f64>,
    /// CPU time of the Redis server holding the sessions per request, in microseconds (when
    /// sessions are in Redis).
    pub store_cpu_us: Option<f64>,
    /// The load generator's CPU time over the measured window as a share of the machine's
    /// (all cores): the benchmark process's, less the resource server's thread (HTTP rows only).
    pub client_cpu: Option<f64>,
}

impl Summary {
    /// Merges the stats of a group's connections measured over `duration`.
    pub fn merge(stats: Vec<WorkerStats>, duration: Duration) -> Self {
        let stopped = stats.iter().filter(|s| s.stopped_early).count();
        let errors = stats.iter().map(|s| s.errors).sum();
        let first_error = stats.iter().find_map(|s| s.first_error.clone());
        let latencies: Vec<u32> = stats.into_iter().flat_map(|s| s.latencies).collect();
        let rps = latencies.len() as f64 / duration.as_secs_f64();
        Self { stopped, ..Self::of_samples(latencies, errors, first_error, rps) }
    }

    /// The summary of `samples` (microseconds) and `errors` failed attempts.
    pub fn of_samples(mut samples: Vec<u32>, errors: u64, first_error: Option<String>, rps: f64) -> Self {
        samples.sort_unstable();
        Self {
            requests: samples.len(),
            errors,
            rps,
            p50_ms: percentile_ms(&samples, 50.0),
            p99_ms: percentile_ms(&samples, 99.0),
            max_ms: samples.last().map_or(0.0, |&us| ms(us)),
            first_error,
            stopped: 0,
            cpu_us_per_request: None,
            server_cpu_us: None,
            store_cpu_us: None,
            client_cpu: None,
        }
    }
}

/// Nearest-rank percentile of sorted microseconds, in milliseconds.
fn percentile_ms(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    ms(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn ms(us: u32) -> f64 {
    f64::from(us) / 1000.0
}

/// Index of the median run by total requests per second; `runs` holds each run's groups.
pub fn median_run(runs: &[Vec<Summary>]) -> usize {
    let total = |i: usize| runs[i].iter().map(|s| s.rps).sum::<f64>();
    let mut order: Vec<usize> = (0..runs.len()).collect();
    order.sort_by(|&a, &b| total(a).total_cmp(&total(b)));
    order[order.len() / 2]
}

/// One row of the table.
pub struct Row {
    pub label: String,
    pub connections: usize,
    pub target: Target,
    pub summary: Summary,
    /// For a [`Target::Ratio`] row measured in turns with its baseline: the median over the runs
    /// of its req/s over the baseline's in the same round, which a change in the machine's load
    /// between rounds does not skew as it does the ratio of the two median runs.
    pub ratio: Option<f64>,
    /// The row's limit, measured in the same run (see `crate::ceiling`).
    pub ceiling: Option<Ceiling>,
    /// The row's req/s over its ceiling's: the median over the runs of the two's ratio in the
    /// same round (they took turns); `None` when the ceiling did not run.
    pub ceiling_ratio: Option<f64>,
}

/// The median over rounds of `runs[i]` req/s over `baseline[i]` req/s (each run's groups summed).
pub fn paired_ratio(runs: &[Vec<Summary>], baseline: &[Vec<Summary>]) -> Option<f64> {
    let total = |run: &[Summary]| run.iter().map(|s| s.rps).sum::<f64>();
    let mut ratios: Vec<f64> = runs
        .iter()
        .zip(baseline)
        .filter(|(_, base)| total(base) > 0.0)
        .map(|(run, base)| total(run) / total(base))
        .collect();
    ratios.sort_by(f64::total_cmp);
    ratios.get(ratios.len() / 2).copied()
}

/// What the table needs to know besides its rows.
pub struct Context {
    pub machine: Machine,
    pub duration: Duration,
    pub warmup: Duration,
    pub runs: usize,
    pub connections: usize,
    pub client_threads: usize,
    pub peak_rss_kib: Option<u64>,
    /// The poll interval of the logout-latency rows, in milliseconds.
    pub poll_ms: u64,
    /// `--sqlite-synchronous full`.
    pub sqlite_full: bool,
    /// The size of the body the trivial server answered (that of `/me` in this run).
    pub trivial_body_bytes: Option<usize>,
    pub argon2: HashParams,
    /// The gateway's memory with idle sockets, when it was measured.
    pub idle_sockets: Option<crate::gateway::IdleSockets>,
}

pub const MEMORY_TARGET_MIB: f64 = 128.0;
/// Above this share of the machine's CPU time the load generator, rather than the server, may
/// be what limits a row (on two cores: nearly all of one).
pub const CLIENT_CPU_WARNING: f64 = 0.45;

impl Context {
    fn describe(target: Target) -> String {
        match target {
            Target::Ratio { baseline, min } => format!("≥ {min:.2} × {baseline} req/s"),
            Target::Delay { max_p99_ms } => format!("p99 ≤ {max_p99_ms} ms"),
            Target::Throughput { min_rps, max_p99_ms } => {
                format!("≥ {min_rps:.0} req/s, p99 ≤ {max_p99_ms} ms")
            }
            Target::P99 { max_ms } => format!("p99 ≤ {max_ms} ms"),
            Target::None => "—".into(),
        }
    }

    /// Whether `s` meets `target`; `rows` are the whole table (for ratios); `None`: no target,
    /// or nothing to compare with.
    fn met(row: &Row, rows: &[Row]) -> Option<bool> {
        let s = &row.summary;
        let clean = s.errors == 0;
        match row.target {
            Target::Throughput { min_rps, max_p99_ms } => Some(clean && s.rps >= min_rps && s.p99_ms <= max_p99_ms),
            Target::P99 { max_ms } | Target::Delay { max_p99_ms: max_ms } => Some(clean && s.p99_ms <= max_ms),
            Target::Ratio { baseline, min } => {
                let base = rows.iter().find(|r| r.label == baseline)?;
                Some(clean && base.summary.errors == 0 && row_ratio(row, base)? >= min)
            }
            Target::None => None,
        }
    }

    /// Lines saying how each ceiling in `rows` was measured.
    fn ceiling_lines(&self, rows: &[Row]) -> Vec<String> {
        let present = |name: &str| rows.iter().any(|r| r.label == name);
        let synchronous = if self.sqlite_full { "FULL" } else { "NORMAL" };
        let mut lines = Vec::new();
        if present(CEILING_HTTP) {
            let size = self.trivial_body_bytes.map_or_else(String::new, |n| format!("{n}-byte "));
            lines.push(format!(
                "  - `{CEILING_HTTP}` (for `me`): a trivial axum route in a process of its own (`tessera-bench \
                 serve-trivial`, a tokio runtime with a worker per core as tessera's) answering a fixed copy of \
                 this run's {size}`/api/auth/me` body, to the same {} connections sending the same requests",
                self.connections
            ));
        }
        if present(CEILING_SQLITE) {
            lines.push(format!(
                "  - `{CEILING_SQLITE}` (for `refresh` with sessions in SQLite): one SQLite connection (sqlx, WAL, \
                 synchronous={synchronous}) committing single-row `UPDATE sessions … WHERE id = ? AND generation = ?` \
                 on tessera's sessions table, each its own autocommit transaction, fed by {} tasks; in the \
                 benchmark's process",
                self.connections
            ));
        }
        if present(CEILING_ARGON2) {
            let p = &self.argon2;
            lines.push(format!(
                "  - `{CEILING_ARGON2}` (for `login`): argon2id (m={} KiB, t={}, p={}) hashed back to back on {} \
                 thread(s), one per core; in the benchmark's process",
                p.memory_kib, p.iterations, p.parallelism, self.machine.cores
            ));
        }
        if !lines.is_empty() {
            lines.insert(
                0,
                "- ceilings, measured in this run and taking turns with the row they bound, run by run; \
                 \"ratio to ceiling\" is the median over the runs of the row's req/s over its ceiling's:"
                    .to_owned(),
            );
        }
        lines
    }
}

/// The Markdown report: machine, settings, the table and the server's memory.
pub fn markdown(ctx: &Context, rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## tessera benchmark\n");
    let _ = writeln!(out, "- machine: {}", ctx.machine);
    let _ = writeln!(
        out,
        "- each scenario: {} run(s) of {} s after {} s of warm-up; the median run by req/s is shown",
        ctx.runs,
        ctx.duration.as_secs(),
        ctx.warmup.as_secs()
    );
    let _ = writeln!(
        out,
        "- server: `tessera serve` ({}, SQLite synchronous={}, login rate limits off) on 127.0.0.1, same machine \
         as the load generator",
        stores(),
        if ctx.sqlite_full { "FULL" } else { "NORMAL" }
    );
    let _ = writeln!(
        out,
        "- load generator: the benchmark's process, {} thread(s); \"client CPU\" is its CPU time over the measured \
         window (getrusage, less the resource server's thread on rs-* rows) as a share of the machine's ({} cores); \
         above {:.0} % the load generator rather than the server may be the bottleneck; \"server CPU µs/req\" \
         is the `tessera serve` process's CPU time over the measured window per request (and the Redis server's, \
         when it holds the sessions)",
        ctx.client_threads,
        ctx.machine.cores,
        CLIENT_CPU_WARNING * 100.0
    );
    if rows.iter().any(|r| r.label.starts_with("rs-") || matches!(r.target, Target::Delay { .. })) {
        let _ = writeln!(
            out,
            "- resource server (rs-*, logout-latency): an axum app in the benchmark's process on a runtime of \
             its own with 1 worker thread; `/protected` behind tessera-verify's `require()` layer, `/bare` without"
        );
    }
    for line in ctx.ceiling_lines(rows).into_iter().chain(gateway::setup_lines(ctx, rows)) {
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| scenario | conns | requests | req/s | p50 ms | p99 ms | max ms | errors | target | met | ratio to ceiling | client CPU | server CPU µs/req |"
    );
    let _ = writeln!(out, "|---|--:|--:|--:|--:|--:|--:|--:|---|---|---|--:|--:|");
    for row in rows {
        let s = &row.summary;
        let rps = match row.target {
            Target::Delay { .. } => "—".to_owned(),
            _ => format!("{:.0}", s.rps),
        };
        let client_cpu = match s.client_cpu {
            Some(share) if share > CLIENT_CPU_WARNING => format!("**{:.0} %**", share * 100.0),
            Some(share) => format!("{:.0} %", share * 100.0),
            None => "—".to_owned(),
        };
        let server_cpu = match (s.server_cpu_us, s.store_cpu_us) {
            (Some(server), Some(store)) => format!("{server:.1} + {store:.1} Redis"),
            (Some(server), None) => format!("{server:.1}"),
            _ => "—".to_owned(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {rps} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} | {client_cpu} | {server_cpu} |",
            row.label,
            row.connections,
            s.requests,
            s.p50_ms,
            s.p99_ms,
            s.max_ms,
            s.errors,
            Context::describe(row.target),
            verdict(Context::met(row, rows)),
            ceiling_cell(row, rows),
        );
    }
    let _ = writeln!(out);
    let lines = ratio_lines(rows).into_iter().chain(gateway::result_lines(ctx, rows)).chain(client_cpu_warnings(rows));
    for line in lines {
        let _ = writeln!(out, "{line}");
    }
    let cpu: Vec<String> = rows
        .iter()
        .filter(|row| row.label.starts_with("rs-"))
        .filter_map(|row| Some(format!("{} {:.2} µs", row.label, row.summary.cpu_us_per_request?)))
        .collect();
    if !cpu.is_empty() {
        let _ = writeln!(
            out,
            "resource server CPU per request (its thread's time in the measured window / requests): {}",
            cpu.join(", ")
        );
    }
    if rows.iter().any(|r| matches!(r.target, Target::Delay { .. })) {
        let _ = writeln!(
            out,
            "logout-latency rows: from the logout answer on tessera to the first 401 of the resource \
             server's /protected, or of the gateway on its rows (polled every {} ms), one sample per logout",
            ctx.poll_ms
        );
    }
    let _ = writeln!(out, "{}", memory_line(ctx.peak_rss_kib));
    out
}

/// The "ratio to ceiling" cell: the ratio, its target and whether it is met.
fn ceiling_cell(row: &Row, rows: &[Row]) -> String {
    let Some(ceiling) = row.ceiling else { return "—".into() };
    let ceiling_clean = rows.iter().find(|r| r.label == ceiling.name).is_some_and(|r| r.summary.errors == 0);
    match row.ceiling_ratio {
        Some(ratio) => {
            let met = row.summary.errors == 0 && ceiling_clean && ratio >= ceiling.min;
            format!("{ratio:.2} × {} (≥ {:.2}: {})", ceiling.name, ceiling.min, verdict(Some(met)))
        }
        None => format!("— (no {})", ceiling.name),
    }
}

/// A warning for each row whose load generator used more than [`CLIENT_CPU_WARNING`] of the
/// machine's CPU time.
pub fn client_cpu_warnings(rows: &[Row]) -> Vec<String> {
    rows.iter()
        .filter_map(|row| Some((row, row.summary.client_cpu.filter(|&share| share > CLIENT_CPU_WARNING)?)))
        .map(|(row, share)| {
            format!(
                "**warning**: during `{}` the load generator used {:.0} % of the machine's CPU time (more than \
                 {:.0} %): it, not the server, may be the bottleneck of that row",
                row.label,
                share * 100.0,
                CLIENT_CPU_WARNING * 100.0
            )
        })
        .collect()
}

/// `row`'s req/s over `base`'s: the paired ratio when there is one, else that of the rows.
fn row_ratio(row: &Row, base: &Row) -> Option<f64> {
    row.ratio.or_else(|| (base.summary.rps > 0.0).then(|| row.summary.rps / base.summary.rps))
}

/// A line under the table for each row with a ratio target: the ratio and whether it is met.
fn ratio_lines(rows: &[Row]) -> Vec<String> {
    rows.iter()
        .filter_map(|row| match row.target {
            Target::Ratio { baseline, min } => Some((row, baseline, min)),
            _ => None,
        })
        .map(|(row, baseline, min)| {
            let base = rows.iter().find(|r| r.label == baseline);
            match base.and_then(|base| row_ratio(row, base)) {
                Some(r) => {
                    let by_cpu = base
                        .filter(|base| base.label.starts_with("rs-"))
                        .and_then(|base| Some(base.summary.cpu_us_per_request? / row.summary.cpu_us_per_request?))
                        .map_or_else(String::new, |c| format!("; by the resource server's CPU per request: {c:.3}"));
                    format!(
                        "{} / {baseline} throughput: {r:.3}{} (target ≥ {min:.2}: {}){by_cpu}",
                        row.label,
                        if row.ratio.is_some() { ", median of the runs' ratios (the two took turns)" } else { "" },
                        verdict(Some(r >= min))
                    )
                }
                None => format!("{} / {baseline} throughput: — (run {baseline} as well for the ratio)", row.label),
            }
        })
        .collect()
}

fn memory_line(peak_rss_kib: Option<u64>) -> String {
    match peak_rss_kib {
        Some(kib) => {
            let mib = kib as f64 / 1024.0;
            format!(
                "server peak memory (VmHWM): {mib:.1} MiB (target ≤ {MEMORY_TARGET_MIB:.0} MiB: {})",
                verdict(Some(mib <= MEMORY_TARGET_MIB))
            )
        }
        None => "server peak memory (VmHWM): unknown".into(),
    }
}

pub fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "yes",
        Some(false) => "**no**",
        None => "—",
    }
}

fn stores() -> String {
    let (users, sessions) = store_kinds();
    format!("users in {users}, sessions in {sessions}")
}

#[cfg(test)]
mod tests;
