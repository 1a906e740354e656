//! The scenarios: which connections send what, how they are set up, and one run of each.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hyper::body::Bytes;
use hyper::header::HeaderValue;
use tokio::task::JoinSet;

use crate::BoxError;
use crate::api::{self, Account};
use crate::http::Conn;
use crate::load::{Load, Window, Worker, WorkerStats};
use crate::report::{Summary, Target};
use crate::resource::{self, CpuProbe};

pub const SCENARIOS: &[&str] = &[
    "me",
    INTROSPECT_ACCESS,
    INTROSPECT_REFRESH,
    "refresh",
    "login",
    "me-during-login",
    RS_BARE,
    RS_LAYER,
    LOGOUT_LATENCY,
    crate::scale::SCALE,
];

pub const INTROSPECT_ACCESS: &str = "introspect-access";
pub const INTROSPECT_REFRESH: &str = "introspect-refresh";
pub const RS_BARE: &str = "rs-bare";
pub const RS_LAYER: &str = "rs-layer";
/// Not a load scenario: see `crate::logout`.
pub const LOGOUT_LATENCY: &str = "logout-latency";

/// The least `rs-layer / rs-bare` throughput: the verification layer costs at most 10 %.
pub const MIN_LAYER_RATIO: f64 = 0.90;

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
}

/// Connections of a scenario that all send the same kind of request.
#[derive(Debug, Clone)]
pub struct Group {
    pub label: &'static str,
    pub kind: Kind,
    pub connections: usize,
    pub target: Target,
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: &'static str,
    pub groups: Vec<Group>,
}

/// The scenarios with `connections` connections each, in the order they run, in batches: the
/// scenarios of a batch take turns run by run, so that a change in the machine's load (another
/// process starting to compile, say) hits them alike. `rs-bare` and `rs-layer` are compared with
/// each other, so they share a batch.
pub fn all(connections: usize) -> Vec<Vec<Scenario>> {
    let group = |label, kind, connections, target| Group { label, kind, connections, target };
    let half = connections / 2;
    vec![
        vec![Scenario { name: "me", groups: vec![group("me", Kind::Me, connections, ME_TARGET)] }],
        vec![
            Scenario {
                name: INTROSPECT_ACCESS,
                groups: vec![group(INTROSPECT_ACCESS, Kind::IntrospectAccess, connections, Target::None)],
            },
            Scenario {
                name: INTROSPECT_REFRESH,
                groups: vec![group(INTROSPECT_REFRESH, Kind::IntrospectRefresh, connections, Target::None)],
            },
        ],
        vec![Scenario { name: "refresh", groups: vec![group("refresh", Kind::Refresh, connections, REFRESH_TARGET)] }],
        vec![Scenario { name: "login", groups: vec![group("login", Kind::Login, connections, Target::Argon2)] }],
        vec![Scenario {
            name: "me-during-login",
            groups: vec![
                group("me-during-login: login", Kind::Login, half, Target::None),
                group("me-during-login: me", Kind::Me, connections - half, Target::P99 { max_ms: 10.0 }),
            ],
        }],
        vec![
            Scenario { name: RS_BARE, groups: vec![group(RS_BARE, Kind::RsBare, connections, Target::None)] },
            Scenario {
                name: RS_LAYER,
                groups: vec![group(
                    RS_LAYER,
                    Kind::RsLayer,
                    connections,
                    Target::Ratio { baseline: RS_BARE, min: MIN_LAYER_RATIO },
                )],
            },
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
            client: None,
            login_body,
            login_ms: fastest.as_secs_f64() * 1000.0,
        })
    }

    /// Runs `scenario` once: sets up every connection, then loads the server for
    /// `warmup + duration`. Returns one summary per group.
    pub async fn run_once(
        &self,
        scenario: &Scenario,
        warmup: Duration,
        duration: Duration,
    ) -> Result<Vec<Summary>, BoxError> {
        let mut prepared = Vec::with_capacity(scenario.groups.len());
        for group in &scenario.groups {
            prepared.push(self.prepare(group).await?);
        }
        let window = Window::starting_now(warmup, duration);
        let loads_resource = scenario.groups.iter().any(|g| matches!(g.kind, Kind::RsBare | Kind::RsLayer));
        let cpu = self.resource_cpu.clone().filter(|_| loads_resource).map(|probe| {
            tokio::spawn(async move {
                tokio::time::sleep_until(window.measure_from.into()).await;
                let start = probe.read()?;
                tokio::time::sleep_until(window.end.into()).await;
                probe.read()?.checked_sub(start)
            })
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
        let cpu = match cpu {
            Some(task) => task.await?,
            None => None,
        };
        Ok(stats
            .into_iter()
            .map(|group_stats| {
                let summary = Summary::merge(group_stats, duration);
                let per_request =
                    cpu.filter(|_| summary.requests > 0).map(|cpu| cpu.as_secs_f64() * 1e6 / summary.requests as f64);
                Summary { cpu_us_per_request: per_request, ..summary }
            })
            .collect())
    }

    /// Opens a group's connections; refresh connections log in their own session first.
    async fn prepare(&self, group: &Group) -> Result<Vec<Worker>, BoxError> {
        // A fresh access token per run, so no run outlives its token.
        let bearer = match group.kind {
            Kind::Me | Kind::RsBare | Kind::RsLayer => Some(self.fresh_bearer().await?),
            Kind::IntrospectAccess | Kind::IntrospectRefresh => Some(self.introspection(group.kind).await?),
            Kind::Login | Kind::Refresh => None,
        };
        let addr = match group.kind {
            Kind::RsBare | Kind::RsLayer => self.resource.ok_or("the resource server is not running")?,
            Kind::Me | Kind::Login | Kind::Refresh | Kind::IntrospectAccess | Kind::IntrospectRefresh => self.addr,
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

    async fn fresh_bearer(&self) -> Result<HeaderValue, BoxError> {
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
        (Kind::Me, Some(bearer)) => Load::Get { path: api::ME, bearer },
        (Kind::RsBare, Some(bearer)) => Load::Get { path: resource::BARE, bearer },
        (Kind::RsLayer, Some(bearer)) => Load::Get { path: resource::PROTECTED, bearer },
        (Kind::Me | Kind::RsBare | Kind::RsLayer, None) => return Err("a GET connection needs an access token".into()),
        (Kind::Login, _) => Load::Login { body: login_body },
        (Kind::Refresh, _) => {
            let tokens = api::login(&mut conn, login_body).await?;
            Load::Refresh { token: api::refresh_token(tokens)? }
        }
    };
    Ok(Worker::new(conn, load))
}
