//! The caller's sessions: list and revoke.

use axum::extract::{Path, State};
use axum::response::Response;
use tessera_core::{SessionId, Timestamp};
use tessera_proto::{RevokeResponse, SessionView, SessionsResponse};

use super::ok;
use crate::error::AppError;
use crate::extract::AuthUser;
use crate::state::AppState;

pub async fn list(State(state): State<AppState>, AuthUser(caller): AuthUser) -> Result<Response, AppError> {
    let sessions = state.auth().list_sessions(&caller, Timestamp::now()).await?;
    let sessions = sessions
        .into_iter()
        .map(|s| SessionView {
            id: s.id.to_string(),
            created_at: s.created_at.to_rfc3339(),
            last_used_at: s.last_used_at.to_rfc3339(),
            expires_at: s.expires_at.to_rfc3339(),
            user_agent: s.user_agent,
            ip: s.ip,
            current: s.id == caller.session_id,
        })
        .collect();
    Ok(ok(SessionsResponse { sessions }))
}

pub async fn revoke(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    // An id that does not parse is nobody's session: the same 404 as someone else's.
    let id: SessionId = id.parse().map_err(|_| tessera_core::service::AuthError::SessionNotFound)?;
    state.auth().revoke_session(&caller, id, Timestamp::now()).await?;
    Ok(ok(RevokeResponse { revoked: true }))
}
