//! Statistics of a run, the targets of the spec, and the Markdown report.

use std::fmt::Write as _;
use std::time::Duration;

use crate::load::WorkerStats;

/// What the spec asks of a row of the table.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// At least `min_rps` requests per second with a p99 of at most `max_p99_ms`.
    Throughput { min_rps: f64, max_p99_ms: f64 },
    /// A p99 of at most `max_ms`, whatever the throughput.
    P99 { max_ms: f64 },
    /// About as many logins as the cores can hash: `cores / hash time`, within 25 %.
    Argon2,
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
}

impl Summary {
    /// Merges the stats of a group's connections measured over `duration`.
    pub fn merge(stats: Vec<WorkerStats>, duration: Duration) -> Self {
        let stopped = stats.iter().filter(|s| s.stopped_early).count();
        let errors = stats.iter().map(|s| s.errors).sum();
        let first_error = stats.iter().find_map(|s| s.first_error.clone());
        let mut latencies: Vec<u32> = stats.into_iter().flat_map(|s| s.latencies).collect();
        latencies.sort_unstable();
        Self {
            requests: latencies.len(),
            errors,
            rps: latencies.len() as f64 / duration.as_secs_f64(),
            p50_ms: percentile_ms(&latencies, 50.0),
            p99_ms: percentile_ms(&latencies, 99.0),
            max_ms: latencies.last().map_or(0.0, |&us| ms(us)),
            first_error,
            stopped,
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
}

/// What the table needs to know besides its rows.
pub struct Context {
    pub cores: usize,
    pub cpu_model: String,
    pub duration: Duration,
    pub warmup: Duration,
    pub runs: usize,
    /// Time of one login on an idle server: the argon2 hash, plus a little HTTP and SQLite.
    pub login_ms: f64,
    pub peak_rss_kib: Option<u64>,
}

pub const MEMORY_TARGET_MIB: f64 = 128.0;

impl Context {
    /// Logins per second the cores can hash.
    fn argon2_rps(&self) -> f64 {
        self.cores as f64 * 1000.0 / self.login_ms
    }

    fn describe(&self, target: Target) -> String {
        match target {
            Target::Throughput { min_rps, max_p99_ms } => {
                format!("≥ {min_rps:.0} req/s, p99 ≤ {max_p99_ms} ms")
            }
            Target::P99 { max_ms } => format!("p99 ≤ {max_ms} ms"),
            Target::Argon2 => {
                format!("≈ {:.0} req/s ({} cores / {:.1} ms per login)", self.argon2_rps(), self.cores, self.login_ms)
            }
            Target::None => "—".into(),
        }
    }

    fn met(&self, target: Target, s: &Summary) -> Option<bool> {
        let clean = s.errors == 0;
        match target {
            Target::Throughput { min_rps, max_p99_ms } => Some(clean && s.rps >= min_rps && s.p99_ms <= max_p99_ms),
            Target::P99 { max_ms } => Some(clean && s.p99_ms <= max_ms),
            Target::Argon2 => Some(clean && s.rps >= 0.75 * self.argon2_rps()),
            Target::None => None,
        }
    }
}

/// The Markdown report: machine, settings, the table and the server's memory.
pub fn markdown(ctx: &Context, rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## tessera benchmark\n");
    let _ = writeln!(out, "- machine: {} CPUs, {}", ctx.cores, ctx.cpu_model);
    let _ = writeln!(
        out,
        "- each scenario: {} run(s) of {} s after {} s of warm-up; the median run by req/s is shown",
        ctx.runs,
        ctx.duration.as_secs(),
        ctx.warmup.as_secs()
    );
    let _ = writeln!(
        out,
        "- server: `tessera serve` ({}, login rate limit off) on 127.0.0.1, same machine as the load generator\n",
        stores()
    );
    let _ = writeln!(out, "| scenario | conns | requests | req/s | p50 ms | p99 ms | max ms | errors | target | met |");
    let _ = writeln!(out, "|---|--:|--:|--:|--:|--:|--:|--:|---|---|");
    for row in rows {
        let s = &row.summary;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} | {} |",
            row.label,
            row.connections,
            s.requests,
            s.rps,
            s.p50_ms,
            s.p99_ms,
            s.max_ms,
            s.errors,
            ctx.describe(row.target),
            verdict(ctx.met(row.target, s)),
        );
    }
    let _ = writeln!(out, "\n{}", memory_line(ctx.peak_rss_kib));
    out
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

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "yes",
        Some(false) => "**no**",
        None => "—",
    }
}

/// Logical CPUs available to this process and the CPU model from `/proc/cpuinfo`.
pub fn machine() -> (usize, String) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("model name"))
                .and_then(|rest| rest.split_once(':'))
                .map(|(_, name)| name.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    (cores, model)
}

/// The stores the server runs on: it inherits `TESSERA_DATABASE_URL` and
/// `TESSERA_SESSION_STORE_URL` from the benchmark's environment.
fn stores() -> String {
    let kind = |var: &str| {
        std::env::var(var).ok().map(|url| {
            if url.starts_with("redis") {
                "Redis"
            } else if url.starts_with("postgres") {
                "PostgreSQL"
            } else {
                "SQLite"
            }
        })
    };
    let users = kind("TESSERA_DATABASE_URL").unwrap_or("SQLite");
    let sessions = kind("TESSERA_SESSION_STORE_URL").unwrap_or(users);
    format!("users in {users}, sessions in {sessions}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let sorted: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        assert!((percentile_ms(&sorted, 50.0) - 50.0).abs() < 1e-9);
        assert!((percentile_ms(&sorted, 99.0) - 99.0).abs() < 1e-9);
        assert!((percentile_ms(&[7000], 99.0) - 7.0).abs() < 1e-9);
        assert!(percentile_ms(&[], 50.0).abs() < 1e-9);
    }

    #[test]
    fn the_median_run_is_the_middle_by_throughput() {
        let run = |rps: f64| {
            vec![Summary {
                requests: 0,
                errors: 0,
                rps,
                p50_ms: 0.0,
                p99_ms: 0.0,
                max_ms: 0.0,
                first_error: None,
                stopped: 0,
            }]
        };
        assert_eq!(median_run(&[run(30.0), run(10.0), run(20.0)]), 2);
    }
}
