//! Wire types of tessera's HTTP API v1, shared by the server, the CLI and the client library.
//!
//! Every `/api/auth/*` response is an [`Envelope`]: `{"success": true, "data": ...}` or
//! `{"success": false, "error": {"code", "message"}}`. Requests reject unknown fields so a typo
//! in a client is an `INVALID_REQUEST` naming the field, not a silently ignored value.
//!
//! Passwords and tokens travel in [`Secret`], whose `Debug` never prints the value, so a request
//! or response can be logged with `?` without leaking a credential.
//!
//! Feature `openapi` (off by default; tessera's server turns it on) derives the types' utoipa
//! schemas for the OpenAPI document; a client needs only serde.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A credential (password, access or refresh token). Serialises as a plain string; `Debug`
/// prints `Secret(…)` so it cannot end up in a log line by accident.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(transparent)]
#[cfg_attr(feature = "openapi", schema(value_type = String, format = Password))]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The credential itself: call only where it is sent, verified or stored.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// The error codes of the API (README, "API (v1)"), serialised in `UPPER_SNAKE_CASE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    InvalidRequest,
    MissingToken,
    InvalidEmail,
    InvalidUsername,
    WeakPassword,
    InvalidCredentials,
    InvalidToken,
    Unauthorized,
    CsrfRejected,
    /// The browser sent several refresh cookies (one planted by another site of the same host):
    /// tessera cleared those it can and will not guess which is the user's.
    ConflictingCookies,
    /// Guest sign-in is off on this server (`--allow-anonymous`).
    AnonymousDisabled,
    /// What only a registered account has (a password to change): the caller is a guest.
    GuestAccount,
    NotFound,
    MethodNotAllowed,
    EmailTaken,
    UsernameTaken,
    /// An upgrade by a user who is registered already.
    AlreadyRegistered,
    PayloadTooLarge,
    UnsupportedMediaType,
    /// The request body did not arrive within the body timeout.
    RequestTimeout,
    RateLimited,
    Unavailable,
    Internal,
}

impl ErrorCode {
    /// The HTTP status that carries this code.
    pub fn status(self) -> u16 {
        match self {
            Self::InvalidRequest
            | Self::MissingToken
            | Self::InvalidEmail
            | Self::InvalidUsername
            | Self::WeakPassword
            | Self::ConflictingCookies => 400,
            Self::InvalidCredentials | Self::InvalidToken | Self::Unauthorized => 401,
            Self::CsrfRejected | Self::AnonymousDisabled | Self::GuestAccount => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::RequestTimeout => 408,
            Self::EmailTaken | Self::UsernameTaken | Self::AlreadyRegistered => 409,
            Self::PayloadTooLarge => 413,
            Self::UnsupportedMediaType => 415,
            Self::RateLimited => 429,
            Self::Internal => 500,
            Self::Unavailable => 503,
        }
    }
}

/// The `error` member of a failed response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
    /// Present on `INTERNAL` errors: the id under which the cause was logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// The one response shape of `/api/auth/*`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Envelope<T> {
    pub success: bool,
    // No `#[serde(default)]`: a missing `Option` is `None` anyway, and the attribute would make
    // serde demand `T: Default`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// An error answer of the native API, as the OpenAPI document describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorEnvelope {
    /// Always `false`.
    pub success: bool,
    pub error: ErrorBody,
}

impl<T> Envelope<T> {
    pub fn ok(data: T) -> Self {
        Self { success: true, data: Some(data), error: None }
    }

    pub fn err(error: ErrorBody) -> Self {
        Self { success: false, data: None, error: Some(error) }
    }

    /// The data of a successful response, or its error.
    pub fn into_result(self) -> Result<T, ErrorBody> {
        match (self.data, self.error) {
            (Some(data), None) if self.success => Ok(data),
            (_, Some(error)) => Err(error),
            _ => Err(ErrorBody { code: ErrorCode::Internal, message: "malformed envelope".into(), request_id: None }),
        }
    }
}

/// How a login wants its refresh token delivered (README, "Browser transport").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RefreshTransport {
    /// In the response body (CLI, programs).
    #[default]
    Body,
    /// Only in an `HttpOnly` cookie (browsers).
    Cookie,
}

/// A registration: an email, a username or both, and a password.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    pub password: Secret,
}

/// A login by email or by username (exactly one of them).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    pub password: Secret,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_transport: Option<RefreshTransport>,
}

/// What a client needs to know of the server's settings (`GET /api/auth/settings`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SettingsResponse {
    /// Whether `POST /api/auth/anonymous` opens guest sessions (`--allow-anonymous`).
    pub allow_anonymous: bool,
}

/// A guest sign-in; the body is optional.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AnonymousRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_transport: Option<RefreshTransport>,
}

/// A guest becoming a registered user: an email, a username or both, and a password; the
/// session's refresh token in the body, or in the cookie.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpgradeRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    pub password: Secret,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_transport: Option<RefreshTransport>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PasswordChangeRequest {
    pub current_password: Secret,
    pub new_password: Secret,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PasswordChangeResponse {
    pub password_changed: bool,
    /// The user's other sessions, ended by the change.
    pub sessions_ended: u64,
}

/// An account deletion: a registered user confirms with the password, a guest sends none.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DeleteAccountRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeleteAccountResponse {
    pub deleted: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<Secret>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LogoutRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<Secret>,
}

/// A user as the API shows it. Timestamps are RFC 3339 in UTC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserView {
    pub id: String,
    /// `null` for an account without one (a guest, or a username-only account).
    pub email: Option<String>,
    /// `null` for an account without one.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub is_anonymous: bool,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegisterResponse {
    pub user: UserView,
}

/// The answer of login and refresh. `refresh_token` is absent when it went into a cookie;
/// `user` is present on login only.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenResponse {
    pub token: Secret,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<Secret>,
    /// Lifetime of `token` in seconds.
    pub expires_in: u64,
    pub token_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserView>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogoutResponse {
    pub logged_out: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogoutAllResponse {
    pub sessions_ended: u64,
}

/// The forward-auth check's answer (`GET /api/auth/verify`): whose token it is. The same caller
/// is in the answer's `X-Tessera-*` headers, for a proxy to copy onto the request it passes on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VerifyResponse {
    pub user_id: String,
    pub session_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MeResponse {
    pub id: String,
    /// `null` for an account without one (a guest, or a username-only account).
    pub email: Option<String>,
    /// `null` for an account without one.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub is_anonymous: bool,
    pub created_at: String,
    pub session_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionView {
    pub id: String,
    pub created_at: String,
    pub last_used_at: String,
    pub expires_at: String,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    pub current: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionsResponse {
    pub sessions: Vec<SessionView>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RevokeResponse {
    pub revoked: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug_output() {
        let req = LoginRequest {
            email: Some("a@example.com".into()),
            password: Secret::new("hunter2hunter2"),
            ..LoginRequest::default()
        };
        let printed = format!("{req:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
    }

    #[test]
    fn error_codes_serialise_in_upper_snake_case() {
        let json = serde_json::to_string(&ErrorCode::UnsupportedMediaType).unwrap();
        assert_eq!(json, "\"UNSUPPORTED_MEDIA_TYPE\"");
        assert_eq!(ErrorCode::UnsupportedMediaType.status(), 415);
    }

    #[test]
    fn envelopes_of_any_response_deserialize() {
        let ok: Envelope<TokenResponse> = serde_json::from_str(
            r#"{"success":true,"data":{"token":"t","refresh_token":"r","expires_in":900,"token_type":"Bearer"}}"#,
        )
        .unwrap();
        assert_eq!(ok.into_result().unwrap().expires_in, 900);
        let err: Envelope<TokenResponse> =
            serde_json::from_str(r#"{"success":false,"error":{"code":"INVALID_TOKEN","message":"m"}}"#).unwrap();
        assert_eq!(err.into_result().unwrap_err().code, ErrorCode::InvalidToken);
    }

    #[test]
    fn requests_reject_unknown_fields() {
        let err = serde_json::from_str::<RefreshRequest>(r#"{"refresh":"x"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `refresh`"), "{err}");
    }
}
