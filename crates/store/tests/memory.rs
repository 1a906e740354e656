//! The store contract against the in-memory store, a fresh one per test.

use std::sync::Arc;

use tessera_core::testing::memory::MemoryStore;
use tessera_store::contract::Stores;

async fn fresh_memory() -> Stores {
    let store = Arc::new(MemoryStore::new());
    Stores { users: store.clone(), clients: store.clone(), sessions: store, pushes_ends: true, guard: Box::new(()) }
}

tessera_store::store_contract_tests!(fresh_memory);
