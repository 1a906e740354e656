//! The store contract through a `FaultyStore` with no fault set: the wrapper is transparent.
//!
//! Sessions go through a wrapper of an `Arc<dyn SessionStore>`, users and clients through one
//! of the concrete `MemoryStore`, all under one `Faults` handle.

use std::sync::Arc;

use tessera_core::store::SessionStore;
use tessera_core::testing::faults::{Faults, FaultyStore};
use tessera_core::testing::memory::MemoryStore;
use tessera_store::contract::Stores;

async fn fresh_faulty() -> Stores {
    let memory = Arc::new(MemoryStore::new());
    let faults = Faults::new();
    let sessions: Arc<dyn SessionStore> = memory.clone();
    let accounts = Arc::new(FaultyStore::with_faults(memory, faults.clone()));
    Stores {
        users: accounts.clone(),
        clients: accounts,
        sessions: Arc::new(FaultyStore::with_faults(sessions, faults.clone())),
        pushes_ends: true,
        guard: Box::new(faults),
    }
}

tessera_store::store_contract_tests!(fresh_faulty);
