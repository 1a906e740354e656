//! The fault store's own tests: faults before and after the commit, holds, the counters.

use std::sync::Arc;

use super::*;
use crate::account::User;
use crate::clients::OAuthClient;
use crate::session::{Rotation, Session};
use crate::store::UniqueKey;
use crate::store::{ClientStore, SessionStore, UserStore};
use crate::testing::memory::MemoryStore;
use crate::{SessionId, Timestamp, UserId};

fn t(secs: i64) -> Timestamp {
    Timestamp::from_millis(1_800_000_000_000 + secs * 1000)
}

fn session(user_id: UserId) -> Session {
    Session {
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
    }
}

fn user(email: &str) -> User {
    User {
        email: Some(email.into()),
        email_key: Some(email.into()),
        password_hash: Some("h".into()),
        is_anonymous: false,
        ..User::guest(t(0))
    }
}

fn client(id: &str, name: &str) -> OAuthClient {
    OAuthClient { id: id.into(), name: name.into(), secret_digest: vec![1; 32], created_at: t(0) }
}

fn faulty() -> (FaultyStore<MemoryStore>, Arc<MemoryStore>, Faults) {
    let inner = Arc::new(MemoryStore::new());
    let store = FaultyStore::new(inner.clone());
    let faults = store.faults();
    (store, inner, faults)
}

fn injected(result: StoreResult<impl fmt::Debug>) -> InjectedFault {
    let err = result.expect_err("should fail");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    *InjectedFault::of(&err).expect("an injected fault")
}

/// Calls the trait method `op` names on `store`, with harmless arguments.
async fn call(store: &FaultyStore<MemoryStore>, op: Op) -> StoreResult<()> {
    let (sid, uid) = (SessionId::generate(), UserId::generate());
    match op {
        Op::CreateUser => store.create_user(&user(&format!("{sid}@example.com"))).await,
        Op::FindUserByEmail => store.find_user_by_email("nobody@example.com").await.map(drop),
        Op::FindUserByUsername => store.find_user_by_username("nobody").await.map(drop),
        Op::FindUser => store.find_user(uid).await.map(drop),
        Op::UpdateUser => store.update_user(&user("nobody@example.com"), None).await.map(drop),
        Op::DeleteUser => store.delete_user(uid).await.map(drop),
        Op::Guests => store.guests(t(0), None, 10).await.map(drop),
        Op::UserPing => UserStore::ping(store).await,
        Op::CreateSession => store.create_session(&session(uid)).await,
        Op::GetSession => store.get_session(sid).await.map(drop),
        Op::Rotate => store.rotate(sid, 0, t(1), t(3601)).await.map(drop),
        Op::EndSession => store.end_session(sid, t(1)).await.map(drop),
        Op::EndUserSessions => store.end_user_sessions(uid, t(1)).await.map(drop),
        Op::ListSessions => store.list_sessions(uid, t(1)).await.map(drop),
        Op::EndedAfter => store.ended_after(None, 10).await.map(drop),
        Op::Purge => store.purge(t(0), t(0), t(0)).await.map(drop),
        Op::SessionPing => SessionStore::ping(store).await,
        Op::CreateClient => store.create_client(&client(&format!("tc_{sid}"), &format!("c_{sid}"))).await,
        Op::FindClient => store.find_client("tc_none").await.map(drop),
        Op::ListClients => store.list_clients().await.map(drop),
        Op::DeleteClient => store.delete_client("tc_none").await.map(drop),
    }
}

#[tokio::test]
async fn each_method_answers_to_its_own_op_and_no_other() {
    let (store, _, faults) = faulty();
    for target in Op::ALL {
        faults.fail_always(target);
        for op in Op::ALL {
            let outcome = call(&store, op).await;
            if op == target {
                assert_eq!(injected(outcome), InjectedFault { op, after_commit: false });
            } else {
                assert!(outcome.is_ok(), "{op} while {target} fails: {outcome:?}");
            }
        }
        faults.heal();
    }
    for op in Op::ALL {
        assert_eq!((faults.calls(op), faults.injected(op)), (Op::ALL.len() as u64, 1), "{op}");
    }
    let names: std::collections::HashSet<_> = Op::ALL.iter().map(|op| op.name()).collect();
    assert_eq!(names.len(), Op::ALL.len(), "names are distinct");
}

#[tokio::test]
async fn without_faults_the_wrapper_is_transparent() {
    let (store, inner, faults) = faulty();
    let s = session(UserId::generate());
    store.create_session(&s).await.unwrap();
    assert_eq!(inner.get_session(s.id).await.unwrap(), Some(s.clone()));
    assert!(matches!(store.rotate(s.id, 0, t(1), t(3601)).await.unwrap(), Rotation::Rotated(_)));
    assert!(store.end_session(s.id, t(2)).await.unwrap());
    assert_eq!(store.ended_after(None, 10).await.unwrap(), inner.ended_after(None, 10).await.unwrap());
    store.create_user(&user("ada@example.com")).await.unwrap();
    assert!(matches!(store.create_user(&user("ada@example.com")).await, Err(StoreError::Conflict(UniqueKey::Email))));
    assert!(faults.is_healthy());
    assert_eq!(faults.injected(Op::CreateUser), 0);
    assert_eq!(faults.calls(Op::CreateUser), 2);
}

#[tokio::test]
async fn fail_next_fails_that_many_calls_before_they_reach_the_store() {
    let (store, inner, faults) = faulty();
    let s = session(UserId::generate());
    store.create_session(&s).await.unwrap();
    faults.fail_next(Op::EndSession, 2);
    for _ in 0..2 {
        let fault = injected(store.end_session(s.id, t(5)).await);
        assert_eq!(fault, InjectedFault { op: Op::EndSession, after_commit: false });
        assert_eq!(inner.get_session(s.id).await.unwrap().unwrap().ended_at, None, "nothing written");
    }
    assert!(faults.is_healthy(), "the budget is spent");
    assert!(store.end_session(s.id, t(6)).await.unwrap());
    assert_eq!(inner.get_session(s.id).await.unwrap().unwrap().ended_at, Some(t(6)));
    assert_eq!((faults.calls(Op::EndSession), faults.injected(Op::EndSession)), (3, 2));

    faults.fail_next(Op::GetSession, 1);
    faults.fail_next(Op::GetSession, 0);
    assert!(store.get_session(s.id).await.is_ok(), "n = 0 clears the fault");
}

#[tokio::test]
async fn fail_always_fails_until_healed_and_leaves_other_ops_alone() {
    let (store, inner, faults) = faulty();
    let s = session(UserId::generate());
    store.create_session(&s).await.unwrap();
    faults.fail_always(Op::Rotate);
    faults.fail_always(Op::ListSessions);
    for i in 0..5 {
        injected(store.rotate(s.id, 0, t(i), t(3600 + i)).await);
    }
    assert_eq!(inner.get_session(s.id).await.unwrap().unwrap().generation, 0);
    assert!(store.get_session(s.id).await.unwrap().is_some(), "other ops still work");

    faults.heal_op(Op::Rotate);
    assert!(matches!(store.rotate(s.id, 0, t(10), t(3610)).await.unwrap(), Rotation::Rotated(_)));
    injected(store.list_sessions(s.user_id, t(10)).await);
    faults.heal();
    assert_eq!(store.list_sessions(s.user_id, t(10)).await.unwrap().len(), 1);
    assert!(faults.is_healthy());
}

#[tokio::test]
async fn a_broken_operation_fails_with_other_without_writing_until_healed() {
    let (store, inner, faults) = faulty();
    let s = session(UserId::generate());
    store.create_session(&s).await.unwrap();
    faults.break_always(Op::Rotate);
    for i in 0..3 {
        let err = store.rotate(s.id, 0, t(i), t(3600 + i)).await.expect_err("broken");
        assert!(matches!(err, StoreError::Other(_)), "{err:?}");
        assert_eq!(InjectedFault::of(&err).map(|f| f.op), Some(Op::Rotate));
    }
    assert_eq!(inner.get_session(s.id).await.unwrap().unwrap().generation, 0);
    assert_eq!(faults.injected(Op::Rotate), 3);
    faults.heal();
    assert!(matches!(store.rotate(s.id, 0, t(10), t(3610)).await.unwrap(), Rotation::Rotated(_)));
}

#[tokio::test]
async fn fail_after_commit_writes_then_reports_unavailable() {
    let (store, inner, faults) = faulty();
    let s = session(UserId::generate());
    store.create_session(&s).await.unwrap();
    faults.fail_next_after_commit(Op::EndSession, 1);
    let fault = injected(store.end_session(s.id, t(5)).await);
    assert_eq!(fault, InjectedFault { op: Op::EndSession, after_commit: true });
    assert_eq!(inner.get_session(s.id).await.unwrap().unwrap().ended_at, Some(t(5)), "the end committed");
    let feed = inner.ended_after(None, 10).await.unwrap();
    assert_eq!(feed.iter().map(|e| e.session_id).collect::<Vec<_>>(), vec![s.id], "with its feed entry");
    assert!(!store.end_session(s.id, t(6)).await.unwrap(), "a retry finds it ended");

    faults.fail_always_after_commit(Op::Rotate);
    let other = session(s.user_id);
    store.create_session(&other).await.unwrap();
    for from in 0..3 {
        injected(store.rotate(other.id, from, t(10 + from as i64), t(3610)).await);
    }
    assert_eq!(inner.get_session(other.id).await.unwrap().unwrap().generation, 3, "each rotation happened");
}

#[tokio::test]
async fn after_commit_passes_on_the_inner_stores_own_error() {
    let (store, _, faults) = faulty();
    store.create_user(&user("ada@example.com")).await.unwrap();
    faults.fail_always_after_commit(Op::CreateUser);
    let err = store.create_user(&user("ada@example.com")).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(UniqueKey::Email)), "{err:?}");
    assert_eq!(faults.injected(Op::CreateUser), 0);
}

#[tokio::test]
async fn one_handle_controls_wrappers_of_trait_objects() {
    let memory = Arc::new(MemoryStore::new());
    let faults = Faults::new();
    let sessions_inner: Arc<dyn SessionStore> = memory.clone();
    let users_inner: Arc<dyn UserStore> = memory;
    let sessions: Arc<dyn SessionStore> = Arc::new(FaultyStore::with_faults(sessions_inner, faults.clone()));
    let users: Arc<dyn UserStore> = Arc::new(FaultyStore::with_faults(users_inner, faults.clone()));

    faults.fail_always(Op::SessionPing);
    injected(sessions.ping().await);
    users.ping().await.expect("the users' ping is another op");
    faults.fail_next(Op::UserPing, 1);
    injected(users.ping().await);
    users.ping().await.unwrap();
}

#[test]
fn injected_faults_are_told_from_real_failures() {
    let real = StoreError::unavailable("connection refused");
    assert_eq!(InjectedFault::of(&real), None);
    let fake = StoreError::unavailable(InjectedFault { op: Op::Purge, after_commit: true });
    assert_eq!(InjectedFault::of(&fake).map(|f| f.op), Some(Op::Purge));
    assert_eq!(
        InjectedFault { op: Op::Purge, after_commit: true }.to_string(),
        "injected fault: purge failed after the inner store committed"
    );
}
