//! Tokens: the rotation of refresh tokens (strict by default, the grace window, reuse
//! detection), the check of access tokens, introspection and revocation.

use std::future::Future;
use std::sync::Arc;

use super::{AuthError, AuthService, Caller, Introspection, Issued, Profile};
use crate::access::{IssuedAccess, Subject};
use crate::clock::Timestamp;
use crate::ids::{SessionId, UserId};
use crate::refresh::RefreshClaims;
use crate::session::{self, Rotation, Session, StaleVerdict};
use crate::store::StoreError;

/// An access token signed while the rotation committed, and the profile it was signed for.
pub(super) struct Early {
    profile: Arc<Profile>,
    access: Result<IssuedAccess, AuthError>,
}

impl AuthService {
    /// Rotates a refresh token (README, "Tokens and sessions"): the new pair, the grace
    /// successor, or `InvalidRefreshToken` — after ending the session when the token was
    /// already rotated.
    pub async fn refresh(&self, token: &str, now: Timestamp) -> Result<Issued, AuthError> {
        let RefreshClaims { session_id, generation } =
            self.refresh.decode(token).ok_or(AuthError::InvalidRefreshToken)?;
        // Ended here or in the feed, even if the store has not recorded it (yet).
        if self.revoked.contains(session_id) {
            return Err(AuthError::InvalidRefreshToken);
        }
        let idle = now.saturating_add(self.lifetimes.refresh_ttl);
        let rotation = self.sessions.rotate(session_id, generation, now, idle);
        let known_user = self.session_users.get(&session_id);
        let (rotation, early) = self.sign_while_rotating(session_id, known_user, rotation, now).await;
        let session = match rotation? {
            Rotation::Rotated(session) => session,
            Rotation::Stale(current) => return self.stale(session_id, generation, current, now).await,
        };
        crate::audit!(info, TokenRefreshed, session_id = %session_id, generation = session.generation);
        if known_user.is_none() {
            self.session_users.insert(session.id, session.user_id);
        }
        match early.filter(|early| early.profile.id == session.user_id) {
            Some(Early { profile, access: Ok(access) }) => Ok(self.pair_with(&session, profile, access)),
            _ => {
                let profile = self.profile(session.user_id).await?.ok_or(AuthError::InvalidRefreshToken)?;
                self.new_pair(&session, profile, now)
            }
        }
    }

    /// Runs `rotation`, and — when this instance knows the session's user (`known_user`: it
    /// opened or rotated the session) and has the profile at hand — signs the access token
    /// meanwhile: the token
    /// says whose session it is, not which generation, so it does not wait for the commit. The
    /// rotation is polled first, so it is queued before the signature runs. The caller uses the
    /// early token only if the rotation succeeded for that same user.
    pub(super) async fn sign_while_rotating(
        &self,
        session_id: SessionId,
        known_user: Option<UserId>,
        rotation: impl Future<Output = Result<Rotation, StoreError>>,
        now: Timestamp,
    ) -> (Result<Rotation, StoreError>, Option<Early>) {
        let known = known_user.and_then(|user_id| self.profiles.get(&user_id));
        match known {
            Some(profile) => {
                let (rotation, access) = tokio::join!(rotation, async { self.sign_access(&profile, session_id, now) });
                (rotation, Some(Early { profile, access }))
            }
            None => (rotation.await, None),
        }
    }

    /// The answer to a token that is not the session's current one: its grace successor, or the
    /// session's end as a reuse, or just a refusal (ended, expired, unknown).
    async fn stale(
        &self,
        session_id: SessionId,
        generation: u64,
        current: Option<Session>,
        now: Timestamp,
    ) -> Result<Issued, AuthError> {
        match session::judge_stale(current.as_ref(), generation, now, self.lifetimes.refresh_grace) {
            StaleVerdict::Grace { successor } => {
                crate::audit!(info, TokenRefreshed, session_id = %session_id, generation = successor, grace = true);
                let session = current.ok_or(AuthError::InvalidRefreshToken)?;
                let profile = self.profile(session.user_id).await?.ok_or(AuthError::InvalidRefreshToken)?;
                self.new_pair(&session, profile, now)
            }
            StaleVerdict::Reused => {
                self.end_session(session_id, now).await?;
                crate::audit!(warn, RefreshTokenReused, session_id = %session_id, presented_generation = generation);
                Err(AuthError::InvalidRefreshToken)
            }
            StaleVerdict::Dead => Err(AuthError::InvalidRefreshToken),
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

    /// A new pair for `session`: an access token signed now, and the refresh token of the
    /// session's current generation.
    pub(super) fn new_pair(&self, session: &Session, user: Arc<Profile>, now: Timestamp) -> Result<Issued, AuthError> {
        let access = self.sign_access(&user, session.id, now)?;
        Ok(self.pair_with(session, user, access))
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
    fn pair_with(&self, session: &Session, user: Arc<Profile>, access: IssuedAccess) -> Issued {
        let refresh = self.refresh.encode(RefreshClaims { session_id: session.id, generation: session.generation });
        Issued { access, refresh, refresh_expires_at: session.expires_at, session_id: session.id, user }
    }
}
