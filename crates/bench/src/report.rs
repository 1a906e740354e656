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
    pub cores: usize,
    pub cpu_model: String,
    pub duration: Duration,
    pub warmup: Duration,
    pub runs: usize,
    /// Time of one login on an idle server: the argon2 hash, plus a little HTTP and SQLite.
    pub login_ms: f64,
    pub peak_rss_kib: Option<u64>,
    /// The poll interval of the logout-latency rows, in milliseconds.
    pub poll_ms: u64,
}

pub const MEMORY_TARGET_MIB: f64 = 128.0;

impl Context {
    /// Logins per second the cores can hash.
    fn argon2_rps(&self) -> f64 {
        self.cores as f64 * 1000.0 / self.login_ms
    }

    fn describe(&self, target: Target) -> String {
        match target {
            Target::Ratio { baseline, min } => format!("≥ {min:.2} × {baseline} req/s"),
            Target::Delay { max_p99_ms } => format!("p99 ≤ {max_p99_ms} ms"),
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

    /// Whether `s` meets `target`; `rows` are the whole table (for ratios); `None`: no target,
    /// or nothing to compare with.
    fn met(&self, row: &Row, rows: &[Row]) -> Option<bool> {
        let s = &row.summary;
        let clean = s.errors == 0;
        match row.target {
            Target::Throughput { min_rps, max_p99_ms } => Some(clean && s.rps >= min_rps && s.p99_ms <= max_p99_ms),
            Target::P99 { max_ms } | Target::Delay { max_p99_ms: max_ms } => Some(clean && s.p99_ms <= max_ms),
            Target::Argon2 => Some(clean && s.rps >= 0.75 * self.argon2_rps()),
            Target::Ratio { baseline, min } => {
                let base = rows.iter().find(|r| r.label == baseline)?;
                Some(clean && base.summary.errors == 0 && row_ratio(row, base)? >= min)
            }
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
        "- server: `tessera serve` ({}, login rate limits off) on 127.0.0.1, same machine as the load generator",
        stores()
    );
    if rows.iter().any(|r| r.label.starts_with("rs-") || matches!(r.target, Target::Delay { .. })) {
        let _ = writeln!(
            out,
            "- resource server (rs-*, logout-latency): an axum app in the benchmark's process on a runtime of \
             its own with 1 worker thread; `/protected` behind tessera-verify's `require()` layer, `/bare` without"
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "| scenario | conns | requests | req/s | p50 ms | p99 ms | max ms | errors | target | met |");
    let _ = writeln!(out, "|---|--:|--:|--:|--:|--:|--:|--:|---|---|");
    for row in rows {
        let s = &row.summary;
        let rps = match row.target {
            Target::Delay { .. } => "—".to_owned(),
            _ => format!("{:.0}", s.rps),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {rps} | {:.2} | {:.2} | {:.2} | {} | {} | {} |",
            row.label,
            row.connections,
            s.requests,
            s.p50_ms,
            s.p99_ms,
            s.max_ms,
            s.errors,
            ctx.describe(row.target),
            verdict(ctx.met(row, rows)),
        );
    }
    let _ = writeln!(out);
    for line in ratio_lines(rows) {
        let _ = writeln!(out, "{line}");
    }
    let cpu: Vec<String> = rows
        .iter()
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
             server's /protected (polled every {} ms), one sample per logout",
            ctx.poll_ms
        );
    }
    let _ = writeln!(out, "{}", memory_line(ctx.peak_rss_kib));
    out
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
                cpu_us_per_request: None,
            }]
        };
        assert_eq!(median_run(&[run(30.0), run(10.0), run(20.0)]), 2);
        let (bare, layer) = ([run(100.0), run(50.0), run(200.0)], [run(90.0), run(100.0), run(160.0)]);
        assert_eq!(paired_ratio(&layer, &bare), Some(0.9));
        assert_eq!(paired_ratio(&[], &[]), None);
    }

    #[test]
    fn the_layer_ratio_and_the_logout_delay_are_reported() {
        let summary = |rps: f64, p99_ms: f64| Summary { rps, p99_ms, ..Summary::of_samples(vec![1000], 0, None, rps) };
        let row =
            |label: &str, target, summary| Row { label: label.into(), connections: 32, target, summary, ratio: None };
        let ctx = Context {
            cores: 2,
            cpu_model: "test CPU".into(),
            duration: Duration::from_secs(3),
            warmup: Duration::from_secs(1),
            runs: 1,
            login_ms: 20.0,
            peak_rss_kib: None,
            poll_ms: 2,
        };
        let layer = Target::Ratio { baseline: "rs-bare", min: 0.9 };
        let delay = Target::Delay { max_p99_ms: 1000.0 };
        let rows = [
            row("rs-bare", Target::None, summary(1000.0, 1.0)),
            row("rs-layer", layer, summary(950.0, 1.0)),
            row("logout-latency: 1 instance", delay, summary(0.0, 1200.0)),
        ];
        let out = markdown(&ctx, &rows);
        assert!(out.contains("rs-layer / rs-bare throughput: 0.950 (target ≥ 0.90: yes)"), "{out}");
        assert!(out.contains("| rs-layer | 32 | 1 | 950 |"), "{out}");
        assert!(out.contains("| logout-latency: 1 instance | 32 | 1 | — |"), "{out}");
        assert!(out.contains("p99 ≤ 1000 ms | **no** |"), "{out}");
        let mut paired = rows;
        paired[1].ratio = Some(0.5);
        paired[0].summary.cpu_us_per_request = Some(10.0);
        paired[1].summary.cpu_us_per_request = Some(12.5);
        let out = markdown(&ctx, &paired);
        assert!(out.contains("rs-layer / rs-bare throughput: 0.500, median of"), "{out}");
        assert!(out.contains("CPU per request: 0.800"), "{out}");
        assert!(out.contains("rs-bare 10.00 µs, rs-layer 12.50 µs"), "{out}");
        assert!(out.contains("≥ 0.90 × rs-bare req/s | **no** |"), "{out}");
        let alone = markdown(&ctx, &paired[1..2]);
        assert!(alone.contains("run rs-bare as well"), "{alone}");
        assert!(alone.contains("≥ 0.90 × rs-bare req/s | — |"), "{alone}");
    }
}
