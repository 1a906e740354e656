//! [`FaultyStore`]: the store traits, each call delegated to the inner store under its
//! operation's fault.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use super::{Fault, Faults, Op};
use crate::account::User;
use crate::clients::OAuthClient;
use crate::revocation::{EndedSession, FeedPosition};
use crate::session::{Rotation, Session};
use crate::store::{ClientStore, FeedWatcher, SessionStore, StoreResult, UserStore};
use crate::{SessionId, Timestamp, UserId};

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

    /// The inner store's, without faults: a failing watcher only delays what the feed's
    /// periodic read finds.
    fn feed_watcher(&self) -> Option<Box<dyn FeedWatcher>> {
        self.inner.feed_watcher()
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
