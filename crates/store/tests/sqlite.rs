//! The store contract against the embedded SQLite store, on a fresh file per test.

use std::sync::Arc;

use tessera_store::contract::Stores;
use tessera_store::sqlite::SqliteStore;

async fn fresh_sqlite() -> Stores {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(SqliteStore::open(&dir.path().join("tessera.db"), false).await.expect("open SQLite"));
    Stores { users: store.clone(), clients: store.clone(), sessions: store, guard: Box::new(dir) }
}

tessera_store::store_contract_tests!(fresh_sqlite);

#[tokio::test]
async fn reopening_keeps_data_and_does_not_migrate_twice() {
    use tessera_core::store::UserStore;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tessera.db");
    let user = tessera_core::account::User {
        id: tessera_core::UserId::generate(),
        email: "ada@example.com".into(),
        email_key: "ada@example.com".into(),
        password_hash: "h".into(),
        created_at: tessera_core::Timestamp::from_millis(1),
    };
    SqliteStore::open(&path, false).await.unwrap().create_user(&user).await.unwrap();
    let reopened = SqliteStore::open(&path, false).await.unwrap();
    assert_eq!(reopened.find_user(user.id).await.unwrap(), Some(user));
}
