//! The flags of `tessera serve` (each also its `TESSERA_*` variable), and the store flags that
//! every command opening the stores shares.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use serde::Deserialize;

use super::Settings;
use tessera_store::open::redact_url;

/// Flags of `tessera serve`, each also readable from its `TESSERA_*` variable.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// The configuration file and where the stores are.
    #[command(flatten)]
    pub stores: StoreArgs,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "TESSERA_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Access-token lifetime, e.g. 3600, 90s, 15m, 1h [default: 15m].
    #[arg(long, env = "TESSERA_ACCESS_TTL", value_name = "DURATION")]
    pub access_ttl: Option<String>,
    /// Refresh-token lifetime, renewed by each rotation [default: 30d].
    #[arg(long, env = "TESSERA_REFRESH_TTL", value_name = "DURATION")]
    pub refresh_ttl: Option<String>,
    /// Absolute session lifetime, after which the user signs in again [default: 90d].
    #[arg(long, env = "TESSERA_SESSION_MAX_LIFETIME", value_name = "DURATION")]
    pub session_max_lifetime: Option<String>,
    /// Window in which a just-rotated refresh token gets its unused successor again [default: 0s].
    #[arg(long, env = "TESSERA_REFRESH_GRACE", value_name = "DURATION")]
    pub refresh_grace: Option<String>,
    /// `iss` of access tokens [default: http://<listen address>].
    #[arg(long, env = "TESSERA_ISSUER", value_name = "URL")]
    pub issuer: Option<String>,
    /// `aud` of access tokens [default: tessera].
    #[arg(long, env = "TESSERA_AUDIENCE")]
    pub audience: Option<String>,
    /// Comma-separated origins allowed to use the refresh cookie [default: same origin only].
    #[arg(long, env = "TESSERA_ALLOWED_ORIGINS", value_name = "ORIGINS")]
    pub allowed_origins: Option<String>,
    /// Drop `Secure` from the refresh cookie: development over plain http only.
    #[arg(long, env = "TESSERA_INSECURE_COOKIES", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub insecure_cookies: Option<bool>,
    /// Login and registration attempts per client IP, e.g. 30/min, 5/s, or off [default: 30/min].
    #[arg(long, env = "TESSERA_LOGIN_RATE_LIMIT", value_name = "RATE")]
    pub login_rate_limit: Option<String>,
    /// Let anyone open a guest session (`POST /api/auth/anonymous`) [default: false].
    #[arg(long, env = "TESSERA_ALLOW_ANONYMOUS", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub allow_anonymous: Option<bool>,
    /// Guest sign-ins per client address, e.g. 30/h, or off [default: 30/h].
    #[arg(long, env = "TESSERA_ANONYMOUS_RATE_LIMIT", value_name = "RATE")]
    pub anonymous_rate_limit: Option<String>,
    /// How old a guest account with no live session must be before it is deleted [default: 7d].
    #[arg(long, env = "TESSERA_GUEST_RETENTION", value_name = "DURATION")]
    pub guest_retention: Option<String>,
    /// Failed logins per account, from all addresses together: a budget that refills evenly
    /// over the period, e.g. 30/15min, or off [default: 30/15min]. A successful login does not
    /// count; open sessions are never affected.
    #[arg(long, env = "TESSERA_LOGIN_FAILURE_LIMIT", value_name = "RATE")]
    pub login_failure_limit: Option<String>,
    /// Comma-separated addresses and networks of reverse proxies whose `Forwarded` /
    /// `X-Forwarded-For` headers name the client [default: none].
    #[arg(long, env = "TESSERA_TRUSTED_PROXIES", value_name = "NETWORKS")]
    pub trusted_proxies: Option<String>,
    /// Largest accepted request body in bytes [default: 16384].
    #[arg(long, env = "TESSERA_BODY_LIMIT", value_name = "BYTES")]
    pub body_limit: Option<usize>,
    /// Time allowed to send a request's headers, from its first byte [default: 10s].
    #[arg(long, env = "TESSERA_HEADER_TIMEOUT", value_name = "DURATION")]
    pub header_timeout: Option<String>,
    /// Time allowed to send a request's body, from when the server starts reading it [default: 15s].
    #[arg(long, env = "TESSERA_BODY_TIMEOUT", value_name = "DURATION")]
    pub body_timeout: Option<String>,
    /// How long a keep-alive connection may sit without a request [default: 60s].
    #[arg(long, env = "TESSERA_IDLE_TIMEOUT", value_name = "DURATION")]
    pub idle_timeout: Option<String>,
    /// Open connections at most; more are refused [default: 2048].
    #[arg(long, env = "TESSERA_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// Open connections at most from one address (an IPv6 /64); trusted proxies are exempt
    /// [default: 128].
    #[arg(long, env = "TESSERA_MAX_CONNECTIONS_PER_ADDRESS", value_name = "N")]
    pub max_connections_per_address: Option<usize>,
    /// How long a stopping server lets in-flight requests finish before it exits anyway
    /// [default: 10s].
    #[arg(long, env = "TESSERA_SHUTDOWN_TIMEOUT", value_name = "DURATION")]
    pub shutdown_timeout: Option<String>,
    /// argon2id memory cost in KiB [default: 19456].
    #[arg(long, env = "TESSERA_ARGON2_MEMORY_KIB", value_name = "KIB")]
    pub argon2_memory_kib: Option<u32>,
    /// argon2id iterations [default: 2].
    #[arg(long, env = "TESSERA_ARGON2_ITERATIONS", value_name = "N")]
    pub argon2_iterations: Option<u32>,
    /// argon2id parallelism [default: 1].
    #[arg(long, env = "TESSERA_ARGON2_PARALLELISM", value_name = "N")]
    pub argon2_parallelism: Option<u32>,
    /// SQLite durability: `normal` survives a crash of tessera, `full` also a power loss [default: normal].
    #[arg(long, env = "TESSERA_SQLITE_SYNCHRONOUS", value_name = "MODE")]
    pub sqlite_synchronous: Option<String>,
    /// Log format: text or json [default: text].
    #[arg(long, env = "TESSERA_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Prefix of every key in the Valkey/Redis session store [default: tessera].
    #[arg(long, env = "TESSERA_REDIS_KEY_PREFIX", value_name = "PREFIX")]
    pub redis_key_prefix: Option<String>,
}

impl ServeArgs {
    /// The settings that `TESSERA_*` variables give, as `tessera serve` with no flags would read
    /// them: the base for commands that take only some of `serve`'s flags.
    pub fn from_env() -> anyhow::Result<Self> {
        use clap::{Args, FromArgMatches};
        let command = Self::augment_args(clap::Command::new("tessera"));
        let matches = command.try_get_matches_from(["tessera"]).context("invalid TESSERA_* variable")?;
        Ok(Self::from_arg_matches(&matches)?)
    }
}

/// Where a server's stores are: flags of `serve` and of every other command that opens them
/// (`tessera clients`). [`StoreArgs::resolve`] folds them into the rest of `serve`'s settings
/// (its `--config` file and `TESSERA_*` variables), so such a command opens exactly the stores
/// the server with the same configuration opens.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct StoreArgs {
    /// TOML configuration file.
    #[arg(long, env = "TESSERA_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory for the SQLite file and the signing keys [default: ./tessera-data].
    #[arg(long, env = "TESSERA_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Where users (and, by default, sessions) live [default: the SQLite file in the data dir].
    #[arg(long, env = "TESSERA_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<SecretUrl>,
    /// Where sessions live [default: the database].
    #[arg(long, env = "TESSERA_SESSION_STORE_URL", value_name = "URL")]
    pub session_store_url: Option<SecretUrl>,
}

impl StoreArgs {
    /// The settings `tessera serve` would run with, given these flags and the same environment.
    pub fn resolve(self) -> anyhow::Result<Settings> {
        Settings::resolve(ServeArgs { stores: self, ..ServeArgs::from_env()? })
    }
}

/// A store URL that may hold a password: shown with the password masked by `Debug`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SecretUrl(pub String);

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", redact_url(&self.0))
    }
}

impl std::str::FromStr for SecretUrl {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}
