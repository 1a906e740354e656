//! The operations of the API, free of HTTP and of any particular store: one [`AuthService`]
//! over one shared state, its operations in modules by area.
//!
//! - `accounts`: register, login, guests, upgrade, password change, deletion, the guest purge;
//! - `tokens`: refresh (rotation, grace, reuse), authenticate, introspect, revoke;
//! - `sessions`: logout, logout-all, the session list, revoking one session;
//! - `maintenance`: what the server runs in the background — the feed's catch-up, the retry
//!   of ends the store did not confirm, the purge — as one [`Maintenance::tick`].
//!
//! Audit events are logged with [`audit!`](crate::audit!) (the list is
//! [`AuditEvent`](crate::audit::AuditEvent)); they carry ids, never a token or a password.

use std::sync::Arc;
use std::time::Duration;

use crate::access::{AccessClaims, AccessTokens, IssuedAccess};
use crate::account::User;
use crate::clock::Timestamp;
use crate::ids::{SessionId, UserId};
use crate::journal::EndedJournal;
use crate::password::{HashError, PasswordHasher};
use crate::refresh::{RefreshToken, RefreshTokenCodec};
use crate::revocation::RevokedSessions;
use crate::session::Session;
use crate::store::{SessionStore, StoreError, UniqueKey, UserStore};

mod accounts;
mod maintenance;
mod sessions;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
mod tokens;

pub use maintenance::{Maintenance, Tick};

/// Lifetimes of tokens and sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub session_max_lifetime: Duration,
    /// How long a rotated refresh token still gets its unused successor (0: strict).
    pub refresh_grace: Duration,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Self {
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(30 * 86_400),
            session_max_lifetime: Duration::from_secs(90 * 86_400),
            refresh_grace: Duration::ZERO,
        }
    }
}

/// Where a login comes from, shown in the session list.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub user_agent: Option<String>,
    pub ip: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    InvalidEmail(String),
    #[error("{0}")]
    WeakPassword(String),
    #[error("{0}")]
    InvalidUsername(String),
    /// Neither an email nor a username where one is needed (or both at a login).
    #[error("{0}")]
    BadIdentifier(&'static str),
    #[error("email already registered")]
    EmailTaken,
    #[error("username already registered")]
    UsernameTaken,
    /// An upgrade by a user who is registered already.
    #[error("already registered")]
    AlreadyRegistered,
    /// A password change by a guest, who has no password.
    #[error("a guest account has no password")]
    GuestAccount,
    #[error("invalid email or password")]
    InvalidCredentials,
    #[error("invalid or expired refresh token")]
    InvalidRefreshToken,
    #[error("invalid or expired token")]
    Unauthorized,
    #[error("session not found")]
    SessionNotFound,
    #[error("too many requests are waiting")]
    Busy,
    #[error("store unavailable")]
    Unavailable(#[source] StoreError),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl From<StoreError> for AuthError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(UniqueKey::Email) => Self::EmailTaken,
            StoreError::Conflict(UniqueKey::Username) => Self::UsernameTaken,
            e @ StoreError::Conflict(_) => Self::Internal(e.into()),
            StoreError::Unavailable(_) => Self::Unavailable(e),
            StoreError::Other(cause) => Self::Internal(anyhow::Error::from_boxed(cause)),
        }
    }
}

impl From<HashError> for AuthError {
    fn from(e: HashError) -> Self {
        match e {
            HashError::Busy => Self::Busy,
            other => Self::Internal(other.into()),
        }
    }
}

/// A freshly issued token pair.
#[derive(Debug)]
pub struct Issued {
    pub access: IssuedAccess,
    pub refresh: RefreshToken,
    /// When `refresh` expires (for a cookie's `Max-Age`).
    pub refresh_expires_at: Timestamp,
    pub session_id: SessionId,
    pub user: Arc<Profile>,
}

/// What the API shows of a user, and what its access tokens say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub id: UserId,
    pub email: Option<String>,
    pub username: Option<String>,
    pub is_anonymous: bool,
    pub created_at: Timestamp,
}

impl From<&User> for Profile {
    fn from(u: &User) -> Self {
        Self {
            id: u.id,
            email: u.email.clone(),
            username: u.username.clone(),
            is_anonymous: u.is_anonymous,
            created_at: u.created_at,
        }
    }
}

/// What a registration or an upgrade names the account by: an email, a username, or both.
#[derive(Debug, Clone, Copy, Default)]
pub struct NewNames<'a> {
    pub email: Option<&'a str>,
    pub username: Option<&'a str>,
}

/// What a login names the account by.
#[derive(Debug, Clone, Copy)]
pub enum LoginName<'a> {
    Email(&'a str),
    Username(&'a str),
}

/// The caller of an authenticated request: verified claims of a live session.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: UserId,
    pub session_id: SessionId,
    pub claims: Arc<AccessClaims>,
}

/// An active token, as introspection describes it.
#[derive(Debug, Clone)]
pub enum Introspection {
    Access(Caller),
    /// The current refresh token of this session.
    Refresh(Session),
}

const PROFILE_CACHE_CAPACITY: usize = 32_768;
/// Sessions whose user this instance remembers (a few dozen bytes each).
const SESSION_USER_CACHE_CAPACITY: usize = 65_536;
const MAX_UNFINISHED_ENDS: usize = 100_000;

/// An end the store has not confirmed.
#[derive(Debug, Clone, Copy)]
enum UnfinishedEnd {
    Session(SessionId, Timestamp),
    User(UserId, Timestamp),
}
const MAX_USER_AGENT_CHARS: usize = 256;

pub struct AuthService {
    users: Arc<dyn UserStore>,
    sessions: Arc<dyn SessionStore>,
    access: AccessTokens,
    refresh: RefreshTokenCodec,
    hasher: PasswordHasher,
    revoked: RevokedSessions,
    journal: EndedJournal,
    /// Held by a catch-up with the store's feed (see `catch_up_revocations`).
    catching_up: tokio::sync::Mutex<()>,
    /// Woken when this instance ends a session, so the feed publishes it without waiting for
    /// the next poll.
    ended_here: tokio::sync::Notify,
    /// Ends the store did not confirm (it failed, or the answer was lost), retried by
    /// [`retry_unfinished_ends`](Self::retry_unfinished_ends) until it does: an end reaches the
    /// store's feed, and so every instance and resource server, without the client retrying.
    unfinished: std::sync::Mutex<Vec<UnfinishedEnd>>,
    /// Profiles of registered users, whose email and username never change (a guest's profile
    /// changes when it upgrades, on any instance, so guests are always read from the store;
    /// deleted users' sessions are all ended, so their cached profiles mint nothing).
    profiles: quick_cache::sync::Cache<UserId, Arc<Profile>>,
    /// The user of sessions this instance opened or rotated (a session never changes user), so
    /// that a refresh can sign its access token while the store commits the rotation.
    session_users: quick_cache::sync::Cache<SessionId, UserId>,
    lifetimes: Lifetimes,
}

impl AuthService {
    pub fn new(
        users: Arc<dyn UserStore>,
        sessions: Arc<dyn SessionStore>,
        access: AccessTokens,
        refresh: RefreshTokenCodec,
        hasher: PasswordHasher,
        lifetimes: Lifetimes,
    ) -> Self {
        // A session's access tokens outlive its end by at most their lifetime; the minute on
        // top covers clocks of several instances that disagree a little.
        let retention = lifetimes.access_ttl + Duration::from_secs(60);
        Self {
            users,
            sessions,
            access,
            refresh,
            hasher,
            revoked: RevokedSessions::new(retention),
            journal: EndedJournal::new(retention),
            catching_up: tokio::sync::Mutex::new(()),
            ended_here: tokio::sync::Notify::new(),
            unfinished: std::sync::Mutex::default(),
            profiles: quick_cache::sync::Cache::new(PROFILE_CACHE_CAPACITY),
            session_users: quick_cache::sync::Cache::new(SESSION_USER_CACHE_CAPACITY),
            lifetimes,
        }
    }

    pub fn access_tokens(&self) -> &AccessTokens {
        &self.access
    }

    pub fn revoked(&self) -> &RevokedSessions {
        &self.revoked
    }

    pub fn journal(&self) -> &EndedJournal {
        &self.journal
    }

    /// Resolves when this instance has ended a session since the last call.
    pub async fn session_ended_here(&self) {
        self.ended_here.notified().await;
    }

    /// The profile to cache for `user` (registered users only) and to mint tokens with.
    fn remember(&self, user: &User) -> Arc<Profile> {
        let profile = Arc::new(Profile::from(user));
        if !user.is_anonymous {
            self.profiles.insert(user.id, profile.clone());
        }
        profile
    }

    async fn profile(&self, id: UserId) -> Result<Option<Arc<Profile>>, AuthError> {
        if let Some(p) = self.profiles.get(&id) {
            return Ok(Some(p));
        }
        let Some(user) = self.users.find_user(id).await? else {
            return Ok(None);
        };
        Ok(Some(self.remember(&user)))
    }

    /// Ends every session of the user; `current` (the caller's) is recorded as ended here even
    /// if it expired for refresh, since its access token may still be live.
    async fn end_all_sessions(
        &self,
        user_id: UserId,
        current: SessionId,
        now: Timestamp,
    ) -> Result<Vec<SessionId>, AuthError> {
        self.revoked.insert(current, now);
        let ended = match self.sessions.end_user_sessions(user_id, now).await {
            Ok(ended) => ended,
            Err(e) => {
                self.remember_unfinished(UnfinishedEnd::User(user_id, now));
                return Err(e.into());
            }
        };
        self.revoked.extend(ended.iter().map(|id| (*id, now)));
        self.ended_here.notify_one();
        Ok(ended)
    }

    async fn end_session(&self, id: SessionId, now: Timestamp) -> Result<(), AuthError> {
        // Recorded here first: whatever the store does, this instance rejects the session's
        // tokens from now on.
        self.revoked.insert(id, now);
        if let Err(e) = self.sessions.end_session(id, now).await {
            self.remember_unfinished(UnfinishedEnd::Session(id, now));
            return Err(e.into());
        }
        self.ended_here.notify_one();
        Ok(())
    }

    fn remember_unfinished(&self, end: UnfinishedEnd) {
        let mut unfinished = self.unfinished.lock().unwrap_or_else(|e| e.into_inner());
        if unfinished.len() >= MAX_UNFINISHED_ENDS {
            tracing::error!("too many ends wait for the store; forgetting the oldest (its session stays ended here)");
            unfinished.remove(0);
        }
        unfinished.push(end);
    }
}
