//! The caller's sessions: list and revoke.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::Response;
use tessera_core::SessionId;
use tessera_proto::{RevokeResponse, SessionView, SessionsResponse};

use super::ok;
use crate::error::AppError;
use crate::extract::AuthUser;
use crate::state::AppState;
use tessera_proto::{Envelope, ErrorEnvelope};

#[utoipa::path(get, path = "/sessions", tag = "sessions", security(("bearer" = [])),
    responses((status = 200, description = "The caller's active sessions", body = Envelope<SessionsResponse>)))]
pub async fn list(State(state): State<AppState>, AuthUser(caller): AuthUser) -> Result<Response, AppError> {
    let sessions = state.auth().list_sessions(&caller, state.now()).await?;
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

#[utoipa::path(delete, path = "/sessions/{id}", tag = "sessions", security(("bearer" = [])),
    params(("id" = String, Path, description = "A session id of the caller's")),
    responses(
        (status = 200, description = "The session ended", body = Envelope<RevokeResponse>),
        (status = 404, description = "`NOT_FOUND`: no session of the caller's has this id", body = ErrorEnvelope)
    ))]
pub async fn revoke(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, AppError> {
    // An id that does not parse (or decode) is nobody's session: the same 404 as someone else's.
    let id: SessionId =
        id.ok().and_then(|Path(id)| id.parse().ok()).ok_or(tessera_core::service::AuthError::SessionNotFound)?;
    state.auth().revoke_session(&caller, id, state.now()).await?;
    Ok(ok(RevokeResponse { revoked: true }))
}
