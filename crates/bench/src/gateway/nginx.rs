//! Debian's nginx as the gateway rows' yardstick: one process tree in a temporary directory,
//! listening on two ports of 127.0.0.1 — a plain reverse proxy to the trivial upstream (no
//! authentication: the machine's proxy ceiling) and the same proxy behind `auth_request` to
//! tessera's `GET /api/auth/verify`, set up as the README shows (forward-auth as deployed
//! today). Both keep their upstream connections alive (`keepalive`, HTTP/1.1), nginx's best
//! setting, and run a worker per core (`worker_processes auto`, Debian's setting): on the 2-core
//! machine of docs/benchmarks.md that measured faster than one worker.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::BoxError;

/// Where Debian's package puts the binary.
const BINARIES: [&str; 2] = ["/usr/sbin/nginx", "/usr/bin/nginx"];
const START_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Nginx {
    child: Child,
    /// The plain reverse proxy.
    pub plain: SocketAddr,
    /// The proxy behind `auth_request`.
    pub auth_request: SocketAddr,
    _dir: TempDir,
}

impl Drop for Nginx {
    /// Asks the master to stop (SIGTERM: it stops its workers, which a SIGKILL would orphan),
    /// and kills it if it has not within a few seconds.
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill only sends a signal, to the child this struct started and has not reaped.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + START_TIMEOUT;
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Nginx {
    /// The binary, if Debian's package is installed (scripts/bench installs it).
    pub fn binary() -> Option<&'static str> {
        BINARIES.into_iter().find(|p| Path::new(p).exists())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts nginx proxying to `upstream`, checking tokens with `tessera`.
    pub fn start(binary: &str, upstream: SocketAddr, tessera: SocketAddr) -> Result<Self, BoxError> {
        let dir = tempfile::Builder::new().prefix("tessera-bench-nginx-").tempdir()?;
        let (plain, auth_request) = (free_port()?, free_port()?);
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, config(dir.path(), plain, auth_request, upstream, tessera))?;
        let child = Command::new(binary)
            .arg("-p")
            .arg(dir.path())
            .args(["-e", "stderr", "-c"])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {binary}: {e}"))?;
        let nginx = Self { child, plain, auth_request, _dir: dir };
        let deadline = Instant::now() + START_TIMEOUT;
        while [plain, auth_request].iter().any(|a| std::net::TcpStream::connect(a).is_err()) {
            if Instant::now() > deadline {
                return Err(
                    format!("nginx did not listen on {plain} and {auth_request} within {START_TIMEOUT:?}").into()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(nginx)
    }
}

/// A port of 127.0.0.1 free a moment ago (nginx cannot say which one it took).
fn free_port() -> Result<SocketAddr, BoxError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn config(
    dir: &Path,
    plain: SocketAddr,
    auth_request: SocketAddr,
    upstream: SocketAddr,
    tessera: SocketAddr,
) -> String {
    let d = dir.display();
    format!(
        r#"daemon off;
worker_processes auto;
error_log stderr warn;
pid {d}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    # The load generator's connections live for the whole run (nginx closes them after 1 000
    # requests by default).
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
    upstream app {{ server {upstream}; keepalive 256; }}
    upstream tessera {{ server {tessera}; keepalive 256; }}
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    server {{
        listen {plain};
        location / {{ proxy_pass http://app; }}
    }}
    server {{
        listen {auth_request};
        location / {{
            auth_request /_tessera;
            auth_request_set $tessera_user $upstream_http_x_tessera_user_id;
            auth_request_set $tessera_session $upstream_http_x_tessera_session_id;
            auth_request_set $tessera_anonymous $upstream_http_x_tessera_anonymous;
            proxy_set_header Connection "";
            proxy_set_header X-Tessera-User-Id $tessera_user;
            proxy_set_header X-Tessera-Session-Id $tessera_session;
            proxy_set_header X-Tessera-Anonymous $tessera_anonymous;
            proxy_pass http://app;
        }}
        location = /_tessera {{
            internal;
            proxy_pass http://tessera/api/auth/verify;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header Connection "";
        }}
    }}
}}
"#
    )
}
