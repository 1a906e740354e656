//! Sessions: logout (of this session, and of another of the caller's own), logout everywhere,
//! the session list and revoking one session.

use super::{AuthError, AuthService, Caller};
use crate::clock::Timestamp;
use crate::ids::SessionId;
use crate::session::Session;

impl AuthService {
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
}
