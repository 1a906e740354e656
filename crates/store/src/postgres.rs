//! Users and sessions in PostgreSQL, shared by several server instances.
//!
//! Rotation is one `UPDATE … WHERE generation = $from … RETURNING`: PostgreSQL's row lock makes
//! the compare-and-set atomic however many instances race. Migrations run at start under an
//! advisory lock, so instances starting together apply each one once. Timeouts are short
//! (connect and acquire 2 s) so that an unreachable database answers `503` quickly instead of
//! holding requests; the pool reconnects by itself when the database returns.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use tessera_core::account::User;
use tessera_core::clients::OAuthClient;
use tessera_core::revocation::{EndedSession, FeedPosition};
use tessera_core::session::{Rotation, Session};
use tessera_core::store::{ClientStore, FeedWatcher, SessionStore, StoreError, StoreResult, UserStore};
use tessera_core::{SessionId, Timestamp, UserId};

use crate::postgres_watch::{self, PostgresWatcher};
use crate::sql::{self, IdRow, SESSION_COLUMNS, SessionRow, Statements, generation, unique_key};

/// The statements PostgreSQL runs as SQLite does, on its `tessera_` tables.
static SQL: LazyLock<Statements> = LazyLock::new(|| Statements::new("tessera_"));

/// Schema migrations in order; `tessera_migrations` records which ran.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE tessera_users (
    id            BYTEA PRIMARY KEY,
    email         TEXT NOT NULL,
    email_key     TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);
CREATE TABLE tessera_sessions (
    id                  BYTEA PRIMARY KEY,
    user_id             BYTEA NOT NULL,
    generation          BIGINT NOT NULL,
    created_at          BIGINT NOT NULL,
    last_used_at        BIGINT NOT NULL,
    expires_at          BIGINT NOT NULL,
    absolute_expires_at BIGINT NOT NULL,
    ended_at            BIGINT,
    user_agent          TEXT,
    ip                  TEXT
);
CREATE INDEX tessera_sessions_by_user ON tessera_sessions (user_id);
CREATE INDEX tessera_sessions_by_end ON tessera_sessions (ended_at) WHERE ended_at IS NOT NULL;
CREATE INDEX tessera_sessions_by_expiry ON tessera_sessions (expires_at);
"#,
    r#"
-- The revocation feed: one row per ended session, numbered in commit order. Every end takes
-- FEED_LOCK for its transaction before drawing a number, so numbers commit in order and a
-- reader that has seen number n has seen every number below it.
CREATE TABLE tessera_session_ends (
    position   BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id         BYTEA NOT NULL,
    ended_at   BIGINT NOT NULL
);
CREATE INDEX tessera_session_ends_by_time ON tessera_session_ends (ended_at);
INSERT INTO tessera_session_ends (id, ended_at)
    SELECT id, ended_at FROM tessera_sessions WHERE ended_at IS NOT NULL ORDER BY ended_at;
"#,
    r#"
CREATE TABLE tessera_oauth_clients (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    secret_digest BYTEA NOT NULL,
    created_at    BIGINT NOT NULL
);
"#,
    r#"
-- Accounts with an email, a username or both, and guests with neither (nor a password). The
-- unique keys have names of tessera's own, so that a conflict says which key was taken.
ALTER TABLE tessera_users ALTER COLUMN email DROP NOT NULL;
ALTER TABLE tessera_users ALTER COLUMN email_key DROP NOT NULL;
ALTER TABLE tessera_users ALTER COLUMN password_hash DROP NOT NULL;
ALTER TABLE tessera_users ADD COLUMN username TEXT;
ALTER TABLE tessera_users ADD COLUMN username_key TEXT;
ALTER TABLE tessera_users ADD COLUMN is_anonymous BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE tessera_users ADD CONSTRAINT tessera_users_username_key_unique UNIQUE (username_key);
CREATE INDEX tessera_users_guests ON tessera_users (id) WHERE is_anonymous;
"#,
];

/// Serialises the transactions that end sessions, so feed positions commit in order.
const FEED_LOCK: i64 = 0x0074_6573_7365_7266; // "tesserf"

/// An arbitrary constant naming tessera's migration lock among the database's advisory locks.
const MIGRATION_LOCK: i64 = 0x0074_6573_7365_7261; // "tessera" in ASCII

#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// Where this store's ends are announced: its schema's channel ([`postgres_watch::channel`]).
    channel: Arc<str>,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:password@host:port/db`) and applies migrations.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let options: PgConnectOptions = url.parse().map_err(StoreError::other)?;
        Self::connect_with(options).await
    }

    pub async fn connect_with(options: PgConnectOptions) -> StoreResult<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(2))
            .connect_with(options)
            .await
            .map_err(classify)?;
        migrate(&pool).await?;
        let schema: String = sqlx::query_scalar("SELECT current_schema()").fetch_one(&pool).await.map_err(classify)?;
        Ok(Self { pool, channel: postgres_watch::channel(&schema).into() })
    }
}

impl PostgresStore {
    /// Ends the active sessions matching `filter` (`$1` is the time, `$2` the bound id) and
    /// appends them to the feed, in one transaction under [`FEED_LOCK`].
    async fn end_where(&self, filter: &str, id: &[u8], now: Timestamp) -> StoreResult<Vec<SessionId>> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(FEED_LOCK).execute(&mut *tx).await.map_err(classify)?;
        let rows = sqlx::query_as::<_, IdRow>(&format!(
            "WITH ended AS (UPDATE tessera_sessions SET ended_at = $1 WHERE {filter} AND ended_at IS NULL \
             RETURNING id, ended_at) \
             INSERT INTO tessera_session_ends (id, ended_at) SELECT id, ended_at FROM ended RETURNING id"
        ))
        .bind(now.as_millis())
        .bind(id)
        .fetch_all(&mut *tx)
        .await
        .map_err(classify)?;
        if !rows.is_empty() {
            // Delivered to the feed's watchers when (and only if) the transaction commits.
            sqlx::query("SELECT pg_notify($1, '')").bind(&*self.channel).execute(&mut *tx).await.map_err(classify)?;
        }
        tx.commit().await.map_err(classify)?;
        rows.into_iter().map(sql::session_id).collect()
    }

    async fn find_user_by<'q, K>(&self, statement: &'q str, key: K) -> StoreResult<Option<User>>
    where
        K: 'q + Send + sqlx::Encode<'q, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
    {
        let row = sqlx::query_as(statement).bind(key).fetch_optional(&self.pool).await.map_err(classify)?;
        row.map(sql::user).transpose()
    }
}

async fn migrate(pool: &PgPool) -> StoreResult<()> {
    let mut tx = pool.begin().await.map_err(classify)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(MIGRATION_LOCK).execute(&mut *tx).await.map_err(classify)?;
    sqlx::raw_sql("CREATE TABLE IF NOT EXISTS tessera_migrations (version INTEGER PRIMARY KEY)")
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
    let applied: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM tessera_migrations").fetch_one(&mut *tx).await.map_err(classify)?;
    let applied = usize::try_from(applied).unwrap_or(usize::MAX);
    if applied > MIGRATIONS.len() {
        return Err(StoreError::other("the database schema is newer than this tessera knows; upgrade tessera"));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        sqlx::raw_sql(sql).execute(&mut *tx).await.map_err(classify)?;
        let version = i32::try_from(i + 1).map_err(StoreError::other)?;
        sqlx::query("INSERT INTO tessera_migrations (version) VALUES ($1)")
            .bind(version)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        tracing::info!(version, "applied PostgreSQL migration");
    }
    tx.commit().await.map_err(classify)
}

fn classify(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            StoreError::Conflict(unique_key(d.constraint().unwrap_or_default()))
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => StoreError::unavailable(e),
        // Class 08: connection exception; 57P0x: the server is shutting down or restarting;
        // class 53: insufficient resources.
        sqlx::Error::Database(d)
            if d.code().is_some_and(|c| c.starts_with("08") || c.starts_with("57P0") || c.starts_with("53")) =>
        {
            StoreError::unavailable(e)
        }
        _ => StoreError::other(e),
    }
}

#[async_trait]
impl UserStore for PostgresStore {
    async fn create_user(&self, user: &User) -> StoreResult<()> {
        let insert = sqlx::query(&SQL.insert_user);
        sql::bind_user(insert, user).bind(user.created_at.as_millis()).execute(&self.pool).await.map_err(classify)?;
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
            sql::bind_user(update, user).bind(expected_password_hash).execute(&self.pool).await.map_err(classify)?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_user(&self, id: UserId) -> StoreResult<bool> {
        let done =
            sqlx::query(&SQL.delete_user).bind(&id.as_bytes()[..]).execute(&self.pool).await.map_err(classify)?;
        Ok(done.rows_affected() == 1)
    }

    async fn guests(&self, created_before: Timestamp, after: Option<UserId>, limit: usize) -> StoreResult<Vec<UserId>> {
        let after = after.map_or([0u8; 16], |id| *id.as_bytes());
        let rows = sqlx::query_as(
            "SELECT id FROM tessera_users WHERE is_anonymous AND created_at < $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(created_before.as_millis())
        .bind(&after[..])
        .bind(sql::limit(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        rows.into_iter().map(sql::user_id).collect()
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(classify)?;
        Ok(())
    }
}

#[async_trait]
impl ClientStore for PostgresStore {
    async fn create_client(&self, client: &OAuthClient) -> StoreResult<()> {
        sqlx::query(&SQL.insert_client)
            .bind(&client.id)
            .bind(&client.name)
            .bind(&client.secret_digest)
            .bind(client.created_at.as_millis())
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn find_client(&self, id: &str) -> StoreResult<Option<OAuthClient>> {
        let row = sqlx::query_as(&SQL.find_client).bind(id).fetch_optional(&self.pool).await.map_err(classify)?;
        Ok(row.map(sql::client))
    }

    async fn list_clients(&self) -> StoreResult<Vec<OAuthClient>> {
        let rows = sqlx::query_as(&SQL.list_clients).fetch_all(&self.pool).await.map_err(classify)?;
        Ok(rows.into_iter().map(sql::client).collect())
    }

    async fn delete_client(&self, id_or_name: &str) -> StoreResult<bool> {
        let done = sqlx::query(&SQL.delete_client).bind(id_or_name).execute(&self.pool).await.map_err(classify)?;
        Ok(done.rows_affected() > 0)
    }
}

#[async_trait]
impl SessionStore for PostgresStore {
    async fn create_session(&self, s: &Session) -> StoreResult<()> {
        sql::bind_session(sqlx::query(&SQL.insert_session), s)?.execute(&self.pool).await.map_err(classify)?;
        Ok(())
    }

    async fn get_session(&self, id: SessionId) -> StoreResult<Option<Session>> {
        let row = sqlx::query_as(&SQL.get_session)
            .bind(&id.as_bytes()[..])
            .fetch_optional(&self.pool)
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
        let row = sqlx::query_as::<_, SessionRow>(&format!(
            "UPDATE tessera_sessions SET generation = generation + 1, last_used_at = $1, \
             expires_at = LEAST($2, absolute_expires_at) \
             WHERE id = $3 AND generation = $4 AND ended_at IS NULL AND expires_at > $1 RETURNING {SESSION_COLUMNS}"
        ))
        .bind(now.as_millis())
        .bind(idle_expires_at.as_millis())
        .bind(&id.as_bytes()[..])
        .bind(generation(from)?)
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)?;
        match row {
            Some(row) => Ok(Rotation::Rotated(sql::session(row)?)),
            None => Ok(Rotation::Stale(self.get_session(id).await?)),
        }
    }

    async fn end_session(&self, id: SessionId, now: Timestamp) -> StoreResult<bool> {
        let ended = self.end_where("id = $2", &id.as_bytes()[..], now).await?;
        Ok(!ended.is_empty())
    }

    async fn end_user_sessions(&self, user_id: UserId, now: Timestamp) -> StoreResult<Vec<SessionId>> {
        self.end_where("user_id = $2 AND expires_at > $1", &user_id.as_bytes()[..], now).await
    }

    async fn list_sessions(&self, user_id: UserId, now: Timestamp) -> StoreResult<Vec<Session>> {
        let rows = sqlx::query_as(&SQL.list_sessions)
            .bind(&user_id.as_bytes()[..])
            .bind(now.as_millis())
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
        rows.into_iter().map(sql::session).collect()
    }

    async fn ended_after(&self, after: Option<FeedPosition>, max: usize) -> StoreResult<Vec<EndedSession>> {
        let rows = sqlx::query_as(&SQL.ended_after)
            .bind(sql::feed_position(after)?)
            .bind(sql::limit(max))
            .fetch_all(&self.pool)
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
        let done = sqlx::query(&SQL.purge_sessions)
            .bind(expired_before.as_millis())
            .bind(ended_before.as_millis())
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        sqlx::query(&SQL.purge_feed).bind(feed_before.as_millis()).execute(&self.pool).await.map_err(classify)?;
        Ok(done.rows_affected())
    }

    async fn ping(&self) -> StoreResult<()> {
        UserStore::ping(self).await
    }

    fn feed_watcher(&self) -> Option<Box<dyn FeedWatcher>> {
        Some(Box::new(PostgresWatcher::new(self.pool.clone(), self.channel.clone())))
    }
}
