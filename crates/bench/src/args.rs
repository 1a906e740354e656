//! The command line (clap): a handful of `--flag VALUE` options, and the hidden
//! `serve-trivial` subcommand the benchmark starts for the HTTP ceiling.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::BoxError;
use crate::scale::SCALE;
use crate::scenario::SCENARIOS;

/// What the rows are measured beside (shown after `--help`).
const ABOUT_ROWS: &str = "\
Each of me, refresh (sessions in SQLite) and login is measured beside its ceiling, taking turns run
by run, and shows its ratio to it: ceiling-http, a trivial axum route in a process of its own
(tessera-bench serve-trivial) answering /me's body; ceiling-sqlite, one SQLite connection committing
single-row updates one transaction at a time; ceiling-argon2, raw argon2id on every core.
rs-bare and rs-layer load a resource server inside the benchmark (GET /bare, and GET /protected
behind tessera-verify's layer); logout-latency times logout -> 401 at that resource server, on the
benchmark's server and, when TESSERA_TEST_REDIS_URL is set, on two instances sharing that Redis.
gateway loads `tessera gateway` in front of a trivial upstream, beside the same upstream reached
directly (upstream-direct), through Debian's nginx (nginx-proxy) and through nginx with auth_request
to tessera (nginx-auth-request), which run with it; then times logout -> 401 and logout -> socket
close through it, and its memory with --idle-sockets idle WebSockets.
scale runs refresh against stores filled with 1 000 and with --scale-sessions sessions, on SQLite
and, when TESSERA_TEST_REDIS_URL is set, on that Redis; it takes minutes, so only --only runs it.";

/// tessera's benchmark: the release server on loopback, each row beside a limit of the machine
/// measured in the same run.
#[derive(Debug, Parser)]
#[command(name = "tessera-bench", after_long_help = ABOUT_ROWS, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Sub {
    /// The HTTP ceiling's server (see `crate::ceiling`), started by the benchmark itself.
    #[command(name = "serve-trivial", hide = true)]
    ServeTrivial {
        #[arg(long, value_name = "JSON")]
        body: String,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Measured seconds per run.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    duration: u64,
    /// Unmeasured seconds before each run.
    #[arg(long, value_name = "SECS", default_value_t = 2)]
    warmup: u64,
    /// Concurrent keep-alive connections.
    #[arg(long, value_name = "N", default_value_t = 32)]
    connections: usize,
    /// Runs per scenario; the median run is reported.
    #[arg(long, value_name = "N", default_value_t = 3)]
    runs: usize,
    /// Run only these scenarios (a row's ceiling runs with it; scale runs only when named):
    /// me, introspect-access, introspect-refresh, refresh, login, me-during-login, rs-bare,
    /// rs-layer, upstream-direct, nginx-proxy, nginx-auth-request, gateway, logout-latency,
    /// ceiling-http, ceiling-sqlite, ceiling-argon2, scale.
    #[arg(long, value_name = "NAME,...", value_delimiter = ',')]
    only: Option<Vec<String>>,
    /// The server's SQLite durability, and the SQLite ceiling's [default:
    /// TESSERA_SQLITE_SYNCHRONOUS, else normal].
    #[arg(long, value_name = "MODE", value_parser = ["normal", "full"], ignore_case = true)]
    sqlite_synchronous: Option<String>,
    /// Logouts timed by logout-latency, per row.
    #[arg(long, value_name = "N", default_value_t = 100)]
    logouts: usize,
    /// Idle WebSockets held open through the gateway for its memory.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    idle_sockets: usize,
    /// Stored sessions of scale's large rows.
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    scale_sessions: u64,
    /// The tessera binary [default: tessera next to this binary].
    #[arg(long, value_name = "PATH")]
    server_bin: Option<PathBuf>,
    /// Threads of the load generator.
    #[arg(long, value_name = "N", default_value_t = 1)]
    client_threads: usize,
}

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
    pub idle_sockets: usize,
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
            idle_sockets: 10_000,
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
        if self.runs == 0 || self.client_threads == 0 || self.logouts == 0 || self.idle_sockets == 0 {
            return Err("--runs, --client-threads, --logouts and --idle-sockets must be at least 1".into());
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

/// Parses `std::env::args()` minus the program name (`--help` prints and exits).
pub fn parse(argv: impl Iterator<Item = String>) -> Result<Command, BoxError> {
    use clap::error::ErrorKind;
    let cli = match Cli::try_parse_from(std::iter::once("tessera-bench".to_owned()).chain(argv)) {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => e.exit(),
        Err(e) => return Err(e.render().to_string().into()),
    };
    if let Some(Sub::ServeTrivial { body }) = cli.command {
        return Ok(Command::ServeTrivial { body });
    }
    let run = cli.run;
    let defaults = Args::defaults()?;
    // Given as a flag, the mode is passed to the servers; otherwise they read the variable.
    let sqlite_flag = run.sqlite_synchronous.is_some();
    let synchronous = run
        .sqlite_synchronous
        .or_else(|| std::env::var("TESSERA_SQLITE_SYNCHRONOUS").ok().filter(|mode| !mode.is_empty()));
    let sqlite_full = match synchronous.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("normal") => false,
        Some("full") => true,
        Some(other) => return Err(format!("--sqlite-synchronous must be normal or full, not `{other}`").into()),
    };
    let args = Args {
        duration: Duration::from_secs(run.duration),
        warmup: Duration::from_secs(run.warmup),
        connections: run.connections,
        runs: run.runs,
        only: run.only.map(|names| names.into_iter().map(|name| name.trim().to_owned()).collect()),
        server_bin: run.server_bin.unwrap_or(defaults.server_bin),
        client_threads: run.client_threads,
        logouts: run.logouts,
        idle_sockets: run.idle_sockets,
        scale_sessions: run.scale_sessions,
        sqlite_full,
        sqlite_flag,
    };
    args.validate().map(Command::Run)
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
