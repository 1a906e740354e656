//! The scenarios: which connections send what, how they are set up, and one run of each.
//!
//! (Over 400 lines: one function per row of the report's table, each short, listed together
//! so that the rows are read side by side.)

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hyper::body::Bytes;
use hyper::header::HeaderValue;
use tokio::task::JoinSet;

use crate::BoxError;
use crate::api::{self, Account};
use crate::args::Args;
use crate::ceiling;
use crate::cpu::CpuProbe;
use crate::http::Conn;
use crate::load::{Load, Window, Worker, WorkerStats};
use crate::report::{Summary, Target};
use crate::resource;

pub const SCENARIOS: &[&str] = &[
    "me",
    INTROSPECT_ACCESS,
    INTROSPECT_REFRESH,
    "refresh",
    "login",
    "me-during-login",
    RS_BARE,
    RS_LAYER,
    UPSTREAM_DIRECT,
    NGINX_PROXY,
    NGINX_AUTH_REQUEST,
    GATEWAY,
    LOGOUT_LATENCY,
    CEILING_HTTP,
    CEILING_SQLITE,
    CEILING_ARGON2,
    crate::scale::SCALE,
];

pub const INTROSPECT_ACCESS: &str = "introspect-access";
pub const INTROSPECT_REFRESH: &str = "introspect-refresh";
pub const RS_BARE: &str = "rs-bare";
pub const RS_LAYER: &str = "rs-layer";
/// The gateway's rows (`crate::gateway`): the trivial upstream reached directly, through
/// nginx as a plain proxy, through nginx with `auth_request` to tessera, and through
/// `tessera gateway`. The first three run whenever `gateway` does.
pub const UPSTREAM_DIRECT: &str = "upstream-direct";
pub const NGINX_PROXY: &str = "nginx-proxy";
pub const NGINX_AUTH_REQUEST: &str = "nginx-auth-request";
pub const GATEWAY: &str = "gateway";
/// Not a load scenario: see `crate::logout`.
pub const LOGOUT_LATENCY: &str = "logout-latency";
/// The machine's limits (see `crate::ceiling`).
pub const CEILING_HTTP: &str = "ceiling-http";
pub const CEILING_SQLITE: &str = "ceiling-sqlite";
pub const CEILING_ARGON2: &str = "ceiling-argon2";

/// The least `me / ceiling-http` throughput (docs/benchmarks.md).
pub const MIN_HTTP_RATIO: f64 = 0.60;
/// The least `refresh / ceiling-sqlite` throughput with sessions in SQLite: group commit.
pub const MIN_SQLITE_RATIO: f64 = 1.5;
/// The least `login / ceiling-argon2` throughput.
pub const MIN_ARGON2_RATIO: f64 = 0.95;

/// The least `rs-layer / rs-bare` throughput: the verification layer costs at most 10 %.
pub const MIN_LAYER_RATIO: f64 = 0.90;

/// The least `gateway / nginx-proxy` throughput: checking every token costs the gateway less
/// than nginx's own proxying does.
pub const MIN_GATEWAY_VS_NGINX: f64 = 0.90;
/// The least `gateway / nginx-auth-request` throughput: local checks against a call per request.
pub const MIN_GATEWAY_VS_AUTH_REQUEST: f64 = 2.0;

/// Sequential logins timed on the idle server to estimate the cost of one hash.
const LOGIN_PROBES: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Me,
    Login,
    Refresh,
    /// `POST /oauth/introspect` of an access token (checked in memory, client looked up in SQL).
    IntrospectAccess,
    /// `POST /oauth/introspect` of a refresh token (its session read from the session store).
    IntrospectRefresh,
    /// `GET /bare` on the resource server (no authentication), with a bearer token all the same.
    RsBare,
    /// `GET /protected` on the resource server, behind `verifier.require()`.
    RsLayer,
    /// `GET /api/auth/me` on the trivial server (the HTTP ceiling), with the same bearer token.
    CeilingHttp,
    /// The same request to the trivial server, as the gateway's upstream reached directly.
    UpstreamDirect,
    /// The same through nginx as a plain reverse proxy.
    NginxProxy,
    /// The same through nginx with `auth_request` to tessera's `/api/auth/verify`.
    NginxAuthRequest,
    /// The same through `tessera gateway`.
    Gateway,
    /// Single-row updates committed one at a time by one SQLite connection, in-process.
    CeilingSqlite,
    /// argon2id hashes on every core, in-process.
    CeilingArgon2,
}

impl Kind {
    /// Whether the requests go to `tessera serve` (with `auth_request`, through nginx).
    pub fn on_tessera(self) -> bool {
        matches!(
            self,
            Self::Me
                | Self::Login
                | Self::Refresh
                | Self::IntrospectAccess
                | Self::IntrospectRefresh
                | Self::NginxAuthRequest
        )
    }

    /// Whether the benchmark's own process does the work (no server, no HTTP).
    pub fn in_process(self) -> bool {
        matches!(self, Self::CeilingSqlite | Self::CeilingArgon2)
    }
}

/// Connections of a scenario that all send the same kind of request.
#[derive(Debug, Clone)]
pub struct Group {
    pub label: &'static str,
    pub kind: Kind,
    pub connections: usize,
    pub target: Target,
    /// The scenario that measures this group's limit, and the least ratio to it.
    pub ceiling: Option<Ceiling>,
}

/// A row's limit: the scenario that measures it, and the least ratio of the row's req/s to it.
#[derive(Debug, Clone, Copy)]
pub struct Ceiling {
    pub name: &'static str,
    pub min: f64,
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: &'static str,
    pub groups: Vec<Group>,
    /// For a ceiling: the scenario it bounds, with which it runs whenever that one is selected.
    pub bounds: Option<&'static str>,
}

impl Scenario {
    fn new(name: &'static str, groups: Vec<Group>) -> Self {
        Self { name, groups, bounds: None }
    }

    /// Whether this run wants the scenario: named by `--only` (or no `--only`: all of them but
    /// `scale`), or the ceiling of one that is.
    pub fn wanted(&self, args: &Args) -> bool {
        match self.bounds {
            Some(row) => args.names(self.name) || args.selects(row),
            None => args.selects(self.name),
        }
    }
}

/// The scenarios with `connections` connections each, in the order they run, in batches: the
/// scenarios of a batch take turns run by run, so that a change in the machine's load (another
/// process starting to compile, say) hits them alike. `rs-bare` and `rs-layer` are compared with
/// each other, so they share a batch, and so does each row with its ceiling. `sqlite_sessions`:
/// whether the server keeps sessions in SQLite, which makes `ceiling-sqlite` refresh's ceiling
/// (on another store it runs only when named, and bounds nothing).
pub fn all(connections: usize, cores: usize, sqlite_sessions: bool) -> Vec<Vec<Scenario>> {
    let group = |label, kind, connections, target| Group { label, kind, connections, target, ceiling: None };
    let bounded = |label, kind, target, name, min| Group {
        label,
        kind,
        connections,
        target,
        ceiling: Some(Ceiling { name, min }),
    };
    let ceiling = |name, kind, connections, bounds: &'static str| Scenario {
        name,
        groups: vec![group(name, kind, connections, Target::None)],
        bounds: Some(bounds),
    };
    let half = connections / 2;
    let refresh = if sqlite_sessions {
        bounded("refresh", Kind::Refresh, REFRESH_TARGET, CEILING_SQLITE, MIN_SQLITE_RATIO)
    } else {
        group("refresh", Kind::Refresh, connections, REFRESH_TARGET)
    };
    let mut sqlite_ceiling = ceiling(CEILING_SQLITE, Kind::CeilingSqlite, connections, "refresh");
    if !sqlite_sessions {
        sqlite_ceiling.bounds = None;
    }
    vec![
        vec![
            Scenario::new("me", vec![bounded("me", Kind::Me, ME_TARGET, CEILING_HTTP, MIN_HTTP_RATIO)]),
            ceiling(CEILING_HTTP, Kind::CeilingHttp, connections, "me"),
        ],
        vec![
            Scenario::new(
                INTROSPECT_ACCESS,
                vec![group(INTROSPECT_ACCESS, Kind::IntrospectAccess, connections, Target::None)],
            ),
            Scenario::new(
                INTROSPECT_REFRESH,
                vec![group(INTROSPECT_REFRESH, Kind::IntrospectRefresh, connections, Target::None)],
            ),
        ],
        vec![Scenario::new("refresh", vec![refresh]), sqlite_ceiling],
        vec![
            Scenario::new("login", vec![bounded("login", Kind::Login, Target::None, CEILING_ARGON2, MIN_ARGON2_RATIO)]),
            ceiling(CEILING_ARGON2, Kind::CeilingArgon2, cores, "login"),
        ],
        vec![Scenario::new(
            "me-during-login",
            vec![
                group("me-during-login: login", Kind::Login, half, Target::None),
                group("me-during-login: me", Kind::Me, connections - half, Target::P99 { max_ms: 10.0 }),
            ],
        )],
        vec![
            Scenario::new(RS_BARE, vec![group(RS_BARE, Kind::RsBare, connections, Target::None)]),
            Scenario::new(
                RS_LAYER,
                vec![group(
                    RS_LAYER,
                    Kind::RsLayer,
                    connections,
                    Target::Ratio { baseline: RS_BARE, min: MIN_LAYER_RATIO },
                )],
            ),
        ],
        vec![
            ceiling(UPSTREAM_DIRECT, Kind::UpstreamDirect, connections, GATEWAY),
            ceiling(NGINX_PROXY, Kind::NginxProxy, connections, GATEWAY),
            ceiling(NGINX_AUTH_REQUEST, Kind::NginxAuthRequest, connections, GATEWAY),
            Scenario::new(
                GATEWAY,
                vec![Group {
                    label: GATEWAY,
                    kind: Kind::Gateway,
                    connections,
                    target: Target::Ratio { baseline: NGINX_AUTH_REQUEST, min: MIN_GATEWAY_VS_AUTH_REQUEST },
                    ceiling: Some(Ceiling { name: NGINX_PROXY, min: MIN_GATEWAY_VS_NGINX }),
                }],
            ),
        ],
    ]
}

const ME_TARGET: Target = Target::Throughput { min_rps: 30_000.0, max_p99_ms: 5.0 };
const REFRESH_TARGET: Target = Target::Throughput { min_rps: 5_000.0, max_p99_ms: 20.0 };

/// The server and the registered account every scenario uses.
pub struct Setup {
    pub addr: SocketAddr,
    /// The benchmark's resource server, when a scenario needs it.
    pub resource: Option<SocketAddr>,
    /// The CPU time of the resource server's thread.
    pub resource_cpu: Option<CpuProbe>,
    /// The CPU time of the `tessera serve` process.
    pub server_cpu: Option<CpuProbe>,
    /// The CPU time of the Redis server holding the sessions, when it is one.
    pub store_cpu: Option<CpuProbe>,
    /// The HTTP ceiling's trivial server, when a scenario needs it (the gateway rows' upstream).
    pub trivial: Option<SocketAddr>,
    /// The gateway rows' proxies, when they run.
    pub proxies: Option<crate::gateway::Addrs>,
    /// The CPU time of the `tessera gateway` process.
    pub gateway_cpu: Option<CpuProbe>,
    /// The CPU time of nginx (its master and workers).
    pub nginx_cpu: Option<CpuProbe>,
    /// Logical CPUs of the machine: the threads of the argon2 ceiling, and the machine's CPU
    /// time per second for the load generator's share.
    pub cores: usize,
    /// The SQLite ceiling fsyncs every commit (`--sqlite-synchronous full`).
    pub sqlite_full: bool,
    /// `Authorization: Basic …` of a registered OAuth client, for introspection.
    pub client: Option<HeaderValue>,
    pub login_body: Bytes,
    /// Fastest of a few sequential logins on the idle server, in milliseconds.
    pub login_ms: f64,
}

impl Setup {
    /// Registers the benchmark's account and times a few logins.
    pub async fn new(addr: SocketAddr) -> Result<Self, BoxError> {
        let account = Account { email: "bench@example.com".into(), password: "correct horse battery staple".into() };
        let mut conn = Conn::open(addr).await?;
        api::register(&mut conn, &account).await?;
        let login_body = account.login_body()?;
        let mut fastest = Duration::MAX;
        for _ in 0..LOGIN_PROBES {
            let started = Instant::now();
            api::login(&mut conn, login_body.clone()).await?;
            fastest = fastest.min(started.elapsed());
        }
        Ok(Self {
            addr,
            resource: None,
            resource_cpu: None,
            server_cpu: None,
            store_cpu: None,
            trivial: None,
            proxies: None,
            gateway_cpu: None,
            nginx_cpu: None,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            sqlite_full: false,
            client: None,
            login_body,
            login_ms: fastest.as_secs_f64() * 1000.0,
        })
    }

    /// Runs `scenario` once: sets up every connection, then loads the server for
    /// `warmup + duration`; or runs an in-process ceiling as long. Returns one summary per group.
    pub async fn run_once(
        &self,
        scenario: &Scenario,
        warmup: Duration,
        duration: Duration,
    ) -> Result<Vec<Summary>, BoxError> {
        match scenario.groups.as_slice() {
            [group] if group.kind == Kind::CeilingSqlite => {
                return Ok(vec![ceiling::sqlite(group.connections, self.sqlite_full, warmup, duration).await?]);
            }
            [group] if group.kind == Kind::CeilingArgon2 => {
                return Ok(vec![ceiling::argon2(group.connections, warmup, duration).await?]);
            }
            groups if groups.iter().any(|g| g.kind.in_process()) => {
                return Err(format!("{}: an in-process ceiling must be a scenario's only group", scenario.name).into());
            }
            _ => {}
        }
        let mut prepared = Vec::with_capacity(scenario.groups.len());
        for group in &scenario.groups {
            prepared.push(self.prepare(group).await?);
        }
        let window = Window::starting_now(warmup, duration);
        let loads_resource = scenario.groups.iter().any(|g| matches!(g.kind, Kind::RsBare | Kind::RsLayer));
        let loads = |kinds: &[Kind]| scenario.groups.iter().any(|g| kinds.contains(&g.kind));
        let loads_gateway = loads(&[Kind::Gateway]);
        let loads_nginx = loads(&[Kind::NginxProxy, Kind::NginxAuthRequest]);
        // tessera's and its store's CPU time per request, on rows with one kind of tessera request.
        let loads_tessera = matches!(scenario.groups.as_slice(), [group] if group.kind.on_tessera());
        let probes = [
            // The process under test: the resource server's thread, the gateway or nginx.
            self.resource_cpu
                .clone()
                .filter(|_| loads_resource)
                .or_else(|| self.gateway_cpu.clone().filter(|_| loads_gateway))
                .or_else(|| self.nginx_cpu.clone().filter(|_| loads_nginx)),
            self.server_cpu.clone().filter(|_| loads_tessera),
            self.store_cpu.clone().filter(|_| loads_tessera),
        ];
        // The CPU time of this process (the load generator, and the resource server's thread when
        // it is loaded) and of each probe over the measured window.
        let cpu = tokio::spawn(async move {
            let read = || (ceiling::process_cpu(), probes.each_ref().map(|p| p.as_ref().and_then(CpuProbe::read)));
            tokio::time::sleep_until(window.measure_from.into()).await;
            let (started, start) = (Instant::now(), read());
            tokio::time::sleep_until(window.end.into()).await;
            let end = read();
            let spent =
                |end: Option<Duration>, start: Option<Duration>| end.zip(start).and_then(|(e, s)| e.checked_sub(s));
            let probed: [Option<Duration>; 3] = std::array::from_fn(|i| spent(end.1[i], start.1[i]));
            (started.elapsed(), spent(end.0, start.0), probed)
        });
        let mut tasks = JoinSet::new();
        for (index, workers) in prepared.into_iter().enumerate() {
            for worker in workers {
                tasks.spawn(async move { (index, worker.run(window).await) });
            }
        }
        let mut stats: Vec<Vec<WorkerStats>> = scenario.groups.iter().map(|_| Vec::new()).collect();
        while let Some(joined) = tasks.join_next().await {
            let (index, worker_stats) = joined?;
            stats[index].push(worker_stats);
        }
        let (measured, process_cpu, [resource_cpu, server_cpu, store_cpu]) = cpu.await?;
        // The load generator's share of the machine's CPU time: the process's, less the resource
        // server's thread, over all cores for the window.
        let client_cpu = process_cpu.map(|process| {
            // The gateway's probe is another process's time: only the resource server's is ours.
            let own = resource_cpu.filter(|_| loads_resource).unwrap_or_default();
            let client = process.saturating_sub(own);
            client.as_secs_f64() / (self.cores as f64 * measured.as_secs_f64().max(1e-3))
        });
        Ok(stats
            .into_iter()
            .map(|group_stats| {
                let summary = Summary::merge(group_stats, duration);
                let per_request = |cpu: Option<Duration>| {
                    cpu.filter(|_| summary.requests > 0).map(|cpu| cpu.as_secs_f64() * 1e6 / summary.requests as f64)
                };
                Summary {
                    cpu_us_per_request: per_request(resource_cpu),
                    server_cpu_us: per_request(server_cpu),
                    store_cpu_us: per_request(store_cpu),
                    client_cpu,
                    ..summary
                }
            })
            .collect())
    }

    /// The body of `GET /api/auth/me` for the benchmark's account: what the trivial server
    /// answers.
    pub async fn me_body(&self) -> Result<Bytes, BoxError> {
        let bearer = self.fresh_bearer().await?;
        let reply = Conn::open(self.addr).await?.get(api::ME, &bearer).await?;
        Ok(api::expect_success(reply).map_err(|e| format!("GET {}: {e}", api::ME))?.body)
    }

    /// Opens a group's connections; refresh connections log in their own session first.
    async fn prepare(&self, group: &Group) -> Result<Vec<Worker>, BoxError> {
        // A fresh access token per run, so no run outlives its token.
        let bearer = match group.kind {
            Kind::Me | Kind::RsBare | Kind::RsLayer | Kind::CeilingHttp => Some(self.fresh_bearer().await?),
            Kind::UpstreamDirect | Kind::NginxProxy | Kind::NginxAuthRequest | Kind::Gateway => {
                Some(self.fresh_bearer().await?)
            }
            Kind::IntrospectAccess | Kind::IntrospectRefresh => Some(self.introspection(group.kind).await?),
            Kind::Login | Kind::Refresh => None,
            Kind::CeilingSqlite | Kind::CeilingArgon2 => return Err("an in-process ceiling has no connections".into()),
        };
        let proxies = || self.proxies.as_ref().ok_or("the gateway rows' proxies are not running");
        let addr = match group.kind {
            Kind::RsBare | Kind::RsLayer => self.resource.ok_or("the resource server is not running")?,
            Kind::CeilingHttp | Kind::UpstreamDirect => self.trivial.ok_or("the trivial server is not running")?,
            Kind::NginxProxy => proxies()?.nginx.ok_or("nginx is not running")?.plain,
            Kind::NginxAuthRequest => proxies()?.nginx.ok_or("nginx is not running")?.auth_request,
            Kind::Gateway => proxies()?.gateway,
            Kind::Me | Kind::Login | Kind::Refresh | Kind::IntrospectAccess | Kind::IntrospectRefresh => self.addr,
            Kind::CeilingSqlite | Kind::CeilingArgon2 => return Err("an in-process ceiling has no connections".into()),
        };
        let mut tasks = JoinSet::new();
        for _ in 0..group.connections {
            let (kind, body, bearer, client) =
                (group.kind, self.login_body.clone(), bearer.clone(), self.client.clone());
            tasks.spawn(async move { open_worker(kind, addr, body, bearer, client).await });
        }
        let mut workers = Vec::with_capacity(group.connections);
        while let Some(joined) = tasks.join_next().await {
            workers.push(joined??);
        }
        Ok(workers)
    }

    /// What an introspection connection sends: `token=…` (a fresh login's access or refresh
    /// token), as the form body.
    async fn introspection(&self, kind: Kind) -> Result<HeaderValue, BoxError> {
        let mut conn = Conn::open(self.addr).await?;
        let tokens = api::login(&mut conn, self.login_body.clone()).await?;
        let token = match kind {
            Kind::IntrospectRefresh => api::refresh_token(tokens)?,
            _ => tokens.token.into_inner(),
        };
        Ok(HeaderValue::from_str(&format!("token={token}"))?)
    }

    pub async fn fresh_bearer(&self) -> Result<HeaderValue, BoxError> {
        let mut conn = Conn::open(self.addr).await?;
        let tokens = api::login(&mut conn, self.login_body.clone()).await?;
        api::bearer(&tokens)
    }
}

async fn open_worker(
    kind: Kind,
    addr: SocketAddr,
    login_body: Bytes,
    bearer: Option<HeaderValue>,
    client: Option<HeaderValue>,
) -> Result<Worker, BoxError> {
    let mut conn = Conn::open(addr).await?;
    let load = match (kind, bearer) {
        (Kind::IntrospectAccess | Kind::IntrospectRefresh, Some(form)) => {
            let client = client.ok_or("introspection needs a registered client")?;
            Load::Introspect { body: Bytes::copy_from_slice(form.as_bytes()), client }
        }
        (Kind::IntrospectAccess | Kind::IntrospectRefresh, None) => return Err("no token to introspect".into()),
        (Kind::Me | Kind::CeilingHttp, Some(bearer)) => Load::Get { path: api::ME, bearer },
        (Kind::UpstreamDirect | Kind::NginxProxy | Kind::NginxAuthRequest | Kind::Gateway, Some(bearer)) => {
            Load::Get { path: api::ME, bearer }
        }
        (Kind::RsBare, Some(bearer)) => Load::Get { path: resource::BARE, bearer },
        (Kind::RsLayer, Some(bearer)) => Load::Get { path: resource::PROTECTED, bearer },
        (
            Kind::Me
            | Kind::RsBare
            | Kind::RsLayer
            | Kind::CeilingHttp
            | Kind::UpstreamDirect
            | Kind::NginxProxy
            | Kind::NginxAuthRequest
            | Kind::Gateway,
            None,
        ) => {
            return Err("a GET connection needs an access token".into());
        }
        (Kind::CeilingSqlite | Kind::CeilingArgon2, _) => return Err("an in-process ceiling has no connections".into()),
        (Kind::Login, _) => Load::Login { body: login_body },
        (Kind::Refresh, _) => {
            let tokens = api::login(&mut conn, login_body).await?;
            Load::Refresh { token: api::refresh_token(tokens)? }
        }
    };
    Ok(Worker::new(conn, load))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{self, Command};

    fn args(flags: &[&str]) -> Args {
        let argv = flags.iter().chain(&["--server-bin", "/bin/sh"]).map(|s| (*s).to_owned());
        match args::parse(argv).unwrap() {
            Command::Run(args) => args,
            _ => panic!("not a run"),
        }
    }

    fn wanted(args: &Args, sqlite_sessions: bool) -> Vec<&'static str> {
        all(32, 2, sqlite_sessions).into_iter().flatten().filter(|s| s.wanted(args)).map(|s| s.name).collect()
    }

    #[test]
    fn a_row_brings_its_ceiling_and_a_ceiling_runs_alone() {
        let only = args(&["--only", "me,refresh,login"]);
        assert_eq!(wanted(&only, true), ["me", CEILING_HTTP, "refresh", CEILING_SQLITE, "login", CEILING_ARGON2]);
        // With sessions elsewhere the SQLite ceiling bounds nothing, so it runs only when named.
        assert_eq!(wanted(&only, false), ["me", CEILING_HTTP, "refresh", "login", CEILING_ARGON2]);
        assert_eq!(wanted(&args(&["--only", CEILING_SQLITE]), false), [CEILING_SQLITE]);
        assert_eq!(wanted(&args(&["--only", CEILING_ARGON2]), true), [CEILING_ARGON2]);
        let everything = wanted(&args(&[]), true);
        assert!([CEILING_HTTP, CEILING_SQLITE, CEILING_ARGON2].iter().all(|c| everything.contains(c)));
        let refresh = all(32, 2, true).into_iter().flatten().find(|s| s.name == "refresh").unwrap();
        assert_eq!(refresh.groups[0].ceiling.map(|c| c.name), Some(CEILING_SQLITE));
    }

    #[test]
    fn serve_trivial_takes_the_body() {
        let argv = ["serve-trivial", "--body", "{}"].map(str::to_owned).into_iter();
        assert!(matches!(args::parse(argv), Ok(Command::ServeTrivial { body }) if body == "{}"));
        let argv = ["serve-trivial"].map(str::to_owned).into_iter();
        assert!(args::parse(argv).is_err());
    }
}
