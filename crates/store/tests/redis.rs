//! The store contract against a real Redis (sessions) beside SQLite (users), one key prefix per
//! test. `scripts/test` starts a throwaway redis-server and sets `TESSERA_TEST_REDIS_URL`;
//! without it these tests fail (they never skip silently).

use std::sync::Arc;

use tessera_store::contract::Stores;
use tessera_store::redis::RedisStore;
use tessera_store::sqlite::SqliteStore;

async fn fresh_redis() -> Stores {
    let url = std::env::var("TESSERA_TEST_REDIS_URL").unwrap_or_else(|_| {
        panic!("TESSERA_TEST_REDIS_URL is not set: run the suite with scripts/test, which starts a Redis")
    });
    let prefix = format!("test-{}", tessera_core::SessionId::generate());
    let sessions = RedisStore::connect(&url, &prefix).await.expect("connect to the test Redis");
    let dir = tempfile::tempdir().expect("temp dir");
    let users = SqliteStore::open(&dir.path().join("users.db"), false).await.expect("open SQLite");
    let users = Arc::new(users);
    Stores { users: users.clone(), clients: users, sessions: Arc::new(sessions), guard: Box::new(dir) }
}

tessera_store::store_contract_tests!(fresh_redis);
