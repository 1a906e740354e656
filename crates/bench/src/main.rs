//! `tessera-bench`: throughput and latency of a real `tessera serve` on this machine.
//!
//! It starts the release server as a child process (`--listen 127.0.0.1:0`, a temporary data
//! directory, login rate limits off; SQLite unless `TESSERA_DATABASE_URL` or
//! `TESSERA_SESSION_STORE_URL` in the environment say otherwise), registers one account and then
//! measures, each
//! scenario `--runs` times for `--duration` seconds after `--warmup` seconds, with
//! `--connections` keep-alive HTTP/1.1 connections sending requests back to back:
//!
//! - `me`: `GET /api/auth/me` with one shared access token — token verification and the
//!   request path, no database write (target ≥ 30 000 req/s, p99 ≤ 5 ms);
//! - `introspect-access` and `introspect-refresh`: `POST /oauth/introspect` (RFC 7662) of an
//!   access token (checked in memory) or of a refresh token (its session read from the session
//!   store), as a client registered with `tessera clients add` (looked up in the user database
//!   on every request);
//! - `refresh`: every connection logs in its own session, then rotates it with
//!   `POST /api/auth/refresh`, always with the token the previous answer gave — a store write
//!   per request (target ≥ 5 000 req/s, p99 ≤ 20 ms). A failure ends that session, so it also
//!   stops that connection;
//! - `login`: `POST /api/auth/login` — bound by argon2 (target ≥ 0.95 × `ceiling-argon2`);
//! - `me-during-login`: half the connections flood logins while the other half call `/me` —
//!   hashing runs on low-priority threads, so `/me` should keep a p99 ≤ 10 ms;
//! - `rs-bare` and `rs-layer`: the cost of `tessera-verify`'s layer in a resource server. The
//!   benchmark serves a small axum app ([`resource`]) on 127.0.0.1 — on a tokio runtime of its
//!   own with one worker thread, apart from the load generator's, so both rows give the app the
//!   same single thread and differ only by the layer's work on it — with the same small JSON
//!   answer on `GET /bare` (no authentication) and `GET /protected` (behind
//!   `verifier.require()`, the verifier fed by the benchmark's server). Both rows send the same
//!   `Authorization: Bearer` header with a real access token, so their requests differ only in
//!   the path; the one token means the layer's cache of verified tokens is warm, as for a client
//!   that reuses its token. The two take turns run by run, so that drifts in the machine's load
//!   hit both alike, and the ratio `rs-layer / rs-bare` (target ≥ 0.90, printed under the table)
//!   is the median of the runs' ratios, each of two neighbouring runs.
//!
//! Beside `me`, `refresh` (sessions in SQLite) and `login`, in the same batch so that they take
//! turns run by run, their ceilings ([`ceiling`]): `ceiling-http`, a trivial axum route in a
//! process of its own answering `/me`'s body (this binary's `serve-trivial` subcommand);
//! `ceiling-sqlite`, one SQLite connection committing single-row updates one transaction at a
//! time; `ceiling-argon2`, raw argon2id on every core. Each of the three rows shows its ratio to
//! its ceiling (targets 0.60, 1.5 and 0.95); a row selected by `--only` brings its ceiling.
//! Every HTTP row also shows the load generator's CPU time as a share of the machine's, with a
//! warning above 45 % (the generator, not the server, may then be the bottleneck).
//!
//! And, not a load, `logout-latency` ([`logout`]): `--logouts` times, a fresh session is logged
//! in, `/protected` answers 200 with its token, the session is logged out on tessera, and the
//! time from the logout answer to the first 401 of `/protected` (polled every 2 ms, failure after
//! 5 s) is one sample (target p99 ≤ 1000 ms; `--runs`, `--duration` and `--warmup` do not apply,
//! and the resolution is the poll's interval). One row has the resource server's verifier fed by
//! the benchmark's server itself; the other by a second instance: when `TESSERA_TEST_REDIS_URL`
//! is set, two more `tessera serve` ([`server::Pair`]) share a data directory (keys, SQLite users)
//! and keep sessions in that Redis under a key prefix of their own, both minting the same `iss`;
//! sessions are logged in and out on instance A while the verifier follows instance B's feed.
//! Without the variable that row is skipped, with a note on stderr.
//!
//! And the gateway's rows ([`gateway`]): `upstream-direct`, `nginx-proxy`, `nginx-auth-request`
//! and `gateway` load the same trivial upstream directly, through Debian's nginx as a plain
//! proxy and with `auth_request` to tessera, and through `tessera gateway`, taking turns run by
//! run (targets: the gateway ≥ 0.90 × nginx-proxy and ≥ 2 × nginx-auth-request req/s, ≤ 25 µs of
//! its CPU and ≤ 1 ms more p99 than direct per request); then logout → 401 through the gateway
//! (fed by the benchmark's server, and by instance B of the pair, target p99 ≤ 50 ms when
//! another instance logged out), logout → socket close for 100 sessions, and a fresh gateway's
//! memory with `--idle-sockets` idle WebSockets (target ≤ 128 MiB for 10 000).
//!
//! And, only when `--only` names it (it takes minutes), `scale` ([`scale`]): docs/benchmarks.md's scale
//! row, refresh's p99 with 1 000 000 stored sessions against that with 1 000 (target ≤ 2×),
//! on SQLite and, when `TESSERA_TEST_REDIS_URL` is set, on Redis. Each size gets a fresh server
//! on a store filled beforehand through `tessera-store` with sessions of the server's shape;
//! the report has a section of its own with the ratio and each server's peak memory.
//!
//! The median run (by req/s) of each scenario is printed as a Markdown table on stdout, with
//! the server's peak memory (`VmHWM`, target ≤ 128 MiB) and the machine (CPU model, cores,
//! kernel); progress and errors go to stderr. The exit status is non-zero if any request failed.
//!
//! Run it from the workspace root with `scripts/bench` (builds the release binaries first, and
//! starts throwaway PostgreSQL and Redis with `scripts/services` when `logout-latency` or
//! `scale` is to run and `TESSERA_TEST_REDIS_URL` is unset), e.g. `scripts/bench --duration 5
//! --runs 1`, `scripts/bench --only refresh` or `scripts/bench --only scale`; `scripts/bench
//! --help` lists the flags. The load generator shares the machine with the server, so it runs
//! on one thread by default (`--client-threads`).

mod api;
mod args;
mod ceiling;
mod cpu;
mod gateway;
mod http;
mod load;
mod logout;
mod report;
mod resource;
mod scale;
mod scenario;
mod server;

use std::process::ExitCode;

use crate::api::Account;
use crate::args::{Args, Command};
use crate::cpu::CpuProbe;
use crate::http::Conn;
use crate::report::{Row, Summary, Target};
use crate::resource::{Issuer, ResourceServer};
use crate::scale::SCALE;
use crate::scenario::{
    CEILING_HTTP, GATEWAY, INTROSPECT_ACCESS, INTROSPECT_REFRESH, Kind, LOGOUT_LATENCY, RS_BARE, RS_LAYER, SCENARIOS,
    Scenario, Setup,
};
use crate::server::{Pair, Server};

/// Where the two-instance row of `logout-latency` and the Redis rows of `scale` find Redis.
const REDIS_URL_VAR: &str = "TESSERA_TEST_REDIS_URL";
/// The target of `logout-latency`: a logged-out token refused within a second.
const LOGOUT_TARGET: Target = Target::Delay { max_p99_ms: 1000.0 };
/// The target when another instance did the logout: it pushes the end to the instance that
/// feeds the verifier.
const CROSS_INSTANCE_TARGET: Target = Target::Delay { max_p99_ms: 50.0 };

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// This process's (soft) limit on open files, which its children inherit.
#[allow(unsafe_code)]
pub fn open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the struct passed.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0).then_some(limit.rlim_cur)
}

/// Raises this process's limit on open files (which its children inherit) as far as it may:
/// the gateway's idle sockets need tens of thousands.
#[allow(unsafe_code)]
pub fn raise_file_limit() {
    const WANTED: libc::rlim_t = 100_000;
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        let raised = libc::rlimit { rlim_cur: WANTED.max(limit.rlim_cur), rlim_max: WANTED.max(limit.rlim_max) };
        // Raising the hard limit needs privileges; without them, the soft one goes up to it.
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

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
        Command::ServeTrivial { body } => return ceiling::serve_trivial(body),
        Command::Run(args) => args,
    };
    // The children (the servers, the gateway, nginx) inherit it.
    raise_file_limit();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.client_threads).enable_all().build()?;
    let mut failed_requests = 0;
    let mut pair_error = None;
    if SCENARIOS.iter().any(|name| *name != SCALE && args.selects(name)) {
        let (report, failed, pair) = everything_but_scale(&runtime, &args)?;
        print!("{report}");
        (failed_requests, pair_error) = (failed, pair);
    }
    if args.selects(SCALE) {
        let rows = scale::run(&runtime, &args)?;
        failed_requests += rows.iter().map(|row| row.errors).sum::<u64>();
        print!("{}", scale::markdown(&args, &rows));
    }
    if let Some(e) = pair_error {
        return Err(format!("the two-instance row of {LOGOUT_LATENCY} failed: {e}").into());
    }
    match failed_requests {
        0 => Ok(()),
        n => Err(format!("{n} requests failed over all runs; see the errors above").into()),
    }
}

/// The scenarios on the benchmark's server (and the two-instance row): the report, the failed
/// requests, and why the two-instance row failed, if it did.
fn everything_but_scale(
    runtime: &tokio::runtime::Runtime,
    args: &Args,
) -> Result<(String, u64, Option<BoxError>), BoxError> {
    let server = Server::start(&args.server_bin, &args.server_flags())?;
    eprintln!("tessera-bench: {} listening on {}", args.server_bin.display(), server.addr());
    let client = if [INTROSPECT_ACCESS, INTROSPECT_REFRESH].iter().any(|name| args.selects(name)) {
        Some(server.register_client(&args.server_bin)?)
    } else {
        None
    };
    let mut outcome = runtime.block_on(bench(args, &server, client))?;
    let peak_rss_kib = server.peak_rss_kib().inspect_err(|e| eprintln!("tessera-bench: {e}")).ok();
    drop(server);
    // Started only now, so that they sit idle through none of the other scenarios.
    let pair_error = if args.selects(LOGOUT_LATENCY) || args.selects(GATEWAY) {
        two_instances(runtime, args, &mut outcome).err()
    } else {
        None
    };
    let context = report::Context {
        machine: report::machine(),
        duration: args.duration,
        warmup: args.warmup,
        runs: args.runs,
        connections: args.connections,
        client_threads: args.client_threads,
        peak_rss_kib,
        poll_ms: u64::try_from(logout::POLL.as_millis()).unwrap_or(u64::MAX),
        sqlite_full: args.sqlite_full,
        trivial_body_bytes: outcome.trivial_body_bytes,
        argon2: ceiling::argon2_params(),
        idle_sockets: outcome.idle_sockets,
    };
    Ok((report::markdown(&context, &outcome.rows), outcome.failed_requests, pair_error))
}

/// The rows of the table and what else the report needs from the measurements.
struct Outcome {
    rows: Vec<Row>,
    failed_requests: u64,
    /// The size of `/me`'s body, which the trivial server answered.
    trivial_body_bytes: Option<usize>,
    /// The gateway's memory with idle sockets.
    idle_sockets: Option<gateway::IdleSockets>,
}

/// The two-instance rows of `logout-latency` and `gateway`, when the environment names a Redis:
/// starts the instances, measures, and stops them.
fn two_instances(runtime: &tokio::runtime::Runtime, args: &Args, outcome: &mut Outcome) -> Result<(), BoxError> {
    let Some(url) = std::env::var(REDIS_URL_VAR).ok().filter(|url| !url.is_empty()) else {
        eprintln!(
            "tessera-bench: {REDIS_URL_VAR} is not set: skipping the two-instance row of {LOGOUT_LATENCY} \
             (scripts/bench starts a throwaway Redis for it)"
        );
        return Ok(());
    };
    let pair = Pair::start(&args.server_bin, &url)?;
    eprintln!(
        "tessera-bench: instances A on {} and B on {}, sessions in Redis, issuer {}",
        pair.a.addr(),
        pair.b.addr(),
        Pair::ISSUER
    );
    runtime.block_on(measure_pair(&pair, args, outcome))
}

async fn bench(args: &Args, server: &Server, client: Option<String>) -> Result<Outcome, BoxError> {
    let addr = server.addr();
    let mut setup = Setup::new(addr).await?;
    setup.server_cpu = Some(CpuProbe::Process(server.pid()));
    setup.store_cpu = match std::env::var("TESSERA_SESSION_STORE_URL") {
        Ok(url) if url.starts_with("redis://") => cpu::redis_pid(&url).await.map(CpuProbe::Process),
        _ => None,
    };
    setup.client = client.map(|c| hyper::header::HeaderValue::from_str(&c)).transpose()?;
    setup.sqlite_full = args.sqlite_full;
    eprintln!("tessera-bench: one login on the idle server takes {:.1} ms", setup.login_ms);
    let mut outcome = Outcome { rows: Vec::new(), failed_requests: 0, trivial_body_bytes: None, idle_sockets: None };
    let sqlite_sessions = report::store_kinds().1 == "SQLite";
    let batches: Vec<Vec<Scenario>> = scenario::all(args.connections, setup.cores, sqlite_sessions)
        .into_iter()
        .map(|batch| batch.into_iter().filter(|s| s.wanted(args)).collect::<Vec<_>>())
        .filter(|batch| !batch.is_empty())
        .collect();
    let loads = |kind: Kind| batches.iter().flatten().flat_map(|s| &s.groups).any(|g| g.kind == kind);
    let resource = if [RS_BARE, RS_LAYER, LOGOUT_LATENCY].iter().any(|name| args.selects(name)) {
        let issuer = Issuer { issuer: format!("http://{addr}"), tessera_url: None };
        let resource = ResourceServer::start("single", issuer).await?;
        eprintln!("tessera-bench: resource server on {}, verifier fed by the server", resource.addr());
        setup.resource = Some(resource.addr());
        setup.resource_cpu = Some(resource.cpu_probe());
        Some(resource)
    } else {
        None
    };
    let gateway_rows =
        [Kind::UpstreamDirect, Kind::NginxProxy, Kind::NginxAuthRequest, Kind::Gateway].into_iter().any(loads);
    // Killed when dropped, at the end of the scenarios.
    let _trivial = if loads(Kind::CeilingHttp) || gateway_rows {
        let body = setup.me_body().await?;
        let trivial = ceiling::TrivialServer::start(&body).await?;
        eprintln!(
            "tessera-bench: {CEILING_HTTP}: trivial server on {}, answering /me's {} bytes",
            trivial.addr(),
            body.len()
        );
        setup.trivial = Some(trivial.addr());
        outcome.trivial_body_bytes = Some(body.len());
        Some(trivial)
    } else {
        None
    };
    let proxies = match setup.trivial.filter(|_| gateway_rows) {
        Some(upstream) => {
            let bin = args.server_bin.clone();
            let proxies = tokio::task::spawn_blocking(move || gateway::Proxies::start(&bin, upstream, addr)).await??;
            let addrs = proxies.addrs();
            eprintln!(
                "tessera-bench: gateway on {}, nginx on {:?}, in front of {upstream}",
                addrs.gateway, addrs.nginx
            );
            setup.proxies = Some(addrs);
            setup.gateway_cpu = Some(CpuProbe::Process(proxies.gateway_pid()));
            setup.nginx_cpu = Some(CpuProbe::Tree(proxies.nginx_pid()));
            Some(proxies)
        }
        None => None,
    };
    for batch in &batches {
        measure(&setup, batch, args, &mut outcome).await?;
    }
    if let (Some(addrs), Some(upstream)) = (setup.proxies.filter(|_| args.selects(GATEWAY)), setup.trivial) {
        measure_gateway(&setup, addrs.gateway, upstream, args, &mut outcome).await?;
    }
    drop(proxies);
    if let Some(resource) = &resource
        && args.selects(LOGOUT_LATENCY)
    {
        let target = logout::Target {
            label: "logout-latency: 1 instance",
            tessera: addr,
            resource: resource.addr(),
            path: resource::PROTECTED,
            login_body: setup.login_body.clone(),
        };
        measure_logouts(&target, LOGOUT_TARGET, args, &mut outcome).await;
    }
    Ok(outcome)
}

/// The gateway's rows beyond the load: logouts through it, sockets closed on logout, and its
/// memory with idle sockets.
async fn measure_gateway(
    setup: &Setup,
    gateway: std::net::SocketAddr,
    upstream: std::net::SocketAddr,
    args: &Args,
    outcome: &mut Outcome,
) -> Result<(), BoxError> {
    let target = logout::Target {
        label: "logout-latency: gateway",
        tessera: setup.addr,
        resource: gateway,
        path: api::ME,
        login_body: setup.login_body.clone(),
    };
    measure_logouts(&target, LOGOUT_TARGET, args, outcome).await;
    let closing = gateway::sockets::close_on_logout(setup.addr, gateway, &setup.login_body, gateway::CLOSING_SESSIONS);
    let summary = closing.await?;
    push_delay_row(outcome, "socket-close: gateway, 100 sessions", LOGOUT_TARGET, summary);
    let mut bearers = Vec::with_capacity(gateway::IDLE_SESSIONS);
    for _ in 0..gateway::IDLE_SESSIONS {
        bearers.push(setup.fresh_bearer().await?);
    }
    let idle = gateway::idle_sockets(&args.server_bin, upstream, setup.addr, bearers, args.idle_sockets).await?;
    if idle.sockets < idle.wanted {
        eprintln!(
            "tessera-bench: the open-file limit ({:?}) leaves the gateway room for {} of the {} idle sockets asked \
             for (it holds two files for each)",
            open_file_limit(),
            idle.sockets,
            idle.wanted
        );
    }
    eprintln!(
        "idle sockets: {} through a fresh gateway: {:.1} MiB resident, {:.2} KiB per socket",
        idle.sockets,
        idle.after_kib as f64 / 1024.0,
        idle.per_socket_kib()
    );
    outcome.idle_sockets = Some(idle);
    Ok(())
}

/// The two-instance rows: log in and out on A, a resource server and a gateway fed by B.
async fn measure_pair(pair: &Pair, args: &Args, outcome: &mut Outcome) -> Result<(), BoxError> {
    let account = Account { email: "bench-pair@example.com".into(), password: "correct horse battery staple".into() };
    api::register(&mut Conn::open(pair.a.addr()).await?, &account).await?;
    let login_body = account.login_body()?;
    if args.selects(LOGOUT_LATENCY) {
        let issuer = Issuer { issuer: Pair::ISSUER.into(), tessera_url: Some(format!("http://{}", pair.b.addr())) };
        let resource = ResourceServer::start("pair", issuer).await?;
        eprintln!("tessera-bench: resource server on {}, verifier fed by instance B", resource.addr());
        let target = logout::Target {
            label: "logout-latency: 2 instances, Redis",
            tessera: pair.a.addr(),
            resource: resource.addr(),
            path: resource::PROTECTED,
            login_body: login_body.clone(),
        };
        measure_logouts(&target, CROSS_INSTANCE_TARGET, args, outcome).await;
    }
    if args.selects(GATEWAY) {
        // Killed when dropped, after the gateway.
        let upstream = ceiling::TrivialServer::start(b"{}").await?;
        let (bin, to, tessera_b) = (args.server_bin.clone(), upstream.addr(), format!("http://{}", pair.b.addr()));
        let gateway = tokio::task::spawn_blocking(move || {
            gateway::start_gateway(&bin, "gateway B", to, Pair::ISSUER, Some(&tessera_b))
        });
        let gateway = gateway.await??;
        eprintln!("tessera-bench: gateway on {}, fed by instance B", gateway.addr());
        let target = logout::Target {
            label: "logout-latency: 2 instances, Redis, gateway",
            tessera: pair.a.addr(),
            resource: gateway.addr(),
            path: api::ME,
            login_body,
        };
        measure_logouts(&target, CROSS_INSTANCE_TARGET, args, outcome).await;
    }
    Ok(())
}

/// Takes `--logouts` samples of `target` and adds its row to `outcome`.
async fn measure_logouts(target: &logout::Target, goal: Target, args: &Args, outcome: &mut Outcome) {
    push_delay_row(outcome, target.label, goal, logout::measure(target, args.logouts).await);
}

/// Adds a row of delays (one sample per logout) to `outcome`, and says it on stderr.
fn push_delay_row(outcome: &mut Outcome, label: &str, target: Target, summary: Summary) {
    let s = &summary;
    eprintln!(
        "{label}: {} samples, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {} errors",
        s.requests, s.p50_ms, s.p99_ms, s.max_ms, s.errors
    );
    if let Some(error) = &summary.first_error {
        eprintln!("  first error: {error}");
    }
    outcome.failed_requests += summary.errors;
    outcome.rows.push(Row {
        label: label.to_owned(),
        connections: 1,
        target,
        summary,
        ratio: None,
        ceiling: None,
        ceiling_ratio: None,
    });
}

/// Runs each scenario of `batch` `--runs` times, taking turns, and adds the rows of each one's
/// median run to `outcome`.
async fn measure(setup: &Setup, batch: &[Scenario], args: &Args, outcome: &mut Outcome) -> Result<(), BoxError> {
    let mut runs: Vec<Vec<Vec<Summary>>> = batch.iter().map(|_| Vec::with_capacity(args.runs)).collect();
    for run in 1..=args.runs {
        for (scenario, scenario_runs) in batch.iter().zip(&mut runs) {
            let summaries = setup.run_once(scenario, args.warmup, args.duration).await?;
            for (group, s) in scenario.groups.iter().zip(&summaries) {
                let cpu = s.cpu_us_per_request.map_or_else(String::new, |us| format!(", {us:.2} µs CPU/request"));
                let client = s.client_cpu.map_or_else(String::new, |share| {
                    let warning = if share > report::CLIENT_CPU_WARNING {
                        " (the load generator may be the bottleneck)"
                    } else {
                        ""
                    };
                    format!(", load generator {:.0} % of the machine's CPU{warning}", share * 100.0)
                });
                eprintln!(
                    "{} run {run}/{}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {} errors{cpu}{client}",
                    group.label, args.runs, s.rps, s.p50_ms, s.p99_ms, s.errors
                );
                if let Some(error) = &s.first_error {
                    eprintln!(
                        "  first error: {error}; {} of {} connections stopped early",
                        s.stopped, group.connections
                    );
                }
                outcome.failed_requests += s.errors;
            }
            scenario_runs.push(summaries);
        }
    }
    for (scenario, scenario_runs) in batch.iter().zip(&runs) {
        let median = scenario_runs[report::median_run(scenario_runs)].clone();
        outcome.rows.extend(scenario.groups.iter().zip(median).map(|(group, summary)| {
            // A baseline or a ceiling in the same batch took turns with this scenario, run by run.
            let paired = |name: &str| {
                batch.iter().position(|s| s.name == name).and_then(|b| report::paired_ratio(scenario_runs, &runs[b]))
            };
            let ratio = match group.target {
                Target::Ratio { baseline, .. } => paired(baseline),
                _ => None,
            };
            Row {
                label: group.label.to_owned(),
                connections: group.connections,
                target: group.target,
                summary,
                ratio,
                ceiling: group.ceiling,
                ceiling_ratio: group.ceiling.and_then(|c| paired(c.name)),
            }
        }));
    }
    Ok(())
}
