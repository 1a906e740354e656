//! Sessions in Valkey/Redis, for several instances and high refresh rates.
//!
//! Keys (`P` is the prefix, `tessera` by default):
//!
//! ```text
//! P:s:{<session id>}   hash: user, gen, created, last_used, expires, abs, ended?, ua?, ip?
//! P:u:{<user id>}      sorted set: the user's session ids, each scored by the latest time it
//!                      can be active (its absolute expiry), for the list and logout-all
//! P:ends               stream: one entry per ended session, `sid` and `at` (the revocation feed)
//! ```
//!
//! It needs Redis 7.0 or later, or Valkey. The `{…}` hash tags put everything a script touches
//! in one Cluster slot: rotation reads and writes only its session's hash, in one Lua script
//! (one round trip, no check-then-act race).
//!
//! Nothing here is ever swept by scanning the keyspace (docs/benchmarks.md: the purge must not scan all
//! sessions). Each session hash is written together with its deadline (`PEXPIREAT`, in the
//! same script) a day after its refresh token could last be used or after its end, so it leaves
//! by itself. A user's index drops the ids whose sessions cannot be active any more each time
//! it is written or read, and the key itself expires a day after the last of them, so it holds
//! only the user's sessions of the last absolute lifetime. The feed is trimmed by `purge`.
//!
//! The feed's positions are the stream's entry ids, assigned by Redis as each entry is added:
//! strictly increasing in the order the ends happened, whatever the clocks of the instances. On
//! a standalone server the end and its feed entry are one script. A Cluster keeps the stream in
//! a slot of its own, so there they are two commands, the feed entry first (see
//! `end_on_cluster` for why that order, and what a retry does).
//!
//! (Over 400 lines: the one `SessionStore` of both a standalone server and a Cluster, whose
//! paths differ only where a Cluster's slots make them; the Lua scripts are in `scripts.rs`.)

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::streams::StreamRangeReply;
use redis::{AsyncCommands, Script};
use tessera_core::revocation::{EndedSession, FeedPosition};
use tessera_core::session::{Rotation, Session};
use tessera_core::store::{FeedWatcher, LimitStore, SessionStore, StoreError, StoreResult};
use tessera_core::{SessionId, Timestamp, UserId};

use scripts::{BUCKET, CREATE, END, INDEX_ADD, INDEX_PRELUDE, INDEX_READ, ROTATE};
use watch::{RedisWatcher, WatchSource};

mod scripts;
mod watch;

/// How long a dead session's hash is kept (for reuse detection and the record).
const KEEP_MS: i64 = 86_400_000;
/// Bound on every Redis command, so an outage answers `503` quickly.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// The session store on a standalone server (`C = ConnectionManager`) or a Cluster
/// (`C = ClusterConnection`). Every command touches one slot; commands for different slots are
/// sent separately, never as one pipeline.
#[derive(Clone)]
pub struct RedisStore<C = ConnectionManager> {
    conn: C,
    prefix: String,
    scripts: Arc<Scripts>,
    cluster: bool,
    /// Where feed watchers connect; `None` for a store over a caller's connection.
    watch: Option<WatchSource>,
}

struct Scripts {
    rotate: Script,
    end: Script,
    create: Script,
    index_add: Script,
    index_read: Script,
    bucket: Script,
}

impl<C> std::fmt::Debug for RedisStore<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

impl RedisStore<ConnectionManager> {
    /// Connects to a standalone server at `url` (`redis://host:port[/db]`); `prefix` namespaces
    /// every key. The connection reconnects by itself after an outage.
    pub async fn connect(url: &str, prefix: &str) -> StoreResult<Self> {
        let client = redis::Client::open(url).map_err(StoreError::other)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(COMMAND_TIMEOUT)
            .set_response_timeout(COMMAND_TIMEOUT)
            .set_number_of_retries(1);
        let conn = ConnectionManager::new_with_config(client.clone(), config).await.map_err(classify)?;
        Ok(Self { watch: Some(WatchSource::Server(client)), ..Self::with_connection(conn, prefix, false) })
    }
}

impl RedisStore<ClusterConnection> {
    /// Connects to a Cluster through any of its `nodes` (`redis://host:port` each).
    pub async fn connect_cluster(nodes: &[String], prefix: &str) -> StoreResult<Self> {
        let client = redis::cluster::ClusterClient::builder(nodes.to_vec())
            .connection_timeout(COMMAND_TIMEOUT)
            .response_timeout(COMMAND_TIMEOUT)
            .retries(1)
            .build()
            .map_err(StoreError::other)?;
        let conn = client.get_async_connection().await.map_err(classify)?;
        Ok(Self { watch: Some(WatchSource::cluster(nodes)?), ..Self::with_connection(conn, prefix, true) })
    }
}

impl<C> RedisStore<C> {
    /// The store over a connection the caller made (tests wrap one to inject faults).
    /// `cluster` says whether the keys may live on different nodes, which decides how an end
    /// reaches the feed.
    pub fn with_connection(conn: C, prefix: &str, cluster: bool) -> Self {
        let index = |body: &str| Script::new(&format!("{INDEX_PRELUDE}{body}"));
        let scripts = Scripts {
            rotate: Script::new(ROTATE),
            end: Script::new(END),
            create: Script::new(CREATE),
            index_add: index(INDEX_ADD),
            index_read: index(INDEX_READ),
            bucket: Script::new(BUCKET),
        };
        Self { conn, prefix: prefix.to_owned(), scripts: Arc::new(scripts), cluster, watch: None }
    }
}

impl<C: ConnectionLike + Clone + Send + Sync + 'static> RedisStore<C> {
    fn session_key(&self, id: SessionId) -> String {
        format!("{}:s:{{{id}}}", self.prefix)
    }

    fn user_key(&self, id: UserId) -> String {
        format!("{}:u:{{{id}}}", self.prefix)
    }

    fn feed_key(&self) -> String {
        format!("{}:ends", self.prefix)
    }

    /// The ids in the user's index that may be active at `now`.
    async fn indexed_sessions(&self, user_id: UserId, now: Timestamp) -> StoreResult<Vec<SessionId>> {
        let mut conn = self.conn.clone();
        let members: Vec<String> = self
            .scripts
            .index_read
            .key(self.user_key(user_id))
            .arg(now.as_millis())
            .arg(KEEP_MS)
            .invoke_async(&mut conn)
            .await
            .map_err(classify)?;
        Ok(members.iter().filter_map(|m| m.parse().ok()).collect())
    }

    /// Runs [`END`] on the session's hash; with `feed`, the feed entry is part of the script.
    async fn run_end(&self, id: SessionId, now: Timestamp, active_only: bool, feed: bool) -> StoreResult<bool> {
        let mut conn = self.conn.clone();
        let mut invocation = self.scripts.end.key(self.session_key(id));
        if feed {
            invocation.key(self.feed_key());
        }
        let ended: i64 = invocation
            .arg(now.as_millis())
            .arg(if active_only { "1" } else { "0" })
            .arg(KEEP_MS)
            .arg(id.to_string())
            .invoke_async(&mut conn)
            .await
            .map_err(classify)?;
        Ok(ended == 1)
    }

    async fn end_one(&self, id: SessionId, now: Timestamp, active_only: bool) -> StoreResult<bool> {
        if self.cluster {
            self.end_on_cluster(id, now, active_only).await
        } else {
            // One script: the end and its feed entry commit together.
            self.run_end(id, now, active_only, true).await
        }
    }

    /// An end on a Cluster, where the feed lives on another node than the session, so the two
    /// cannot be one script. The feed entry is written first and the session marked ended
    /// second, so a failure between the two (a timeout, a node going away) leaves the session
    /// in the feed but not ended — every instance already refuses its access tokens, and the
    /// caller is told the end failed — and never ended but missing from the feed, which would
    /// let other instances go on accepting its tokens. A retry redoes what is missing: the
    /// session is not ended yet, so it is added to the feed again and then ended.
    ///
    /// The first read keeps repeated ends of an ended session (a second logout) from adding an
    /// entry each. Two ends racing past that read may both add one, and an entry may stay for a
    /// session that then was not ended by this call (it ended or expired meanwhile): the feed
    /// then lists a session twice, or one that is ended or expired anyway. Readers treat the
    /// feed as a set of sessions whose tokens to refuse, so an extra entry costs nothing; a
    /// missing one would be the bug.
    async fn end_on_cluster(&self, id: SessionId, now: Timestamp, active_only: bool) -> StoreResult<bool> {
        let mut conn = self.conn.clone();
        let (ended, expires): (Option<i64>, Option<i64>) = redis::cmd("HMGET")
            .arg(self.session_key(id))
            .arg("ended")
            .arg("expires")
            .query_async(&mut conn)
            .await
            .map_err(classify)?;
        let Some(expires) = expires else { return Ok(false) };
        if ended.is_some() || (active_only && expires <= now.as_millis()) {
            return Ok(false);
        }
        let _: String = redis::cmd("XADD")
            .arg(self.feed_key())
            .arg("*")
            .arg("sid")
            .arg(id.to_string())
            .arg("at")
            .arg(now.as_millis())
            .query_async(&mut conn)
            .await
            .map_err(classify)?;
        self.run_end(id, now, active_only, false).await
    }
}

impl<C: ConnectionLike + Clone + Send + Sync + 'static> RedisStore<C> {
    async fn bucket(&self, key: &str, capacity: u32, per: Duration, now: Timestamp, op: &str) -> StoreResult<i64> {
        let mut conn = self.conn.clone();
        self.scripts
            .bucket
            .key(format!("{}:limit:{{{key}}}", self.prefix))
            .arg(capacity.max(1))
            .arg(i64::try_from(per.as_millis()).unwrap_or(i64::MAX).max(1))
            .arg(now.as_millis())
            .arg(op)
            .invoke_async(&mut conn)
            .await
            .map_err(classify)
    }
}

#[async_trait]
impl<C: ConnectionLike + Clone + Send + Sync + 'static> LimitStore for RedisStore<C> {
    async fn take(&self, key: &str, capacity: u32, per: Duration, now: Timestamp) -> StoreResult<Option<Duration>> {
        let wait = self.bucket(key, capacity, per, now, "take").await?;
        Ok((wait > 0).then(|| Duration::from_millis(wait.unsigned_abs())))
    }

    async fn give_back(&self, key: &str, capacity: u32, per: Duration, now: Timestamp) -> StoreResult<()> {
        self.bucket(key, capacity, per, now, "give").await.map(|_| ())
    }
}

fn classify(e: redis::RedisError) -> StoreError {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        StoreError::unavailable(e)
    } else {
        StoreError::other(e)
    }
}

/// A session from the fields of its hash.
fn parse_session(id: SessionId, fields: &HashMap<String, String>) -> StoreResult<Session> {
    let text =
        |name: &str| fields.get(name).ok_or_else(|| StoreError::other(format!("session field `{name}` missing")));
    let number = |name: &str| text(name)?.parse::<i64>().map_err(StoreError::other);
    let millis = |name: &str| number(name).map(Timestamp::from_millis);
    Ok(Session {
        id,
        user_id: text("user")?.parse().map_err(StoreError::other)?,
        generation: text("gen")?.parse().map_err(StoreError::other)?,
        created_at: millis("created")?,
        last_used_at: millis("last_used")?,
        expires_at: millis("expires")?,
        absolute_expires_at: millis("abs")?,
        ended_at: fields
            .get("ended")
            .map(|v| v.parse().map(Timestamp::from_millis))
            .transpose()
            .map_err(StoreError::other)?,
        user_agent: fields.get("ua").cloned(),
        ip: fields.get("ip").cloned(),
    })
}

fn pairs(flat: &[String]) -> HashMap<String, String> {
    flat.chunks_exact(2).map(|kv| (kv[0].clone(), kv[1].clone())).collect()
}

#[async_trait]
impl<C: ConnectionLike + Clone + Send + Sync + 'static> SessionStore for RedisStore<C> {
    async fn create_session(&self, s: &Session) -> StoreResult<()> {
        let mut fields: Vec<(&str, String)> = vec![
            ("user", s.user_id.to_string()),
            ("gen", s.generation.to_string()),
            ("created", s.created_at.as_millis().to_string()),
            ("last_used", s.last_used_at.as_millis().to_string()),
            ("expires", s.expires_at.as_millis().to_string()),
            ("abs", s.absolute_expires_at.as_millis().to_string()),
        ];
        fields.extend(s.ended_at.map(|t| ("ended", t.as_millis().to_string())));
        fields.extend(s.user_agent.clone().map(|ua| ("ua", ua)));
        fields.extend(s.ip.clone().map(|ip| ("ip", ip)));
        let deadline = s.expires_at.as_millis().max(s.ended_at.map_or(0, Timestamp::as_millis)).saturating_add(KEEP_MS);
        // Rotation never moves `expires` past `abs`: no later than this can the session be active.
        let last_active = s.expires_at.max(s.absolute_expires_at).as_millis();
        let mut conn = self.conn.clone();
        // The index first: a failure before the hash is written leaves an id that the next read
        // of the index drops, never a session that logout-all cannot find.
        let _: () = self
            .scripts
            .index_add
            .key(self.user_key(s.user_id))
            .arg(s.created_at.as_millis())
            .arg(KEEP_MS)
            .arg(s.id.to_string())
            .arg(last_active)
            .invoke_async(&mut conn)
            .await
            .map_err(classify)?;
        let mut create = self.scripts.create.key(self.session_key(s.id));
        create.arg(deadline);
        for (field, value) in &fields {
            create.arg(*field).arg(value);
        }
        let _: () = create.invoke_async(&mut conn).await.map_err(classify)?;
        Ok(())
    }

    async fn get_session(&self, id: SessionId) -> StoreResult<Option<Session>> {
        let mut conn = self.conn.clone();
        let fields: HashMap<String, String> = conn.hgetall(self.session_key(id)).await.map_err(classify)?;
        if fields.is_empty() { Ok(None) } else { parse_session(id, &fields).map(Some) }
    }

    async fn rotate(
        &self,
        id: SessionId,
        from: u64,
        now: Timestamp,
        idle_expires_at: Timestamp,
    ) -> StoreResult<Rotation> {
        let mut conn = self.conn.clone();
        let reply: Vec<String> = self
            .scripts
            .rotate
            .key(self.session_key(id))
            .arg(from.to_string())
            .arg(now.as_millis())
            .arg(idle_expires_at.as_millis())
            .arg(KEEP_MS)
            .invoke_async(&mut conn)
            .await
            .map_err(classify)?;
        let Some((outcome, flat)) = reply.split_first() else { return Ok(Rotation::Stale(None)) };
        let session = parse_session(id, &pairs(flat))?;
        Ok(if outcome == "rotated" { Rotation::Rotated(session) } else { Rotation::Stale(Some(session)) })
    }

    /// On a standalone server one script ends the session and adds its feed entry. On a
    /// Cluster the feed entry comes first, then the end; a retry after a failure between them
    /// redoes both, and a race may list a session twice, which readers take as once (see
    /// `end_on_cluster`).
    async fn end_session(&self, id: SessionId, now: Timestamp) -> StoreResult<bool> {
        self.end_one(id, now, false).await
    }

    async fn end_user_sessions(&self, user_id: UserId, now: Timestamp) -> StoreResult<Vec<SessionId>> {
        // Each session is ended on its own (on a Cluster, each as in `end_on_cluster`). A failure
        // midway leaves the rest active; the caller sees the error, and a retry ends those.
        let mut ended = Vec::new();
        for id in self.indexed_sessions(user_id, now).await? {
            if self.end_one(id, now, true).await? {
                ended.push(id);
            }
        }
        Ok(ended)
    }

    async fn list_sessions(&self, user_id: UserId, now: Timestamp) -> StoreResult<Vec<Session>> {
        let mut conn = self.conn.clone();
        let user_key = self.user_key(user_id);
        let mut sessions = Vec::new();
        for id in self.indexed_sessions(user_id, now).await? {
            // Each session's hash lives in its own slot: one command each.
            let fields: HashMap<String, String> = conn.hgetall(self.session_key(id)).await.map_err(classify)?;
            if fields.is_empty() {
                let _: () = conn.zrem(&user_key, id.to_string()).await.map_err(classify)?;
                continue;
            }
            let session = parse_session(id, &fields)?;
            if session.is_active(now) {
                sessions.push(session);
            }
        }
        sessions.sort_by_key(|s| (s.created_at, s.id));
        Ok(sessions)
    }

    async fn ended_after(&self, after: Option<FeedPosition>, max: usize) -> StoreResult<Vec<EndedSession>> {
        let mut conn = self.conn.clone();
        let start = after.map_or_else(|| "-".to_owned(), |p| format!("({p}"));
        let reply: StreamRangeReply = redis::cmd("XRANGE")
            .arg(self.feed_key())
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(max)
            .query_async(&mut conn)
            .await
            .map_err(classify)?;
        reply
            .ids
            .iter()
            .map(|entry| {
                let position = entry.id.parse().map_err(StoreError::other)?;
                let sid: String = entry.get("sid").ok_or_else(|| StoreError::other("feed entry without `sid`"))?;
                let at: i64 = entry.get("at").ok_or_else(|| StoreError::other("feed entry without `at`"))?;
                Ok(EndedSession {
                    position,
                    session_id: sid.parse().map_err(StoreError::other)?,
                    ended_at: Timestamp::from_millis(at),
                })
            })
            .collect()
    }

    /// Trims the feed to its window, and nothing else: session hashes leave by their own
    /// deadlines (set with every write, a day after the session expires or ends, as the server's
    /// purge asks) and the user indexes as they are written or read, so a purge never walks the
    /// sessions (docs/benchmarks.md). Hence it returns 0, and a caller asking for an earlier cut than the
    /// deadlines (the contract suite's `purge_deletes_only_dead_sessions` does) finds the
    /// sessions still there until their keys expire. Stream ids carry Redis's clock, close
    /// enough to ours for a window of minutes.
    async fn purge(
        &self,
        _expired_before: Timestamp,
        _ended_before: Timestamp,
        feed_before: Timestamp,
    ) -> StoreResult<u64> {
        let mut conn = self.conn.clone();
        let _: u64 = redis::cmd("XTRIM")
            .arg(self.feed_key())
            .arg("MINID")
            .arg(feed_before.as_millis().max(0))
            .query_async(&mut conn)
            .await
            .map_err(classify)?;
        Ok(0)
    }

    async fn ping(&self) -> StoreResult<()> {
        let mut conn = self.conn.clone();
        let _: String = redis::cmd("PING").query_async(&mut conn).await.map_err(classify)?;
        Ok(())
    }

    fn feed_watcher(&self) -> Option<Box<dyn FeedWatcher>> {
        let source = self.watch.clone()?;
        Some(Box::new(RedisWatcher::new(source, self.feed_key())))
    }
}
