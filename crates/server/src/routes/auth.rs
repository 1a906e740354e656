//! Register, login, refresh, logout and `me`.

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::Response;
use tessera_core::Timestamp;
use tessera_core::account;
use tessera_core::service::{AuthError, Issued, LoginName, NewNames, Profile};
use tessera_proto::{
    LoginRequest, LogoutAllResponse, LogoutRequest, LogoutResponse, MeResponse, RefreshRequest, RefreshTransport,
    RegisterRequest, RegisterResponse, Secret, TokenResponse, UserView,
};

use super::{created, ok};
use crate::error::AppError;
use crate::extract::{ApiJson, AuthUser, ClientMeta, OptionalJson};
use crate::net::AddressGroup;
use crate::ratelimit::Throttle;
use crate::state::AppState;
use tessera_proto::{Envelope, ErrorEnvelope};

pub fn user_view(p: &Profile) -> UserView {
    UserView {
        id: p.id.to_string(),
        email: p.email.clone(),
        username: p.username.clone(),
        is_anonymous: p.is_anonymous,
        created_at: p.created_at.to_rfc3339(),
    }
}

/// Rejects the attempt when the client's address (group) has used up its login budget.
async fn check_rate(state: &AppState, client: &ClientMeta) -> Result<(), AppError> {
    check_address(state.policy().login_per_address.as_ref(), client).await
}

/// Takes one attempt from `limit` for the client's address group.
pub async fn check_address(limit: Option<&Throttle<AddressGroup>>, client: &ClientMeta) -> Result<(), AppError> {
    let (Some(limit), Some(addr)) = (limit, client.addr) else {
        return Ok(());
    };
    limit.take(&AddressGroup::of(addr)).await.map_err(AppError::rate_limited)
}

/// One attempt taken from an account's budget of failed logins; [`succeeded`](Self::succeeded)
/// gives it back, so only failures count.
pub struct Attempt<'a>(Option<(&'a Throttle<String>, String)>);

impl Attempt<'_> {
    /// No budget applies (no limit configured, or nothing to key it by).
    pub fn none() -> Self {
        Self(None)
    }

    pub async fn succeeded(self) {
        if let Some((limit, key)) = self.0 {
            limit.give_back(&key).await;
        }
    }
}

/// Takes one attempt from the budget of failed password checks of the account `name` names
/// (whether the account exists or not, so the answer tells nothing). Logins, password changes
/// and deletions of one account share it. Only password checks are throttled: an open session
/// keeps refreshing however many guesses are made against its account.
pub async fn take_account_attempt<'a>(state: &'a AppState, name: LoginName<'_>) -> Result<Attempt<'a>, AppError> {
    let Some(limiter) = &state.policy().login_per_account else {
        return Ok(Attempt::none());
    };
    let key = match name {
        LoginName::Email(email) => account::normalize_email(email).map(|(_, key)| key),
        LoginName::Username(name) => account::normalize_username(name).map(|(_, key)| format!("username:{key}")),
    };
    let Ok(key) = key else {
        return Ok(Attempt::none());
    };
    if let Err(secs) = limiter.take(&key).await {
        tracing::warn!(retry_after = secs, "an account's failed-login limit was reached; refusing its logins for now");
        return Err(AppError::rate_limited(secs));
    }
    Ok(Attempt(Some((limiter, key))))
}

#[utoipa::path(post, path = "/register", tag = "auth", request_body = RegisterRequest,
    responses(
        (status = 201, description = "Registered", body = Envelope<RegisterResponse>),
        (status = 400, description = "`INVALID_EMAIL`, `INVALID_USERNAME`, `WEAK_PASSWORD`; `INVALID_REQUEST`: neither `email` nor `username`", body = ErrorEnvelope),
        (status = 409, description = "`EMAIL_TAKEN` or `USERNAME_TAKEN`", body = ErrorEnvelope),
        (status = 429, description = "`RATE_LIMITED`, with `Retry-After`", body = ErrorEnvelope)
    ))]
pub async fn register(
    State(state): State<AppState>,
    client: ClientMeta,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<Response, AppError> {
    check_rate(&state, &client).await?;
    let names = NewNames { email: req.email.as_deref(), username: req.username.as_deref() };
    let profile = state.auth().register(names, req.password.expose(), state.now()).await?;
    Ok(created(RegisterResponse { user: user_view(&profile) }))
}

#[utoipa::path(post, path = "/login", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, description = "A new session's token pair (the refresh token only as a cookie with `refresh_transport: cookie`)", body = Envelope<TokenResponse>),
        (status = 400, description = "`INVALID_REQUEST`: not exactly one of `email` and `username`", body = ErrorEnvelope),
        (status = 401, description = "`INVALID_CREDENTIALS`", body = ErrorEnvelope),
        (status = 429, description = "`RATE_LIMITED`, with `Retry-After`", body = ErrorEnvelope)
    ))]
pub async fn login(
    State(state): State<AppState>,
    client: ClientMeta,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Response, AppError> {
    check_rate(&state, &client).await?;
    let name = match (&req.email, &req.username) {
        (Some(email), None) => LoginName::Email(email),
        (None, Some(username)) => LoginName::Username(username),
        _ => return Err(AppError::invalid_request("Send either `email` or `username` with the password")),
    };
    let attempt = take_account_attempt(&state, name).await?;
    let now = state.now();
    let issued = state.auth().login(name, req.password.expose(), client.info, now).await?;
    attempt.succeeded().await;
    let user = user_view(&issued.user);
    Ok(token_response(&state, issued, req.refresh_transport.unwrap_or_default(), Some(user), now))
}

#[utoipa::path(post, path = "/refresh", tag = "auth", request_body(content = Option<RefreshRequest>, description = "Or no body, with the refresh cookie and `X-Requested-With: tessera`"),
    responses(
        (status = 200, description = "The rotated pair", body = Envelope<TokenResponse>),
        (status = 401, description = "`INVALID_TOKEN`: invalid, expired, ended, or used already (a reuse ends the session)", body = ErrorEnvelope)
    ))]
pub async fn refresh(
    State(state): State<AppState>,
    headers: HeaderMap,
    OptionalJson(req): OptionalJson<RefreshRequest>,
) -> Result<Response, AppError> {
    let (token, transport) = state.cookies().presented_token(req.refresh_token.as_ref(), &headers)?;
    let now = state.now();
    match state.auth().refresh(token, now).await {
        Ok(issued) => Ok(token_response(&state, issued, transport, None, now)),
        // A refresh token tessera refused is deleted from the browser, so that it stops
        // presenting it; any other failure (the store down) leaves the cookie alone.
        Err(e @ AuthError::InvalidRefreshToken) if transport == RefreshTransport::Cookie => {
            Err(AppError::from(e).with_cookies(vec![state.cookies().clear()]))
        }
        Err(e) => Err(e.into()),
    }
}

#[utoipa::path(post, path = "/logout", tag = "auth", request_body(content = Option<LogoutRequest>), security(("bearer" = [])),
    responses((status = 200, description = "The session ended", body = Envelope<LogoutResponse>)))]
pub async fn logout(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    headers: HeaderMap,
    OptionalJson(req): OptionalJson<LogoutRequest>,
) -> Result<Response, AppError> {
    // The Bearer token authenticates a logout, and no cross-site page can send one; a refresh
    // cookie that rides along but fails the CSRF rule is simply not used.
    let token = match &req.refresh_token {
        Some(token) => Some(token.expose()),
        None => state.cookies().token_from_cookie(&headers).ok().flatten(),
    };
    state.auth().logout(&caller, token, state.now()).await?;
    let mut response = ok(LogoutResponse { logged_out: true });
    let cookies = state.cookies();
    let clear = if cookies.conflicting(&headers) { cookies.clear_everywhere(&headers) } else { vec![cookies.clear()] };
    for cookie in clear {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    Ok(response)
}

#[utoipa::path(post, path = "/logout-all", tag = "auth", security(("bearer" = [])),
    responses((status = 200, description = "Every session of the user ended", body = Envelope<LogoutAllResponse>)))]
pub async fn logout_all(State(state): State<AppState>, AuthUser(caller): AuthUser) -> Result<Response, AppError> {
    let sessions_ended = state.auth().logout_all(&caller, state.now()).await?;
    let mut response = ok(LogoutAllResponse { sessions_ended });
    response.headers_mut().insert(header::SET_COOKIE, state.cookies().clear());
    Ok(response)
}

#[utoipa::path(get, path = "/me", tag = "auth", security(("bearer" = [])),
    responses((status = 200, description = "The caller", body = Envelope<MeResponse>)))]
pub async fn me(State(state): State<AppState>, AuthUser(caller): AuthUser) -> Result<Response, AppError> {
    let profile = state.auth().me(&caller).await?;
    Ok(ok(MeResponse {
        id: profile.id.to_string(),
        email: profile.email.clone(),
        username: profile.username.clone(),
        is_anonymous: profile.is_anonymous,
        created_at: profile.created_at.to_rfc3339(),
        session_id: caller.session_id.to_string(),
    }))
}

pub fn token_response(
    state: &AppState,
    issued: Issued,
    transport: RefreshTransport,
    user: Option<UserView>,
    now: Timestamp,
) -> Response {
    let cookie = (transport == RefreshTransport::Cookie)
        .then(|| state.cookies().set(issued.refresh.expose(), issued.refresh_expires_at, now));
    let body = TokenResponse {
        token: Secret::new(issued.access.token),
        refresh_token: cookie.is_none().then(|| Secret::new(issued.refresh.into_string())),
        expires_in: issued.access.expires_in.as_secs(),
        token_type: "Bearer".into(),
        user,
    };
    let mut response = ok(body);
    if let Some(cookie) = cookie {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}
