//! Configuration of `tessera serve`: defaults, then a TOML file (`--config`), then `TESSERA_*`
//! variables, then flags — each later source overriding the earlier ones.
//!
//! Flags and variables come from [`ServeArgs`] (clap reads both, flag first); the TOML file
//! uses the flag names with underscores (`access_ttl = "15m"`). Unknown TOML keys and unknown
//! `TESSERA_*` variables are reported, so a typo never silently falls back to a default.
//!
//! (About 400 lines with its tests: resolving every setting from its three layers is one
//! function, read top to bottom.)

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use tessera_core::duration::parse_duration;
use tessera_core::password::HashParams;
use tessera_core::service::Lifetimes;

use crate::conn::ConnLimits;
use crate::net::TrustedProxies;
mod args;
mod file;

pub use args::{SecretUrl, ServeArgs, StoreArgs};
use file::{DurationValue, FileConfig, read_file};

pub use crate::ratelimit::Rate;
pub use crate::telemetry::LogFormat;
pub use tessera_store::open::{StoreUrl, parse_store_url, redact_url};

/// Resolved settings of a server.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database: StoreUrl,
    pub session_store: StoreUrl,
    pub lifetimes: Lifetimes,
    /// `None`: derived from the bound address at start.
    pub issuer: Option<String>,
    pub audience: String,
    pub allowed_origins: Vec<String>,
    pub insecure_cookies: bool,
    pub login_rate_limit: Option<Rate>,
    pub login_failure_limit: Option<Rate>,
    pub allow_anonymous: bool,
    pub anonymous_rate_limit: Option<Rate>,
    pub guest_retention: Duration,
    pub trusted_proxies: TrustedProxies,
    pub body_limit: usize,
    pub body_timeout: Duration,
    pub connections: ConnLimits,
    pub shutdown_timeout: Duration,
    pub hash_params: HashParams,
    pub sqlite_synchronous_full: bool,
    pub log_format: LogFormat,
    pub redis_key_prefix: String,
    /// How often the store's feed is read for other instances' ends, besides what the store
    /// pushes ([`REVOCATION_POLL`]; not a flag: tests set it to see the push alone).
    pub revocation_poll: Duration,
}

/// The period of [`Settings::revocation_poll`]: the safety net for a push that was lost.
pub const REVOCATION_POLL: Duration = Duration::from_millis(250);

impl Settings {
    /// Resolves the settings from the file named by `--config` (if any), the environment
    /// (already folded into `args` by clap) and the flags.
    pub fn resolve(args: ServeArgs) -> anyhow::Result<Self> {
        let StoreArgs { config, data_dir, database_url, session_store_url } = args.stores;
        let file = match &config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let data_dir = data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from("./tessera-data"));
        let database = match database_url.or(file.database_url) {
            Some(url) => parse_store_url(&url.0).context("--database-url")?,
            None => StoreUrl::Sqlite(data_dir.join("tessera.db")),
        };
        let session_store = match session_store_url.or(file.session_store_url) {
            Some(url) => parse_store_url(&url.0).context("--session-store-url")?,
            None => database.clone(),
        };
        let duration = |flag: Option<String>, file: Option<DurationValue>, default: &str, name: &str| {
            let text = flag.or(file.map(DurationValue::into_text)).unwrap_or_else(|| default.to_owned());
            parse_duration(&text).with_context(|| format!("--{name}"))
        };
        let lifetimes = Lifetimes {
            access_ttl: duration(args.access_ttl, file.access_ttl, "15m", "access-ttl")?,
            refresh_ttl: duration(args.refresh_ttl, file.refresh_ttl, "30d", "refresh-ttl")?,
            session_max_lifetime: duration(
                args.session_max_lifetime,
                file.session_max_lifetime,
                "90d",
                "session-max-lifetime",
            )?,
            refresh_grace: duration(args.refresh_grace, file.refresh_grace, "0s", "refresh-grace")?,
        };
        if lifetimes.access_ttl.is_zero() || lifetimes.refresh_ttl.is_zero() || lifetimes.session_max_lifetime.is_zero()
        {
            bail!("--access-ttl, --refresh-ttl and --session-max-lifetime must be longer than 0s");
        }
        if lifetimes.refresh_grace > Duration::from_secs(300) {
            bail!("--refresh-grace must be at most 5m: a longer window gives a thief time to use a rotated token");
        }
        // As configured, an origin may carry one trailing slash; as compared, it has none.
        let origins: Vec<String> = match args.allowed_origins {
            Some(list) => list.split(',').map(str::to_owned).collect(),
            None => file.allowed_origins.unwrap_or_default(),
        };
        let allowed_origins = origins
            .iter()
            .map(|o| o.trim())
            .filter(|o| !o.is_empty())
            .map(parse_origin)
            .collect::<anyhow::Result<Vec<_>>>()
            .context("--allowed-origins")?;
        let rate = args.login_rate_limit.or(file.login_rate_limit).unwrap_or_else(|| "30/min".into());
        let failure_rate = args.login_failure_limit.or(file.login_failure_limit).unwrap_or_else(|| "30/15min".into());
        let trusted_proxies = match args.trusted_proxies {
            Some(list) => list,
            None => file.trusted_proxies.unwrap_or_default().join(","),
        };
        let trusted_proxies =
            TrustedProxies::parse(&trusted_proxies).map_err(anyhow::Error::msg).context("--trusted-proxies")?;
        let connections = ConnLimits::from_flags(
            duration(args.header_timeout, file.header_timeout, "10s", "header-timeout")?,
            duration(args.idle_timeout, file.idle_timeout, "60s", "idle-timeout")?,
            args.max_connections.or(file.max_connections),
            args.max_connections_per_address.or(file.max_connections_per_address),
        )
        .map_err(anyhow::Error::msg)?;
        let defaults = HashParams::default();
        let hash_params = HashParams {
            memory_kib: args.argon2_memory_kib.or(file.argon2_memory_kib).unwrap_or(defaults.memory_kib),
            iterations: args.argon2_iterations.or(file.argon2_iterations).unwrap_or(defaults.iterations),
            parallelism: args.argon2_parallelism.or(file.argon2_parallelism).unwrap_or(defaults.parallelism),
        };
        let sqlite_synchronous_full = match args.sqlite_synchronous.or(file.sqlite_synchronous).as_deref() {
            None | Some("normal" | "NORMAL") => false,
            Some("full" | "FULL") => true,
            Some(other) => bail!("--sqlite-synchronous must be normal or full, not `{other}`"),
        };
        let log_format = LogFormat::from_flag(args.log_format.or(file.log_format).as_deref())?;
        Ok(Self {
            listen: args.listen.or(file.listen).unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            data_dir,
            database,
            session_store,
            lifetimes,
            issuer: args.issuer.or(file.issuer),
            audience: args.audience.or(file.audience).unwrap_or_else(|| "tessera".into()),
            allowed_origins,
            insecure_cookies: args.insecure_cookies.or(file.insecure_cookies).unwrap_or(false),
            login_rate_limit: parse_rate(&rate).context("--login-rate-limit")?,
            login_failure_limit: parse_rate(&failure_rate).context("--login-failure-limit")?,
            allow_anonymous: args.allow_anonymous.or(file.allow_anonymous).unwrap_or(false),
            anonymous_rate_limit: parse_rate(
                &args.anonymous_rate_limit.or(file.anonymous_rate_limit).unwrap_or_else(|| "30/h".into()),
            )
            .context("--anonymous-rate-limit")?,
            guest_retention: duration(args.guest_retention, file.guest_retention, "7d", "guest-retention")?,
            trusted_proxies,
            body_limit: args.body_limit.or(file.body_limit).unwrap_or(16 * 1024),
            body_timeout: duration(args.body_timeout, file.body_timeout, "15s", "body-timeout")?,
            connections,
            shutdown_timeout: duration(args.shutdown_timeout, file.shutdown_timeout, "10s", "shutdown-timeout")?,
            hash_params,
            sqlite_synchronous_full,
            log_format,
            redis_key_prefix: args.redis_key_prefix.or(file.redis_key_prefix).unwrap_or_else(|| "tessera".into()),
            revocation_poll: REVOCATION_POLL,
        })
    }
}

/// An allowed origin as browsers send it in `Origin`: `scheme://host[:port]`, lowercase, with
/// at most one trailing slash as configured and none as compared. Anything else — `*`, a path,
/// a query, credentials — is refused rather than dropped: a list that silently lost an entry
/// would refuse that site's sign-ins with nothing said.
pub fn parse_origin(text: &str) -> anyhow::Result<String> {
    let refuse = |why: &str| {
        anyhow::anyhow!("`{text}` is not an origin ({why}): use scheme://host[:port], e.g. https://app.example.com")
    };
    let trimmed = text.strip_suffix('/').unwrap_or(text);
    let (scheme, authority) = trimmed.split_once("://").ok_or_else(|| refuse("no scheme"))?;
    if !scheme.eq_ignore_ascii_case("https") && !scheme.eq_ignore_ascii_case("http") {
        return Err(refuse("only http and https"));
    }
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', '*', ' ', ',']) {
        return Err(refuse("only a scheme, a host and a port"));
    }
    let (host, port) = match authority.strip_prefix('[') {
        // An IPv6 address: `[::1]` or `[::1]:8080`.
        Some(bracketed) => {
            let (address, rest) = bracketed.split_once(']').ok_or_else(|| refuse("an unclosed bracket"))?;
            match rest {
                "" => (address, None),
                _ => (address, Some(rest.strip_prefix(':').ok_or_else(|| refuse("text after the address"))?)),
            }
        }
        None => match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    if host.is_empty() {
        return Err(refuse("no host"));
    }
    if port.is_some_and(|p| p.parse::<u16>().is_err()) {
        return Err(refuse("the port is not a number"));
    }
    Ok(format!("{}://{}", scheme.to_ascii_lowercase(), authority.to_ascii_lowercase()))
}

/// `N/s`, `N/min`, `N/h`, `N/<duration>` (`10/15min`, `5/90s`) or `off`.
fn parse_rate(text: &str) -> anyhow::Result<Option<Rate>> {
    if text.trim() == "off" {
        return Ok(None);
    }
    let invalid =
        || anyhow::anyhow!("invalid rate `{text}`: use N/s, N/min, N/h, N/<duration> such as 10/15min, or off");
    let (count, unit) = text.trim().split_once('/').ok_or_else(invalid)?;
    let count: u32 = count.trim().parse().map_err(|_| invalid())?;
    let per = match unit.trim() {
        "s" | "sec" => Duration::from_secs(1),
        "m" | "min" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        other => match other.strip_suffix("min") {
            Some(minutes) => minutes.parse::<u64>().map(|m| Duration::from_secs(m * 60)).map_err(|_| invalid())?,
            None => parse_duration(other).map_err(|_| invalid())?,
        },
    };
    if count == 0 || per.is_zero() {
        return Err(invalid());
    }
    Ok(Some(Rate { count, per }))
}

/// The `TESSERA_*` variables tessera reads; any other is reported as a likely typo.
const KNOWN_VARIABLES: &[&str] = &[
    "TESSERA_CONFIG",
    "TESSERA_LISTEN",
    "TESSERA_DATA_DIR",
    "TESSERA_DATABASE_URL",
    "TESSERA_SESSION_STORE_URL",
    "TESSERA_ACCESS_TTL",
    "TESSERA_REFRESH_TTL",
    "TESSERA_SESSION_MAX_LIFETIME",
    "TESSERA_REFRESH_GRACE",
    "TESSERA_ISSUER",
    "TESSERA_AUDIENCE",
    "TESSERA_ALLOWED_ORIGINS",
    "TESSERA_INSECURE_COOKIES",
    "TESSERA_LOGIN_RATE_LIMIT",
    "TESSERA_LOGIN_FAILURE_LIMIT",
    "TESSERA_ALLOW_ANONYMOUS",
    "TESSERA_ANONYMOUS_RATE_LIMIT",
    "TESSERA_GUEST_RETENTION",
    "TESSERA_TRUSTED_PROXIES",
    "TESSERA_BODY_LIMIT",
    "TESSERA_HEADER_TIMEOUT",
    "TESSERA_BODY_TIMEOUT",
    "TESSERA_IDLE_TIMEOUT",
    "TESSERA_MAX_CONNECTIONS",
    "TESSERA_MAX_CONNECTIONS_PER_ADDRESS",
    "TESSERA_SHUTDOWN_TIMEOUT",
    "TESSERA_ARGON2_MEMORY_KIB",
    "TESSERA_ARGON2_ITERATIONS",
    "TESSERA_ARGON2_PARALLELISM",
    "TESSERA_SQLITE_SYNCHRONOUS",
    "TESSERA_LOG_FORMAT",
    "TESSERA_REDIS_KEY_PREFIX",
    // Read by the CLI client.
    "TESSERA_SERVER",
];

/// Names of `TESSERA_*` variables in the environment that tessera does not know.
pub fn unknown_variables() -> Vec<String> {
    std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        // `TESSERA_TEST_*` belong to the test harness.
        .filter(|k| {
            k.starts_with("TESSERA_") && !k.starts_with("TESSERA_TEST_") && !KNOWN_VARIABLES.contains(&k.as_str())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let s = Settings::resolve(ServeArgs::default()).unwrap();
        assert_eq!(s.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(s.data_dir, PathBuf::from("./tessera-data"));
        assert_eq!(s.database, StoreUrl::Sqlite(PathBuf::from("./tessera-data/tessera.db")));
        assert_eq!(s.session_store, s.database);
        assert_eq!(s.lifetimes, Lifetimes::default());
        assert_eq!(s.audience, "tessera");
        assert!(!s.insecure_cookies);
        assert_eq!(s.body_limit, 16 * 1024);
        assert_eq!(s.login_rate_limit, Some(Rate { count: 30, per: Duration::from_secs(60) }));
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tessera.toml");
        std::fs::write(&path, "access_ttl = 3600\nrefresh_ttl = \"7d\"\naudience = \"file\"\nallowed_origins = [\"https://app.example\"]\n").unwrap();
        let stores = StoreArgs { config: Some(path), ..StoreArgs::default() };
        let args = ServeArgs { stores, access_ttl: Some("90s".into()), ..ServeArgs::default() };
        let s = Settings::resolve(args).unwrap();
        assert_eq!(s.lifetimes.access_ttl, Duration::from_secs(90));
        assert_eq!(s.lifetimes.refresh_ttl, Duration::from_secs(7 * 86_400));
        assert_eq!(s.audience, "file");
        assert_eq!(s.allowed_origins, vec!["https://app.example".to_owned()]);
    }

    #[test]
    fn store_flags_resolve_with_the_servers_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tessera.toml");
        std::fs::write(&path, "database_url = \"postgres://db/tessera\"\ndata_dir = \"/srv/tessera\"\n").unwrap();
        let s = StoreArgs { config: Some(path.clone()), ..StoreArgs::default() }.resolve().unwrap();
        assert_eq!(s.database, StoreUrl::Postgres("postgres://db/tessera".into()));
        assert_eq!(s.data_dir, PathBuf::from("/srv/tessera"));
        let flag = StoreArgs { config: Some(path), data_dir: Some("/other".into()), ..StoreArgs::default() };
        assert_eq!(flag.resolve().unwrap().data_dir, PathBuf::from("/other"), "a flag overrides the file");
    }

    #[test]
    fn a_typo_in_the_file_fails_fast() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tessera.toml");
        std::fs::write(&path, "acess_ttl = \"1h\"\n").unwrap();
        let err = StoreArgs { config: Some(path), ..StoreArgs::default() }.resolve().unwrap_err();
        assert!(format!("{err:#}").contains("unknown field `acess_ttl`"), "{err:#}");
    }

    #[test]
    fn bad_values_name_the_setting() {
        let err = Settings::resolve(ServeArgs { access_ttl: Some("soon".into()), ..ServeArgs::default() }).unwrap_err();
        assert!(format!("{err:#}").contains("--access-ttl"), "{err:#}");
        let err = StoreArgs { database_url: Some(SecretUrl("mysql://x".into())), ..StoreArgs::default() }
            .resolve()
            .unwrap_err();
        assert!(format!("{err:#}").contains("unsupported store URL"), "{err:#}");
    }

    #[test]
    fn allowed_origins_are_origins_or_refused() {
        assert_eq!(parse_origin("https://App.Example.com/").unwrap(), "https://app.example.com");
        assert_eq!(parse_origin("http://127.0.0.1:8081").unwrap(), "http://127.0.0.1:8081");
        assert_eq!(parse_origin("http://[::1]:8081").unwrap(), "http://[::1]:8081");
        for bad in [
            "*",
            "https://app.example.com/path",
            "app.example.com",
            "ftp://x",
            "https://",
            "https://a:b@c",
            "https://x:port",
            "https://*.example.com",
            "https://x/?q",
            "http://::1:8081",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
        let err = Settings::resolve(ServeArgs {
            allowed_origins: Some("https://ok.example,*".into()),
            ..ServeArgs::default()
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("--allowed-origins") && format!("{err:#}").contains("`*`"), "{err:#}");
    }

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("5/s").unwrap(), Some(Rate { count: 5, per: Duration::from_secs(1) }));
        assert_eq!(parse_rate("off").unwrap(), None);
        assert!(parse_rate("0/s").is_err() && parse_rate("5").is_err() && parse_rate("5/week").is_err());
    }

    #[test]
    fn passwords_in_urls_are_redacted() {
        assert_eq!(redact_url("postgres://app:s3cret@db:5432/tessera"), "postgres://app:***@db:5432/tessera");
        assert_eq!(redact_url("redis://localhost:6379"), "redis://localhost:6379");
    }

    #[test]
    fn debug_output_never_shows_a_database_password() {
        let stores = StoreArgs {
            database_url: Some(SecretUrl("postgres://tessera:hunter2-secret@db:5432/tessera".into())),
            session_store_url: Some(SecretUrl("redis://:hunter2-secret@cache:6379".into())),
            ..StoreArgs::default()
        };
        let args = ServeArgs { stores, ..ServeArgs::default() };
        let shown = format!("{args:?}");
        let settings = Settings::resolve(args).unwrap();
        for text in [shown, format!("{settings:?}")] {
            assert!(!text.contains("hunter2"), "{text}");
            assert!(text.contains("tessera:***@db:5432"), "{text}");
        }
    }
}
