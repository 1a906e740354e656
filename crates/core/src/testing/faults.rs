//! Fault injection for tests: a store wrapper whose operations fail on purpose.
//!
//! [`FaultyStore`] wraps any store (an `Arc<dyn SessionStore>`, an `Arc<dyn UserStore>`, an
//! `Arc<dyn ClientStore>`, or a concrete store such as `Arc<MemoryStore>` that implements all
//! three) and implements the same traits by delegating every call to it. Its [`Faults`] handle,
//! cloneable and shareable between several wrappers, tells it which [operations](Op) to fail with
//! [`StoreError::Unavailable`] — the error a real backend gives when it cannot be reached, the one
//! callers are expected to survive:
//!
//! - [`Faults::fail_next`]`(op, n)`: the next `n` calls of `op` fail without reaching the inner
//!   store (nothing is written);
//! - [`Faults::fail_always`]`(op)`: every call of `op` fails that way until healed;
//! - [`Faults::fail_next_after_commit`]`(op, n)` and [`Faults::fail_always_after_commit`]`(op)`:
//!   the inner call runs and commits, then the wrapper throws its answer away and returns
//!   `Unavailable` — a connection dropped after the write, so the caller cannot tell whether it
//!   happened (if the inner call itself fails, its own error is returned);
//! - [`Faults::heal`] clears every fault, [`Faults::heal_op`] the fault of one operation;
//! - [`Faults::hold_next`]`(op)`: the next call of `op` waits, before it reaches the inner store,
//!   until the returned [`Hold`] is released (or dropped), and the test can wait until a call got
//!   there ([`Hold::reached`]): interleavings of concurrent operations, forced exactly.
//!
//! Each operation has at most one fault at a time: setting one replaces the previous. A call
//! takes its decision when it starts, so a call already running is not affected by a later
//! change. [`Faults::calls`] and [`Faults::injected`] count what happened, and
//! [`InjectedFault::of`] tells an injected error from a real one.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use std::sync::Arc;
//! use tessera_core::store::{SessionStore, StoreError};
//! use tessera_core::{SessionId, Timestamp};
//! use tessera_core::testing::faults::{FaultyStore, Op};
//! use tessera_core::testing::memory::MemoryStore;
//!
//! let inner: Arc<dyn SessionStore> = Arc::new(MemoryStore::new());
//! let store = FaultyStore::new(inner);
//! let faults = store.faults();
//! faults.fail_next(Op::EndSession, 1);
//! let err = store.end_session(SessionId::generate(), Timestamp::from_millis(0)).await.unwrap_err();
//! assert!(matches!(err, StoreError::Unavailable(_)));
//! assert!(!store.end_session(SessionId::generate(), Timestamp::from_millis(0)).await.unwrap());
//! # }
//! ```
//!
//! The faults' lock is a [`std::sync::Mutex`] taken only to decide, never across an `.await`.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::account::User;
use crate::clients::OAuthClient;
use crate::revocation::{EndedSession, FeedPosition};
use crate::session::{Rotation, Session};
use crate::store::{ClientStore, SessionStore, StoreError, StoreResult, UserStore};
use crate::{SessionId, Timestamp, UserId};
use async_trait::async_trait;
use tokio::sync::oneshot;

/// Defines [`Op`], [`Op::ALL`] and [`Op::name`] from one list, so that an operation is named
/// once (its delegation in the trait impls below is the only other place).
macro_rules! operations {
    ($($(#[$doc:meta])* $op:ident => $name:literal,)+) => {
        /// One store operation: a method of [`UserStore`], [`SessionStore`] or [`ClientStore`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Op {
            $($(#[$doc])* $op,)+
        }

        impl Op {
            /// Every operation, users', sessions' then clients'.
            pub const ALL: [Op; [$($name),+].len()] = [$(Op::$op),+];

            /// The trait method's name, e.g. `end_session` (`UserStore::ping` /
            /// `SessionStore::ping` for the two pings).
            pub const fn name(self) -> &'static str {
                match self {
                    $(Op::$op => $name,)+
                }
            }
        }
    };
}

operations! {
    /// [`UserStore::create_user`]
    CreateUser => "create_user",
    /// [`UserStore::find_user_by_email`]
    FindUserByEmail => "find_user_by_email",
    /// [`UserStore::find_user_by_username`]
    FindUserByUsername => "find_user_by_username",
    /// [`UserStore::find_user`]
    FindUser => "find_user",
    /// [`UserStore::update_user`]
    UpdateUser => "update_user",
    /// [`UserStore::delete_user`]
    DeleteUser => "delete_user",
    /// [`UserStore::guests`]
    Guests => "guests",
    /// [`UserStore::ping`]
    UserPing => "UserStore::ping",
    /// [`SessionStore::create_session`]
    CreateSession => "create_session",
    /// [`SessionStore::get_session`]
    GetSession => "get_session",
    /// [`SessionStore::rotate`]
    Rotate => "rotate",
    /// [`SessionStore::end_session`]
    EndSession => "end_session",
    /// [`SessionStore::end_user_sessions`]
    EndUserSessions => "end_user_sessions",
    /// [`SessionStore::list_sessions`]
    ListSessions => "list_sessions",
    /// [`SessionStore::ended_after`]
    EndedAfter => "ended_after",
    /// [`SessionStore::purge`]
    Purge => "purge",
    /// [`SessionStore::ping`]
    SessionPing => "SessionStore::ping",
    /// [`ClientStore::create_client`]
    CreateClient => "create_client",
    /// [`ClientStore::find_client`]
    FindClient => "find_client",
    /// [`ClientStore::list_clients`]
    ListClients => "list_clients",
    /// [`ClientStore::delete_client`]
    DeleteClient => "delete_client",
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The cause inside the [`StoreError::Unavailable`] a [`FaultyStore`] returns on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InjectedFault {
    pub op: Op,
    /// Whether the inner store ran the call (and committed whatever it writes) first.
    pub after_commit: bool,
}

impl InjectedFault {
    /// The injected fault `err` carries, if it is one (and not a real failure).
    pub fn of(err: &StoreError) -> Option<&InjectedFault> {
        match err {
            StoreError::Unavailable(cause) => cause.downcast_ref(),
            _ => None,
        }
    }
}

impl fmt::Display for InjectedFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.after_commit {
            write!(f, "injected fault: {} failed after the inner store committed", self.op)
        } else {
            write!(f, "injected fault: {} failed before reaching the inner store", self.op)
        }
    }
}

impl std::error::Error for InjectedFault {}

/// When a fault strikes: instead of the call, or after it committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strike {
    Before,
    AfterCommit,
}

#[derive(Debug, Clone, Copy)]
struct Fault {
    strike: Strike,
    /// How many more calls it affects; `None`: all of them.
    remaining: Option<u64>,
}

#[derive(Debug, Default)]
struct State {
    faults: HashMap<Op, Fault>,
    holds: HashMap<Op, HoldSlot>,
    calls: HashMap<Op, u64>,
    injected: HashMap<Op, u64>,
}

/// The store's side of a [`Hold`].
#[derive(Debug)]
struct HoldSlot {
    reached: oneshot::Sender<()>,
    release: oneshot::Receiver<()>,
}

/// A call of one operation held before it reaches the inner store (see [`Faults::hold_next`]).
#[derive(Debug)]
pub struct Hold {
    reached: Option<oneshot::Receiver<()>>,
    release: oneshot::Sender<()>,
}

impl Hold {
    /// Resolves once a call is waiting at the hold.
    pub async fn reached(&mut self) {
        if let Some(reached) = self.reached.take() {
            let _ = reached.await;
        }
    }

    /// Lets the held call go on (dropping the hold does too).
    pub fn release(self) {
        let _ = self.release.send(());
    }
}

/// The control handle of one or more [`FaultyStore`]s: clones share the same faults.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    state: Arc<Mutex<State>>,
}

impl Faults {
    /// A handle with no faults set.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while the lock is held; the state stays consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, op: Op, strike: Strike, remaining: Option<u64>) {
        let mut state = self.state();
        if remaining == Some(0) {
            state.faults.remove(&op);
        } else {
            state.faults.insert(op, Fault { strike, remaining });
        }
    }

    /// The next `n` calls of `op` fail with `Unavailable` without reaching the inner store
    /// (`n = 0` clears `op`'s fault).
    pub fn fail_next(&self, op: Op, n: u64) {
        self.set(op, Strike::Before, Some(n));
    }

    /// Every call of `op` fails with `Unavailable` without reaching the inner store, until
    /// [`heal`](Self::heal) or [`heal_op`](Self::heal_op).
    pub fn fail_always(&self, op: Op) {
        self.set(op, Strike::Before, None);
    }

    /// The next `n` calls of `op` run on the inner store, then return `Unavailable` instead of
    /// its answer: the write happened, the caller is told it may not have.
    pub fn fail_next_after_commit(&self, op: Op, n: u64) {
        self.set(op, Strike::AfterCommit, Some(n));
    }

    /// Every call of `op` runs on the inner store, then returns `Unavailable`, until healed.
    pub fn fail_always_after_commit(&self, op: Op) {
        self.set(op, Strike::AfterCommit, None);
    }

    /// The next call of `op` waits before reaching the inner store until the hold is released;
    /// its fault, if any, is decided after that. Replaces an earlier hold of `op` not reached yet.
    pub fn hold_next(&self, op: Op) -> Hold {
        let (reached_tx, reached_rx) = oneshot::channel();
        let (release_tx, release_rx) = oneshot::channel();
        self.state().holds.insert(op, HoldSlot { reached: reached_tx, release: release_rx });
        Hold { reached: Some(reached_rx), release: release_tx }
    }

    /// Clears every fault (the counters stay).
    pub fn heal(&self) {
        self.state().faults.clear();
    }

    /// Clears the fault of `op`, if any.
    pub fn heal_op(&self, op: Op) {
        self.state().faults.remove(&op);
    }

    /// Whether any fault is set.
    pub fn is_healthy(&self) -> bool {
        self.state().faults.is_empty()
    }

    /// How many calls of `op` the wrappers received, failed ones included.
    pub fn calls(&self, op: Op) -> u64 {
        self.state().calls.get(&op).copied().unwrap_or(0)
    }

    /// How many calls of `op` failed on purpose.
    pub fn injected(&self, op: Op) -> u64 {
        self.state().injected.get(&op).copied().unwrap_or(0)
    }

    /// Counts a call of `op` and decides its fate, using up one of a `fail_next*` budget.
    fn on_call(&self, op: Op) -> Option<Strike> {
        let mut state = self.state();
        *state.calls.entry(op).or_default() += 1;
        let fault = state.faults.get_mut(&op)?;
        let strike = fault.strike;
        if let Some(remaining) = &mut fault.remaining {
            *remaining -= 1;
            if *remaining == 0 {
                state.faults.remove(&op);
            }
        }
        Some(strike)
    }

    fn count_injected(&self, op: Op) {
        *self.state().injected.entry(op).or_default() += 1;
    }

    /// Runs `call` under `op`'s fault, if any.
    async fn run<T>(&self, op: Op, call: impl Future<Output = StoreResult<T>>) -> StoreResult<T> {
        let hold = self.state().holds.remove(&op);
        if let Some(HoldSlot { reached, release }) = hold {
            let _ = reached.send(());
            let _ = release.await;
        }
        match self.on_call(op) {
            None => call.await,
            Some(Strike::Before) => {
                self.count_injected(op);
                Err(StoreError::unavailable(InjectedFault { op, after_commit: false }))
            }
            Some(Strike::AfterCommit) => {
                call.await?;
                self.count_injected(op);
                Err(StoreError::unavailable(InjectedFault { op, after_commit: true }))
            }
        }
    }
}

/// A store that delegates to `inner` and fails the operations its [`Faults`] say.
///
/// `S` is the inner store's type, a trait object or a concrete store; the wrapper implements
/// whichever of [`UserStore`], [`SessionStore`] and [`ClientStore`] `S` does. With no fault set
/// it is transparent (the contract suite runs through it in `tests/faulty.rs`).
pub struct FaultyStore<S: ?Sized> {
    inner: Arc<S>,
    faults: Faults,
}

impl<S: ?Sized> FaultyStore<S> {
    /// Wraps `inner` with a fresh [`Faults`] handle (see [`faults`](Self::faults)).
    pub fn new(inner: Arc<S>) -> Self {
        Self::with_faults(inner, Faults::new())
    }

    /// Wraps `inner`, controlled by `faults` (e.g. a handle shared with other wrappers).
    pub fn with_faults(inner: Arc<S>, faults: Faults) -> Self {
        Self { inner, faults }
    }

    /// The control handle (a clone sharing this wrapper's faults).
    pub fn faults(&self) -> Faults {
        self.faults.clone()
    }

    /// The wrapped store, to look behind the faults.
    pub fn inner(&self) -> &Arc<S> {
        &self.inner
    }
}

impl<S: ?Sized> Clone for FaultyStore<S> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone(), faults: self.faults.clone() }
    }
}

impl<S: ?Sized> fmt::Debug for FaultyStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let faults: Vec<(Op, Fault)> = {
            let state = self.faults.state();
            let mut faults: Vec<_> = state.faults.iter().map(|(op, fault)| (*op, *fault)).collect();
            faults.sort_by_key(|(op, _)| *op);
            faults
        };
        f.debug_struct("FaultyStore").field("faults", &faults).finish_non_exhaustive()
    }
}

#[async_trait]
impl<S: UserStore + ?Sized> UserStore for FaultyStore<S> {
    async fn create_user(&self, user: &User) -> StoreResult<()> {
        self.faults.run(Op::CreateUser, self.inner.create_user(user)).await
    }

    async fn find_user_by_email(&self, email_key: &str) -> StoreResult<Option<User>> {
        self.faults.run(Op::FindUserByEmail, self.inner.find_user_by_email(email_key)).await
    }

    async fn find_user_by_username(&self, username_key: &str) -> StoreResult<Option<User>> {
        self.faults.run(Op::FindUserByUsername, self.inner.find_user_by_username(username_key)).await
    }

    async fn find_user(&self, id: UserId) -> StoreResult<Option<User>> {
        self.faults.run(Op::FindUser, self.inner.find_user(id)).await
    }

    async fn update_user(&self, user: &User, expected_password_hash: Option<&str>) -> StoreResult<bool> {
        self.faults.run(Op::UpdateUser, self.inner.update_user(user, expected_password_hash)).await
    }

    async fn delete_user(&self, id: UserId) -> StoreResult<bool> {
        self.faults.run(Op::DeleteUser, self.inner.delete_user(id)).await
    }

    async fn guests(&self, created_before: Timestamp, after: Option<UserId>, limit: usize) -> StoreResult<Vec<UserId>> {
        self.faults.run(Op::Guests, self.inner.guests(created_before, after, limit)).await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.faults.run(Op::UserPing, UserStore::ping(&*self.inner)).await
    }
}

#[async_trait]
impl<S: SessionStore + ?Sized> SessionStore for FaultyStore<S> {
    async fn create_session(&self, session: &Session) -> StoreResult<()> {
        self.faults.run(Op::CreateSession, self.inner.create_session(session)).await
    }

    async fn get_session(&self, id: SessionId) -> StoreResult<Option<Session>> {
        self.faults.run(Op::GetSession, self.inner.get_session(id)).await
    }

    async fn rotate(
        &self,
        id: SessionId,
        from: u64,
        now: Timestamp,
        idle_expires_at: Timestamp,
    ) -> StoreResult<Rotation> {
        self.faults.run(Op::Rotate, self.inner.rotate(id, from, now, idle_expires_at)).await
    }

    async fn end_session(&self, id: SessionId, now: Timestamp) -> StoreResult<bool> {
        self.faults.run(Op::EndSession, self.inner.end_session(id, now)).await
    }

    async fn end_user_sessions(&self, user_id: UserId, now: Timestamp) -> StoreResult<Vec<SessionId>> {
        self.faults.run(Op::EndUserSessions, self.inner.end_user_sessions(user_id, now)).await
    }

    async fn list_sessions(&self, user_id: UserId, now: Timestamp) -> StoreResult<Vec<Session>> {
        self.faults.run(Op::ListSessions, self.inner.list_sessions(user_id, now)).await
    }

    async fn ended_after(&self, after: Option<FeedPosition>, limit: usize) -> StoreResult<Vec<EndedSession>> {
        self.faults.run(Op::EndedAfter, self.inner.ended_after(after, limit)).await
    }

    async fn purge(
        &self,
        expired_before: Timestamp,
        ended_before: Timestamp,
        feed_before: Timestamp,
    ) -> StoreResult<u64> {
        self.faults.run(Op::Purge, self.inner.purge(expired_before, ended_before, feed_before)).await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.faults.run(Op::SessionPing, SessionStore::ping(&*self.inner)).await
    }
}

#[async_trait]
impl<S: ClientStore + ?Sized> ClientStore for FaultyStore<S> {
    async fn create_client(&self, client: &OAuthClient) -> StoreResult<()> {
        self.faults.run(Op::CreateClient, self.inner.create_client(client)).await
    }

    async fn find_client(&self, id: &str) -> StoreResult<Option<OAuthClient>> {
        self.faults.run(Op::FindClient, self.inner.find_client(id)).await
    }

    async fn list_clients(&self) -> StoreResult<Vec<OAuthClient>> {
        self.faults.run(Op::ListClients, self.inner.list_clients()).await
    }

    async fn delete_client(&self, id_or_name: &str) -> StoreResult<bool> {
        self.faults.run(Op::DeleteClient, self.inner.delete_client(id_or_name)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::UniqueKey;
    use crate::testing::memory::MemoryStore;

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
        assert!(matches!(
            store.create_user(&user("ada@example.com")).await,
            Err(StoreError::Conflict(UniqueKey::Email))
        ));
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
}
