//! The standard OAuth 2.0 endpoints beside tessera's own API, over the same sessions and rules:
//! RFC 8414 metadata, the RFC 6749 refresh grant, RFC 7009 revocation. Errors here are RFC 6749
//! §5.2 objects (`{"error": …, "error_description": …}`), never tessera's envelope: the same
//! domain errors, another rendering.

use std::borrow::Cow;
use std::collections::HashMap;

use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tessera_core::service::{AuthError, Introspection};

use crate::rejection::Rejection;
use crate::state::AppState;

pub const TOKEN_PATH: &str = "/oauth/token";
pub const REVOCATION_PATH: &str = "/oauth/revoke";
pub const INTROSPECTION_PATH: &str = "/oauth/introspect";

/// The body of an RFC 6749 §5.2 error: what is sent, and what the OpenAPI document shows.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct OAuthErrorBody {
    error: &'static str,
    error_description: Cow<'static, str>,
}

/// The body of a successful token response (RFC 6749 §5.1).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct OAuthTokenBody {
    access_token: String,
    /// Always `Bearer`.
    token_type: &'static str,
    expires_in: u64,
    refresh_token: String,
}

/// An RFC 6749 §5.2 error.
#[derive(Debug)]
pub struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: Cow<'static, str>,
    /// Seconds for `Retry-After`.
    retry_after: Option<u64>,
    /// Logged by the request middleware, never sent.
    cause: Option<anyhow::Error>,
}

impl OAuthError {
    pub fn new(status: StatusCode, error: &'static str, description: impl Into<Cow<'static, str>>) -> Self {
        Self { status, error, description: description.into(), retry_after: None, cause: None }
    }

    /// Too many failed authentications of one client: `429 slow_down`, with `Retry-After`.
    fn slow_down(secs: u64) -> Self {
        let description = format!("Too many failed authentications of this client; retry in {secs} s");
        Self { retry_after: Some(secs), ..Self::new(StatusCode::TOO_MANY_REQUESTS, "slow_down", description) }
    }

    pub fn invalid_request(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }
}

impl From<AuthError> for OAuthError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::InvalidRefreshToken => Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "The refresh token is invalid, expired or revoked, or was already used (a replay ends its \
                 session); sign in again",
            ),
            AuthError::Busy => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", "Too busy; retry shortly")
            }
            e @ AuthError::Unavailable(_) => Self {
                cause: Some(anyhow::Error::from(e)),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "The store cannot be reached; retry shortly",
                )
            },
            other => Self {
                cause: Some(anyhow::Error::from(other)),
                ..Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "Internal server error")
            },
        }
    }
}

/// An extraction failure is an `invalid_request`, with the status its meaning has in HTTP (a body
/// too large is still `413`).
impl From<Rejection> for OAuthError {
    fn from(rejection: Rejection) -> Self {
        let status = match rejection {
            Rejection::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Rejection::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            _ => StatusCode::BAD_REQUEST,
        };
        Self::new(status, "invalid_request", rejection.message())
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = OAuthErrorBody { error: self.error, error_description: self.description };
        let mut response = (self.status, axum::Json(body)).into_response();
        no_store(response.headers_mut());
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(r#"Basic realm="tessera""#));
        }
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(cause) = self.cause {
            response.extensions_mut().insert(crate::error::FailureCause(std::sync::Arc::new(cause)));
        }
        response
    }
}

/// RFC 6749 §5.1: token responses (and their errors) must not be cached.
fn no_store(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// The parameters of an `application/x-www-form-urlencoded` body, each at most once (RFC 6749
/// §3.2: parameters must not be repeated).
pub struct FormParams(HashMap<String, String>);

impl FormParams {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    fn require(&self, name: &'static str) -> Result<&str, OAuthError> {
        self.get(name).ok_or_else(|| OAuthError::invalid_request(format!("The `{name}` parameter is missing")))
    }
}

impl FromRequest<AppState> for FormParams {
    type Rejection = OAuthError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, OAuthError> {
        let form = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
        if form.as_deref() != Some("application/x-www-form-urlencoded") {
            return Err(OAuthError::invalid_request("Send the parameters as application/x-www-form-urlencoded"));
        }
        let bytes = crate::extract::read_body(req, state).await?;
        let mut params = HashMap::new();
        for (name, value) in form_urlencoded::parse(&bytes) {
            if params.insert(name.clone().into_owned(), value.into_owned()).is_some() {
                return Err(OAuthError::invalid_request(format!("The `{name}` parameter is repeated")));
            }
        }
        Ok(Self(params))
    }
}

/// `POST /oauth/token`: the refresh grant (RFC 6749 §6). `client_id` is tolerated and ignored:
/// tessera's clients are public clients that need no registration.
#[utoipa::path(post, path = "/oauth/token", tag = "oauth",
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "`grant_type=refresh_token&refresh_token=…[&client_id=…]`"),
    responses(
        (status = 200, description = "The rotated pair (RFC 6749 §5.1)", body = OAuthTokenBody),
        (status = 400, description = "`invalid_grant`: the refresh token is invalid, expired, ended or used already; `unsupported_grant_type`", body = OAuthErrorBody)
    ))]
pub async fn token(State(state): State<AppState>, params: Result<FormParams, OAuthError>) -> Response {
    match refresh_grant(&state, params).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn refresh_grant(state: &AppState, params: Result<FormParams, OAuthError>) -> Result<Response, OAuthError> {
    let params = params?;
    match params.require("grant_type")? {
        "refresh_token" => {}
        _ => {
            return Err(OAuthError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "Only grant_type=refresh_token is supported here; sign in through tessera's API",
            ));
        }
    }
    let refresh_token = params.require("refresh_token")?;
    let issued = state.auth().refresh(refresh_token, state.now()).await?;
    let body = OAuthTokenBody {
        access_token: issued.access.token,
        token_type: "Bearer",
        expires_in: issued.access.expires_in.as_secs(),
        refresh_token: issued.refresh.into_string(),
    };
    let mut response = axum::Json(body).into_response();
    no_store(response.headers_mut());
    Ok(response)
}

/// `POST /oauth/revoke` (RFC 7009): ends the session of a refresh or access token; `200` for
/// anything else too, as the RFC requires (so it tells nothing about which tokens exist).
#[utoipa::path(post, path = "/oauth/revoke", tag = "oauth",
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "`token=…[&token_type_hint=…]`"),
    responses(
        (status = 200, description = "Revoked, or nothing to revoke (RFC 7009)")
    ))]
pub async fn revoke(State(state): State<AppState>, params: Result<FormParams, OAuthError>) -> Response {
    let outcome = async {
        let params = params?;
        let token = params.require("token")?;
        state.auth().revoke_token(token, state.now()).await.map_err(OAuthError::from)
    };
    match outcome.await {
        Ok(_) => {
            let mut response = StatusCode::OK.into_response();
            no_store(response.headers_mut());
            response
        }
        Err(e) => e.into_response(),
    }
}

/// `POST /oauth/introspect` (RFC 7662), for registered clients only (HTTP Basic). An active
/// token is described; anything else is exactly `{"active": false}`. Introspecting a refresh
/// token neither rotates nor uses it up.
#[utoipa::path(post, path = "/oauth/introspect", tag = "oauth",
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "`token=…[&token_type_hint=…]`"),
    security(("client" = [])),
    responses(
        (status = 200, description = "RFC 7662: `{active: true, sub, sid, exp, iat, iss, aud, token_type, …}` or exactly `{active: false}`", body = Object),
        (status = 401, description = "`invalid_client`, with `WWW-Authenticate: Basic`", body = OAuthErrorBody),
        (status = 429, description = "`slow_down`: too many failed authentications of this client, with `Retry-After`", body = OAuthErrorBody)
    ))]
pub async fn introspect(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<FormParams, OAuthError>,
) -> Response {
    let outcome = async {
        authenticate_client(&state, &headers).await?;
        let params = params?;
        let token = params.require("token")?;
        let now = state.now();
        let found = state.auth().introspect(token, now).await?;
        Ok::<_, OAuthError>(describe(&state, found))
    };
    match outcome.await {
        Ok(body) => {
            let mut response = axum::Json(body).into_response();
            no_store(response.headers_mut());
            response
        }
        Err(e) => e.into_response(),
    }
}

fn describe(state: &AppState, found: Option<Introspection>) -> serde_json::Value {
    match found {
        None => json!({"active": false}),
        Some(Introspection::Access(caller)) => {
            let c = &caller.claims;
            let mut body = json!({
                "active": true,
                "token_type": "Bearer",
                "sub": c.sub,
                "sid": c.sid,
                "exp": c.exp,
                "iat": c.iat,
                "iss": c.iss,
                "aud": c.aud,
                "jti": c.jti,
            });
            // RFC 7662's `username` is the human-readable identifier: the account's username,
            // never its email (an email-only account has none).
            if let Some(email) = &c.email {
                body["email"] = json!(email);
            }
            if let Some(username) = &c.preferred_username {
                body["username"] = json!(username);
            }
            body
        }
        Some(Introspection::Refresh(session)) => json!({
            "active": true,
            "token_type": "refresh_token",
            "sub": session.user_id.to_string(),
            "sid": session.id.to_string(),
            "exp": session.expires_at.as_secs(),
            "iat": session.last_used_at.as_secs(),
            "iss": state.auth().access_tokens().issuer(),
        }),
    }
}

/// HTTP Basic client authentication (RFC 6749 §2.3.1: id and secret form-urlencoded, then
/// base64), checked against the registered clients. Failures count against the claimed client
/// id's budget (`--login-failure-limit`, as failed logins count against an account's), so a
/// client secret cannot be guessed at the speed of the network; a success gives its attempt back.
async fn authenticate_client(state: &AppState, headers: &HeaderMap) -> Result<(), OAuthError> {
    use base64::Engine;
    let invalid = || {
        OAuthError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Introspection needs a registered client's id and secret (HTTP Basic); see `tessera clients add`",
        )
    };
    let value = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).ok_or_else(invalid)?;
    let (scheme, encoded) = value.split_once(' ').ok_or_else(invalid)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(invalid());
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).map_err(|_| invalid())?;
    let decoded = String::from_utf8(decoded).map_err(|_| invalid())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(invalid)?;
    let unescape = |s: &str| form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned());
    let (id, secret) = (unescape(id).ok_or_else(invalid)?, unescape(secret).ok_or_else(invalid)?);
    let budget = state.policy().login_per_account.as_ref();
    let key = format!("client:{id}");
    if let Some(budget) = budget
        && let Err(secs) = budget.take(&key).await
    {
        tracing::warn!(retry_after = secs, "an OAuth client's failed-authentication limit was reached");
        return Err(OAuthError::slow_down(secs));
    }
    match state.clients().authenticate(&id, &secret).await {
        Ok(true) => {
            if let Some(budget) = budget {
                budget.give_back(&key).await;
            }
            Ok(())
        }
        Ok(false) => {
            tessera_core::audit!(info, ClientAuthenticationFailed, client_id = %id.chars().take(64).collect::<String>());
            Err(invalid())
        }
        Err(e) => Err(AuthError::from(e).into()),
    }
}

/// Any method but `POST` at an OAuth endpoint.
pub async fn method_not_allowed() -> Response {
    OAuthError::new(StatusCode::METHOD_NOT_ALLOWED, "invalid_request", "Use POST").into_response()
}

/// `GET /.well-known/oauth-authorization-server` (RFC 8414), built from the configured issuer.
#[utoipa::path(get, path = "/.well-known/oauth-authorization-server", tag = "oauth",
    responses((status = 200, description = "RFC 8414 authorization server metadata", body = Object)))]
pub async fn metadata(State(state): State<AppState>) -> Response {
    let issuer = state.auth().access_tokens().issuer().to_owned();
    let body = json!({
        "issuer": issuer,
        "token_endpoint": format!("{issuer}{TOKEN_PATH}"),
        "revocation_endpoint": format!("{issuer}{REVOCATION_PATH}"),
        "introspection_endpoint": format!("{issuer}{INTROSPECTION_PATH}"),
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "grant_types_supported": ["refresh_token"],
        // Required by RFC 8414 even without an authorization endpoint: sign-in is tessera's own API.
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": ["none"],
        "revocation_endpoint_auth_methods_supported": ["none"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic"],
        "service_documentation": format!("{issuer}/"),
    });
    let mut response = axum::Json(body).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    response
}
