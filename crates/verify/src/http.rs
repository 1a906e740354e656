//! HTTP glue: where the token comes from, the axum extractor, the tower layer, and errors as
//! RFC 6750 says.
//!
//! ## Where the token comes from
//!
//! - `Authorization: Bearer <token>`, exactly one such header (two are refused, rather than
//!   trusting whichever comes first).
//! - For WebSocket handshakes only, the `Sec-WebSocket-Protocol` header: browsers cannot set
//!   headers on a WebSocket, so a page offers two subprotocols,
//!   `new WebSocket(url, ["tessera", "tessera.bearer." + token])`, and the server selects
//!   `tessera` (never echoing the token). A JWT is base64url and dots, all legal in a protocol
//!   name. This keeps the token out of the URL, where `?access_token=` would be written to
//!   access logs, proxy logs and browser history, and lets the server refuse the handshake
//!   itself rather than accept an unauthenticated socket and wait for a first message.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

pub use crate::caller::{Authenticated, VerifyError};
use crate::verifier::Verifier;

/// The subprotocol a WebSocket server selects when the token came in `Sec-WebSocket-Protocol`.
pub const WS_PROTOCOL: &str = "tessera";
/// The prefix of the subprotocol that carries the token.
pub const WS_TOKEN_PROTOCOL_PREFIX: &str = "tessera.bearer.";

impl IntoResponse for VerifyError {
    fn into_response(self) -> Response {
        let description = self.to_string();
        let (status, challenge, error) = match self {
            Self::Missing => (StatusCode::UNAUTHORIZED, "Bearer".to_owned(), "unauthorized"),
            Self::Ambiguous => (
                StatusCode::BAD_REQUEST,
                format!(r#"Bearer error="invalid_request", error_description="{description}""#),
                "invalid_request",
            ),
            Self::Invalid | Self::Expired | Self::SessionEnded => (
                StatusCode::UNAUTHORIZED,
                format!(r#"Bearer error="invalid_token", error_description="{description}""#),
                "invalid_token",
            ),
            Self::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, String::new(), "temporarily_unavailable"),
            Self::NoVerifier => {
                tracing::error!("{description}: add `.layer(verifier.extension())` or `verifier.require()`");
                (StatusCode::INTERNAL_SERVER_ERROR, String::new(), "server_error")
            }
        };
        let mut response =
            (status, axum::Json(json!({"error": error, "error_description": description}))).into_response();
        let headers = response.headers_mut();
        if let Ok(value) = HeaderValue::try_from(challenge)
            && !value.is_empty()
        {
            headers.insert(header::WWW_AUTHENTICATE, value);
        }
        if self == Self::Unavailable {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// The access token of a request, if it sent one (see the module docs for where from).
pub fn token_from_headers(headers: &HeaderMap) -> Result<Option<&str>, VerifyError> {
    let mut authorization = headers.get_all(header::AUTHORIZATION).iter();
    let from_header = match (authorization.next(), authorization.next()) {
        (None, _) => None,
        (Some(_), Some(_)) => return Err(VerifyError::Ambiguous),
        (Some(value), None) => {
            let value = value.to_str().map_err(|_| VerifyError::Invalid)?;
            let (scheme, token) = value.split_once(' ').ok_or(VerifyError::Invalid)?;
            if !scheme.eq_ignore_ascii_case("bearer") {
                return Err(VerifyError::Invalid);
            }
            Some(token.trim())
        }
    };
    let from_protocol = if is_websocket_upgrade(headers) { websocket_token(headers)? } else { None };
    match (from_header, from_protocol) {
        (Some(_), Some(_)) => Err(VerifyError::Ambiguous),
        (Some(""), None) => Err(VerifyError::Invalid),
        (token, None) | (None, token) => Ok(token),
    }
}

fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers.get(header::UPGRADE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// The token of the handshake's one `tessera.bearer.*` subprotocol; two are ambiguous, as two
/// `Authorization` headers are.
fn websocket_token(headers: &HeaderMap) -> Result<Option<&str>, VerifyError> {
    let mut tokens = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|p| p.trim().strip_prefix(WS_TOKEN_PROTOCOL_PREFIX));
    match (tokens.next(), tokens.next()) {
        (Some(_), Some(_)) => Err(VerifyError::Ambiguous),
        (first, _) => Ok(first),
    }
}

async fn authenticate(parts: &Parts) -> Result<Option<Authenticated>, VerifyError> {
    if let Some(caller) = parts.extensions.get::<Authenticated>() {
        return Ok(Some(caller.clone()));
    }
    let Some(token) = token_from_headers(&parts.headers)? else { return Ok(None) };
    let verifier = parts.extensions.get::<Verifier>().ok_or(VerifyError::NoVerifier)?;
    verifier.verify(token).await.map(Some)
}

impl<S: Send + Sync> FromRequestParts<S> for Authenticated {
    type Rejection = VerifyError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, VerifyError> {
        authenticate(parts).await?.ok_or(VerifyError::Missing)
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for Authenticated {
    type Rejection = VerifyError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, VerifyError> {
        authenticate(parts).await
    }
}

/// A tower layer: requests without a valid token are answered `401` (RFC 6750) and never reach
/// the inner service; the others carry their [`Authenticated`] caller as an extension.
#[derive(Debug, Clone)]
pub struct RequireAuthLayer {
    verifier: Verifier,
}

impl RequireAuthLayer {
    pub fn new(verifier: Verifier) -> Self {
        Self { verifier }
    }
}

impl<S> tower::Layer<S> for RequireAuthLayer {
    type Service = RequireAuth<S>;

    fn layer(&self, inner: S) -> RequireAuth<S> {
        RequireAuth { inner, verifier: self.verifier.clone() }
    }
}

/// The service of [`RequireAuthLayer`].
#[derive(Debug, Clone)]
pub struct RequireAuth<S> {
    inner: S,
    verifier: Verifier,
}

impl<S, B> tower::Service<Request<B>> for RequireAuth<S>
where
    S: tower::Service<Request<B>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // The clone that was driven to readiness serves this request (tower's usual dance).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let verifier = self.verifier.clone();
        Box::pin(async move {
            let token = match token_from_headers(request.headers()) {
                Ok(Some(token)) => token.to_owned(),
                Ok(None) => return Ok(VerifyError::Missing.into_response()),
                Err(e) => return Ok(e.into_response()),
            };
            match verifier.verify(&token).await {
                Ok(caller) => {
                    request.extensions_mut().insert(caller);
                    request.extensions_mut().insert(verifier);
                    inner.call(request).await
                }
                Err(e) => Ok(e.into_response()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn the_token_comes_from_one_bearer_header() {
        assert_eq!(token_from_headers(&headers(&[])), Ok(None));
        assert_eq!(token_from_headers(&headers(&[("authorization", "Bearer abc")])), Ok(Some("abc")));
        assert_eq!(token_from_headers(&headers(&[("authorization", "bearer  abc ")])), Ok(Some("abc")));
        assert_eq!(token_from_headers(&headers(&[("authorization", "Basic abc")])), Err(VerifyError::Invalid));
        assert_eq!(token_from_headers(&headers(&[("authorization", "Bearer ")])), Err(VerifyError::Invalid));
        assert_eq!(
            token_from_headers(&headers(&[("authorization", "Bearer a"), ("authorization", "Bearer b")])),
            Err(VerifyError::Ambiguous)
        );
    }

    #[test]
    fn a_websocket_handshake_may_carry_the_token_as_a_subprotocol() {
        let ws = [("upgrade", "websocket"), ("sec-websocket-protocol", "tessera, tessera.bearer.abc")];
        assert_eq!(token_from_headers(&headers(&ws)), Ok(Some("abc")));
        let not_ws = [("sec-websocket-protocol", "tessera, tessera.bearer.abc")];
        assert_eq!(token_from_headers(&headers(&not_ws)), Ok(None), "only on a WebSocket handshake");
        let both = [ws[0], ws[1], ("authorization", "Bearer abc")];
        assert_eq!(token_from_headers(&headers(&both)), Err(VerifyError::Ambiguous));
        let two = [ws[0], ("sec-websocket-protocol", "tessera, tessera.bearer.abc, tessera.bearer.def")];
        assert_eq!(token_from_headers(&headers(&two)), Err(VerifyError::Ambiguous));
        let two_headers = [ws[0], ws[1], ("sec-websocket-protocol", "tessera.bearer.abc")];
        assert_eq!(token_from_headers(&headers(&two_headers)), Err(VerifyError::Ambiguous), "even the same one twice");
    }

    #[test]
    fn errors_follow_rfc_6750() {
        let missing = VerifyError::Missing.into_response();
        assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(missing.headers()[header::WWW_AUTHENTICATE], "Bearer");
        let ended = VerifyError::SessionEnded.into_response();
        assert_eq!(ended.status(), StatusCode::UNAUTHORIZED);
        let challenge = ended.headers()[header::WWW_AUTHENTICATE].to_str().unwrap();
        assert!(challenge.starts_with(r#"Bearer error="invalid_token""#), "{challenge}");
        let unavailable = VerifyError::Unavailable.into_response();
        assert_eq!(unavailable.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(unavailable.headers()[header::RETRY_AFTER], "1");
    }
}

/// The headers that carry a verified caller to an app behind tessera: what `tessera gateway`
/// adds to every request it passes on, and what tessera's forward-auth check
/// (`GET /api/auth/verify`) answers for nginx, Traefik or Caddy to copy. Email and username are
/// sent only when the account has them, as their UTF-8 bytes.
pub mod identity {
    use axum::http::{HeaderMap, HeaderName, HeaderValue};

    use crate::claims::AccessClaims;

    pub const USER_ID: HeaderName = HeaderName::from_static("x-tessera-user-id");
    pub const SESSION_ID: HeaderName = HeaderName::from_static("x-tessera-session-id");
    pub const EMAIL: HeaderName = HeaderName::from_static("x-tessera-email");
    pub const USERNAME: HeaderName = HeaderName::from_static("x-tessera-username");
    pub const ANONYMOUS: HeaderName = HeaderName::from_static("x-tessera-anonymous");
    /// Every header of this prefix is tessera's to set: one a client sends is removed.
    pub const PREFIX: &str = "x-tessera-";

    /// Whether `name` is one of the headers only tessera may set.
    pub fn is_identity_header(name: &HeaderName) -> bool {
        name.as_str().starts_with(PREFIX)
    }

    /// Puts the caller of `claims` into `headers`, replacing any earlier values.
    pub fn insert(headers: &mut HeaderMap, claims: &AccessClaims) {
        let mut set = |name: HeaderName, value: &str| {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.insert(name, value);
            }
        };
        set(USER_ID, &claims.sub);
        set(SESSION_ID, &claims.sid);
        if let Some(email) = &claims.email {
            set(EMAIL, email);
        }
        if let Some(username) = &claims.preferred_username {
            set(USERNAME, username);
        }
        set(ANONYMOUS, if claims.is_anonymous { "true" } else { "false" });
    }
}
