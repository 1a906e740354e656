//! The operations of the API, free of HTTP and of any particular store.
//!
//! Audit events are logged with [`audit!`](crate::audit!) (the list is
//! [`AuditEvent`](crate::audit::AuditEvent)); they carry ids, never a token or a password.

use std::sync::Arc;
use std::time::Duration;

use crate::access::{AccessClaims, AccessTokens, IssuedAccess, Subject};
use crate::account::{self, User};
use crate::clock::Timestamp;
use crate::ids::{SessionId, UserId};
use crate::journal::EndedJournal;
use crate::password::{HashError, PasswordHasher};
use crate::refresh::{RefreshClaims, RefreshToken, RefreshTokenCodec};
use crate::revocation::RevokedSessions;
use crate::session::{self, Rotation, Session, StaleVerdict};
use crate::store::{SessionStore, StoreError, UserStore};

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
            StoreError::EmailTaken => Self::EmailTaken,
            StoreError::UsernameTaken => Self::UsernameTaken,
            e @ StoreError::ClientNameTaken => Self::Internal(e.into()),
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

    /// Registers an account with an email, a username or both.
    pub async fn register(&self, names: NewNames<'_>, password: &str, now: Timestamp) -> Result<Profile, AuthError> {
        let (email, username) = check_names(names)?;
        account::check_password(password).map_err(AuthError::WeakPassword)?;
        let password_hash = self.hasher.hash(password.to_owned()).await?;
        let (email, email_key) = email.unzip();
        let (username, username_key) = username.unzip();
        let user = User {
            id: UserId::generate(),
            email,
            email_key,
            username,
            username_key,
            password_hash: Some(password_hash),
            is_anonymous: false,
            created_at: now,
        };
        self.users.create_user(&user).await?;
        crate::audit!(info, UserRegistered, user_id = %user.id);
        Ok(Profile::from(&user))
    }

    /// Checks a password for the account `name` names: `InvalidCredentials` alike for an unknown
    /// account, a wrong password and a guest, at the same cost.
    async fn check_credentials(&self, name: LoginName<'_>, password: &str) -> Result<User, AuthError> {
        let user = match name {
            LoginName::Email(email) => match account::normalize_email(email) {
                Ok((_, key)) => self.users.find_user_by_email(&key).await?,
                Err(_) => None,
            },
            LoginName::Username(username) => match account::normalize_username(username) {
                Ok((_, key)) => self.users.find_user_by_username(&key).await?,
                Err(_) => None,
            },
        };
        let hash = user.as_ref().and_then(|u| u.password_hash.clone());
        let valid = self.hasher.verify(password.to_owned(), hash).await?;
        match user {
            Some(user) if valid => Ok(user),
            _ => {
                crate::audit!(info, LoginFailed, known_user = user.is_some());
                Err(AuthError::InvalidCredentials)
            }
        }
    }

    pub async fn login(
        &self,
        name: LoginName<'_>,
        password: &str,
        client: ClientInfo,
        now: Timestamp,
    ) -> Result<Issued, AuthError> {
        let user = self.check_credentials(name, password).await?;
        let session = self.open_session(&user, client, now).await?;
        self.confirm_credential(&user, session.id, now).await?;
        crate::audit!(info, LoginSucceeded, user_id = %user.id, session_id = %session.id);
        self.issue(&session, self.remember(&user), now)
    }

    /// The fence of a login: after its session is stored, the user must still exist with the
    /// credential the login checked, or the session is ended before any token of it is issued.
    ///
    /// A deletion or a password change first commits to the user store and then ends the user's
    /// sessions; a login reads the user, checks the password (slow on purpose), stores its
    /// session, then reads the user again. A session stored before the sessions were listed for
    /// ending is ended by the deletion or change; one stored after is seen by this read, which
    /// then comes after the commit. Either way no session opened with a deleted account or an
    /// old password outlives the operation's answer.
    async fn confirm_credential(&self, user: &User, session: SessionId, now: Timestamp) -> Result<(), AuthError> {
        let outcome = match self.users.find_user(user.id).await {
            Ok(Some(current)) if current.password_hash == user.password_hash && !current.is_anonymous => return Ok(()),
            Ok(_) => Err(AuthError::InvalidCredentials),
            Err(e) => Err(e.into()),
        };
        // No token of the session exists yet: ending it here (or, if the store fails, in this
        // instance's view and by the retry of unfinished ends) leaves nothing alive.
        let _ = self.end_session(session, now).await;
        if matches!(outcome, Err(AuthError::InvalidCredentials)) {
            crate::audit!(info, LoginFailed, known_user = true, user_id = %user.id, during = "credential_changed");
        }
        outcome
    }

    /// Opens a session for a new guest.
    pub async fn sign_in_anonymously(&self, client: ClientInfo, now: Timestamp) -> Result<Issued, AuthError> {
        let user = User::guest(now);
        self.users.create_user(&user).await?;
        let session = self.open_session(&user, client, now).await?;
        crate::audit!(info, AnonymousSignedIn, user_id = %user.id, session_id = %session.id);
        self.issue(&session, Arc::new(Profile::from(&user)), now)
    }

    async fn open_session(&self, user: &User, client: ClientInfo, now: Timestamp) -> Result<Session, AuthError> {
        let absolute = now.saturating_add(self.lifetimes.session_max_lifetime);
        let session = Session {
            id: SessionId::generate(),
            user_id: user.id,
            generation: 0,
            created_at: now,
            last_used_at: now,
            expires_at: session::idle_expiry(now, self.lifetimes.refresh_ttl, absolute),
            absolute_expires_at: absolute,
            ended_at: None,
            user_agent: client.user_agent.map(|ua| ua.chars().take(MAX_USER_AGENT_CHARS).collect()),
            ip: client.ip,
        };
        self.sessions.create_session(&session).await?;
        self.session_users.insert(session.id, session.user_id);
        Ok(session)
    }

    /// Turns the caller, a guest, into a registered user: the same user id and the same session,
    /// whose refresh token (`refresh_token`, which must be that session's current one) is
    /// rotated as by a refresh. Names taken by someone else change nothing at all.
    pub async fn upgrade(
        &self,
        caller: &Caller,
        refresh_token: &str,
        names: NewNames<'_>,
        password: &str,
        now: Timestamp,
    ) -> Result<Issued, AuthError> {
        let mut user = self.users.find_user(caller.user_id).await?.ok_or(AuthError::Unauthorized)?;
        if !user.is_anonymous {
            return Err(AuthError::AlreadyRegistered);
        }
        let (email, username) = check_names(names)?;
        account::check_password(password).map_err(AuthError::WeakPassword)?;
        // The refresh token must be this session's current one before anything changes.
        let claims = self.refresh.decode(refresh_token).ok_or(AuthError::InvalidRefreshToken)?;
        let current = self.sessions.get_session(claims.session_id).await?;
        let live = current
            .as_ref()
            .is_some_and(|s| s.id == caller.session_id && s.generation == claims.generation && s.is_active(now))
            && !self.revoked.contains(claims.session_id);
        if !live {
            return Err(AuthError::InvalidRefreshToken);
        }
        let password_hash = self.hasher.hash(password.to_owned()).await?;
        let guest = user.clone();
        (user.email, user.email_key) = email.unzip();
        (user.username, user.username_key) = username.unzip();
        user.password_hash = Some(password_hash);
        user.is_anonymous = false;
        // Only from the guest (no password): of two racing upgrades one registers the account,
        // the other changes nothing.
        if !self.users.update_user(&user, None).await? {
            return Err(match self.users.find_user(user.id).await? {
                Some(_) => AuthError::AlreadyRegistered,
                None => AuthError::Unauthorized,
            });
        }
        match self.refresh(refresh_token, now).await {
            Ok(issued) => {
                crate::audit!(info, UserUpgraded, user_id = %user.id, session_id = %caller.session_id);
                Ok(issued)
            }
            Err(e) => {
                // The rotation lost a race (a refresh, a logout): the upgrade answers an error,
                // so it undoes itself — back to the guest, unless the account changed since.
                self.undo_upgrade(&guest, &user).await;
                Err(e)
            }
        }
    }

    /// Turns the account back into the guest it was before an upgrade that did not complete.
    async fn undo_upgrade(&self, guest: &User, upgraded: &User) {
        self.profiles.remove(&guest.id);
        match self.users.update_user(guest, upgraded.password_hash.as_deref()).await {
            Ok(_) => {}
            Err(e) => tracing::error!(
                user_id = %guest.id,
                error = %e,
                "an upgrade that failed could not be undone: the account keeps its new credentials"
            ),
        }
    }

    /// Changes the caller's password; every other session of the user ends, the caller's lives
    /// on.
    pub async fn change_password(
        &self,
        caller: &Caller,
        current: &str,
        new: &str,
        now: Timestamp,
    ) -> Result<u64, AuthError> {
        let mut user = self.users.find_user(caller.user_id).await?.ok_or(AuthError::Unauthorized)?;
        if user.is_anonymous {
            return Err(AuthError::GuestAccount);
        }
        let valid = self.hasher.verify(current.to_owned(), user.password_hash.clone()).await?;
        if !valid {
            crate::audit!(info, LoginFailed, known_user = true, user_id = %user.id, during = "password_change");
            return Err(AuthError::InvalidCredentials);
        }
        account::check_password(new).map_err(AuthError::WeakPassword)?;
        let checked = user.password_hash.replace(self.hasher.hash(new.to_owned()).await?);
        // Only from the password just checked: a change that raced another changes nothing.
        if !self.users.update_user(&user, checked.as_deref()).await? {
            return Err(AuthError::InvalidCredentials);
        }
        // Listed after the new hash committed: a login with the old password stores its
        // session before this list (and is ended here) or fails its own fence.
        let others = self.sessions.list_sessions(user.id, now).await?;
        let mut ended = 0u64;
        for session in others.iter().filter(|s| s.id != caller.session_id) {
            self.end_session(session.id, now).await?;
            ended += 1;
        }
        crate::audit!(info, PasswordChanged, user_id = %user.id, session_id = %caller.session_id, sessions_ended = ended);
        Ok(ended)
    }

    /// Deletes the caller's account after ending every one of its sessions: its email and
    /// username are free again. A registered user confirms with the password; a guest sends none.
    pub async fn delete_account(
        &self,
        caller: &Caller,
        password: Option<&str>,
        now: Timestamp,
    ) -> Result<(), AuthError> {
        let user = self.users.find_user(caller.user_id).await?.ok_or(AuthError::Unauthorized)?;
        if !user.is_anonymous {
            let valid = self.hasher.verify(password.unwrap_or_default().to_owned(), user.password_hash.clone()).await?;
            if !valid {
                crate::audit!(info, LoginFailed, known_user = true, user_id = %user.id, during = "account_deletion");
                return Err(AuthError::InvalidCredentials);
            }
        }
        // Ended first, so that a session store that cannot be reached fails the deletion before
        // anything is deleted; then again after the user is gone, for a login that read the
        // user before the deletion and stored its session in between (a login that stores its
        // session after the deletion fails its own fence).
        self.end_all_sessions(user.id, caller.session_id, now).await?;
        self.users.delete_user(user.id).await?;
        self.profiles.remove(&user.id);
        crate::audit!(info, AccountDeleted, user_id = %user.id, anonymous = user.is_anonymous);
        self.end_all_sessions(user.id, caller.session_id, now).await?;
        Ok(())
    }

    /// Deletes guests created before `created_before` that have no active session, at most
    /// `limit` of them per call; returns how many.
    pub async fn purge_guests(
        &self,
        created_before: Timestamp,
        now: Timestamp,
        limit: usize,
    ) -> Result<u64, StoreError> {
        const PAGE: usize = 500;
        let mut after = None;
        let mut purged = 0;
        loop {
            let page = self.users.guests(created_before, after, PAGE).await?;
            for id in &page {
                if purged as usize >= limit {
                    return Ok(purged);
                }
                if self.sessions.list_sessions(*id, now).await?.is_empty() && self.users.delete_user(*id).await? {
                    purged += 1;
                }
            }
            match page.last() {
                Some(last) if page.len() == PAGE => after = Some(*last),
                _ => return Ok(purged),
            }
        }
    }

    /// The profile to cache for `user` (registered users only) and to mint tokens with.
    fn remember(&self, user: &User) -> Arc<Profile> {
        let profile = Arc::new(Profile::from(user));
        if !user.is_anonymous {
            self.profiles.insert(user.id, profile.clone());
        }
        profile
    }

    /// Rotates a refresh token (SPEC §2): the new pair, the grace successor, or
    /// `InvalidRefreshToken` — after ending the session when the token was already rotated.
    pub async fn refresh(&self, token: &str, now: Timestamp) -> Result<Issued, AuthError> {
        let RefreshClaims { session_id, generation } =
            self.refresh.decode(token).ok_or(AuthError::InvalidRefreshToken)?;
        // Ended here or in the feed, even if the store has not recorded it (yet).
        if self.revoked.contains(session_id) {
            return Err(AuthError::InvalidRefreshToken);
        }
        let idle = now.saturating_add(self.lifetimes.refresh_ttl);
        let rotation = self.sessions.rotate(session_id, generation, now, idle);
        // The access token says whose session it is, not which generation: when this instance
        // knows the session's user and has the profile at hand, it signs while the store
        // commits the rotation (the rotation is polled first, so it is queued before the
        // signature starts), and uses the token only if the rotation succeeds.
        let user_id = self.session_users.get(&session_id);
        let known = user_id.and_then(|user_id| self.profiles.get(&user_id));
        let (rotation, early) = match known {
            Some(profile) => {
                let (rotation, access) = tokio::join!(rotation, async { self.sign_access(&profile, session_id, now) });
                (rotation?, Some((profile, access)))
            }
            None => (rotation.await?, None),
        };
        let session = match rotation {
            Rotation::Rotated(session) => session,
            Rotation::Stale(current) => {
                match session::judge_stale(current.as_ref(), generation, now, self.lifetimes.refresh_grace) {
                    StaleVerdict::Grace { successor } => {
                        crate::audit!(info, TokenRefreshed, session_id = %session_id, generation = successor, grace = true);
                        let session = current.ok_or(AuthError::InvalidRefreshToken)?;
                        let profile = self.profile(session.user_id).await?.ok_or(AuthError::InvalidRefreshToken)?;
                        return self.issue(&session, profile, now);
                    }
                    StaleVerdict::Reused => {
                        self.end_session(session_id, now).await?;
                        crate::audit!(warn, RefreshTokenReused, session_id = %session_id, presented_generation = generation);
                        return Err(AuthError::InvalidRefreshToken);
                    }
                    StaleVerdict::Dead => return Err(AuthError::InvalidRefreshToken),
                }
            }
        };
        crate::audit!(info, TokenRefreshed, session_id = %session_id, generation = session.generation);
        if user_id.is_none() {
            self.session_users.insert(session.id, session.user_id);
        }
        match early {
            Some((profile, Ok(access))) if profile.id == session.user_id => Ok(self.issued(&session, profile, access)),
            _ => {
                let profile = self.profile(session.user_id).await?.ok_or(AuthError::InvalidRefreshToken)?;
                self.issue(&session, profile, now)
            }
        }
    }

    /// The caller behind an access token, if the token is valid and its session has not ended.
    pub fn authenticate(&self, token: &str, now: Timestamp) -> Result<Caller, AuthError> {
        let claims = self.access.verify(token, now).map_err(|_| AuthError::Unauthorized)?;
        let (Some(user_id), Some(session_id)) = (claims.user_id(), claims.session_id()) else {
            return Err(AuthError::Unauthorized);
        };
        if self.revoked.contains(session_id) {
            return Err(AuthError::Unauthorized);
        }
        Ok(Caller { user_id, session_id, claims })
    }

    pub async fn me(&self, caller: &Caller) -> Result<Arc<Profile>, AuthError> {
        self.profile(caller.user_id).await?.ok_or(AuthError::Unauthorized)
    }

    /// Ends the caller's session, and the session of `refresh_token` too when it is another of
    /// the caller's own.
    pub async fn logout(&self, caller: &Caller, refresh_token: Option<&str>, now: Timestamp) -> Result<(), AuthError> {
        self.end_session(caller.session_id, now).await?;
        crate::audit!(info, LoggedOut, user_id = %caller.user_id, session_id = %caller.session_id);
        let other = refresh_token
            .and_then(|t| self.refresh.decode(t))
            .map(|c| c.session_id)
            .filter(|id| *id != caller.session_id);
        if let Some(id) = other
            && self.sessions.get_session(id).await?.is_some_and(|s| s.user_id == caller.user_id)
        {
            self.end_session(id, now).await?;
            crate::audit!(info, LoggedOut, user_id = %caller.user_id, session_id = %id);
        }
        Ok(())
    }

    pub async fn logout_all(&self, caller: &Caller, now: Timestamp) -> Result<u64, AuthError> {
        let ended = self.end_all_sessions(caller.user_id, caller.session_id, now).await?;
        crate::audit!(info, LoggedOut, user_id = %caller.user_id, session_id = %caller.session_id, all = true, sessions_ended = ended.len());
        Ok(ended.len() as u64)
    }

    /// Ends the session a token belongs to (RFC 7009): a refresh token minted here, current or
    /// already rotated, or an access token signed here that has not expired. Anything else is
    /// ignored, as the RFC asks. Returns whether the token was recognised.
    pub async fn revoke_token(&self, token: &str, now: Timestamp) -> Result<bool, AuthError> {
        let session_id = match self.refresh.decode(token) {
            Some(claims) => Some(claims.session_id),
            None => self.access.verify(token, now).ok().and_then(|claims| claims.session_id()),
        };
        let Some(session_id) = session_id else { return Ok(false) };
        self.end_session(session_id, now).await?;
        crate::audit!(info, SessionRevoked, session_id = %session_id, via = "oauth_revocation");
        Ok(true)
    }

    /// What a token is (RFC 7662), without using it up: a live access token of a session that
    /// has not ended, or the current refresh token of an active session. `None` for anything
    /// else: expired, forged, rotated, of an ended session, or not tessera's.
    pub async fn introspect(&self, token: &str, now: Timestamp) -> Result<Option<Introspection>, AuthError> {
        if let Some(RefreshClaims { session_id, generation }) = self.refresh.decode(token) {
            let session = self.sessions.get_session(session_id).await?;
            return Ok(session
                .filter(|s| s.is_active(now) && s.generation == generation && !self.revoked.contains(s.id))
                .map(Introspection::Refresh));
        }
        Ok(self.authenticate(token, now).ok().map(Introspection::Access))
    }

    pub async fn list_sessions(&self, caller: &Caller, now: Timestamp) -> Result<Vec<Session>, AuthError> {
        Ok(self.sessions.list_sessions(caller.user_id, now).await?)
    }

    /// Ends one of the caller's active sessions; `SessionNotFound` for anyone else's.
    pub async fn revoke_session(&self, caller: &Caller, id: SessionId, now: Timestamp) -> Result<(), AuthError> {
        let session = self.sessions.get_session(id).await?;
        if !session.is_some_and(|s| s.user_id == caller.user_id && s.is_active(now)) {
            return Err(AuthError::SessionNotFound);
        }
        self.end_session(id, now).await?;
        crate::audit!(info, SessionRevoked, user_id = %caller.user_id, session_id = %id, by_session = %caller.session_id);
        Ok(())
    }

    /// Reads the store's feed of ended sessions (every instance's) from the journal's head into
    /// the journal and the revocation view, and forgets ends whose tokens have all expired.
    /// Returns how many ends were new.
    pub async fn catch_up_revocations(&self, now: Timestamp) -> Result<usize, StoreError> {
        const PAGE: usize = 1000;
        let mut read = 0;
        loop {
            let batch = self.sessions.ended_after(self.journal.head(), PAGE).await?;
            read += batch.len();
            self.revoked.extend(batch.iter().map(|e| (e.session_id, e.ended_at)));
            self.journal.append(&batch);
            if batch.len() < PAGE {
                break;
            }
        }
        self.journal.synced(now);
        self.revoked.prune(now);
        Ok(read)
    }

    /// Deletes sessions nobody can use any more (kept a day for the record).
    pub async fn purge_sessions(&self, now: Timestamp) -> Result<u64, StoreError> {
        let day = Duration::from_secs(86_400);
        let horizon = now.saturating_sub(day);
        let retention = self.revoked.retention();
        self.sessions.purge(horizon, horizon.saturating_sub(retention), now.saturating_sub(retention)).await
    }

    /// Whether both stores answer.
    pub async fn ready(&self) -> Result<(), StoreError> {
        self.users.ping().await?;
        self.sessions.ping().await
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

    /// Retries the ends the store did not confirm; returns how many are still waiting.
    pub async fn retry_unfinished_ends(&self) -> usize {
        let waiting = std::mem::take(&mut *self.unfinished.lock().unwrap_or_else(|e| e.into_inner()));
        if waiting.is_empty() {
            return 0;
        }
        let tried = waiting.len();
        let mut failed = Vec::new();
        for end in waiting {
            let done = match end {
                UnfinishedEnd::Session(id, at) => self.sessions.end_session(id, at).await.map(|_| ()),
                UnfinishedEnd::User(user_id, at) => self.sessions.end_user_sessions(user_id, at).await.map(|ended| {
                    self.revoked.extend(ended.iter().map(|id| (*id, at)));
                }),
            };
            if done.is_err() {
                failed.push(end);
            }
        }
        let finished_some = failed.len() < tried;
        let mut unfinished = self.unfinished.lock().unwrap_or_else(|e| e.into_inner());
        failed.append(&mut unfinished);
        *unfinished = failed;
        if finished_some {
            self.ended_here.notify_one();
        }
        unfinished.len()
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

    fn issue(&self, session: &Session, user: Arc<Profile>, now: Timestamp) -> Result<Issued, AuthError> {
        let access = self.sign_access(&user, session.id, now)?;
        Ok(self.issued(session, user, access))
    }

    /// An access token for `user` in session `session_id`.
    fn sign_access(&self, user: &Profile, session_id: SessionId, now: Timestamp) -> Result<IssuedAccess, AuthError> {
        let subject = Subject {
            user_id: user.id,
            email: user.email.as_deref(),
            username: user.username.as_deref(),
            is_anonymous: user.is_anonymous,
            session_id,
        };
        self.access.issue(subject, now).map_err(|e| AuthError::Internal(e.into()))
    }

    /// The tokens of `session`: `access`, and a refresh token for its current generation.
    fn issued(&self, session: &Session, user: Arc<Profile>, access: IssuedAccess) -> Issued {
        let refresh = self.refresh.encode(RefreshClaims { session_id: session.id, generation: session.generation });
        Issued { access, refresh, refresh_expires_at: session.expires_at, session_id: session.id, user }
    }
}

/// The checked names of a registration or an upgrade: `(email, username)`, each `(shown, key)`.
type CheckedNames = (Option<(String, String)>, Option<(String, String)>);

fn check_names(names: NewNames<'_>) -> Result<CheckedNames, AuthError> {
    if names.email.is_none() && names.username.is_none() {
        return Err(AuthError::BadIdentifier("Send an email, a username, or both"));
    }
    let email = names.email.map(account::normalize_email).transpose().map_err(AuthError::InvalidEmail)?;
    let username = names.username.map(account::normalize_username).transpose().map_err(AuthError::InvalidUsername)?;
    Ok((email, username))
}
