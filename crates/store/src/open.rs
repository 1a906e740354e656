//! Opening the stores a deployment names, one way for every command (`tessera serve`,
//! `tessera clients`): users and OAuth clients in the SQL database (SQLite or PostgreSQL);
//! sessions there or in Valkey/Redis, which then also holds the budgets rate limits share.
//!
//! A backend this build was compiled without (feature `sqlite`, `postgres` or `redis`) is
//! refused with a message that says so.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use tessera_core::store::{ClientStore, LimitStore, SessionStore, UserStore};

/// Where a store lives. `Debug` masks passwords.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreUrl {
    Sqlite(PathBuf),
    Postgres(String),
    Redis(String),
    /// `redis+cluster://host:port,host:port,…`: any nodes of a Cluster, as `redis://` URLs.
    RedisCluster(Vec<String>),
}

impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            Self::Postgres(url) => f.debug_tuple("Postgres").field(&redact_url(url)).finish(),
            Self::Redis(url) => f.debug_tuple("Redis").field(&redact_url(url)).finish(),
            Self::RedisCluster(nodes) => {
                f.debug_tuple("RedisCluster").field(&nodes.iter().map(|n| redact_url(n)).collect::<Vec<_>>()).finish()
            }
        }
    }
}

pub fn parse_store_url(url: &str) -> anyhow::Result<StoreUrl> {
    if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
        return Ok(StoreUrl::Sqlite(PathBuf::from(path)));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(StoreUrl::Postgres(url.to_owned()));
    }
    if let Some(nodes) = url.strip_prefix("redis+cluster://") {
        let nodes: Vec<String> = nodes.split(',').filter(|n| !n.is_empty()).map(|n| format!("redis://{n}")).collect();
        if nodes.is_empty() {
            bail!("redis+cluster:// needs at least one host:port");
        }
        return Ok(StoreUrl::RedisCluster(nodes));
    }
    if url.starts_with("redis://") || url.starts_with("rediss://") || url.starts_with("valkey://") {
        return Ok(StoreUrl::Redis(url.to_owned()));
    }
    bail!(
        "unsupported store URL `{}`: use sqlite://PATH, postgres://…, redis://… or redis+cluster://…",
        redact_url(url)
    )
}

/// A URL with any password replaced, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// The stores of one deployment.
pub struct Stores {
    pub users: Arc<dyn UserStore>,
    pub clients: Arc<dyn ClientStore>,
    pub sessions: Arc<dyn SessionStore>,
    /// With Redis: the budgets that rate limits share across instances.
    pub limits: Option<Arc<dyn LimitStore>>,
}

/// Where the stores are, and how to open them.
#[derive(Debug, Clone)]
pub struct Options<'a> {
    pub database: &'a StoreUrl,
    pub session_store: &'a StoreUrl,
    /// Made (mode 0700, with any missing parents) before anything is opened: on a fresh
    /// machine nothing exists yet.
    pub data_dir: &'a Path,
    pub sqlite_synchronous_full: bool,
    pub redis_key_prefix: &'a str,
}

/// Opens (and migrates) the database and the session store (the same database, or Redis).
pub async fn open(options: Options<'_>) -> anyhow::Result<Stores> {
    create_private_dir(options.data_dir)?;
    if let StoreUrl::Sqlite(file) = options.database
        && let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty())
    {
        create_private_dir(parent)?;
    }
    let mut stores = open_database(options.database, options.sqlite_synchronous_full).await?;
    match options.session_store {
        same if same == options.database => {}
        url @ (StoreUrl::Redis(_) | StoreUrl::RedisCluster(_)) => {
            let (sessions, limits) = redis(url, options.redis_key_prefix).await?;
            stores.sessions = sessions;
            stores.limits = Some(limits);
        }
        _ => bail!("--session-store-url must be the database, a redis:// or a redis+cluster:// URL"),
    }
    Ok(stores)
}

async fn open_database(url: &StoreUrl, sqlite_synchronous_full: bool) -> anyhow::Result<Stores> {
    match url {
        StoreUrl::Sqlite(db) => sqlite(db, sqlite_synchronous_full).await,
        StoreUrl::Postgres(url) => postgres(url).await,
        StoreUrl::Redis(_) | StoreUrl::RedisCluster(_) => {
            bail!("Redis holds sessions, not users: use it as --session-store-url, with a SQL --database-url")
        }
    }
}

/// One backend for users, clients and sessions alike.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn sql<S: UserStore + ClientStore + SessionStore>(store: S) -> Stores {
    let store = Arc::new(store);
    Stores { users: store.clone(), clients: store.clone(), sessions: store, limits: None }
}

#[cfg(feature = "sqlite")]
async fn sqlite(db: &Path, synchronous_full: bool) -> anyhow::Result<Stores> {
    let store = crate::sqlite::SqliteStore::open(db, synchronous_full)
        .await
        .with_context(|| format!("cannot open the SQLite database {}", db.display()))?;
    Ok(sql(store))
}

#[cfg(not(feature = "sqlite"))]
async fn sqlite(_: &Path, _: bool) -> anyhow::Result<Stores> {
    bail!("this tessera was built without SQLite (feature `sqlite`): give a --database-url of another kind")
}

#[cfg(feature = "postgres")]
async fn postgres(url: &str) -> anyhow::Result<Stores> {
    let store = crate::postgres::PostgresStore::connect(url)
        .await
        .with_context(|| format!("cannot open the PostgreSQL database {}", redact_url(url)))?;
    Ok(sql(store))
}

#[cfg(not(feature = "postgres"))]
async fn postgres(_: &str) -> anyhow::Result<Stores> {
    bail!("this tessera was built without PostgreSQL (feature `postgres`)")
}

/// Sessions, and the shared rate-limit budgets, in Valkey/Redis.
type RedisStores = (Arc<dyn SessionStore>, Arc<dyn LimitStore>);

#[cfg(feature = "redis")]
async fn redis(url: &StoreUrl, prefix: &str) -> anyhow::Result<RedisStores> {
    use crate::redis::RedisStore;
    fn both<S: SessionStore + LimitStore>(store: S) -> RedisStores {
        let store = Arc::new(store);
        (store.clone(), store)
    }
    Ok(match url {
        StoreUrl::RedisCluster(nodes) => both(
            RedisStore::connect_cluster(nodes, prefix)
                .await
                .context("cannot connect to the Redis Cluster session store")?,
        ),
        StoreUrl::Redis(url) => both(
            RedisStore::connect(url, prefix)
                .await
                .with_context(|| format!("cannot connect to the session store {}", redact_url(url)))?,
        ),
        _ => bail!("not a Redis URL"),
    })
}

#[cfg(not(feature = "redis"))]
async fn redis(_: &StoreUrl, _: &str) -> anyhow::Result<RedisStores> {
    bail!("this tessera was built without Valkey/Redis (feature `redis`)")
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create the directory {}", dir.display()))
}
