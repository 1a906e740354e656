//! Why a request was refused before it reached an operation: the meaning of a failed extraction
//! (its body, its credentials, its cookie), separate from how it is answered. Each surface
//! renders it its own way: tessera's API as the envelope ([`crate::error::AppError`]), the OAuth
//! endpoints as an RFC 6749 error ([`crate::routes::oauth::OAuthError`]).

use std::borrow::Cow;
use std::time::Duration;

use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};

#[derive(Debug)]
pub enum Rejection {
    /// The body is not of the media type the route reads.
    UnsupportedMediaType,
    /// The body is larger than the limit, in bytes.
    PayloadTooLarge { limit: usize },
    /// The body's last byte did not arrive within the body timeout.
    BodyTimeout(Duration),
    /// The input cannot be read: the message names what is wrong (a field, a header).
    Malformed(Cow<'static, str>),
    /// Several `Authorization` headers.
    AmbiguousAuthorization,
    /// No usable `Bearer` token.
    NoBearer,
    /// No refresh token, neither in the body nor as the cookie.
    NoRefreshToken,
    /// A cookie-authenticated request failed the CSRF rule (README, "Browser transport").
    Csrf(&'static str),
    /// Several refresh cookies: the `Set-Cookie` headers that delete every one tessera can name.
    ConflictingCookies { clear: Vec<HeaderValue> },
}

impl Rejection {
    pub fn malformed(message: impl Into<Cow<'static, str>>) -> Self {
        Self::Malformed(message.into())
    }

    /// What to tell the client, the same words on every surface.
    pub fn message(&self) -> Cow<'static, str> {
        match self {
            Self::UnsupportedMediaType => "Send the body as JSON with Content-Type: application/json".into(),
            Self::PayloadTooLarge { limit } => format!("The request body is larger than {limit} bytes").into(),
            Self::BodyTimeout(timeout) => {
                format!("The request body did not arrive within {}s", timeout.as_secs_f64()).into()
            }
            Self::Malformed(message) => message.clone(),
            Self::AmbiguousAuthorization => "Send one Authorization header, not several".into(),
            Self::NoBearer => crate::error::UNAUTHORIZED_MESSAGE.into(),
            Self::NoRefreshToken => "Send refresh_token in the body or the refresh cookie".into(),
            Self::Csrf(why) => (*why).into(),
            Self::ConflictingCookies { .. } => "The browser sent several refresh cookies (another site on tessera's \
                                                host may have set one); tessera removed them and will not guess \
                                                which is yours: sign in again"
                .into(),
        }
    }
}

/// Extractors of tessera's own API answer in its envelope.
impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        crate::error::AppError::from(self).into_response()
    }
}
