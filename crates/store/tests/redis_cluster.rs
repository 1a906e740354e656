//! The store contract against a real 3-node Redis Cluster (`scripts/test` starts one and sets
//! `TESSERA_TEST_REDIS_CLUSTER_NODES`; without it these tests fail, never skip).
//!
//! Every check runs except `purge_deletes_only_dead_sessions`: a Cluster has no single keyspace
//! to sweep, so there sessions leave by their key TTLs (checked by the standalone suite's purge
//! of ended sessions, which works the same way here through the feed).

use std::sync::Arc;

use tessera_store::contract::Stores;
use tessera_store::redis::RedisStore;
use tessera_store::sqlite::SqliteStore;

async fn fresh_cluster() -> Stores {
    let nodes = std::env::var("TESSERA_TEST_REDIS_CLUSTER_NODES").unwrap_or_else(|_| {
        panic!(
            "TESSERA_TEST_REDIS_CLUSTER_NODES is not set: run the suite with scripts/test, which starts a Redis Cluster"
        )
    });
    let nodes: Vec<String> = nodes.split(',').map(str::to_owned).collect();
    let prefix = format!("test-{}", tessera_core::SessionId::generate());
    let sessions = RedisStore::connect_cluster(&nodes, &prefix).await.expect("connect to the test Redis Cluster");
    let dir = tempfile::tempdir().expect("temp dir");
    let users = SqliteStore::open(&dir.path().join("users.db"), false).await.expect("open SQLite");
    let users = Arc::new(users);
    Stores { users: users.clone(), clients: users, sessions: Arc::new(sessions), guard: Box::new(dir) }
}

tessera_store::store_contract_tests!(fresh_cluster, without_sweep);
