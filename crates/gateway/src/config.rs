//! Configuration of `tessera gateway`, in the same layers as `tessera serve`'s: defaults, then a
//! TOML file (`--config`), then `TESSERA_GATEWAY_*` variables, then flags. The token's issuer and
//! audience are the server's own settings and read the same variables (`TESSERA_ISSUER`,
//! `TESSERA_AUDIENCE`); everything else is the gateway's and has the `TESSERA_GATEWAY_` prefix,
//! so one environment can hold both a server's and a gateway's settings.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use axum::http::HeaderValue;
use axum::http::uri::{PathAndQuery, Uri};
use serde::Deserialize;
use tessera_server::conn::ConnLimits;
use tessera_server::net::TrustedProxies;
use tessera_server::telemetry::LogFormat;
use tessera_verify::duration::parse_duration;
use tessera_verify::verifier::FeedLossPolicy;

/// Flags of `tessera gateway`, each also readable from its variable.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct GatewayArgs {
    /// TOML configuration file (keys named like the flags, with underscores).
    #[arg(long, env = "TESSERA_GATEWAY_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8090].
    #[arg(long, env = "TESSERA_GATEWAY_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// The service behind the gateway, `http://host:port` (required).
    #[arg(long, env = "TESSERA_GATEWAY_UPSTREAM", value_name = "URL")]
    pub upstream: Option<String>,
    /// tessera's `--issuer`: the `iss` of the tokens to accept (required).
    #[arg(long, env = "TESSERA_ISSUER", value_name = "URL")]
    pub issuer: Option<String>,
    /// The `aud` of the tokens to accept [default: tessera].
    #[arg(long, env = "TESSERA_AUDIENCE")]
    pub audience: Option<String>,
    /// Where the gateway reaches tessera for the keys and the revocation feed [default: the issuer].
    #[arg(long, env = "TESSERA_GATEWAY_TESSERA_URL", value_name = "URL")]
    pub tessera_url: Option<String>,
    /// A path prefix that needs no token (repeatable; comma-separated in the variable). A valid
    /// token there still carries its identity; a bad or ended one is refused.
    #[arg(long = "public", env = "TESSERA_GATEWAY_PUBLIC", value_name = "PREFIX", value_delimiter = ',')]
    pub public: Vec<String>,
    /// When the revocation feed is silent too long: refuse (`fail-closed`) or accept (`fail-open`)
    /// tokens [default: fail-closed].
    #[arg(long, env = "TESSERA_GATEWAY_ON_FEED_LOSS", value_name = "POLICY")]
    pub on_feed_loss: Option<String>,
    /// How long the feed may be silent before `--on-feed-loss` applies [default: 30s].
    #[arg(long, env = "TESSERA_GATEWAY_MAX_FEED_SILENCE", value_name = "DURATION")]
    pub max_feed_silence: Option<String>,
    /// How long the upstream may take to begin its answer, body sent included [default: 30s].
    #[arg(long, env = "TESSERA_GATEWAY_UPSTREAM_TIMEOUT", value_name = "DURATION")]
    pub upstream_timeout: Option<String>,
    /// Comma-separated proxies (addresses or CIDR ranges) in front of the gateway whose
    /// `X-Forwarded-*` headers are kept [default: none: they are replaced].
    #[arg(long, env = "TESSERA_GATEWAY_TRUSTED_PROXIES", value_name = "LIST")]
    pub trusted_proxies: Option<String>,
    /// Time a request's headers may take to arrive [default: 10s].
    #[arg(long, env = "TESSERA_GATEWAY_HEADER_TIMEOUT", value_name = "DURATION")]
    pub header_timeout: Option<String>,
    /// Time a keep-alive connection may stay idle [default: 60s].
    #[arg(long, env = "TESSERA_GATEWAY_IDLE_TIMEOUT", value_name = "DURATION")]
    pub idle_timeout: Option<String>,
    /// Open connections at most [default: 2048].
    #[arg(long, env = "TESSERA_GATEWAY_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// Open connections per client address (IPv6: per /64) at most [default: 128].
    #[arg(long, env = "TESSERA_GATEWAY_MAX_CONNECTIONS_PER_ADDRESS", value_name = "N")]
    pub max_connections_per_address: Option<usize>,
    /// Threads serving connections, each with its own event loop and upstream connections
    /// [default: 1, which leaves the machine's other cores to the service beside it].
    #[arg(long, env = "TESSERA_GATEWAY_WORKERS", value_name = "N")]
    pub workers: Option<usize>,
    /// How long a stop waits for in-flight requests [default: 10s].
    #[arg(long, env = "TESSERA_GATEWAY_SHUTDOWN_TIMEOUT", value_name = "DURATION")]
    pub shutdown_timeout: Option<String>,
    /// `text` or `json` [default: text].
    #[arg(long, env = "TESSERA_GATEWAY_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<String>,
}

/// The variables the gateway reads, so that `tessera serve` does not take them for typos.
pub const VARIABLES: &[&str] = &[
    "TESSERA_GATEWAY_CONFIG",
    "TESSERA_GATEWAY_LISTEN",
    "TESSERA_GATEWAY_UPSTREAM",
    "TESSERA_GATEWAY_TESSERA_URL",
    "TESSERA_GATEWAY_PUBLIC",
    "TESSERA_GATEWAY_ON_FEED_LOSS",
    "TESSERA_GATEWAY_MAX_FEED_SILENCE",
    "TESSERA_GATEWAY_UPSTREAM_TIMEOUT",
    "TESSERA_GATEWAY_TRUSTED_PROXIES",
    "TESSERA_GATEWAY_HEADER_TIMEOUT",
    "TESSERA_GATEWAY_IDLE_TIMEOUT",
    "TESSERA_GATEWAY_MAX_CONNECTIONS",
    "TESSERA_GATEWAY_MAX_CONNECTIONS_PER_ADDRESS",
    "TESSERA_GATEWAY_WORKERS",
    "TESSERA_GATEWAY_SHUTDOWN_TIMEOUT",
    "TESSERA_GATEWAY_LOG_FORMAT",
];

/// The TOML file: the same settings, named like the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    upstream: Option<String>,
    issuer: Option<String>,
    audience: Option<String>,
    tessera_url: Option<String>,
    public: Option<Vec<String>>,
    on_feed_loss: Option<String>,
    max_feed_silence: Option<String>,
    upstream_timeout: Option<String>,
    trusted_proxies: Option<Vec<String>>,
    header_timeout: Option<String>,
    idle_timeout: Option<String>,
    max_connections: Option<usize>,
    max_connections_per_address: Option<usize>,
    workers: Option<usize>,
    shutdown_timeout: Option<String>,
    log_format: Option<String>,
}

/// The gateway's resolved settings.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    pub listen: SocketAddr,
    /// Scheme and authority of the upstream, and a path prefix (empty, or without a final `/`).
    pub upstream: Upstream,
    pub issuer: String,
    pub audience: String,
    pub tessera_url: String,
    /// Path prefixes that need no token, each starting with `/`.
    pub public: Vec<String>,
    pub on_feed_loss: FeedLossPolicy,
    pub max_feed_silence: Duration,
    pub upstream_timeout: Duration,
    pub trusted_proxies: TrustedProxies,
    pub connections: ConnLimits,
    /// Threads serving connections (`--workers`), at least 1.
    pub workers: usize,
    pub shutdown_timeout: Duration,
    pub log_format: LogFormat,
}

/// Where requests go.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub scheme: String,
    pub authority: String,
    pub path: String,
    /// `Host` as the upstream gets it.
    pub host: HeaderValue,
    /// Where to connect: `host:port`, port 80 when the URL names none.
    pub address: String,
}

impl Upstream {
    fn parse(url: &str) -> anyhow::Result<Self> {
        let uri: Uri = url.parse().with_context(|| format!("--upstream `{url}` is not a URL"))?;
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            bail!("--upstream `{url}` must be an absolute http:// URL");
        };
        if scheme != "http" {
            bail!("--upstream `{url}`: only http:// upstreams are supported (the gateway runs beside its service)");
        }
        if uri.query().is_some() {
            bail!("--upstream `{url}` must not have a query");
        }
        let path = uri.path().trim_end_matches('/').to_owned();
        let host = HeaderValue::from_str(authority.as_str()).with_context(|| format!("--upstream `{url}`"))?;
        let address = format!("{}:{}", authority.host(), authority.port_u16().unwrap_or(80));
        Ok(Self { scheme: scheme.to_owned(), authority: authority.as_str().to_owned(), path, host, address })
    }
}

impl Upstream {
    /// A request's target at the upstream, in origin form (RFC 9112 §3.2.1: its path, below the
    /// upstream's own path, and query; the upstream is named by `Host`); `None` for a target
    /// that is not a path (`*`, an absolute URL).
    pub fn target(&self, uri: &Uri) -> Option<Uri> {
        let target = uri.path_and_query().map_or("/", |p| p.as_str());
        if !target.starts_with('/') || uri.authority().is_some() {
            return None;
        }
        // Below no path of the upstream's own, the client's target is the upstream's as it is.
        let target = match (self.path.is_empty(), uri.path_and_query()) {
            (true, Some(target)) => target.clone(),
            _ => PathAndQuery::try_from(format!("{}{target}", self.path)).ok()?,
        };
        Some(Uri::from(target))
    }
}

impl GatewaySettings {
    pub fn resolve(args: GatewayArgs) -> anyhow::Result<Self> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let duration = |flag: Option<String>, file: Option<String>, default: &str, name: &str| {
            let text = flag.or(file).unwrap_or_else(|| default.to_owned());
            parse_duration(&text).with_context(|| format!("--{name}"))
        };
        let Some(upstream) = args.upstream.or(file.upstream) else {
            bail!("--upstream is required: the URL of the service behind the gateway");
        };
        let Some(issuer) = args.issuer.or(file.issuer) else {
            bail!("--issuer is required: tessera's issuer URL, the `iss` of the tokens to accept");
        };
        let tessera_url = args.tessera_url.or(file.tessera_url).unwrap_or_else(|| issuer.clone());
        let public = if args.public.is_empty() { file.public.unwrap_or_default() } else { args.public };
        let public = public
            .into_iter()
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .map(|p| if p.starts_with('/') { Ok(p) } else { Err(anyhow::anyhow!("--public `{p}` must start with /")) })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let on_feed_loss = match args.on_feed_loss.or(file.on_feed_loss).as_deref() {
            None | Some("fail-closed") => FeedLossPolicy::FailClosed,
            Some("fail-open") => FeedLossPolicy::FailOpen,
            Some(other) => bail!("--on-feed-loss must be fail-closed or fail-open, not `{other}`"),
        };
        let proxies = args.trusted_proxies.or(file.trusted_proxies.map(|list| list.join(","))).unwrap_or_default();
        let trusted_proxies = TrustedProxies::parse(&proxies).map_err(|e| anyhow::anyhow!("--trusted-proxies: {e}"))?;
        let connections = ConnLimits::from_flags(
            duration(args.header_timeout, file.header_timeout, "10s", "header-timeout")?,
            duration(args.idle_timeout, file.idle_timeout, "60s", "idle-timeout")?,
            args.max_connections.or(file.max_connections),
            args.max_connections_per_address.or(file.max_connections_per_address),
        )
        .map_err(anyhow::Error::msg)?;
        let upstream_timeout = duration(args.upstream_timeout, file.upstream_timeout, "30s", "upstream-timeout")?;
        if upstream_timeout.is_zero() {
            bail!("--upstream-timeout must be longer than 0s");
        }
        let log_format = LogFormat::from_flag(args.log_format.or(file.log_format).as_deref())?;
        let workers = match args.workers.or(file.workers) {
            Some(0) => bail!("--workers must be at least 1"),
            Some(workers) => workers,
            None => 1,
        };
        Ok(Self {
            listen: args.listen.or(file.listen).unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8090))),
            upstream: Upstream::parse(&upstream)?,
            issuer,
            audience: args.audience.or(file.audience).unwrap_or_else(|| "tessera".into()),
            tessera_url,
            public,
            on_feed_loss,
            max_feed_silence: duration(args.max_feed_silence, file.max_feed_silence, "30s", "max-feed-silence")?,
            upstream_timeout,
            trusted_proxies,
            connections,
            workers,
            shutdown_timeout: duration(args.shutdown_timeout, file.shutdown_timeout, "10s", "shutdown-timeout")?,
            log_format,
        })
    }

    /// Whether `path` is under one of the `--public` prefixes: the prefix itself, or below it
    /// (`/static` covers `/static` and `/static/app.js`, not `/statics`). A path the upstream
    /// could read as another one (`/static/../admin`, also percent-encoded, or an encoded slash)
    /// is never public: it needs a token like any other.
    pub fn is_public(&self, path: &str) -> bool {
        if !is_plain(path) {
            return false;
        }
        self.public.iter().any(|prefix| {
            path.strip_prefix(prefix.as_str())
                .is_some_and(|rest| rest.is_empty() || prefix.ends_with('/') || rest.starts_with('/'))
        })
    }
}

/// No segment that is `.` or `..` (percent-encoded or not), no encoded `/` or `\`, and no
/// backslash: nothing an upstream could normalise into another path.
fn is_plain(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") || path.contains('\\') {
        return false;
    }
    lower.split('/').all(|segment| {
        let segment = segment.replace("%2e", ".");
        segment != "." && segment != ".."
    })
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(extra: GatewayArgs) -> anyhow::Result<GatewaySettings> {
        GatewaySettings::resolve(GatewayArgs {
            upstream: Some("http://127.0.0.1:9000".into()),
            issuer: Some("http://127.0.0.1:8080".into()),
            ..extra
        })
    }

    #[test]
    fn workers_are_one_by_default_and_never_none() {
        assert_eq!(settings(GatewayArgs::default()).unwrap().workers, 1);
        assert_eq!(settings(GatewayArgs { workers: Some(4), ..GatewayArgs::default() }).unwrap().workers, 4);
        let zero = settings(GatewayArgs { workers: Some(0), ..GatewayArgs::default() }).unwrap_err();
        assert!(zero.to_string().contains("--workers"), "{zero}");
    }

    #[test]
    fn upstream_and_issuer_are_required_and_defaults_apply() {
        assert!(GatewaySettings::resolve(GatewayArgs::default()).is_err());
        let s = settings(GatewayArgs::default()).unwrap();
        assert_eq!(s.tessera_url, "http://127.0.0.1:8080");
        assert_eq!(s.audience, "tessera");
        assert_eq!(s.on_feed_loss, FeedLossPolicy::FailClosed);
        assert_eq!(s.upstream.authority, "127.0.0.1:9000");
        assert_eq!(s.upstream.path, "");
    }

    #[test]
    fn public_prefixes_cover_whole_segments() {
        let s =
            settings(GatewayArgs { public: vec!["/static".into(), "/docs/".into()], ..Default::default() }).unwrap();
        assert!(s.is_public("/static"));
        assert!(s.is_public("/static/app.js"));
        assert!(!s.is_public("/statics"));
        assert!(s.is_public("/docs/x"));
        assert!(!s.is_public("/doc"));
        assert!(!s.is_public("/"));
        assert!(settings(GatewayArgs { public: vec!["static".into()], ..Default::default() }).is_err());
    }

    #[test]
    fn a_path_that_could_mean_another_is_never_public() {
        let s = settings(GatewayArgs { public: vec!["/static".into()], ..Default::default() }).unwrap();
        for path in [
            "/static/../admin",
            "/static/./x",
            "/static/%2e%2e/admin",
            "/static/%2E./admin",
            "/static/..",
            "/static%2f..%2fadmin",
            "/static/%2F/x",
            "/static/..\\admin",
            "/static/%5c../admin",
        ] {
            assert!(!s.is_public(path), "{path}");
        }
        assert!(s.is_public("/static/a..b/c.d"), "dots inside a name are fine");
    }

    #[test]
    fn a_target_goes_below_the_upstreams_path() {
        let s = GatewaySettings::resolve(GatewayArgs {
            upstream: Some("http://127.0.0.1:9000/app/".into()),
            issuer: Some("http://127.0.0.1:8080".into()),
            ..Default::default()
        })
        .unwrap();
        let target = |t: &str| s.upstream.target(&t.parse().unwrap()).map(|u| u.to_string());
        assert_eq!(target("/x?y=1").as_deref(), Some("/app/x?y=1"));
        assert_eq!(target("/").as_deref(), Some("/app/"));
        assert_eq!(target("http://elsewhere/x"), None, "an absolute target is not forwarded elsewhere");
        assert_eq!(target("*"), None);
        let at_root = GatewaySettings::resolve(GatewayArgs {
            upstream: Some("http://127.0.0.1:9000".into()),
            issuer: Some("http://127.0.0.1:8080".into()),
            ..Default::default()
        })
        .unwrap();
        let target = |t: &str| at_root.upstream.target(&t.parse().unwrap()).map(|u| u.to_string());
        assert_eq!(target("/x/../y?z=%20").as_deref(), Some("/x/../y?z=%20"), "as sent");
        assert_eq!(target("http://elsewhere/x"), None);
        assert_eq!(at_root.upstream.host, "127.0.0.1:9000");
        assert_eq!(at_root.upstream.address, "127.0.0.1:9000");
    }

    #[test]
    fn an_upstream_without_a_port_is_reached_on_80() {
        let address = |url: &str| Upstream::parse(url).unwrap().address;
        assert_eq!(address("http://app.internal"), "app.internal:80");
        assert_eq!(address("http://[::1]:5000/api"), "[::1]:5000");
    }

    #[test]
    fn the_toml_file_is_read_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.toml");
        let toml = "listen = \"127.0.0.1:7000\"\nupstream = \"http://127.0.0.1:9000\"\nissuer = \"http://i\"\n\
                    public = [\"/a\"]\nupstream_timeout = \"5s\"\n";
        std::fs::write(&path, toml).unwrap();
        let args = GatewayArgs { config: Some(path.clone()), ..Default::default() };
        let s = GatewaySettings::resolve(args).unwrap();
        assert_eq!(s.listen, SocketAddr::from(([127, 0, 0, 1], 7000)));
        assert_eq!(s.public, ["/a"]);
        assert_eq!(s.upstream_timeout, Duration::from_secs(5));
        let flag = SocketAddr::from(([127, 0, 0, 1], 7001));
        let args = GatewayArgs { config: Some(path.clone()), listen: Some(flag), ..Default::default() };
        assert_eq!(GatewaySettings::resolve(args).unwrap().listen, flag);
        std::fs::write(&path, "upstrem = \"http://typo\"\n").unwrap();
        assert!(GatewaySettings::resolve(GatewayArgs { config: Some(path), ..Default::default() }).is_err());
    }

    /// [`VARIABLES`] (what `tessera serve` does not take for typos) is every gateway variable.
    #[test]
    fn every_gateway_variable_is_listed() {
        use clap::Args;
        let command = GatewayArgs::augment_args(clap::Command::new("gateway"));
        let mut read: Vec<String> = command
            .get_arguments()
            .filter_map(|a| a.get_env())
            .map(|v| v.to_string_lossy().into_owned())
            .filter(|v| v.starts_with("TESSERA_GATEWAY_"))
            .collect();
        read.sort();
        let mut listed: Vec<String> = VARIABLES.iter().map(|v| (*v).to_owned()).collect();
        listed.sort();
        assert_eq!(read, listed);
    }

    #[test]
    fn bad_values_are_refused() {
        let bad = |args: GatewayArgs| assert!(settings(args).is_err());
        bad(GatewayArgs { on_feed_loss: Some("maybe".into()), ..Default::default() });
        bad(GatewayArgs { upstream_timeout: Some("0s".into()), ..Default::default() });
        assert!(
            GatewaySettings::resolve(GatewayArgs {
                upstream: Some("https://example.com".into()),
                issuer: Some("http://i".into()),
                ..Default::default()
            })
            .is_err()
        );
    }
}
