//! The store contract against a real 3-node Redis Cluster (`scripts/test` starts one and sets
//! `TESSERA_TEST_REDIS_CLUSTER_NODES`; without it these tests fail, never skip).
//!
//! Every check runs except `purge_deletes_only_dead_sessions`: sessions leave by the deadlines
//! of their keys, not by a sweep (see `tests/redis.rs`, which checks those deadlines).
//!
//! Then the end of a session, which on a Cluster is two commands (the feed lives on another
//! node than the session): through a connection that fails a chosen command, a failure between
//! the two must never leave the session ended but missing from the feed, and a retry must
//! finish what the failure left undone.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};

use redis::aio::ConnectionLike;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, Value};
use tessera_core::session::Session;
use tessera_core::store::{SessionStore, StoreError};
use tessera_core::{SessionId, Timestamp, UserId};
use tessera_store::contract::Stores;
use tessera_store::redis::RedisStore;
use tessera_store::sqlite::SqliteStore;

fn nodes() -> Vec<String> {
    let nodes = std::env::var("TESSERA_TEST_REDIS_CLUSTER_NODES").unwrap_or_else(|_| {
        panic!(
            "TESSERA_TEST_REDIS_CLUSTER_NODES is not set: run the suite with scripts/test, which starts a Redis Cluster"
        )
    });
    nodes.split(',').map(str::to_owned).collect()
}

fn fresh_prefix() -> String {
    format!("test-{}", SessionId::generate())
}

async fn fresh_cluster() -> Stores {
    let sessions =
        RedisStore::connect_cluster(&nodes(), &fresh_prefix()).await.expect("connect to the test Redis Cluster");
    let dir = tempfile::tempdir().expect("temp dir");
    let users = SqliteStore::open(&dir.path().join("users.db"), false).await.expect("open SQLite");
    let users = Arc::new(users);
    Stores {
        users: users.clone(),
        clients: users,
        sessions: Arc::new(sessions),
        pushes_ends: true,
        guard: Box::new(dir),
    }
}

tessera_store::store_contract_tests!(fresh_cluster, without_sweep);

/// A Cluster connection that fails one chosen command, as a timeout would, without sending it.
#[derive(Clone)]
struct Flaky {
    inner: ClusterConnection,
    /// The name of the command to fail (`XADD`, or `EVALSHA` for a script) and how many of its
    /// kind to let through first.
    trap: Arc<Mutex<Option<(&'static str, usize)>>>,
}

impl Flaky {
    fn fail(&self, command: &'static str, after: usize) {
        *self.trap.lock().unwrap() = Some((command, after));
    }

    /// Whether `cmd` is the one to fail (then the trap is spent).
    fn springs(&self, cmd: &Cmd) -> bool {
        let mut trap = self.trap.lock().unwrap();
        let Some((name, after)) = trap.as_mut() else { return false };
        let is_it = matches!(cmd.args_iter().next(), Some(redis::Arg::Simple(arg)) if arg.eq_ignore_ascii_case(name.as_bytes()));
        if !is_it {
            return false;
        }
        if *after > 0 {
            *after -= 1;
            return false;
        }
        *trap = None;
        true
    }
}

impl ConnectionLike for Flaky {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        if self.springs(cmd) {
            let timeout = std::io::Error::new(std::io::ErrorKind::TimedOut, "injected failure");
            return Box::pin(async move { Err(RedisError::from(timeout)) });
        }
        self.inner.req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        self.inner.req_packed_commands(pipeline, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.inner.get_db()
    }
}

/// A store on a fresh prefix whose connection can be told to fail a command, and the prefix.
async fn flaky_store() -> (RedisStore<Flaky>, Flaky, String) {
    let client = redis::cluster::ClusterClient::new(nodes()).unwrap();
    let inner = client.get_async_connection().await.expect("connect to the test Redis Cluster");
    let flaky = Flaky { inner, trap: Arc::default() };
    let prefix = fresh_prefix();
    (RedisStore::with_connection(flaky.clone(), &prefix, true), flaky, prefix)
}

fn t(secs: i64) -> Timestamp {
    Timestamp::from_millis(Timestamp::now().as_millis() + secs * 1000)
}

async fn stored(store: &RedisStore<Flaky>, user_id: UserId) -> SessionId {
    let session = Session {
        id: SessionId::generate(),
        user_id,
        generation: 0,
        created_at: t(0),
        last_used_at: t(0),
        expires_at: t(3600),
        absolute_expires_at: t(7200),
        ended_at: None,
        user_agent: None,
        ip: None,
    };
    store.create_session(&session).await.unwrap();
    session.id
}

/// How many feed entries the session has.
async fn in_feed(store: &RedisStore<Flaky>, id: SessionId) -> usize {
    store.ended_after(None, 10_000).await.unwrap().iter().filter(|e| e.session_id == id).count()
}

async fn is_ended(store: &RedisStore<Flaky>, id: SessionId) -> bool {
    store.get_session(id).await.unwrap().expect("the session is stored").ended_at.is_some()
}

#[tokio::test]
async fn a_failed_feed_entry_leaves_the_session_not_ended_and_a_retry_ends_it() {
    let (store, flaky, _) = flaky_store().await;
    let id = stored(&store, UserId::generate()).await;
    flaky.fail("XADD", 0);
    let err = store.end_session(id, t(10)).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(!is_ended(&store, id).await, "not ended, since the feed does not have it");
    assert_eq!(in_feed(&store, id).await, 0);

    assert!(store.end_session(id, t(11)).await.unwrap(), "the retry ends it");
    assert!(is_ended(&store, id).await);
    assert_eq!(in_feed(&store, id).await, 1);
}

#[tokio::test]
async fn a_failure_after_the_feed_entry_leaves_the_session_in_the_feed_and_a_retry_ends_it() {
    let (store, flaky, _) = flaky_store().await;
    let id = stored(&store, UserId::generate()).await;
    flaky.fail("EVALSHA", 0);
    assert!(store.end_session(id, t(10)).await.is_err());
    assert!(!is_ended(&store, id).await);
    assert_eq!(in_feed(&store, id).await, 1, "in the feed already: every instance refuses its tokens");

    assert!(store.end_session(id, t(11)).await.unwrap(), "the retry ends it");
    assert!(is_ended(&store, id).await);
    assert_eq!(in_feed(&store, id).await, 2, "listed twice, which readers of the feed take as once");
}

#[tokio::test]
async fn a_session_in_the_feed_but_not_ended_is_ended_by_the_next_end() {
    // The state a failure after the feed entry leaves, written by hand.
    let (store, flaky, prefix) = flaky_store().await;
    let id = stored(&store, UserId::generate()).await;
    let mut conn = flaky.inner.clone();
    let _: String = redis::cmd("XADD")
        .arg(format!("{prefix}:ends"))
        .arg("*")
        .arg("sid")
        .arg(id.to_string())
        .arg("at")
        .arg(t(5).as_millis())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!is_ended(&store, id).await);

    assert!(store.end_session(id, t(10)).await.unwrap());
    assert!(is_ended(&store, id).await);
}

#[tokio::test]
async fn ending_an_ended_session_again_adds_nothing_to_the_feed() {
    let (store, _, _) = flaky_store().await;
    let id = stored(&store, UserId::generate()).await;
    assert!(store.end_session(id, t(10)).await.unwrap());
    for later in 11..16 {
        assert!(!store.end_session(id, t(later)).await.unwrap());
    }
    assert_eq!(in_feed(&store, id).await, 1);
    assert!(!store.end_session(SessionId::generate(), t(20)).await.unwrap(), "an unknown session");
}

#[tokio::test]
async fn a_logout_everywhere_that_fails_midway_is_finished_by_a_retry() {
    let (store, flaky, _) = flaky_store().await;
    let user_id = UserId::generate();
    let mut ids = vec![stored(&store, user_id).await, stored(&store, user_id).await, stored(&store, user_id).await];
    ids.sort();
    flaky.fail("XADD", 1);
    assert!(store.end_user_sessions(user_id, t(10)).await.is_err());
    let mut ended_first = Vec::new();
    for &id in &ids {
        let ended = is_ended(&store, id).await;
        assert!(!ended || in_feed(&store, id).await == 1, "an ended session is in the feed");
        if ended {
            ended_first.push(id);
        }
    }
    assert_eq!(ended_first.len(), 1, "the first end went through, the second failed, the third never ran");

    let mut ended = store.end_user_sessions(user_id, t(11)).await.unwrap();
    ended.sort();
    let rest: Vec<SessionId> = ids.iter().copied().filter(|id| !ended_first.contains(id)).collect();
    assert_eq!(ended, rest, "the retry ends the other two");
    for &id in &ids {
        assert!(is_ended(&store, id).await);
        assert_eq!(in_feed(&store, id).await, 1);
    }
}
