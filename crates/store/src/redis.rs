//! Sessions in Valkey/Redis, for several instances and high refresh rates.
//!
//! Keys (`P` is the prefix, `tessera` by default):
//!
//! ```text
//! P:s:{<session id>}   hash: user, gen, created, last_used, expires, abs, ended?, ua?, ip?
//! P:u:{<user id>}      set of the user's session ids (for the list and logout-all)
//! P:ends               stream: one entry per ended session, `sid` and `at` (the revocation feed)
//! ```
//!
//! The `{…}` hash tags put everything a script touches in one Cluster slot: rotation reads and
//! writes only its session's hash, in one Lua script (one round trip, no check-then-act race).
//! Each session hash expires by itself (`PEXPIREAT`) a day after its refresh token could last
//! be used, so nothing piles up; the user sets are pruned as they are read, the feed by `purge`.
//!
//! The feed's positions are the stream's entry ids, assigned by Redis as each entry is added:
//! strictly increasing in the order the ends happened, whatever the clocks of the instances. On
//! a standalone server the end and its feed entry are one script; a Cluster keeps the stream in
//! a slot of its own, so there the entry follows in a second command.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::streams::StreamRangeReply;
use redis::{AsyncCommands, Script};
use tessera_core::revocation::{EndedSession, FeedPosition};
use tessera_core::session::{Rotation, Session};
use tessera_core::store::{SessionStore, StoreError, StoreResult};
use tessera_core::{SessionId, Timestamp, UserId};

/// How long a dead session's hash is kept (for reuse detection and the record).
const KEEP_MS: i64 = 86_400_000;
/// Bound on every Redis command, so an outage answers `503` quickly.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// Moves the session to the next generation if it is at ARGV[1], active at ARGV[2]; returns
/// `"rotated"` or `"stale"` followed by the hash's fields and values (nothing if it is gone).
const ROTATE: &str = r#"
local h = redis.call('HGETALL', KEYS[1])
if #h == 0 then return {} end
local s = {}
for i = 1, #h, 2 do s[h[i]] = h[i + 1] end
if s.gen ~= ARGV[1] or s.ended or tonumber(s.expires) <= tonumber(ARGV[2]) then
  table.insert(h, 1, 'stale')
  return h
end
local expires = math.min(tonumber(ARGV[3]), tonumber(s.abs))
redis.call('HINCRBY', KEYS[1], 'gen', 1)
redis.call('HSET', KEYS[1], 'last_used', ARGV[2], 'expires', string.format('%.0f', expires))
redis.call('PEXPIREAT', KEYS[1], string.format('%.0f', expires + tonumber(ARGV[4])))
local out = redis.call('HGETALL', KEYS[1])
table.insert(out, 1, 'rotated')
return out
"#;

/// Ends the session at ARGV[1] unless it has ended (or, with ARGV[2] = '1', unless it is not
/// active); returns 1 if this call ended it. With a second key (the feed stream), also appends
/// the end to it, ARGV[4] being the session id.
const END: &str = r#"
local s = redis.call('HMGET', KEYS[1], 'ended', 'expires')
if s[2] == false or s[1] then return 0 end
if ARGV[2] == '1' and tonumber(s[2]) <= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'ended', ARGV[1])
redis.call('PEXPIREAT', KEYS[1], string.format('%.0f', tonumber(ARGV[1]) + tonumber(ARGV[3])))
if KEYS[2] then redis.call('XADD', KEYS[2], '*', 'sid', ARGV[4], 'at', ARGV[1]) end
return 1
"#;

/// The session store on a standalone server (`C = ConnectionManager`) or a Cluster
/// (`C = ClusterConnection`). Every command touches one slot; commands for different slots are
/// sent separately, never as one pipeline.
#[derive(Clone)]
pub struct RedisStore<C = ConnectionManager> {
    conn: C,
    prefix: String,
    rotate: Script,
    end: Script,
    cluster: bool,
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
        let conn = ConnectionManager::new_with_config(client, config).await.map_err(classify)?;
        Ok(Self::with(conn, prefix, false))
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
        Ok(Self::with(conn, prefix, true))
    }
}

impl<C> RedisStore<C> {
    fn with(conn: C, prefix: &str, cluster: bool) -> Self {
        Self { conn, prefix: prefix.to_owned(), rotate: Script::new(ROTATE), end: Script::new(END), cluster }
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

    async fn end_one(&self, id: SessionId, now: Timestamp, active_only: bool) -> StoreResult<bool> {
        let mut conn = self.conn.clone();
        let mut invocation = self.end.key(self.session_key(id));
        if !self.cluster {
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
        if ended == 1 && self.cluster {
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
        }
        Ok(ended == 1)
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
        let key = self.session_key(s.id);
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
        let user_key = self.user_key(s.user_id);
        let user_ttl = s.absolute_expires_at.as_millis().saturating_add(KEEP_MS);
        let session_ttl =
            s.expires_at.as_millis().max(s.ended_at.map_or(0, Timestamp::as_millis)).saturating_add(KEEP_MS);
        let mut conn = self.conn.clone();
        // Single commands rather than pipelines: a Cluster routes a pipeline as a whole.
        let _: () = conn.hset_multiple(&key, &fields).await.map_err(classify)?;
        let _: () =
            redis::cmd("PEXPIREAT").arg(&key).arg(session_ttl).query_async(&mut conn).await.map_err(classify)?;
        let _: () = conn.sadd(&user_key, s.id.to_string()).await.map_err(classify)?;
        // `GT` only ever extends the index's deadline; `NX` gives a new index its first.
        for mode in ["GT", "NX"] {
            let _: () = redis::cmd("PEXPIREAT")
                .arg(&user_key)
                .arg(user_ttl)
                .arg(mode)
                .query_async(&mut conn)
                .await
                .map_err(classify)?;
        }
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

    async fn end_session(&self, id: SessionId, now: Timestamp) -> StoreResult<bool> {
        self.end_one(id, now, false).await
    }

    async fn end_user_sessions(&self, user_id: UserId, now: Timestamp) -> StoreResult<Vec<SessionId>> {
        let mut conn = self.conn.clone();
        let members: Vec<String> = conn.smembers(self.user_key(user_id)).await.map_err(classify)?;
        let mut ended = Vec::new();
        for id in members.iter().filter_map(|m| m.parse::<SessionId>().ok()) {
            if self.end_one(id, now, true).await? {
                ended.push(id);
            }
        }
        Ok(ended)
    }

    async fn list_sessions(&self, user_id: UserId, now: Timestamp) -> StoreResult<Vec<Session>> {
        let mut conn = self.conn.clone();
        let user_key = self.user_key(user_id);
        let members: Vec<String> = conn.smembers(&user_key).await.map_err(classify)?;
        let mut sessions = Vec::new();
        for id in members.iter().filter_map(|m| m.parse::<SessionId>().ok()) {
            // Each session's hash lives in its own slot: one command each.
            let fields: HashMap<String, String> = conn.hgetall(self.session_key(id)).await.map_err(classify)?;
            if fields.is_empty() {
                let _: () = conn.srem(&user_key, id.to_string()).await.map_err(classify)?;
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

    async fn purge(
        &self,
        expired_before: Timestamp,
        ended_before: Timestamp,
        feed_before: Timestamp,
    ) -> StoreResult<u64> {
        // Hashes expire by themselves; the feed is trimmed to its window (stream ids carry
        // Redis's clock, close enough to ours for a window of minutes). On a standalone server a
        // SCAN also sweeps what a clock far from Redis's (or a caller asking early, as the
        // contract suite does) would leave. A Cluster has no single keyspace to scan, so there
        // expiry is left to the TTLs.
        let mut conn = self.conn.clone();
        let _: u64 = redis::cmd("XTRIM")
            .arg(self.feed_key())
            .arg("MINID")
            .arg(feed_before.as_millis().max(0))
            .query_async(&mut conn)
            .await
            .map_err(classify)?;
        if self.cluster {
            return Ok(0);
        }
        let mut purged = 0;
        let pattern = format!("{}:s:*", self.prefix);
        let mut keys: Vec<String> = Vec::new();
        {
            let mut iter: redis::AsyncIter<String> = conn.scan_match(&pattern).await.map_err(classify)?;
            while let Some(key) = iter.next_item().await {
                keys.push(key.map_err(classify)?);
            }
        }
        for key in keys {
            let (expires, ended): (Option<i64>, Option<i64>) = redis::cmd("HMGET")
                .arg(&key)
                .arg("expires")
                .arg("ended")
                .query_async(&mut conn)
                .await
                .map_err(classify)?;
            let dead = expires.is_some_and(|e| e < expired_before.as_millis())
                || ended.is_some_and(|e| e < ended_before.as_millis());
            if dead {
                let _: () = conn.del(&key).await.map_err(classify)?;
                purged += 1;
            }
        }
        Ok(purged)
    }

    async fn ping(&self) -> StoreResult<()> {
        let mut conn = self.conn.clone();
        let _: String = redis::cmd("PING").query_async(&mut conn).await.map_err(classify)?;
        Ok(())
    }
}
