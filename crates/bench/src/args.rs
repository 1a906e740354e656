//! The command line, parsed by hand: a handful of `--flag VALUE` pairs.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::BoxError;
use crate::scale::SCALE;
use crate::scenario::SCENARIOS;

pub const USAGE: &str = "\
usage: tessera-bench [OPTIONS]

  --duration SECS        measured seconds per run [default: 10]
  --warmup SECS          unmeasured seconds before each run [default: 2]
  --connections N        concurrent keep-alive connections [default: 32]
  --runs N               runs per scenario; the median run is reported [default: 3]
  --only NAME[,NAME...]  run only these scenarios: me, introspect-access, introspect-refresh,
                         refresh, login, me-during-login, rs-bare, rs-layer, logout-latency,
                         ceiling-http, ceiling-sqlite, ceiling-argon2, scale (e.g. --only
                         rs-bare,rs-layer); a row's ceiling runs with it; scale runs only when
                         named
  --sqlite-synchronous normal|full
                         the server's SQLite durability, and the SQLite ceiling's
                         [default: TESSERA_SQLITE_SYNCHRONOUS, else normal]
  --logouts N            logouts timed by logout-latency, per row [default: 100]
  --scale-sessions N     stored sessions of scale's large rows [default: 1000000]
  --server-bin PATH      the tessera binary [default: tessera next to this binary]
  --client-threads N     threads of the load generator [default: 1]
  -h, --help             print this help

Each of me, refresh (sessions in SQLite) and login is measured beside its ceiling, taking turns run
by run, and shows its ratio to it: ceiling-http, a trivial axum route in a process of its own
(tessera-bench serve-trivial) answering /me's body; ceiling-sqlite, one SQLite connection committing
single-row updates one transaction at a time; ceiling-argon2, raw argon2id on every core.
rs-bare and rs-layer load a resource server inside the benchmark (GET /bare, and GET /protected
behind tessera-verify's layer); logout-latency times logout -> 401 at that resource server, on the
benchmark's server and, when TESSERA_TEST_REDIS_URL is set, on two instances sharing that Redis.
scale runs refresh against stores filled with 1 000 and with --scale-sessions sessions, on SQLite
and, when TESSERA_TEST_REDIS_URL is set, on that Redis; it takes minutes, so only --only runs it.";

#[derive(Debug, Clone)]
pub struct Args {
    pub duration: Duration,
    pub warmup: Duration,
    pub connections: usize,
    pub runs: usize,
    /// The scenarios to run; `None`: all of them.
    pub only: Option<Vec<String>>,
    pub server_bin: PathBuf,
    pub client_threads: usize,
    pub logouts: usize,
    pub scale_sessions: u64,
    /// `--sqlite-synchronous full`: the server's SQLite fsyncs every commit, and so does the
    /// SQLite ceiling.
    pub sqlite_full: bool,
    /// Whether `--sqlite-synchronous` was given (then it is passed to the servers; otherwise
    /// they read `TESSERA_SQLITE_SYNCHRONOUS` themselves, as the benchmark did).
    sqlite_flag: bool,
}

/// What the command line asks for.
pub enum Command {
    Run(Args),
    Help,
    /// `tessera-bench serve-trivial --body JSON`: the HTTP ceiling's server (see
    /// `crate::ceiling`), started by the benchmark itself.
    ServeTrivial {
        body: String,
    },
}

/// The subcommand that serves the HTTP ceiling.
pub const SERVE_TRIVIAL: &str = "serve-trivial";

impl Args {
    /// Whether scenario `name` is to run: every one but `scale` unless `--only` names some,
    /// and `scale` only when named (it takes minutes).
    pub fn selects(&self, name: &str) -> bool {
        match &self.only {
            Some(only) => only.iter().any(|o| o == name),
            None => name != SCALE,
        }
    }

    /// Whether `--only` names `name` itself.
    pub fn names(&self, name: &str) -> bool {
        self.only.iter().flatten().any(|o| o == name)
    }

    /// The flags that give the servers this run's SQLite durability.
    pub fn server_flags(&self) -> Vec<String> {
        if self.sqlite_flag {
            let mode = if self.sqlite_full { "full" } else { "normal" };
            vec!["--sqlite-synchronous".into(), mode.into()]
        } else {
            Vec::new()
        }
    }

    fn defaults() -> Result<Self, BoxError> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot locate the tessera-bench binary: {e}"))?;
        let dir = exe.parent().ok_or("the tessera-bench binary has no parent directory")?;
        Ok(Self {
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(2),
            connections: 32,
            runs: 3,
            only: None,
            server_bin: dir.join("tessera"),
            client_threads: 1,
            logouts: 100,
            scale_sessions: 1_000_000,
            sqlite_full: false,
            sqlite_flag: false,
        })
    }

    fn validate(self) -> Result<Self, BoxError> {
        if self.duration.is_zero() {
            return Err("--duration must be at least 1".into());
        }
        let splits = self.selects("me-during-login");
        if self.connections == 0 || (splits && self.connections < 2) {
            return Err("--connections must be at least 1, and 2 for me-during-login".into());
        }
        if self.runs == 0 || self.client_threads == 0 || self.logouts == 0 {
            return Err("--runs, --client-threads and --logouts must be at least 1".into());
        }
        if self.scale_sessions < crate::scale::SMALL {
            return Err(format!("--scale-sessions must be at least {}", crate::scale::SMALL).into());
        }
        if let Some(name) = self.only.iter().flatten().find(|name| !SCENARIOS.contains(&name.as_str())) {
            return Err(format!("unknown scenario `{name}`: use one of {}", SCENARIOS.join(", ")).into());
        }
        if !self.server_bin.is_file() {
            return Err(format!(
                "server binary {} not found: build it with `cargo build --release -p tessera` or pass --server-bin",
                self.server_bin.display()
            )
            .into());
        }
        Ok(self)
    }
}

/// Parses `std::env::args()` minus the program name.
pub fn parse(argv: impl Iterator<Item = String>) -> Result<Command, BoxError> {
    let mut argv = argv.peekable();
    if argv.peek().map(String::as_str) == Some(SERVE_TRIVIAL) {
        return match (argv.nth(1).as_deref(), argv.next(), argv.next()) {
            (Some("--body"), Some(body), None) => Ok(Command::ServeTrivial { body }),
            _ => Err(format!("usage: tessera-bench {SERVE_TRIVIAL} --body JSON").into()),
        };
    }
    let mut args = Args::defaults()?;
    let mut synchronous = std::env::var("TESSERA_SQLITE_SYNCHRONOUS").ok().filter(|mode| !mode.is_empty());
    while let Some(flag) = argv.next() {
        if flag == "-h" || flag == "--help" {
            return Ok(Command::Help);
        }
        let mut value = || argv.next().ok_or_else(|| format!("{flag} needs a value\n\n{USAGE}"));
        match flag.as_str() {
            "--duration" => args.duration = Duration::from_secs(number(&flag, &value()?)?),
            "--warmup" => args.warmup = Duration::from_secs(number(&flag, &value()?)?),
            "--connections" => args.connections = number(&flag, &value()?)?,
            "--runs" => args.runs = number(&flag, &value()?)?,
            "--only" => args.only = Some(value()?.split(',').map(|name| name.trim().to_owned()).collect()),
            "--server-bin" => args.server_bin = PathBuf::from(value()?),
            "--client-threads" => args.client_threads = number(&flag, &value()?)?,
            "--logouts" => args.logouts = number(&flag, &value()?)?,
            "--scale-sessions" => args.scale_sessions = number(&flag, &value()?)?,
            "--sqlite-synchronous" => {
                synchronous = Some(value()?);
                args.sqlite_flag = true;
            }
            _ => return Err(format!("unknown argument `{flag}`\n\n{USAGE}").into()),
        }
    }
    args.sqlite_full = match synchronous.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("normal") => false,
        Some("full") => true,
        Some(other) => return Err(format!("--sqlite-synchronous must be normal or full, not `{other}`").into()),
    };
    args.validate().map(Command::Run)
}

fn number<T: FromStr>(flag: &str, text: &str) -> Result<T, BoxError> {
    text.parse().map_err(|_| format!("{flag} expects a whole number, not `{text}`").into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_runs_only_when_named() {
        let mut args = Args::defaults().unwrap();
        assert!(args.selects("me") && args.selects("logout-latency"));
        assert!(!args.selects(SCALE), "minutes long: not in the default run");
        args.only = Some(vec![SCALE.into()]);
        assert!(args.selects(SCALE) && !args.selects("me"));
    }
}
