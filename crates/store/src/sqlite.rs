//! The embedded default: users and sessions in one SQLite file, in WAL mode.
//!
//! SQLite lets one connection write at a time, and writers that collide wait in `busy_timeout`
//! sleeps, so all writes go through a single writer connection while reads use a small pool of
//! their own (WAL lets them run beside the writer). `synchronous = NORMAL` in WAL mode makes a
//! commit durable against a crash of the process (`kill -9`): the WAL is in the kernel's hands
//! when the commit returns. Only a power loss or kernel crash can lose the last commits; set
//! `sqlite_synchronous = "full"` to fsync every commit if that matters more than throughput.
//!
//! (Over 400 lines because a quarter of it is the schema's migrations, kept beside the
//! statements that read that schema; the statements PostgreSQL runs alike are in `sql.rs`.)

use std::path::Path;
use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::SqliteConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use tessera_core::account::User;
use tessera_core::clients::OAuthClient;
use tessera_core::revocation::{EndedSession, FeedPosition};
use tessera_core::session::{Rotation, Session};
use tessera_core::store::{ClientStore, SessionStore, StoreError, StoreResult, UserStore};
use tessera_core::{SessionId, Timestamp, UserId};

/// The columns of a session row, in the order tessera reads them.
pub use crate::sql::SESSION_COLUMNS;
use crate::sql::{self, Statements, unique_key};

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE users (
    id            BLOB PRIMARY KEY,
    email         TEXT NOT NULL,
    email_key     TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at    INTEGER NOT NULL
) STRICT;
CREATE TABLE sessions (
    id                  BLOB PRIMARY KEY,
    user_id             BLOB NOT NULL,
    generation          INTEGER NOT NULL,
    created_at          INTEGER NOT NULL,
    last_used_at        INTEGER NOT NULL,
    expires_at          INTEGER NOT NULL,
    absolute_expires_at INTEGER NOT NULL,
    ended_at            INTEGER,
    user_agent          TEXT,
    ip                  TEXT
) STRICT;
CREATE INDEX sessions_by_user ON sessions (user_id);
CREATE INDEX sessions_by_end ON sessions (ended_at) WHERE ended_at IS NOT NULL;
CREATE INDEX sessions_by_expiry ON sessions (expires_at);
"#,
    r#"
-- The revocation feed: one row per ended session, numbered in commit order (one writer, and
-- AUTOINCREMENT never reuses a number, even after every row was purged). The trigger writes it
-- in the same statement, hence the same transaction, as the end itself.
CREATE TABLE session_ends (
    position   INTEGER PRIMARY KEY AUTOINCREMENT,
    id         BLOB NOT NULL,
    ended_at   INTEGER NOT NULL
) STRICT;
CREATE INDEX session_ends_by_time ON session_ends (ended_at);
CREATE TRIGGER sessions_ended AFTER UPDATE OF ended_at ON sessions
    WHEN OLD.ended_at IS NULL AND NEW.ended_at IS NOT NULL
BEGIN
    INSERT INTO session_ends (id, ended_at) VALUES (NEW.id, NEW.ended_at);
END;
INSERT INTO session_ends (id, ended_at) SELECT id, ended_at FROM sessions WHERE ended_at IS NOT NULL ORDER BY ended_at;
"#,
    r#"
CREATE TABLE oauth_clients (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    secret_digest BLOB NOT NULL,
    created_at    INTEGER NOT NULL
) STRICT;
"#,
    r#"
-- Accounts with an email, a username or both, and guests with neither (nor a password). SQLite
-- cannot relax NOT NULL in place, so the table is rebuilt; each unique key is named, so that a
-- conflict says which key was taken.
CREATE TABLE users_v2 (
    id            BLOB PRIMARY KEY,
    email         TEXT,
    email_key     TEXT CONSTRAINT users_email_key UNIQUE,
    username      TEXT,
    username_key  TEXT CONSTRAINT users_username_key UNIQUE,
    password_hash TEXT,
    is_anonymous  INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL
) STRICT;
INSERT INTO users_v2 (id, email, email_key, password_hash, created_at)
    SELECT id, email, email_key, password_hash, created_at FROM users;
DROP TABLE users;
ALTER TABLE users_v2 RENAME TO users;
CREATE INDEX users_guests ON users (id) WHERE is_anonymous = 1;
"#,
];

/// The statements SQLite runs as PostgreSQL does. Those on the session tables that run while
/// they are large are each served by an index (the purge and the feed read only what they return
/// or delete, the list only the user's sessions; docs/benchmarks.md): `query_plans_use_indexes`
/// below checks them with EXPLAIN QUERY PLAN.
static SQL: LazyLock<Statements> = LazyLock::new(|| Statements::new(""));
const END_USER_SESSIONS: &str =
    "UPDATE sessions SET ended_at = $1 WHERE user_id = $2 AND ended_at IS NULL AND expires_at > $1 RETURNING id";
const GUESTS: &str = "SELECT id FROM users WHERE is_anonymous = 1 AND created_at < $1 AND id > $2 ORDER BY id LIMIT $3";

#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    readers: SqlitePool,
    /// Rotations queue here and are committed in groups (`sqlite_group`).
    rotations: tokio::sync::mpsc::Sender<crate::sqlite_group::Pending>,
}

/// How tessera connects to its SQLite file: WAL, `synchronous` NORMAL or FULL, a 5 s busy
/// timeout (the benchmark's SQLite ceiling connects the same way).
pub fn connect_options(path: &Path, synchronous_full: bool) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(if synchronous_full { SqliteSynchronous::Full } else { SqliteSynchronous::Normal })
        .busy_timeout(Duration::from_secs(5))
        .pragma("temp_store", "memory")
        .statement_cache_capacity(64)
}

/// The pool of tessera's one writer connection; the benchmark's SQLite ceiling takes its
/// connection the same way.
pub fn writer_pool_options() -> SqlitePoolOptions {
    SqlitePoolOptions::new().max_connections(1).min_connections(1).acquire_timeout(Duration::from_secs(5))
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and brings its schema up to date.
    /// `synchronous_full` trades commit throughput for durability across power loss.
    pub async fn open(path: &Path, synchronous_full: bool) -> StoreResult<Self> {
        let options = connect_options(path, synchronous_full);
        let writer = writer_pool_options().connect_with(options.clone()).await.map_err(classify)?;
        {
            let mut conn = writer.acquire().await.map_err(classify)?;
            migrate(&mut conn).await?;
        }
        // Readers are not pinged when taken (a round trip to the connection's thread, paid by
        // every read): a connection whose thread died fails its statement, and sqlx's ping when
        // it is given back drops it from the pool. (The writer keeps the default, which the
        // benchmark's SQLite ceiling shares: see `writer_pool_options`.)
        let readers = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options.read_only(true))
            .await
            .map_err(classify)?;
        restrict_permissions(path);
        let rotations = crate::sqlite_group::start(writer.clone());
        Ok(Self { writer, readers, rotations })
    }

    /// Opens the store from a `sqlite://PATH` URL or a plain path.
    pub async fn open_url(url: &str, synchronous_full: bool) -> StoreResult<Self> {
        let path = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).unwrap_or(url);
        let path = path.split('?').next().unwrap_or(path);
        Self::open(Path::new(path), synchronous_full).await
    }
}

/// The database holds password hashes: keep it (and its WAL) private to the owner.
fn restrict_permissions(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut files = vec![path.to_path_buf()];
    for suffix in ["-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        files.push(p.into());
    }
    for file in files {
        if file.exists() {
            let _ = std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600));
        }
    }
}

async fn migrate(conn: &mut SqliteConnection) -> StoreResult<()> {
    let version: i64 = sqlx::query_scalar("PRAGMA user_version").fetch_one(&mut *conn).await.map_err(classify)?;
    let applied = usize::try_from(version).unwrap_or(usize::MAX);
    if applied > MIGRATIONS.len() {
        return Err(StoreError::other(format!(
            "the database schema (version {version}) is newer than this tessera knows ({}); upgrade tessera",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        let mut tx = sqlx::Connection::begin(&mut *conn).await.map_err(classify)?;
        sqlx::raw_sql(sql).execute(&mut *tx).await.map_err(classify)?;
        sqlx::raw_sql(&format!("PRAGMA user_version = {}", i + 1)).execute(&mut *tx).await.map_err(classify)?;
        tx.commit().await.map_err(classify)?;
        tracing::info!(version = i + 1, "applied SQLite migration");
    }
    Ok(())
}

pub(crate) fn classify(e: sqlx::Error) -> StoreError {
    match &e {
        // SQLite names the columns: "UNIQUE constraint failed: users.email_key".
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict(unique_key(d.message())),
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => {
            StoreError::unavailable(e)
        }
        // SQLITE_BUSY, SQLITE_FULL, SQLITE_CANTOPEN: may pass.
        sqlx::Error::Database(d) if matches!(d.code().as_deref(), Some("5" | "13" | "14")) => {
            StoreError::unavailable(e)
        }
        _ => StoreError::other(e),
    }
}

impl SqliteStore {
    /// Stores many new sessions in one transaction, as [`SessionStore::create_session`] stores
    /// each: for loading a database quickly (the benchmark's million sessions).
    pub async fn create_sessions(&self, sessions: &[Session]) -> StoreResult<()> {
        let mut tx = self.writer.begin().await.map_err(classify)?;
        for s in sessions {
            sql::bind_session(sqlx::query(&SQL.insert_session), s)?.execute(&mut *tx).await.map_err(classify)?;
        }
        tx.commit().await.map_err(classify)
    }

    async fn find_user_by<'q, K>(&self, statement: &'q str, key: K) -> StoreResult<Option<User>>
    where
        K: 'q + Send + sqlx::Encode<'q, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
    {
        let row = sqlx::query_as(statement).bind(key).fetch_optional(&self.readers).await.map_err(classify)?;
        row.map(sql::user).transpose()
    }
}

#[async_trait]
impl UserStore for SqliteStore {
    async fn create_user(&self, user: &User) -> StoreResult<()> {
        let insert = sqlx::query(&SQL.insert_user);
        sql::bind_user(insert, user).bind(user.created_at.as_millis()).execute(&self.writer).await.map_err(classify)?;
        Ok(())
    }

    async fn find_user_by_email(&self, email_key: &str) -> StoreResult<Option<User>> {
        self.find_user_by(&SQL.find_user_by_email, email_key).await
    }

    async fn find_user_by_username(&self, username_key: &str) -> StoreResult<Option<User>> {
        self.find_user_by(&SQL.find_user_by_username, username_key).await
    }

    async fn find_user(&self, id: UserId) -> StoreResult<Option<User>> {
        self.find_user_by(&SQL.find_user, &id.as_bytes()[..]).await
    }

    async fn update_user(&self, user: &User, expected_password_hash: Option<&str>) -> StoreResult<bool> {
        let update = sqlx::query(&SQL.update_user);
        let done =
            sql::bind_user(update, user).bind(expected_password_hash).execute(&self.writer).await.map_err(classify)?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_user(&self, id: UserId) -> StoreResult<bool> {
        let done =
            sqlx::query(&SQL.delete_user).bind(&id.as_bytes()[..]).execute(&self.writer).await.map_err(classify)?;
        Ok(done.rows_affected() == 1)
    }

    async fn guests(&self, created_before: Timestamp, after: Option<UserId>, limit: usize) -> StoreResult<Vec<UserId>> {
        let after = after.map_or([0u8; 16], |id| *id.as_bytes());
        let rows = sqlx::query_as(GUESTS)
            .bind(created_before.as_millis())
            .bind(&after[..])
            .bind(sql::limit(limit))
            .fetch_all(&self.readers)
            .await
            .map_err(classify)?;
        rows.into_iter().map(sql::user_id).collect()
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.readers).await.map_err(classify)?;
        Ok(())
    }
}

#[async_trait]
impl ClientStore for SqliteStore {
    async fn create_client(&self, client: &OAuthClient) -> StoreResult<()> {
        sqlx::query(&SQL.insert_client)
            .bind(&client.id)
            .bind(&client.name)
            .bind(&client.secret_digest)
            .bind(client.created_at.as_millis())
            .execute(&self.writer)
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn find_client(&self, id: &str) -> StoreResult<Option<OAuthClient>> {
        let row = sqlx::query_as(&SQL.find_client).bind(id).fetch_optional(&self.readers).await.map_err(classify)?;
        Ok(row.map(sql::client))
    }

    async fn list_clients(&self) -> StoreResult<Vec<OAuthClient>> {
        let rows = sqlx::query_as(&SQL.list_clients).fetch_all(&self.readers).await.map_err(classify)?;
        Ok(rows.into_iter().map(sql::client).collect())
    }

    async fn delete_client(&self, id_or_name: &str) -> StoreResult<bool> {
        let done = sqlx::query(&SQL.delete_client).bind(id_or_name).execute(&self.writer).await.map_err(classify)?;
        Ok(done.rows_affected() > 0)
    }
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn create_session(&self, s: &Session) -> StoreResult<()> {
        sql::bind_session(sqlx::query(&SQL.insert_session), s)?.execute(&self.writer).await.map_err(classify)?;
        Ok(())
    }

    async fn get_session(&self, id: SessionId) -> StoreResult<Option<Session>> {
        let row = sqlx::query_as(&SQL.get_session)
            .bind(&id.as_bytes()[..])
            .fetch_optional(&self.readers)
            .await
            .map_err(classify)?;
        row.map(sql::session).transpose()
    }

    async fn rotate(
        &self,
        id: SessionId,
        from: u64,
        now: Timestamp,
        idle_expires_at: Timestamp,
    ) -> StoreResult<Rotation> {
        // Committed with whatever other rotations are waiting (group commit), and answered
        // only once that commit is done.
        let (answer, outcome) = tokio::sync::oneshot::channel();
        let pending = crate::sqlite_group::Pending { id, from, now, idle_expires_at, answer };
        let stopped = || StoreError::unavailable("the SQLite writer has stopped");
        self.rotations.send(pending).await.map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }

    async fn end_session(&self, id: SessionId, now: Timestamp) -> StoreResult<bool> {
        let done = sqlx::query("UPDATE sessions SET ended_at = $1 WHERE id = $2 AND ended_at IS NULL")
            .bind(now.as_millis())
            .bind(&id.as_bytes()[..])
            .execute(&self.writer)
            .await
            .map_err(classify)?;
        Ok(done.rows_affected() > 0)
    }

    async fn end_user_sessions(&self, user_id: UserId, now: Timestamp) -> StoreResult<Vec<SessionId>> {
        let rows = sqlx::query_as(END_USER_SESSIONS)
            .bind(now.as_millis())
            .bind(&user_id.as_bytes()[..])
            .fetch_all(&self.writer)
            .await
            .map_err(classify)?;
        rows.into_iter().map(sql::session_id).collect()
    }

    async fn list_sessions(&self, user_id: UserId, now: Timestamp) -> StoreResult<Vec<Session>> {
        let rows = sqlx::query_as(&SQL.list_sessions)
            .bind(&user_id.as_bytes()[..])
            .bind(now.as_millis())
            .fetch_all(&self.readers)
            .await
            .map_err(classify)?;
        rows.into_iter().map(sql::session).collect()
    }

    async fn ended_after(&self, after: Option<FeedPosition>, max: usize) -> StoreResult<Vec<EndedSession>> {
        let rows = sqlx::query_as(&SQL.ended_after)
            .bind(sql::feed_position(after)?)
            .bind(sql::limit(max))
            .fetch_all(&self.readers)
            .await
            .map_err(classify)?;
        rows.into_iter().map(sql::ended).collect()
    }

    async fn purge(
        &self,
        expired_before: Timestamp,
        ended_before: Timestamp,
        feed_before: Timestamp,
    ) -> StoreResult<u64> {
        let mut tx = self.writer.begin().await.map_err(classify)?;
        let done = sqlx::query(&SQL.purge_sessions)
            .bind(expired_before.as_millis())
            .bind(ended_before.as_millis())
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        sqlx::query(&SQL.purge_feed).bind(feed_before.as_millis()).execute(&mut *tx).await.map_err(classify)?;
        tx.commit().await.map_err(classify)?;
        Ok(done.rows_affected())
    }

    async fn ping(&self) -> StoreResult<()> {
        UserStore::ping(self).await
    }
}

#[cfg(test)]
mod tests {
    use sqlx::Row;

    use super::*;

    /// docs/benchmarks.md: at a million sessions, the purge, the feed read and a user's list must not scan
    /// the session tables. SQLite shows a full scan as `SCAN <table>`, an index as `SEARCH`.
    #[tokio::test]
    async fn query_plans_use_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("plans.db"), false).await.unwrap();
        let queries =
            [&SQL.purge_sessions, &SQL.purge_feed, &SQL.ended_after, END_USER_SESSIONS, &SQL.list_sessions, GUESTS];
        for sql in queries {
            let rows = sqlx::raw_sql(&format!("EXPLAIN QUERY PLAN {sql}")).fetch_all(&store.readers).await.unwrap();
            let plan: Vec<String> = rows.iter().map(|row| row.get::<String, _>("detail")).collect();
            assert!(plan.iter().any(|step| step.starts_with("SEARCH")), "{sql}: {plan:?}");
            assert!(!plan.iter().any(|step| step.starts_with("SCAN")), "{sql} scans a table: {plan:?}");
        }
    }
}
