//! The servers under test: `tessera serve` as child processes on free ports of 127.0.0.1, with
//! their data in a temporary directory. Each is killed when its [`Server`] is dropped, on success
//! and on error alike; the directory is removed after the last server that uses it.
//!
//! [`Server::start`] is the benchmark's server. [`Pair`] is two more instances that behave as
//! one tessera: they share a data directory (the signing keys, and the SQLite file of users, which
//! SQLite in WAL mode lets both processes use), keep sessions in the same Redis under the same key
//! prefix, and mint the same `iss`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tempfile::TempDir;

use crate::BoxError;

/// How long the server may take to open its database and start listening.
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Server {
    child: Child,
    addr: SocketAddr,
    // Removed after the last child using it is killed (fields drop after `Drop::drop` runs).
    data_dir: Arc<TempDir>,
}

impl Server {
    /// Starts `bin serve` on a fresh data directory with `extra` flags and waits for its
    /// "listening" log line.
    pub fn start(bin: &Path, extra: &[String]) -> Result<Self, BoxError> {
        Self::start_with(bin, "server", extra)
    }

    /// Like [`start`](Self::start), with more flags; `name` prefixes its log lines.
    pub fn start_with(bin: &Path, name: &str, extra: &[String]) -> Result<Self, BoxError> {
        let data_dir = tempfile::Builder::new()
            .prefix("tessera-bench-")
            .tempdir()
            .map_err(|e| format!("cannot create a temporary data directory: {e}"))?;
        Self::spawn(bin, name, Arc::new(data_dir), extra)
    }

    /// Like [`start_with`](Self::start_with), on a data directory the caller prepared (and that
    /// is removed after the server).
    pub fn start_in(bin: &Path, name: &str, data_dir: TempDir, extra: &[String]) -> Result<Self, BoxError> {
        Self::spawn(bin, name, Arc::new(data_dir), extra)
    }

    /// Another instance on this one's data directory (same keys, same SQLite file).
    pub fn sibling(&self, bin: &Path, name: &str, extra: &[String]) -> Result<Self, BoxError> {
        Self::spawn(bin, name, self.data_dir.clone(), extra)
    }

    /// `bin gateway` with `flags` (its upstream, issuer and so on) on a free port of 127.0.0.1,
    /// once it says it listens; `name` prefixes its log lines.
    pub fn gateway(bin: &Path, name: &str, flags: &[String]) -> Result<Self, BoxError> {
        let mut command = Command::new(bin);
        command.args(["gateway", "--listen", "127.0.0.1:0", "--log-format", "json"]).args(flags);
        // The gateway keeps no data, but a `Server` has a directory.
        let data_dir = tempfile::Builder::new().prefix("tessera-bench-gateway-").tempdir()?;
        Self::run(command, name, Arc::new(data_dir))
    }

    fn spawn(bin: &Path, name: &str, data_dir: Arc<TempDir>, extra: &[String]) -> Result<Self, BoxError> {
        let mut command = Command::new(bin);
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir.path())
            .args(["--login-rate-limit", "off", "--login-failure-limit", "off", "--log-format", "json"])
            .args(extra);
        Self::run(command, name, data_dir)
    }

    fn run(mut command: Command, name: &str, data_dir: Arc<TempDir>) -> Result<Self, BoxError> {
        let program = command.get_program().to_string_lossy().into_owned();
        let mut child = command
            .env("RUST_LOG", "warn,tessera_server=info,tessera_gateway=info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {program}: {e}"))?;
        let stdout = child.stdout.take().ok_or("the server's stdout is not piped")?;
        let mut server = Self { child, addr: SocketAddr::from(([127, 0, 0, 1], 0)), data_dir };
        server.addr = server.wait_for_listening(name, stdout)?;
        Ok(server)
    }

    /// Registers an OAuth client in this server's database (`tessera clients add`); its HTTP
    /// Basic credentials, for introspection.
    pub fn register_client(&self, bin: &Path) -> Result<String, BoxError> {
        let out = Command::new(bin)
            .args(["clients", "add", "bench", "--json", "--data-dir"])
            .arg(self.data_dir.path())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {} clients add: {e}", bin.display()))?;
        if !out.status.success() {
            return Err(format!("clients add failed: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        let client: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let (id, secret) = (client["client_id"].as_str(), client["client_secret"].as_str());
        let (Some(id), Some(secret)) = (id, secret) else { return Err("clients add printed no credentials".into()) };
        use base64::Engine;
        Ok(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Peak resident set size of the server so far (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> Result<u64, BoxError> {
        self.status_kib("VmHWM")
    }

    /// Resident set size of the server now (`VmRSS`), in KiB.
    pub fn rss_kib(&self) -> Result<u64, BoxError> {
        self.status_kib("VmRSS")
    }

    /// A `kB` line of the process's `/proc/PID/status`.
    fn status_kib(&self, field: &str) -> Result<u64, BoxError> {
        let path = format!("/proc/{}/status", self.child.id());
        let status = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| format!("no {field} line in {path}").into())
    }

    fn wait_for_listening(&mut self, name: &str, stdout: ChildStdout) -> Result<SocketAddr, BoxError> {
        let (tx, rx) = mpsc::channel();
        let prefix = format!("[{name}]");
        std::thread::Builder::new()
            .name(format!("{name}-stdout"))
            .spawn(move || drain_stdout(stdout, &prefix, tx))
            .map_err(|e| format!("cannot start the stdout reader: {e}"))?;
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => Ok(addr),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                Err(format!("{name} did not report listening within {START_TIMEOUT:?}").into())
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = self.child.wait().map_or_else(|e| e.to_string(), |s| s.to_string());
                Err(format!("{name} exited before listening ({status}); see its output above").into())
            }
        }
    }
}

impl Server {
    /// Stops the server now rather than when it is dropped.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Two instances that behave as one tessera, with sessions in Redis: see the module docs.
pub struct Pair {
    pub a: Server,
    pub b: Server,
}

impl Pair {
    /// The `iss` both instances mint (any fixed string will do; neither is reached by it).
    pub const ISSUER: &str = "https://bench.local";

    /// Starts instance A, then B on A's data directory, both with sessions at `redis_url` under
    /// a key prefix of their own, so nothing else in that Redis is touched. Short lifetimes let
    /// the benchmark's sessions expire from Redis soon after the run.
    pub fn start(bin: &Path, redis_url: &str) -> Result<Self, BoxError> {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let prefix = format!("tessera-bench-{}-{nanos}", std::process::id());
        let flags: Vec<String> = [
            "--issuer",
            Self::ISSUER,
            "--session-store-url",
            redis_url,
            "--redis-key-prefix",
            &prefix,
            "--access-ttl",
            "5m",
            "--refresh-ttl",
            "10m",
            "--session-max-lifetime",
            "10m",
        ]
        .map(str::to_owned)
        .into();
        let a = Server::start_with(bin, "instance A", &flags)?;
        let b = a.sibling(bin, "instance B", &flags)?;
        Ok(Self { a, b })
    }
}

/// Reads the server's log lines until the pipe closes: sends the address of the "listening"
/// line, echoes every other line to stderr (at `warn` they are worth seeing) except the audit
/// events, which the server logs whatever `RUST_LOG` says, one per login and refresh: the
/// server still writes them, as in production, but the load generator does not spend the
/// machine's CPU repeating them. The pipe never fills and blocks the server.
fn drain_stdout(stdout: ChildStdout, prefix: &str, tx: mpsc::Sender<SocketAddr>) {
    let mut tx = Some(tx);
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { return };
        // Cheapest test first: this thread reads a line per refresh, on the CPU the server uses.
        if line.contains(AUDIT_TARGET) {
            continue;
        }
        match tx.as_ref().and(listening_addr(&line)) {
            Some(addr) => {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(addr);
                }
            }
            None => eprintln!("{prefix} {line}"),
        }
    }
}

/// How the JSON log lines of audit events show their target.
const AUDIT_TARGET: &str = r#""target":"audit""#;

/// The `addr` of a JSON log line whose message is "listening".
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let event: serde_json::Value = serde_json::from_str(line).ok()?;
    if event.get("message")?.as_str()? != "listening" {
        return None;
    }
    event.get("addr")?.as_str()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listening_line_gives_the_address() {
        let line = r#"{"timestamp":"t","level":"INFO","message":"listening","addr":"127.0.0.1:4321","target":"tessera_server"}"#;
        assert_eq!(listening_addr(line), Some(SocketAddr::from(([127, 0, 0, 1], 4321))));
        assert_eq!(listening_addr(r#"{"message":"stopped"}"#), None);
        assert_eq!(listening_addr("not json"), None);
    }
}
