//! The `tessera` binary: `tessera serve` runs the server, `tessera gateway` the identity-aware
//! proxy in front of a service, `tessera keys rotate` adds a signing key,
//! and `login`, `status`, `logout`, `whoami`, `token`, `sessions` and `passwd` are the
//! command-line client.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tessera_core::Timestamp;
use tessera_core::duration::parse_duration;
use tessera_core::keys::{JWKS_MAX_AGE, KeyDir};
use tessera_server::config::{ServeArgs, Settings, StoreArgs};

/// mimalloc rather than the system allocator: a request allocates and frees small buffers on
/// whichever worker thread polls it, which cost glibc's allocator a tenth of a refresh's CPU
/// time (the README's benchmark section has the figures). Without transparent huge pages
/// (`no_thp`): with them, connections that come and go (`scripts/connection-flood`) left the
/// server at 110 MiB instead of 72.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "tessera",
    version,
    about = "Self-hosted authentication: short-lived access tokens, rotating refresh tokens"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the authentication server.
    Serve(Box<ServeArgs>),
    /// Run an identity-aware reverse proxy in front of one service: every request's token is
    /// checked, the caller passed on in X-Tessera-* headers, and WebSockets closed at logout.
    Gateway(Box<tessera_gateway::GatewayArgs>),
    /// Manage signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Manage the OAuth clients allowed to introspect tokens (RFC 7662).
    Clients {
        #[command(subcommand)]
        command: ClientsCommand,
    },
    /// Log in by email or --username and save the tokens (prompts on a terminal, password hidden).
    Login(cli::LoginArgs),
    /// Show the server, whether you are logged in, as whom, and the time left on the token.
    Status(cli::ServerArg),
    /// End the session on the server and remove the saved tokens.
    Logout(cli::ServerArg),
    /// Ask the server who you are.
    Whoami(cli::ServerArg),
    /// Print a valid access token, refreshed first when needed:
    /// curl -H "Authorization: Bearer $(tessera token)" …
    Token(cli::ServerArg),
    /// List your sessions, or end one with --revoke ID.
    Sessions(cli::SessionsArgs),
    /// Change your password (current, then new twice, hidden); ends your other sessions.
    Passwd(cli::PasswdArgs),
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Add a new signing key. It is published in the JWKS at once and starts signing after
    /// `--activate-in`, so verifiers that cache the JWKS never meet an unknown `kid`; keys whose
    /// tokens have all expired are deleted.
    Rotate {
        /// The server's TOML configuration file (its `data_dir` and `access_ttl` apply here).
        #[arg(long, env = "TESSERA_CONFIG", value_name = "FILE")]
        config: Option<PathBuf>,
        /// [default: ./tessera-data]
        #[arg(long, env = "TESSERA_DATA_DIR", value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Delay before the new key signs [default: the JWKS cache lifetime, 5m].
        #[arg(long, value_name = "DURATION")]
        activate_in: Option<String>,
        /// The access-token lifetime the server runs with: how long a replaced key stays
        /// published [default: 15m].
        #[arg(long, env = "TESSERA_ACCESS_TTL", value_name = "DURATION")]
        access_ttl: Option<String>,
    },
}

/// Where the clients live: the server's database, found as `tessera serve` finds it.
#[derive(Debug, clap::Args)]
struct DatabaseArgs {
    #[command(flatten)]
    stores: StoreArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum ClientsCommand {
    /// Register a confidential client; prints its id and secret once (keep the secret: only its
    /// digest is stored).
    Add {
        /// A name for people: letters, digits, `-`, `_`, `.`.
        name: String,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// List the registered clients.
    List {
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Remove a client by id or name; it can no longer introspect.
    Remove {
        id_or_name: String,
        #[command(flatten)]
        db: DatabaseArgs,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Gateway(args) => gateway(*args),
        Command::Keys { command: KeysCommand::Rotate { config, data_dir, activate_in, access_ttl } } => {
            ServeArgs::from_env().and_then(|env| {
                let stores = StoreArgs { config, data_dir, ..env.stores };
                rotate_keys(ServeArgs { stores, access_ttl, ..env }, activate_in)
            })
        }
        Command::Clients { command } => clients(command),
        Command::Login(args) => return cli::run(async || cli::login(args).await),
        Command::Status(arg) => return cli::run(async || cli::status(arg).await),
        Command::Logout(arg) => return cli::run(async || cli::logout(arg).await),
        Command::Whoami(arg) => return cli::run(async || cli::whoami(arg).await),
        Command::Token(arg) => return cli::run(async || cli::token(arg).await),
        Command::Sessions(args) => return cli::run(async || cli::sessions(args).await),
        Command::Passwd(args) => return cli::run(async || cli::passwd(args).await),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tessera: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let settings = Settings::resolve(args)?;
    // Held to the end: dropping it writes out the last log lines.
    let _logs = tessera_server::telemetry::init(settings.log_format);
    warn_unknown_variables();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    // The signal handlers are installed first thing inside the runtime.
    runtime.block_on(async { tessera_server::serve(settings, tessera_server::shutdown_signal()).await })
}

fn gateway(args: tessera_gateway::GatewayArgs) -> anyhow::Result<()> {
    let settings = tessera_gateway::GatewaySettings::resolve(args)?;
    let _logs = tessera_server::telemetry::init(settings.log_format);
    warn_unknown_variables();
    // The first of the gateway's workers, which also keeps its verifier's keys and feed; the
    // others have threads of their own (`--workers`).
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async { tessera_gateway::serve(settings, tessera_server::shutdown_signal()).await })
}

/// `TESSERA_*` variables that neither the server nor the gateway reads: likely typos.
fn warn_unknown_variables() {
    let unknown = tessera_server::config::unknown_variables();
    for name in unknown.iter().filter(|name| !tessera_gateway::config::VARIABLES.contains(&name.as_str())) {
        tracing::warn!(variable = %name, "unknown TESSERA_* variable ignored; check its spelling");
    }
}

/// Adds a signing key in the server's key directory, with the data directory and the access-token
/// lifetime resolved as `tessera serve` resolves them (file, environment, flags).
fn rotate_keys(args: ServeArgs, activate_in: Option<String>) -> anyhow::Result<()> {
    let settings = Settings::resolve(args)?;
    let delay = activate_in.as_deref().map(parse_duration).transpose()?.unwrap_or(JWKS_MAX_AGE);
    let retention = settings.lifetimes.access_ttl + Duration::from_secs(60);
    let data_dir = settings.data_dir;
    let keys = KeyDir::new(data_dir.join("keys"));
    let now = Timestamp::now();
    keys.init(now)?;
    let kid = keys.add_key(now, now.saturating_add(delay))?;
    println!("new signing key {kid}: published now, signs from {}", now.saturating_add(delay).to_rfc3339());
    for old in keys.prune(now, retention)? {
        println!("removed retired key {old}");
    }
    Ok(())
}

fn clients(command: ClientsCommand) -> anyhow::Result<()> {
    use tessera_core::clients::Clients;
    let db = match &command {
        ClientsCommand::Add { db, .. } | ClientsCommand::List { db } | ClientsCommand::Remove { db, .. } => db,
    };
    let settings = db.stores.clone().resolve()?;
    let json = db.json;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let clients = Clients::new(tessera_server::open_stores(&settings).await?.clients);
        match command {
            ClientsCommand::Add { name, .. } => {
                let (client, secret) = clients.register(&name, Timestamp::now()).await?;
                if json {
                    let out = serde_json::json!({"client_id": client.id, "client_secret": secret.expose(), "name": client.name});
                    println!("{out}");
                } else {
                    println!("client_id:     {}\nclient_secret: {}", client.id, secret.expose());
                    eprintln!("The secret is shown only now; tessera keeps only its digest.");
                }
            }
            ClientsCommand::List { .. } => {
                let list = clients.list().await?;
                if json {
                    let out: Vec<_> = list
                        .iter()
                        .map(|c| serde_json::json!({"client_id": c.id, "name": c.name, "created_at": c.created_at.to_rfc3339()}))
                        .collect();
                    println!("{}", serde_json::Value::from(out));
                } else {
                    for c in list {
                        println!("{}  {}  {}", c.id, c.created_at.to_rfc3339(), c.name);
                    }
                }
            }
            ClientsCommand::Remove { id_or_name, .. } => {
                if !clients.remove(&id_or_name).await? {
                    anyhow::bail!("no client `{id_or_name}`");
                }
                println!("removed client {id_or_name}");
            }
        }
        Ok(())
    })
}
