//! The store traits: what tessera needs from a database, split by capability so users and
//! sessions can live in different backends (e.g. users in PostgreSQL, sessions in Redis).
//!
//! Every backend must pass the shared contract suite in `tessera-store` (feature `contract`).
//! Timestamps are passed in, never read from the store's clock, so several server instances
//! and the tests agree on time.

use std::time::Duration;

use async_trait::async_trait;

use crate::account::User;
use crate::clients::OAuthClient;
use crate::clock::Timestamp;
use crate::ids::{SessionId, UserId};
use crate::revocation::{EndedSession, FeedPosition};
use crate::session::{Rotation, Session};

type Cause = Box<dyn std::error::Error + Send + Sync>;

/// A unique key of the stores that a write can collide with. Which one is the store's fact;
/// what it means to a caller (`EMAIL_TAKEN`, a client name in use, a bug) is the domain's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UniqueKey {
    /// A user's `email_key`.
    Email,
    /// A user's `username_key`.
    Username,
    /// An OAuth client's name.
    ClientName,
    /// A primary key: a user, session or client id (fresh ids never collide: a bug).
    Id,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another row holds that unique key already; the write changed nothing.
    #[error("unique key taken: {0:?}")]
    Conflict(UniqueKey),
    /// The backend cannot be reached or timed out: the request may succeed later.
    #[error("store unavailable")]
    Unavailable(#[source] Cause),
    /// Anything else: corrupt data, a bug.
    #[error("store failure")]
    Other(#[source] Cause),
}

impl StoreError {
    pub fn unavailable(e: impl Into<Cause>) -> Self {
        Self::Unavailable(e.into())
    }

    pub fn other(e: impl Into<Cause>) -> Self {
        Self::Other(e.into())
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

#[async_trait]
pub trait UserStore: Send + Sync + 'static {
    /// Stores a new user; [`StoreError::Conflict`] with [`UniqueKey::Email`] or
    /// [`UniqueKey::Username`] if its `email_key` or `username_key` is taken — which one, exactly.
    async fn create_user(&self, user: &User) -> StoreResult<()>;

    /// The user whose `email_key` equals `email_key` exactly.
    async fn find_user_by_email(&self, email_key: &str) -> StoreResult<Option<User>>;

    /// The user whose `username_key` equals `username_key` exactly.
    async fn find_user_by_username(&self, username_key: &str) -> StoreResult<Option<User>>;

    async fn find_user(&self, id: UserId) -> StoreResult<Option<User>>;

    /// Atomically: if the stored user of `user.id` still has the password hash
    /// `expected_password_hash` (`None`: none, as a guest has), replaces it (every field but `id`
    /// and `created_at`) and returns `true`; otherwise changes nothing and returns `false` (also
    /// when there is no such user). A compare-and-set on the credential: of two changes that
    /// raced from the same credential, one wins and the other changes nothing. A taken email or
    /// username key is reported as for [`create_user`](Self::create_user), and changes nothing.
    async fn update_user(&self, user: &User, expected_password_hash: Option<&str>) -> StoreResult<bool>;

    /// Deletes the user, freeing its email and username; `false` if there was none.
    async fn delete_user(&self, id: UserId) -> StoreResult<bool>;

    /// Guests created before `created_before`, in id order after `after`, at most `limit`: the
    /// candidates of the guest purge, read page by page.
    async fn guests(&self, created_before: Timestamp, after: Option<UserId>, limit: usize) -> StoreResult<Vec<UserId>>;

    /// Answers when the backend is reachable.
    async fn ping(&self) -> StoreResult<()>;
}

#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Stores a new session (its id is fresh; collisions are the caller's bug).
    async fn create_session(&self, session: &Session) -> StoreResult<()>;

    /// The session, ended or expired ones included, until they are purged.
    async fn get_session(&self, id: SessionId) -> StoreResult<Option<Session>>;

    /// Atomically: if the session is at generation `from`, not ended and `now < expires_at`,
    /// move it to `from + 1`, set `last_used_at = now` and
    /// `expires_at = min(idle_expires_at, absolute_expires_at)`, and return it as
    /// [`Rotation::Rotated`]. Otherwise change nothing and return it as it is as
    /// [`Rotation::Stale`]. However many callers race with the same `from`, at most one rotates.
    async fn rotate(
        &self,
        id: SessionId,
        from: u64,
        now: Timestamp,
        idle_expires_at: Timestamp,
    ) -> StoreResult<Rotation>;

    /// Ends the session at `now` unless it has ended already; `true` if this call ended it.
    async fn end_session(&self, id: SessionId, now: Timestamp) -> StoreResult<bool>;

    /// Ends every active session of the user; returns the ids of those this call ended.
    async fn end_user_sessions(&self, user_id: UserId, now: Timestamp) -> StoreResult<Vec<SessionId>>;

    /// The user's active sessions at `now` (not ended, not expired), oldest first.
    async fn list_sessions(&self, user_id: UserId, now: Timestamp) -> StoreResult<Vec<Session>>;

    /// The feed of ended sessions: every session an `end_*` call ended, once, in the order the
    /// ends committed. Returns the entries after `after` (from the oldest kept when `None`), at
    /// most `limit`, oldest first. Positions are assigned by the store when the end commits and
    /// grow strictly in commit order, never by a caller's clock: a reader that resumes from the
    /// last position it saw misses nothing, whichever instance ended what and however their
    /// clocks disagree. An end and its feed entry commit together — or, where they cannot (a
    /// Redis Cluster, whose feed lives on another node than the session), the feed entry is
    /// written first, so a failure in between leaves a session listed but not ended (refused
    /// everywhere, finished by a retry) and never ended but unlisted. Readers treat the feed
    /// as a set: a session listed twice is harmless.
    async fn ended_after(&self, after: Option<FeedPosition>, limit: usize) -> StoreResult<Vec<EndedSession>>;

    /// Deletes sessions that expired before `expired_before` or ended before `ended_before`,
    /// and feed entries of sessions that ended before `feed_before`; returns how many sessions.
    async fn purge(
        &self,
        expired_before: Timestamp,
        ended_before: Timestamp,
        feed_before: Timestamp,
    ) -> StoreResult<u64>;

    /// Answers when the backend is reachable.
    async fn ping(&self) -> StoreResult<()>;

    /// A watcher told of new ends as they commit, on a connection of its own, so that an
    /// instance hears of another's end at once rather than at its next read of the feed (which
    /// goes on, as the safety net). `None`, the default, where the backend cannot push: then
    /// the feed is only read on a period.
    fn feed_watcher(&self) -> Option<Box<dyn FeedWatcher>> {
        None
    }
}

/// Waits for the feed of ended sessions to grow (see [`SessionStore::feed_watcher`]). One
/// reader at a time: it holds its own connection, opened on first use and again after a
/// failure.
#[async_trait]
pub trait FeedWatcher: Send {
    /// `Ok(true)` as soon as the feed may hold entries after `after` (it may be wrong, never
    /// late: the caller reads the feed to see), `Ok(false)` when `within` passed first.
    async fn wait(&mut self, after: Option<FeedPosition>, within: Duration) -> StoreResult<bool>;
}

/// Budgets shared by every instance (token buckets), so that rate limits count requests to the
/// whole deployment, not to each instance. Buckets are created full on first use and forgotten
/// once they have refilled, so memory follows the keys in use, not all keys ever seen.
#[async_trait]
pub trait LimitStore: Send + Sync + 'static {
    /// Takes one from bucket `key`, which holds at most `capacity` and refills evenly over
    /// `per`: `None` when taken, else how long until one is available (nothing is taken then).
    async fn take(&self, key: &str, capacity: u32, per: Duration, now: Timestamp) -> StoreResult<Option<Duration>>;

    /// Puts one back into bucket `key` (never above `capacity`).
    async fn give_back(&self, key: &str, capacity: u32, per: Duration, now: Timestamp) -> StoreResult<()>;
}

/// Registered OAuth clients (in the user database, so every instance knows them).
#[async_trait]
pub trait ClientStore: Send + Sync + 'static {
    /// Stores a new client; [`StoreError::Conflict`] with [`UniqueKey::ClientName`] if its name
    /// is taken.
    async fn create_client(&self, client: &OAuthClient) -> StoreResult<()>;

    async fn find_client(&self, id: &str) -> StoreResult<Option<OAuthClient>>;

    /// Every client, oldest first.
    async fn list_clients(&self) -> StoreResult<Vec<OAuthClient>>;

    /// Deletes the client whose id or name this is; `true` if there was one.
    async fn delete_client(&self, id_or_name: &str) -> StoreResult<bool>;
}
