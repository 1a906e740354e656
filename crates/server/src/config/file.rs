//! The TOML file of `--config`: the same settings as the flags, named like them with
//! underscores; an unknown key is an error, never a silent default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

use super::SecretUrl;

/// The TOML file: the same settings, named like the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    pub(super) listen: Option<SocketAddr>,
    pub(super) data_dir: Option<PathBuf>,
    pub(super) database_url: Option<SecretUrl>,
    pub(super) session_store_url: Option<SecretUrl>,
    pub(super) access_ttl: Option<DurationValue>,
    pub(super) refresh_ttl: Option<DurationValue>,
    pub(super) session_max_lifetime: Option<DurationValue>,
    pub(super) refresh_grace: Option<DurationValue>,
    pub(super) issuer: Option<String>,
    pub(super) audience: Option<String>,
    pub(super) allowed_origins: Option<Vec<String>>,
    pub(super) insecure_cookies: Option<bool>,
    pub(super) login_rate_limit: Option<String>,
    pub(super) login_failure_limit: Option<String>,
    pub(super) allow_anonymous: Option<bool>,
    pub(super) anonymous_rate_limit: Option<String>,
    pub(super) guest_retention: Option<DurationValue>,
    pub(super) trusted_proxies: Option<Vec<String>>,
    pub(super) body_limit: Option<usize>,
    pub(super) header_timeout: Option<DurationValue>,
    pub(super) body_timeout: Option<DurationValue>,
    pub(super) idle_timeout: Option<DurationValue>,
    pub(super) max_connections: Option<usize>,
    pub(super) max_connections_per_address: Option<usize>,
    pub(super) shutdown_timeout: Option<DurationValue>,
    pub(super) argon2_memory_kib: Option<u32>,
    pub(super) argon2_iterations: Option<u32>,
    pub(super) argon2_parallelism: Option<u32>,
    pub(super) sqlite_synchronous: Option<String>,
    pub(super) log_format: Option<String>,
    pub(super) redis_key_prefix: Option<String>,
}

/// A duration in TOML: a number of seconds or a string such as "15m".
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum DurationValue {
    Seconds(u64),
    Text(String),
}

impl DurationValue {
    pub(super) fn into_text(self) -> String {
        match self {
            Self::Seconds(s) => s.to_string(),
            Self::Text(t) => t,
        }
    }
}

pub(super) fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}
