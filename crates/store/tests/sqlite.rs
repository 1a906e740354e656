//! The store contract against the embedded SQLite store, on a fresh file per test.

use std::sync::Arc;

use tessera_store::contract::Stores;
use tessera_store::sqlite::SqliteStore;

async fn fresh_sqlite() -> Stores {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(SqliteStore::open(&dir.path().join("tessera.db"), false).await.expect("open SQLite"));
    Stores { users: store.clone(), clients: store.clone(), sessions: store, pushes_ends: false, guard: Box::new(dir) }
}

tessera_store::store_contract_tests!(fresh_sqlite);

#[tokio::test]
async fn reopening_keeps_data_and_does_not_migrate_twice() {
    use tessera_core::store::UserStore;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tessera.db");
    let user = tessera_core::account::User {
        email: Some("ada@example.com".into()),
        email_key: Some("ada@example.com".into()),
        password_hash: Some("h".into()),
        is_anonymous: false,
        ..tessera_core::account::User::guest(tessera_core::Timestamp::from_millis(1))
    };
    SqliteStore::open(&path, false).await.unwrap().create_user(&user).await.unwrap();
    let reopened = SqliteStore::open(&path, false).await.unwrap();
    assert_eq!(reopened.find_user(user.id).await.unwrap(), Some(user));
}

#[tokio::test]
async fn sessions_stored_in_one_batch_are_as_if_stored_one_by_one() {
    use tessera_core::session::Session;
    use tessera_core::store::SessionStore;
    use tessera_core::{SessionId, Timestamp, UserId};
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("tessera.db"), false).await.unwrap();
    let user_id = UserId::generate();
    let sessions: Vec<Session> = (0..3)
        .map(|i| Session {
            id: SessionId::generate(),
            user_id,
            generation: i,
            created_at: Timestamp::from_millis(1000 + i as i64),
            last_used_at: Timestamp::from_millis(2000),
            expires_at: Timestamp::from_millis(9000),
            absolute_expires_at: Timestamp::from_millis(9500),
            ended_at: None,
            user_agent: (i == 0).then(|| "curl/8.0".into()),
            ip: Some("127.0.0.1".into()),
        })
        .collect();
    store.create_sessions(&sessions).await.unwrap();
    for s in &sessions {
        assert_eq!(store.get_session(s.id).await.unwrap().as_ref(), Some(s));
    }
    assert_eq!(store.list_sessions(user_id, Timestamp::from_millis(3000)).await.unwrap(), sessions);
    let err = store.create_sessions(&sessions[..1]).await.unwrap_err();
    use tessera_core::store::{StoreError, UniqueKey};
    assert!(matches!(err, StoreError::Conflict(UniqueKey::Id)), "a taken id: {err:?}");
}
