//! Extractors that turn requests into typed input or into a [`Rejection`], which each surface
//! renders its own way.
//!
//! - [`ApiJson`]: a JSON body. Not JSON → 415, too big → 413, malformed, wrong types, unknown
//!   or missing fields → 400 `INVALID_REQUEST` naming the field.
//! - [`OptionalJson`]: the same, but an empty body means `T::default()`.
//! - [`AuthUser`]: the caller of a `Bearer` access token whose session is live, else 401.
//! - [`ClientMeta`]: user agent and peer address, for the session list.

use std::net::{IpAddr, SocketAddr};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use serde::de::DeserializeOwned;
use tessera_core::service::{Caller, ClientInfo};
use tessera_verify::VerifyError;
use tessera_verify::http::token_from_headers;

use crate::error::AppError;
use crate::rejection::Rejection;
use crate::state::AppState;

pub struct ApiJson<T>(pub T);

pub struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = Rejection;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Rejection> {
        let bytes = read_json_body(req, state).await?;
        if bytes.is_empty() {
            return Err(Rejection::malformed("The request body is empty; send a JSON object"));
        }
        parse(&bytes).map(Self)
    }
}

impl<T: DeserializeOwned + Default> FromRequest<AppState> for OptionalJson<T> {
    type Rejection = Rejection;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Rejection> {
        let has_body = req.headers().contains_key(header::CONTENT_TYPE)
            || req.headers().get(header::CONTENT_LENGTH).is_some_and(|v| v.as_bytes() != b"0")
            || req.headers().contains_key(header::TRANSFER_ENCODING);
        if !has_body {
            return Ok(Self(T::default()));
        }
        let bytes = read_json_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(T::default()));
        }
        parse(&bytes).map(Self)
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mime = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

async fn read_json_body(req: Request, state: &AppState) -> Result<Bytes, Rejection> {
    if !is_json(req.headers()) && !declares_too_much(&req, state.body_limit()) {
        return Err(Rejection::UnsupportedMediaType);
    }
    read_body(req, state).await
}

fn declares_too_much(req: &Request, limit: usize) -> bool {
    req.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > limit as u64)
}

/// The whole body, within the size limit (`413 PAYLOAD_TOO_LARGE`) and the body timeout
/// (`408 REQUEST_TIMEOUT`), which runs from here to the body's last byte, however slowly the
/// bytes trickle in.
pub async fn read_body(req: Request, state: &AppState) -> Result<Bytes, Rejection> {
    let limit = state.body_limit();
    if declares_too_much(&req, limit) {
        return Err(Rejection::PayloadTooLarge { limit });
    }
    let timeout = state.policy().body_timeout;
    match tokio::time::timeout(timeout, axum::body::to_bytes(req.into_body(), limit)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        // The body stream fails only by exceeding the limit or by the client going away.
        Ok(Err(_)) => Err(Rejection::PayloadTooLarge { limit }),
        Err(_) => Err(Rejection::BodyTimeout(timeout)),
    }
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Rejection> {
    // serde would also read a struct from an array of its fields: only an object is one.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(Rejection::malformed("The body must be a JSON object"));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let what = inner.to_string();
        // serde_json appends " at line L column C"; the field name says more.
        let what = what.split(" at line ").next().unwrap_or(&what).to_owned();
        let message = if path == "." || path.is_empty() {
            format!("Invalid JSON body: {what}")
        } else {
            format!("Invalid field `{path}`: {what}")
        };
        Rejection::malformed(message)
    })?;
    de.end().map_err(|_| Rejection::malformed("Invalid JSON body: trailing characters after the object"))?;
    Ok(value)
}

/// The authenticated caller.
pub struct AuthUser(pub Caller);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        // The same reading of the Authorization header as every resource server's.
        let token = match token_from_headers(&parts.headers) {
            Ok(Some(token)) => token,
            Err(VerifyError::Ambiguous) => return Err(Rejection::AmbiguousAuthorization.into()),
            Ok(None) | Err(_) => return Err(Rejection::NoBearer.into()),
        };
        state.auth().authenticate(token, state.now()).map(AuthUser).map_err(AppError::from)
    }
}

/// Who is calling: the user agent, and the client's address — the peer's, or the one a
/// trusted proxy forwards for (see [`crate::net`]).
pub struct ClientMeta {
    pub info: ClientInfo,
    pub addr: Option<IpAddr>,
}

impl FromRequestParts<AppState> for ClientMeta {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let user_agent = parts.headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let addr = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| state.policy().proxies.client_ip(c.0.ip(), &parts.headers));
        Ok(Self { info: ClientInfo { user_agent, ip: addr.map(|a| a.to_string()) }, addr })
    }
}
