//! `tessera-bench`: throughput and latency of a real `tessera serve` on this machine.
//!
//! It starts the release server as a child process (`--listen 127.0.0.1:0`, a temporary data
//! directory, login rate limit off; SQLite unless `TESSERA_DATABASE_URL` or
//! `TESSERA_SESSION_STORE_URL` in the environment say otherwise), registers one account and then
//! measures, each
//! scenario `--runs` times for `--duration` seconds after `--warmup` seconds, with
//! `--connections` keep-alive HTTP/1.1 connections sending requests back to back:
//!
//! - `me`: `GET /api/auth/me` with one shared access token — token verification and the
//!   request path, no database write (target ≥ 30 000 req/s, p99 ≤ 5 ms);
//! - `refresh`: every connection logs in its own session, then rotates it with
//!   `POST /api/auth/refresh`, always with the token the previous answer gave — a store write
//!   per request (target ≥ 5 000 req/s, p99 ≤ 20 ms). A failure ends that session, so it also
//!   stops that connection;
//! - `login`: `POST /api/auth/login` — bound by argon2 (target ≈ cores / hash time);
//! - `me-during-login`: half the connections flood logins while the other half call `/me` —
//!   hashing runs on low-priority threads, so `/me` should keep a p99 ≤ 10 ms.
//!
//! The median run (by req/s) of each scenario is printed as a Markdown table on stdout, with
//! the server's peak memory (`VmHWM`, target ≤ 128 MiB) and the machine; progress and errors go
//! to stderr. The exit status is non-zero if any request failed.
//!
//! Run it from the workspace root with `scripts/bench` (builds the release binaries first),
//! e.g. `scripts/bench --duration 5 --runs 1` or `scripts/bench --only refresh`;
//! `scripts/bench --help` lists the flags. The load generator shares the machine with the
//! server, so it runs on one thread by default (`--client-threads`).

mod api;
mod args;
mod http;
mod load;
mod report;
mod scenario;
mod server;

use std::net::SocketAddr;
use std::process::ExitCode;

use crate::args::{Args, Command, USAGE};
use crate::report::Row;
use crate::scenario::{Scenario, Setup};
use crate::server::Server;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tessera-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), BoxError> {
    let args = match args::parse(std::env::args().skip(1))? {
        Command::Help => {
            println!("{USAGE}");
            return Ok(());
        }
        Command::Run(args) => args,
    };
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.client_threads).enable_all().build()?;
    let server = Server::start(&args.server_bin)?;
    eprintln!("tessera-bench: {} listening on {}", args.server_bin.display(), server.addr());
    let outcome = runtime.block_on(bench(&args, server.addr()))?;
    let peak_rss_kib = server.peak_rss_kib().inspect_err(|e| eprintln!("tessera-bench: {e}")).ok();
    drop(server);
    let (cores, cpu_model) = report::machine();
    let context = report::Context {
        cores,
        cpu_model,
        duration: args.duration,
        warmup: args.warmup,
        runs: args.runs,
        login_ms: outcome.login_ms,
        peak_rss_kib,
    };
    print!("{}", report::markdown(&context, &outcome.rows));
    match outcome.failed_requests {
        0 => Ok(()),
        n => Err(format!("{n} requests failed over all runs; see the errors above").into()),
    }
}

/// The rows of the table and what else the report needs from the measurements.
struct Outcome {
    rows: Vec<Row>,
    login_ms: f64,
    failed_requests: u64,
}

async fn bench(args: &Args, addr: SocketAddr) -> Result<Outcome, BoxError> {
    let setup = Setup::new(addr).await?;
    eprintln!("tessera-bench: one login on the idle server takes {:.1} ms", setup.login_ms);
    let mut outcome = Outcome { rows: Vec::new(), login_ms: setup.login_ms, failed_requests: 0 };
    let selected =
        scenario::all(args.connections).into_iter().filter(|s| args.only.as_deref().is_none_or(|name| name == s.name));
    for scenario in selected {
        measure(&setup, &scenario, args, &mut outcome).await?;
    }
    Ok(outcome)
}

/// Runs `scenario` `--runs` times and adds the rows of its median run to `outcome`.
async fn measure(setup: &Setup, scenario: &Scenario, args: &Args, outcome: &mut Outcome) -> Result<(), BoxError> {
    let mut runs = Vec::with_capacity(args.runs);
    for run in 1..=args.runs {
        let summaries = setup.run_once(scenario, args.warmup, args.duration).await?;
        for (group, s) in scenario.groups.iter().zip(&summaries) {
            eprintln!(
                "{} run {run}/{}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
                group.label, args.runs, s.rps, s.p50_ms, s.p99_ms, s.errors
            );
            if let Some(error) = &s.first_error {
                eprintln!("  first error: {error}; {} of {} connections stopped early", s.stopped, group.connections);
            }
            outcome.failed_requests += s.errors;
        }
        runs.push(summaries);
    }
    let median = runs.swap_remove(report::median_run(&runs));
    outcome.rows.extend(scenario.groups.iter().zip(median).map(|(group, summary)| Row {
        label: group.label.to_owned(),
        connections: group.connections,
        target: group.target,
        summary,
    }));
    Ok(())
}
