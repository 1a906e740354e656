//! The server under test: `tessera serve` as a child process on a free port of 127.0.0.1, with
//! its data in a temporary directory. It is killed when [`Server`] is dropped, on success and on
//! error alike.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use tempfile::TempDir;

use crate::BoxError;

/// How long the server may take to open its database and start listening.
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Server {
    child: Child,
    addr: SocketAddr,
    // Removed after the child is killed (fields drop after `Drop::drop` runs).
    _data_dir: TempDir,
}

impl Server {
    /// Starts `bin serve` and waits for its "listening" log line.
    pub fn start(bin: &Path) -> Result<Self, BoxError> {
        let data_dir = tempfile::Builder::new()
            .prefix("tessera-bench-")
            .tempdir()
            .map_err(|e| format!("cannot create a temporary data directory: {e}"))?;
        let mut child = Command::new(bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir.path())
            .args(["--login-rate-limit", "off", "--log-format", "json"])
            .env("RUST_LOG", "warn,tessera_server=info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let stdout = child.stdout.take().ok_or("the server's stdout is not piped")?;
        let mut server = Self { child, addr: SocketAddr::from(([127, 0, 0, 1], 0)), _data_dir: data_dir };
        server.addr = server.wait_for_listening(stdout)?;
        Ok(server)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Peak resident set size of the server so far (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> Result<u64, BoxError> {
        let path = format!("/proc/{}/status", self.child.id());
        let status = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| format!("no VmHWM line in {path}").into())
    }

    fn wait_for_listening(&mut self, stdout: ChildStdout) -> Result<SocketAddr, BoxError> {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("server-stdout".into())
            .spawn(move || drain_stdout(stdout, tx))
            .map_err(|e| format!("cannot start the stdout reader: {e}"))?;
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => Ok(addr),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                Err(format!("the server did not report listening within {START_TIMEOUT:?}").into())
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = self.child.wait().map_or_else(|e| e.to_string(), |s| s.to_string());
                Err(format!("the server exited before listening ({status}); see its output above").into())
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads the server's log lines until the pipe closes: sends the address of the "listening"
/// line, echoes every other line to stderr (at `warn` they are worth seeing), so the pipe never
/// fills and blocks the server.
fn drain_stdout(stdout: ChildStdout, tx: mpsc::Sender<SocketAddr>) {
    let mut tx = Some(tx);
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { return };
        match listening_addr(&line) {
            Some(addr) => {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(addr);
                }
            }
            None => eprintln!("[server] {line}"),
        }
    }
}

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
