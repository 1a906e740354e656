//! Accounts: registration, login (and its fence against a deletion or a password change that
//! raced it), guests and their upgrade in place, password change, deletion, the guest purge.

use std::sync::Arc;

use super::{AuthError, AuthService, Caller, ClientInfo, Issued, LoginName, MAX_USER_AGENT_CHARS, NewNames, Profile};
use crate::account::{self, User};
use crate::clock::Timestamp;
use crate::ids::{SessionId, UserId};
use crate::session::{self, Session};
use crate::store::StoreError;

impl AuthService {
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
        self.new_pair(&session, self.remember(&user), now)
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
        self.new_pair(&session, Arc::new(Profile::from(&user)), now)
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
