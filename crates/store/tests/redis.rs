//! The store contract against a real Redis (sessions) beside SQLite (users), one key prefix per
//! test. `scripts/test` starts a throwaway redis-server and sets `TESSERA_TEST_REDIS_URL`;
//! without it these tests fail (they never skip silently).
//!
//! The contract's `purge_deletes_only_dead_sessions` is left out, as for the Cluster: the purge
//! here does not walk the sessions (docs/benchmarks.md), they leave by the deadlines of their keys, which
//! the contract's made-up clock cannot reach. The tests below check those deadlines instead, and
//! that a user's index forgets what can no longer be active.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use tessera_core::session::{Rotation, Session};
use tessera_core::store::SessionStore;
use tessera_core::{SessionId, Timestamp, UserId};
use tessera_store::contract::Stores;
use tessera_store::redis::RedisStore;
use tessera_store::sqlite::SqliteStore;

/// How long the store keeps a dead session's hash, and a user's index after its last session.
const DAY_MS: i64 = 86_400_000;

fn redis_url() -> String {
    std::env::var("TESSERA_TEST_REDIS_URL").unwrap_or_else(|_| {
        panic!("TESSERA_TEST_REDIS_URL is not set: run the suite with scripts/test, which starts a Redis")
    })
}

fn fresh_prefix() -> String {
    format!("test-{}", SessionId::generate())
}

async fn fresh_redis() -> Stores {
    let sessions = RedisStore::connect(&redis_url(), &fresh_prefix()).await.expect("connect to the test Redis");
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

tessera_store::store_contract_tests!(fresh_redis, without_sweep);

/// A store on a fresh prefix, a raw connection to the same Redis, and the prefix.
async fn store_and_raw() -> (RedisStore, MultiplexedConnection, String) {
    let prefix = fresh_prefix();
    let store = RedisStore::connect(&redis_url(), &prefix).await.expect("connect to the test Redis");
    let raw = redis::Client::open(redis_url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    (store, raw, prefix)
}

/// Milliseconds from now: the keys' deadlines must lie in Redis's future.
fn in_hours(hours: i64) -> Timestamp {
    Timestamp::from_millis(Timestamp::now().as_millis() + hours * 3_600_000)
}

fn session(user_id: UserId, created: Timestamp, expires: Timestamp, absolute: Timestamp) -> Session {
    Session {
        id: SessionId::generate(),
        user_id,
        generation: 0,
        created_at: created,
        last_used_at: created,
        expires_at: expires,
        absolute_expires_at: absolute,
        ended_at: None,
        user_agent: Some("curl/8.0".into()),
        ip: Some("127.0.0.1".into()),
    }
}

async fn deadline(raw: &mut MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("PEXPIRETIME").arg(key).query_async(raw).await.unwrap()
}

#[tokio::test]
async fn every_session_hash_has_a_deadline_a_day_after_it_expires_or_ends() {
    let (store, mut raw, prefix) = store_and_raw().await;
    let now = Timestamp::now();
    let s = session(UserId::generate(), now, in_hours(1), in_hours(3));
    store.create_session(&s).await.unwrap();
    let key = format!("{prefix}:s:{{{}}}", s.id);
    assert_eq!(deadline(&mut raw, &key).await, s.expires_at.as_millis() + DAY_MS, "on creation");

    let Rotation::Rotated(rotated) = store.rotate(s.id, 0, now, in_hours(2)).await.unwrap() else {
        panic!("should rotate");
    };
    assert_eq!(deadline(&mut raw, &key).await, rotated.expires_at.as_millis() + DAY_MS, "after a rotation");

    let end = Timestamp::from_millis(now.as_millis() + 1000);
    assert!(store.end_session(s.id, end).await.unwrap());
    assert_eq!(deadline(&mut raw, &key).await, end.as_millis() + DAY_MS, "after the end");
}

#[tokio::test]
async fn the_user_index_expires_a_day_after_its_last_session_can_be_active() {
    let (store, mut raw, prefix) = store_and_raw().await;
    let user_id = UserId::generate();
    let now = Timestamp::now();
    let (short, long) =
        (session(user_id, now, in_hours(1), in_hours(2)), session(user_id, now, in_hours(1), in_hours(5)));
    store.create_session(&long).await.unwrap();
    store.create_session(&short).await.unwrap();
    let key = format!("{prefix}:u:{{{user_id}}}");
    assert_eq!(deadline(&mut raw, &key).await, long.absolute_expires_at.as_millis() + DAY_MS);
    let kind: String = redis::cmd("TYPE").arg(&key).query_async(&mut raw).await.unwrap();
    assert_eq!(kind, "zset");
}

#[tokio::test]
async fn the_user_index_forgets_sessions_that_can_no_longer_be_active() {
    let (store, mut raw, prefix) = store_and_raw().await;
    let user_id = UserId::generate();
    let now = Timestamp::now();
    let old = session(user_id, now, in_hours(1), in_hours(2));
    store.create_session(&old).await.unwrap();
    // A login more than a day after the old session's absolute end (on a clock ahead of
    // Redis's: the keys' deadlines stay in Redis's future).
    let later = Timestamp::from_millis(old.absolute_expires_at.as_millis() + DAY_MS + 1);
    let new = session(user_id, later, in_hours(30), in_hours(60));
    store.create_session(&new).await.unwrap();
    let key = format!("{prefix}:u:{{{user_id}}}");
    let members: Vec<String> = raw.zrange(&key, 0, -1).await.unwrap();
    assert_eq!(members, vec![new.id.to_string()], "the old id is dropped as the index is written");

    // Reading drops ids too, and those whose hashes are gone.
    let gone = session(user_id, later, in_hours(30), in_hours(60));
    store.create_session(&gone).await.unwrap();
    let _: () = raw.del(format!("{prefix}:s:{{{}}}", gone.id)).await.unwrap();
    assert_eq!(store.list_sessions(user_id, later).await.unwrap(), vec![new.clone()]);
    let members: Vec<String> = raw.zrange(&key, 0, -1).await.unwrap();
    assert_eq!(members, vec![new.id.to_string()]);
}

#[tokio::test]
async fn a_user_index_written_as_a_plain_set_by_an_earlier_version_still_serves() {
    let (store, mut raw, prefix) = store_and_raw().await;
    let user_id = UserId::generate();
    let now = Timestamp::now();
    let (a, b) = (session(user_id, now, in_hours(1), in_hours(2)), session(user_id, now, in_hours(1), in_hours(3)));
    store.create_session(&a).await.unwrap();
    store.create_session(&b).await.unwrap();
    // As earlier versions left it: a set of ids expiring a day after the last absolute end.
    let key = format!("{prefix}:u:{{{user_id}}}");
    let _: () = raw.del(&key).await.unwrap();
    let _: () = raw.sadd(&key, &[a.id.to_string(), b.id.to_string()]).await.unwrap();
    let legacy_deadline = b.absolute_expires_at.as_millis() + DAY_MS;
    let _: () = redis::cmd("PEXPIREAT").arg(&key).arg(legacy_deadline).query_async(&mut raw).await.unwrap();

    let mut listed: Vec<SessionId> = store.list_sessions(user_id, now).await.unwrap().iter().map(|s| s.id).collect();
    listed.sort();
    let mut expected = vec![a.id, b.id];
    expected.sort();
    assert_eq!(listed, expected);
    let score: f64 = raw.zscore(&key, a.id.to_string()).await.unwrap();
    assert_eq!(score as i64, b.absolute_expires_at.as_millis(), "the latest absolute end, an upper bound");
    assert_eq!(deadline(&mut raw, &key).await, legacy_deadline);

    // Logout-all finds them too.
    let mut ended = store.end_user_sessions(user_id, now).await.unwrap();
    ended.sort();
    assert_eq!(ended, expected);
}

#[tokio::test]
async fn a_shared_budget_is_taken_refilled_given_back_and_forgotten_once_full() {
    use std::time::Duration;
    use tessera_core::store::LimitStore;
    let (store, mut raw, prefix) = store_and_raw().await;
    let per = Duration::from_secs(60);
    let t0 = Timestamp::now();
    for _ in 0..3 {
        assert_eq!(store.take("k", 3, per, t0).await.unwrap(), None);
    }
    let wait = store.take("k", 3, per, t0).await.unwrap().expect("the fourth attempt waits");
    assert_eq!(wait, Duration::from_secs(20), "one of 3 per minute refills in 20 s");
    assert_eq!(store.take("other", 3, per, t0).await.unwrap(), None, "buckets are separate");
    let later = Timestamp::from_millis(t0.as_millis() + 20_000);
    assert_eq!(store.take("k", 3, per, later).await.unwrap(), None, "refilled");
    store.give_back("k", 3, per, later).await.unwrap();
    assert_eq!(store.take("k", 3, per, later).await.unwrap(), None, "given back");
    let key = format!("{prefix}:limit:{{k}}");
    let ttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut raw).await.unwrap();
    assert!((1..=61_000).contains(&ttl), "the bucket leaves once it would be full again: {ttl}");
}
