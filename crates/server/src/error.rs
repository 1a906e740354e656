//! The envelope's renderer: the one error type of tessera's own API, and its single mapping
//! from the domain's errors ([`AuthError`]) and the extractors' ([`Rejection`]) to status, code
//! and envelope.
//!
//! 5xx answers never echo their cause: an `INTERNAL` error carries the cause as a response
//! extension, and the request middleware logs it under the request id and puts that id (only)
//! in the body.

use std::borrow::Cow;
use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tessera_core::service::AuthError;
use tessera_proto::{Envelope, ErrorBody, ErrorCode};

use crate::rejection::Rejection;

/// The message of every `UNAUTHORIZED` (README, "API (v1)").
pub const UNAUTHORIZED_MESSAGE: &str = "Invalid or expired token";
/// The message of every `INVALID_TOKEN` (README, "API (v1)").
pub const INVALID_TOKEN_MESSAGE: &str = "Invalid or expired refresh token";

#[derive(Debug)]
pub struct AppError {
    pub code: ErrorCode,
    pub message: Cow<'static, str>,
    retry_after: Option<u64>,
    cause: Option<anyhow::Error>,
    /// `Set-Cookie` headers the answer carries (cookies it clears).
    cookies: Vec<HeaderValue>,
}

/// The cause of a failed answer, carried to the request middleware, which logs it once under
/// the request id (an error for a 500, a warning otherwise). It never reaches the body.
#[derive(Clone)]
pub struct FailureCause(pub Arc<anyhow::Error>);

impl AppError {
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self { code, message: message.into(), retry_after: None, cause: None, cookies: Vec::new() }
    }

    /// The same error, answered with these `Set-Cookie` headers.
    pub fn with_cookies(self, cookies: Vec<HeaderValue>) -> Self {
        Self { cookies, ..self }
    }

    pub fn invalid_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }

    pub fn unauthorized() -> Self {
        Self::new(ErrorCode::Unauthorized, UNAUTHORIZED_MESSAGE)
    }

    pub fn invalid_token() -> Self {
        Self::new(ErrorCode::InvalidToken, INVALID_TOKEN_MESSAGE)
    }

    pub fn rate_limited(retry_after_secs: u64) -> Self {
        Self {
            retry_after: Some(retry_after_secs.max(1)),
            ..Self::new(ErrorCode::RateLimited, "Too many attempts; try again later")
        }
    }

    pub fn unavailable(cause: impl Into<anyhow::Error>) -> Self {
        Self {
            cause: Some(cause.into()),
            ..Self::new(ErrorCode::Unavailable, "The service is temporarily unavailable; try again shortly")
        }
    }

    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        Self { cause: Some(cause.into()), ..Self::new(ErrorCode::Internal, "Internal server error") }
    }
}

impl From<AuthError> for AppError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::InvalidEmail(why) => Self::new(ErrorCode::InvalidEmail, why),
            AuthError::WeakPassword(why) => Self::new(ErrorCode::WeakPassword, why),
            AuthError::InvalidUsername(why) => Self::new(ErrorCode::InvalidUsername, why),
            AuthError::BadIdentifier(why) => Self::invalid_request(why),
            AuthError::EmailTaken => Self::new(ErrorCode::EmailTaken, "An account with this email already exists"),
            AuthError::UsernameTaken => {
                Self::new(ErrorCode::UsernameTaken, "An account with this username already exists")
            }
            AuthError::AlreadyRegistered => {
                Self::new(ErrorCode::AlreadyRegistered, "This account is registered already; only a guest can upgrade")
            }
            AuthError::GuestAccount => Self::new(
                ErrorCode::GuestAccount,
                "A guest account has no password; save the account (POST /api/auth/upgrade) first",
            ),
            AuthError::InvalidCredentials => {
                Self::new(ErrorCode::InvalidCredentials, "Invalid email, username or password")
            }
            AuthError::InvalidRefreshToken => Self::invalid_token(),
            AuthError::Unauthorized => Self::unauthorized(),
            AuthError::SessionNotFound => Self::new(ErrorCode::NotFound, "Session not found"),
            AuthError::Busy => Self::rate_limited(1),
            e @ AuthError::Unavailable(_) => Self::unavailable(e),
            AuthError::Internal(cause) => Self::internal(cause),
        }
    }
}

impl From<Rejection> for AppError {
    fn from(rejection: Rejection) -> Self {
        let message = rejection.message();
        match rejection {
            Rejection::UnsupportedMediaType => Self::new(ErrorCode::UnsupportedMediaType, message),
            Rejection::PayloadTooLarge { .. } => Self::new(ErrorCode::PayloadTooLarge, message),
            Rejection::BodyTimeout(_) => Self::new(ErrorCode::RequestTimeout, message),
            Rejection::Malformed(_) | Rejection::AmbiguousAuthorization => Self::invalid_request(message),
            Rejection::NoBearer => Self::unauthorized(),
            Rejection::NoRefreshToken => Self::new(ErrorCode::MissingToken, message),
            Rejection::Csrf(_) => Self::new(ErrorCode::CsrfRejected, message),
            Rejection::ConflictingCookies { clear } => {
                Self { cookies: clear, ..Self::new(ErrorCode::ConflictingCookies, message) }
            }
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        // A 500 says which request id its cause is logged under, and nothing of the cause.
        let request_id = (self.code == ErrorCode::Internal).then(crate::telemetry::RequestFields::current_id).flatten();
        let body = Envelope::<()>::err(ErrorBody { code: self.code, message: self.message.into_owned(), request_id });
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        if status == StatusCode::UNAUTHORIZED {
            let challenge = match self.code {
                ErrorCode::Unauthorized => r#"Bearer realm="tessera", error="invalid_token""#,
                _ => r#"Bearer realm="tessera""#,
            };
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        for cookie in self.cookies {
            headers.append(header::SET_COOKIE, cookie);
        }
        if let Some(cause) = self.cause {
            response.extensions_mut().insert(FailureCause(Arc::new(cause)));
        }
        response
    }
}
