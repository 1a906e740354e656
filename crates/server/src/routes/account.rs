//! Accounts that change: guest sign-in, upgrading a guest in place, password change and account
//! deletion.

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::Response;
use tessera_core::service::{Caller, LoginName, NewNames};
use tessera_proto::{
    AnonymousRequest, DeleteAccountRequest, DeleteAccountResponse, Envelope, ErrorCode, ErrorEnvelope,
    PasswordChangeRequest, PasswordChangeResponse, SettingsResponse, TokenResponse, UpgradeRequest,
};

use super::auth::{Attempt, check_address, take_account_attempt, token_response, user_view};
use super::ok;
use crate::error::AppError;
use crate::extract::{ApiJson, AuthUser, ClientMeta, OptionalJson};
use crate::state::AppState;

#[utoipa::path(get, path = "/settings", tag = "accounts",
    responses((status = 200, description = "What a client needs to know of the server's settings: whether guests may sign in", body = Envelope<SettingsResponse>)))]
pub async fn settings(State(state): State<AppState>) -> Response {
    ok(SettingsResponse { allow_anonymous: state.policy().allow_anonymous })
}

#[utoipa::path(post, path = "/anonymous", tag = "accounts", request_body(content = Option<AnonymousRequest>, description = "Optional: `refresh_transport` as at login"),
    responses(
        (status = 200, description = "A new guest's session: the token pair, as at login (`user.is_anonymous: true`)", body = Envelope<TokenResponse>),
        (status = 403, description = "`ANONYMOUS_DISABLED`: guest sign-in is off (`--allow-anonymous`)", body = ErrorEnvelope),
        (status = 429, description = "`RATE_LIMITED`, with `Retry-After`", body = ErrorEnvelope)
    ))]
pub async fn anonymous(
    State(state): State<AppState>,
    client: ClientMeta,
    OptionalJson(req): OptionalJson<AnonymousRequest>,
) -> Result<Response, AppError> {
    if !state.policy().allow_anonymous {
        return Err(AppError::new(
            ErrorCode::AnonymousDisabled,
            "Guest sign-in is turned off on this server (--allow-anonymous)",
        ));
    }
    check_address(state.policy().anonymous_per_address.as_ref(), &client).await?;
    let now = state.now();
    let issued = state.auth().sign_in_anonymously(client.info, now).await?;
    let user = user_view(&issued.user);
    Ok(token_response(&state, issued, req.refresh_transport.unwrap_or_default(), Some(user), now))
}

#[utoipa::path(post, path = "/upgrade", tag = "accounts", request_body = UpgradeRequest, security(("bearer" = [])),
    responses(
        (status = 200, description = "The guest is a registered user now, with the same user id and session: the session's rotated token pair", body = Envelope<TokenResponse>),
        (status = 400, description = "`INVALID_EMAIL`, `INVALID_USERNAME`, `WEAK_PASSWORD`", body = ErrorEnvelope),
        (status = 401, description = "`INVALID_TOKEN`: the refresh token is not the session's live one", body = ErrorEnvelope),
        (status = 409, description = "`EMAIL_TAKEN`, `USERNAME_TAKEN` (the guest's session is untouched) or `ALREADY_REGISTERED`", body = ErrorEnvelope)
    ))]
pub async fn upgrade(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    headers: HeaderMap,
    ApiJson(req): ApiJson<UpgradeRequest>,
) -> Result<Response, AppError> {
    let (token, came_in) = state.cookies().presented_token(req.refresh_token.as_ref(), &headers)?;
    let now = state.now();
    let names = NewNames { email: req.email.as_deref(), username: req.username.as_deref() };
    let issued = state.auth().upgrade(&caller, token, names, req.password.expose(), now).await?;
    let user = user_view(&issued.user);
    Ok(token_response(&state, issued, req.refresh_transport.unwrap_or(came_in), Some(user), now))
}

#[utoipa::path(post, path = "/password", tag = "accounts", request_body = PasswordChangeRequest, security(("bearer" = [])),
    responses(
        (status = 200, description = "Changed; every other session of the user has ended, this one lives on", body = Envelope<PasswordChangeResponse>),
        (status = 400, description = "`WEAK_PASSWORD`", body = ErrorEnvelope),
        (status = 401, description = "`INVALID_CREDENTIALS`: the current password is wrong", body = ErrorEnvelope),
        (status = 403, description = "`GUEST_ACCOUNT`: a guest has no password", body = ErrorEnvelope),
        (status = 429, description = "`RATE_LIMITED`: the account's failed-login limit, with `Retry-After`", body = ErrorEnvelope)
    ))]
pub async fn change_password(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    ApiJson(req): ApiJson<PasswordChangeRequest>,
) -> Result<Response, AppError> {
    // Wrong current passwords count against the account's failed-login budget.
    let attempt = take_caller_attempt(&state, &caller).await?;
    let now = state.now();
    let ended =
        state.auth().change_password(&caller, req.current_password.expose(), req.new_password.expose(), now).await?;
    attempt.succeeded().await;
    Ok(ok(PasswordChangeResponse { password_changed: true, sessions_ended: ended }))
}

#[utoipa::path(delete, path = "/account", tag = "accounts", request_body(content = Option<DeleteAccountRequest>, description = "`{password}` for a registered user; a guest sends none"), security(("bearer" = [])),
    responses(
        (status = 200, description = "Every session ended and the account deleted: its email and username are free again", body = Envelope<DeleteAccountResponse>),
        (status = 401, description = "`INVALID_CREDENTIALS`: the password is wrong or missing", body = ErrorEnvelope),
        (status = 429, description = "`RATE_LIMITED`: the account's failed-login limit, with `Retry-After`", body = ErrorEnvelope)
    ))]
pub async fn delete_account(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    OptionalJson(req): OptionalJson<DeleteAccountRequest>,
) -> Result<Response, AppError> {
    let attempt = take_caller_attempt(&state, &caller).await?;
    state.auth().delete_account(&caller, req.password.as_ref().map(|p| p.expose()), state.now()).await?;
    attempt.succeeded().await;
    let mut response = ok(DeleteAccountResponse { deleted: true });
    response.headers_mut().insert(header::SET_COOKIE, state.cookies().clear());
    Ok(response)
}

/// An attempt from the failed-login budget of the caller's account, under the same key as its
/// logins (its email, else its username), so guesses through these routes and through login add
/// up. A guest has no password to guess.
async fn take_caller_attempt<'a>(state: &'a AppState, caller: &Caller) -> Result<Attempt<'a>, AppError> {
    let profile = state.auth().me(caller).await?;
    let name = match (&profile.email, &profile.username) {
        (Some(email), _) => LoginName::Email(email),
        (None, Some(username)) => LoginName::Username(username),
        (None, None) => return Ok(Attempt::none()),
    };
    take_account_attempt(state, name).await
}
