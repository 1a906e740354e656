//! An in-memory store: users, OAuth clients and sessions in plain collections behind mutexes.
//!
//! It is meant for tests (of the server, of a client, of anything that needs a store without a
//! database service) and for trying tessera without writing any file. Everything is lost when
//! the process exits, and one `MemoryStore` is shared only by the clones of the `Arc` holding it,
//! so several server instances cannot share it: it is not a production store.
//!
//! It keeps the store contract exactly as the other backends do (the contract suite runs
//! against it in `tests/memory.rs`):
//!
//! - one [`std::sync::Mutex`] guards the sessions together with the feed of ended sessions, so
//!   a rotation is a compare-and-set under that lock (at most one of several racing callers
//!   rotates), and an end and its feed entry commit together;
//! - feed positions come from a counter under that same lock (`N-0`, counting from 1, as the SQL
//!   stores number them), so they grow strictly in commit order, and a reader never sees a
//!   position before every smaller one is visible; the counter never goes back, even when a
//!   purge has emptied the feed;
//! - a second mutex guards users and OAuth clients: email keys and client names are unique.
//!
//! No lock is ever held across an `.await` (no method awaits anything), and nothing that can
//! panic runs while a lock is held, so a poisoned lock still guards consistent data and is used
//! as it is.
//!
//! (Over 400 lines: every store trait over one set of maps under one mutex, kept in one file so
//! that the invariants they share — a session's rotation, its end and its feed entry — read in
//! one place.)

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::account::User;
use crate::clients::OAuthClient;
use crate::revocation::{EndedSession, FeedPosition};
use crate::session::{Rotation, Session};
use crate::store::{ClientStore, FeedWatcher, SessionStore, StoreError, StoreResult, UniqueKey, UserStore};
use crate::{SessionId, Timestamp, UserId};
use async_trait::async_trait;

/// The in-memory store; implements [`UserStore`], [`ClientStore`] and [`SessionStore`].
///
/// Share it as an `Arc<MemoryStore>` (coerced to each trait object as needed):
///
/// ```
/// use std::sync::Arc;
/// use tessera_core::store::{SessionStore, UserStore};
/// use tessera_core::testing::memory::MemoryStore;
///
/// let store = Arc::new(MemoryStore::new());
/// let users: Arc<dyn UserStore> = store.clone();
/// let sessions: Arc<dyn SessionStore> = store;
/// # let _ = (users, sessions);
/// ```
#[derive(Default)]
pub struct MemoryStore {
    accounts: Mutex<Accounts>,
    sessions: Mutex<Sessions>,
    /// The feed's last position, for [`FeedWatcher`]s: the store pushes its ends.
    pushed: Arc<tokio::sync::watch::Sender<FeedPosition>>,
}

#[derive(Default)]
struct Accounts {
    users: HashMap<UserId, User>,
    /// `email_key` → user id: a unique index.
    by_email_key: HashMap<String, UserId>,
    /// `username_key` → user id: a unique index.
    by_username_key: HashMap<String, UserId>,
    clients: Vec<OAuthClient>,
}

#[derive(Default)]
struct Sessions {
    sessions: HashMap<SessionId, Session>,
    /// The feed of ended sessions, in position order (appended under the same lock).
    feed: VecDeque<EndedSession>,
    /// The major part of the last position handed out (0: none yet).
    last_position: u64,
}

impl Sessions {
    /// Ends `id` at `now` if it exists and has not ended, with its feed entry; `true` if ended.
    fn end(&mut self, id: SessionId, now: Timestamp) -> bool {
        let Some(session) = self.sessions.get_mut(&id) else { return false };
        if session.ended_at.is_some() {
            return false;
        }
        session.ended_at = Some(now);
        self.last_position += 1;
        self.feed.push_back(EndedSession {
            position: FeedPosition::new(self.last_position, 0),
            session_id: id,
            ended_at: now,
        });
        true
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn accounts(&self) -> MutexGuard<'_, Accounts> {
        self.accounts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn sessions(&self) -> MutexGuard<'_, Sessions> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Tells the watchers where the feed ends (under the sessions' lock, so in order).
    fn push(&self, state: &Sessions) {
        self.pushed.send_if_modified(|last| {
            let at = FeedPosition::new(state.last_position, 0);
            std::mem::replace(last, at) != at
        });
    }
}

/// The memory store's [`FeedWatcher`].
struct MemoryWatcher(tokio::sync::watch::Receiver<FeedPosition>);

#[async_trait]
impl FeedWatcher for MemoryWatcher {
    async fn wait(&mut self, after: Option<FeedPosition>, within: Duration) -> StoreResult<bool> {
        let after = after.unwrap_or_default();
        match tokio::time::timeout(within, self.0.wait_for(|last| *last > after)).await {
            Ok(Ok(_)) => Ok(true),
            Ok(Err(_)) => Err(StoreError::other("the memory store is gone")),
            Err(_) => Ok(false),
        }
    }
}

impl std::fmt::Debug for MemoryStore {
    /// Counts only: the contents hold password hashes and client secret digests.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (users, clients) = {
            let accounts = self.accounts();
            (accounts.users.len(), accounts.clients.len())
        };
        let (sessions, feed) = {
            let s = self.sessions();
            (s.sessions.len(), s.feed.len())
        };
        f.debug_struct("MemoryStore")
            .field("users", &users)
            .field("clients", &clients)
            .field("sessions", &sessions)
            .field("feed_entries", &feed)
            .finish()
    }
}

impl Accounts {
    /// Which unique key of `user` another user holds, if any.
    fn conflict(&self, user: &User) -> Option<StoreError> {
        let taken = |index: &HashMap<String, UserId>, key: &Option<String>| {
            key.as_ref().and_then(|k| index.get(k)).is_some_and(|holder| *holder != user.id)
        };
        if taken(&self.by_email_key, &user.email_key) {
            Some(StoreError::Conflict(UniqueKey::Email))
        } else if taken(&self.by_username_key, &user.username_key) {
            Some(StoreError::Conflict(UniqueKey::Username))
        } else {
            None
        }
    }

    fn index(&mut self, user: &User) {
        if let Some(key) = &user.email_key {
            self.by_email_key.insert(key.clone(), user.id);
        }
        if let Some(key) = &user.username_key {
            self.by_username_key.insert(key.clone(), user.id);
        }
    }

    fn unindex(&mut self, user: &User) {
        if let Some(key) = &user.email_key {
            self.by_email_key.remove(key);
        }
        if let Some(key) = &user.username_key {
            self.by_username_key.remove(key);
        }
    }
}

#[async_trait]
impl UserStore for MemoryStore {
    async fn create_user(&self, user: &User) -> StoreResult<()> {
        let mut accounts = self.accounts();
        if let Some(conflict) = accounts.conflict(user) {
            return Err(conflict);
        }
        if accounts.users.contains_key(&user.id) {
            return Err(StoreError::other("user id collision"));
        }
        accounts.index(user);
        accounts.users.insert(user.id, user.clone());
        Ok(())
    }

    async fn find_user_by_email(&self, email_key: &str) -> StoreResult<Option<User>> {
        let accounts = self.accounts();
        Ok(accounts.by_email_key.get(email_key).and_then(|id| accounts.users.get(id)).cloned())
    }

    async fn find_user_by_username(&self, username_key: &str) -> StoreResult<Option<User>> {
        let accounts = self.accounts();
        Ok(accounts.by_username_key.get(username_key).and_then(|id| accounts.users.get(id)).cloned())
    }

    async fn find_user(&self, id: UserId) -> StoreResult<Option<User>> {
        Ok(self.accounts().users.get(&id).cloned())
    }

    async fn update_user(&self, user: &User, expected_password_hash: Option<&str>) -> StoreResult<bool> {
        let mut accounts = self.accounts();
        let Some(old) = accounts.users.get(&user.id).cloned() else {
            return Ok(false);
        };
        if old.password_hash.as_deref() != expected_password_hash {
            return Ok(false);
        }
        if let Some(conflict) = accounts.conflict(user) {
            return Err(conflict);
        }
        accounts.unindex(&old);
        accounts.index(user);
        accounts.users.insert(user.id, User { created_at: old.created_at, ..user.clone() });
        Ok(true)
    }

    async fn delete_user(&self, id: UserId) -> StoreResult<bool> {
        let mut accounts = self.accounts();
        let Some(old) = accounts.users.remove(&id) else {
            return Ok(false);
        };
        accounts.unindex(&old);
        Ok(true)
    }

    async fn guests(&self, created_before: Timestamp, after: Option<UserId>, limit: usize) -> StoreResult<Vec<UserId>> {
        let accounts = self.accounts();
        let mut ids: Vec<UserId> = accounts
            .users
            .values()
            .filter(|u| u.is_anonymous && u.created_at < created_before && after.is_none_or(|a| u.id > a))
            .map(|u| u.id)
            .collect();
        ids.sort();
        ids.truncate(limit);
        Ok(ids)
    }

    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }
}

#[async_trait]
impl ClientStore for MemoryStore {
    async fn create_client(&self, client: &OAuthClient) -> StoreResult<()> {
        let mut accounts = self.accounts();
        if accounts.clients.iter().any(|c| c.name == client.name) {
            return Err(StoreError::Conflict(UniqueKey::ClientName));
        }
        if accounts.clients.iter().any(|c| c.id == client.id) {
            return Err(StoreError::other("client id collision"));
        }
        accounts.clients.push(client.clone());
        Ok(())
    }

    async fn find_client(&self, id: &str) -> StoreResult<Option<OAuthClient>> {
        Ok(self.accounts().clients.iter().find(|c| c.id == id).cloned())
    }

    async fn list_clients(&self) -> StoreResult<Vec<OAuthClient>> {
        let mut clients = self.accounts().clients.clone();
        clients.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(clients)
    }

    async fn delete_client(&self, id_or_name: &str) -> StoreResult<bool> {
        let mut accounts = self.accounts();
        let before = accounts.clients.len();
        accounts.clients.retain(|c| c.id != id_or_name && c.name != id_or_name);
        Ok(accounts.clients.len() < before)
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn create_session(&self, session: &Session) -> StoreResult<()> {
        let mut state = self.sessions();
        if state.sessions.contains_key(&session.id) {
            return Err(StoreError::other("session id collision"));
        }
        state.sessions.insert(session.id, session.clone());
        Ok(())
    }

    async fn get_session(&self, id: SessionId) -> StoreResult<Option<Session>> {
        Ok(self.sessions().sessions.get(&id).cloned())
    }

    async fn rotate(
        &self,
        id: SessionId,
        from: u64,
        now: Timestamp,
        idle_expires_at: Timestamp,
    ) -> StoreResult<Rotation> {
        let mut state = self.sessions();
        let Some(session) = state.sessions.get_mut(&id) else { return Ok(Rotation::Stale(None)) };
        if session.generation != from || !session.is_active(now) {
            return Ok(Rotation::Stale(Some(session.clone())));
        }
        let next = from.checked_add(1).ok_or_else(|| StoreError::other("session generation overflow"))?;
        session.generation = next;
        session.last_used_at = now;
        session.expires_at = idle_expires_at.min(session.absolute_expires_at);
        Ok(Rotation::Rotated(session.clone()))
    }

    async fn end_session(&self, id: SessionId, now: Timestamp) -> StoreResult<bool> {
        let mut state = self.sessions();
        let ended = state.end(id, now);
        self.push(&state);
        Ok(ended)
    }

    async fn end_user_sessions(&self, user_id: UserId, now: Timestamp) -> StoreResult<Vec<SessionId>> {
        let mut state = self.sessions();
        // Oldest first, so the feed order of one call is deterministic.
        let mut active: Vec<(Timestamp, SessionId)> = state
            .sessions
            .values()
            .filter(|s| s.user_id == user_id && s.is_active(now))
            .map(|s| (s.created_at, s.id))
            .collect();
        active.sort();
        let ended = active.into_iter().map(|(_, id)| id).filter(|id| state.end(*id, now)).collect();
        self.push(&state);
        Ok(ended)
    }

    async fn list_sessions(&self, user_id: UserId, now: Timestamp) -> StoreResult<Vec<Session>> {
        let mut listed: Vec<Session> =
            self.sessions().sessions.values().filter(|s| s.user_id == user_id && s.is_active(now)).cloned().collect();
        listed.sort_by_key(|s| (s.created_at, s.id));
        Ok(listed)
    }

    async fn ended_after(&self, after: Option<FeedPosition>, limit: usize) -> StoreResult<Vec<EndedSession>> {
        let state = self.sessions();
        let start = after.map_or(0, |after| state.feed.partition_point(|e| e.position <= after));
        Ok(state.feed.iter().skip(start).take(limit).copied().collect())
    }

    async fn purge(
        &self,
        expired_before: Timestamp,
        ended_before: Timestamp,
        feed_before: Timestamp,
    ) -> StoreResult<u64> {
        let mut state = self.sessions();
        let before = state.sessions.len();
        state.sessions.retain(|_, s| !(s.expires_at < expired_before || s.ended_at.is_some_and(|e| e < ended_before)));
        let purged = before - state.sessions.len();
        state.feed.retain(|e| e.ended_at >= feed_before);
        Ok(u64::try_from(purged).unwrap_or(u64::MAX))
    }

    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }

    fn feed_watcher(&self) -> Option<Box<dyn FeedWatcher>> {
        Some(Box::new(MemoryWatcher(self.pushed.subscribe())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_millis(1_800_000_000_000 + secs * 1000)
    }

    fn session(user_id: UserId, expires: i64) -> Session {
        Session {
            id: SessionId::generate(),
            user_id,
            generation: 0,
            created_at: t(0),
            last_used_at: t(0),
            expires_at: t(expires),
            absolute_expires_at: t(7200),
            ended_at: None,
            user_agent: None,
            ip: None,
        }
    }

    #[tokio::test]
    async fn feed_positions_are_never_reused_after_a_purge_empties_the_feed() {
        let store = MemoryStore::new();
        let user = UserId::generate();
        let first = session(user, 3600);
        store.create_session(&first).await.unwrap();
        assert!(store.end_session(first.id, t(1)).await.unwrap());
        let old = store.ended_after(None, 10).await.unwrap();
        assert_eq!(old[0].position, FeedPosition::new(1, 0));

        store.purge(t(0), t(0), t(10)).await.unwrap();
        assert!(store.ended_after(None, 10).await.unwrap().is_empty());

        let second = session(user, 3600);
        store.create_session(&second).await.unwrap();
        store.end_session(second.id, t(20)).await.unwrap();
        let feed = store.ended_after(Some(old[0].position), 10).await.unwrap();
        assert_eq!(feed.len(), 1);
        assert_eq!((feed[0].session_id, feed[0].position), (second.id, FeedPosition::new(2, 0)));
    }

    #[tokio::test]
    async fn end_session_ends_an_expired_session_but_end_user_sessions_skips_it() {
        let store = MemoryStore::new();
        let user = UserId::generate();
        let (expired, other_expired) = (session(user, 10), session(user, 10));
        store.create_session(&expired).await.unwrap();
        store.create_session(&other_expired).await.unwrap();
        assert!(store.end_user_sessions(user, t(20)).await.unwrap().is_empty());
        assert!(store.end_session(expired.id, t(20)).await.unwrap());
        assert_eq!(store.ended_after(None, 10).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn colliding_ids_are_refused_without_changing_anything() {
        let store = MemoryStore::new();
        let s = session(UserId::generate(), 3600);
        store.create_session(&s).await.unwrap();
        let twin = Session { generation: 5, ..s.clone() };
        assert!(matches!(store.create_session(&twin).await, Err(StoreError::Other(_))));
        assert_eq!(store.get_session(s.id).await.unwrap(), Some(s));

        let user = User {
            email: Some("ada@example.com".into()),
            email_key: Some("ada@example.com".into()),
            password_hash: Some("h".into()),
            is_anonymous: false,
            ..User::guest(t(0))
        };
        store.create_user(&user).await.unwrap();
        let same_id = User { email_key: Some("bob@example.com".into()), ..user.clone() };
        assert!(matches!(store.create_user(&same_id).await, Err(StoreError::Other(_))));
        assert_eq!(store.find_user_by_email("bob@example.com").await.unwrap(), None);
    }

    #[tokio::test]
    async fn debug_shows_counts_not_contents() {
        let store = MemoryStore::new();
        store.create_session(&session(UserId::generate(), 3600)).await.unwrap();
        let shown = format!("{store:?}");
        assert!(shown.contains("sessions: 1"), "{shown}");
    }
}
