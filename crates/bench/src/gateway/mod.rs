//! The gateway's rows: what `tessera gateway` costs in front of a service, beside what people
//! run today, and how soon it ends access after a logout.
//!
//! - `upstream-direct`, `nginx-proxy`, `nginx-auth-request` and `gateway` (`crate::scenario`):
//!   the same `GET` with the same bearer token to the trivial upstream (this binary's
//!   `serve-trivial`, the HTTP ceiling's server) reached directly, through Debian's nginx as a
//!   plain reverse proxy (no authentication: the machine's proxy ceiling), through nginx with
//!   `auth_request` to tessera's `GET /api/auth/verify` (forward-auth as deployed today, [`nginx`])
//!   and through `tessera gateway` (every token checked locally). They take turns run by run.
//!   The gateway's row is read as ratios to the two nginx rows, its added latency over the
//!   direct row, and its process's CPU time per request.
//! - `logout-latency: gateway`: the logout rows of `crate::logout`, polling through the gateway
//!   (and, with two instances on Redis, a gateway fed by the instance that did not log out).
//! - `socket-close: gateway` ([`sockets`]): one socket for each of 100 sessions, each session
//!   logged out in turn; a sample is the time until its socket's `4001` close frame.
//! - idle sockets ([`IdleSockets`]): a fresh gateway's resident memory before and after
//!   `--idle-sockets` WebSockets through it sit idle.

pub mod nginx;
pub mod sockets;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use hyper::header::HeaderValue;

use crate::BoxError;
use crate::server::Server;
use nginx::Nginx;

/// Sessions whose sockets close on logout.
pub const CLOSING_SESSIONS: usize = 100;
/// Sessions the idle sockets are spread over.
pub const IDLE_SESSIONS: usize = 10;
/// How long the idle sockets sit before the gateway's memory is read.
const SETTLE: Duration = Duration::from_secs(2);

/// Where the gateway rows' proxies listen.
#[derive(Debug, Clone, Copy)]
pub struct Addrs {
    pub gateway: SocketAddr,
    pub nginx: Option<NginxAddrs>,
}

#[derive(Debug, Clone, Copy)]
pub struct NginxAddrs {
    pub plain: SocketAddr,
    pub auth_request: SocketAddr,
}

/// The gateway and nginx in front of the trivial upstream, stopped when dropped.
pub struct Proxies {
    gateway: Server,
    nginx: Nginx,
}

impl Proxies {
    /// Starts nginx and `bin gateway` in front of `upstream`, checking tokens of the tessera at
    /// `tessera` (its issuer is its address).
    pub fn start(bin: &Path, upstream: SocketAddr, tessera: SocketAddr) -> Result<Self, BoxError> {
        let binary = Nginx::binary().ok_or("nginx is missing: scripts/bench installs Debian's package")?;
        let nginx = Nginx::start(binary, upstream, tessera)?;
        let gateway = start_gateway(bin, "gateway", upstream, &format!("http://{tessera}"), None)?;
        Ok(Self { gateway, nginx })
    }

    pub fn addrs(&self) -> Addrs {
        let nginx = NginxAddrs { plain: self.nginx.plain, auth_request: self.nginx.auth_request };
        Addrs { gateway: self.gateway.addr(), nginx: Some(nginx) }
    }

    pub fn gateway_pid(&self) -> u32 {
        self.gateway.pid()
    }

    /// nginx's master, whose children are its workers.
    pub fn nginx_pid(&self) -> u32 {
        self.nginx.pid()
    }
}

/// `bin gateway` in front of `upstream` for tokens of `issuer`, fed by `tessera_url` (by the
/// issuer when `None`), with room for the idle sockets.
pub fn start_gateway(
    bin: &Path,
    name: &str,
    upstream: SocketAddr,
    issuer: &str,
    tessera_url: Option<&str>,
) -> Result<Server, BoxError> {
    let mut flags: Vec<String> = ["--upstream", &format!("http://{upstream}"), "--issuer", issuer]
        .into_iter()
        .chain(["--max-connections", "60000", "--max-connections-per-address", "60000"])
        .map(str::to_owned)
        .collect();
    if let Some(url) = tessera_url {
        flags.extend(["--tessera-url".to_owned(), url.to_owned()]);
    }
    Server::gateway(bin, name, &flags)
}

/// Files the gateway keeps out of its connection cap (`tessera_server::fit_to_file_limit`: its
/// listener, its connection to tessera, the runtime's).
const RESERVED_FILES: u64 = 256;
/// Connections kept free under the cap (the warm-up socket's, a health check's).
const SPARE: u64 = 16;

/// How many of `wanted` idle sockets the open-file limit leaves the gateway room for: it caps its
/// connections at two files each, the client's and the upstream's.
pub fn socket_room(wanted: usize) -> usize {
    let room = crate::open_file_limit()
        .map_or(u64::MAX, |limit| (limit.saturating_sub(RESERVED_FILES) / 2).saturating_sub(SPARE));
    wanted.min(usize::try_from(room).unwrap_or(usize::MAX))
}

/// A fresh gateway's memory before and after idle sockets.
#[derive(Debug, Clone, Copy)]
pub struct IdleSockets {
    /// The sockets asked for (`--idle-sockets`).
    pub wanted: usize,
    /// The sockets opened: fewer when the open-file limit leaves no room for more.
    pub sockets: usize,
    pub sessions: usize,
    /// `VmRSS` with one socket opened and closed, in KiB.
    pub before_kib: u64,
    /// `VmRSS` with every socket open, in KiB.
    pub after_kib: u64,
}

impl IdleSockets {
    pub fn per_socket_kib(&self) -> f64 {
        self.after_kib.saturating_sub(self.before_kib) as f64 / self.sockets.max(1) as f64
    }

    /// The gateway's resident memory with `sockets` idle sockets, in MiB: measured when that
    /// many were opened, else extrapolated from the cost per socket.
    pub fn mib_at(&self, sockets: usize) -> f64 {
        if sockets == self.sockets {
            self.after_kib as f64 / 1024.0
        } else {
            (self.before_kib as f64 + self.per_socket_kib() * sockets as f64) / 1024.0
        }
    }
}

/// Opens `wanted` sockets (or as many as the open-file limit allows) spread over `bearers`
/// through a gateway of its own (so that no other row's work is in its memory) and reads its
/// memory.
pub async fn idle_sockets(
    bin: &Path,
    upstream: SocketAddr,
    tessera: SocketAddr,
    bearers: Vec<HeaderValue>,
    wanted: usize,
) -> Result<IdleSockets, BoxError> {
    let count = socket_room(wanted);
    let bin = bin.to_owned();
    let issuer = format!("http://{tessera}");
    let gateway =
        tokio::task::spawn_blocking(move || start_gateway(&bin, "idle gateway", upstream, &issuer, None)).await??;
    let warm = sockets::open(gateway.addr(), &bearers[0]).await?;
    drop(warm);
    tokio::time::sleep(SETTLE).await;
    let before_kib = gateway.rss_kib()?;
    let open = sockets::open_many(gateway.addr(), &bearers, count).await?;
    tokio::time::sleep(SETTLE).await;
    let after_kib = gateway.rss_kib()?;
    drop(open);
    Ok(IdleSockets { wanted, sockets: count, sessions: bearers.len(), before_kib, after_kib })
}
