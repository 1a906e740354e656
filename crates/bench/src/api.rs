//! The few calls of tessera's API the benchmark makes, with the wire types of `tessera-proto`.

use hyper::body::Bytes;
use hyper::header::HeaderValue;
use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;
use tessera_proto::{ErrorBody, LoginRequest, RefreshRequest, RegisterRequest, Secret, TokenResponse};

use crate::BoxError;
use crate::http::{Conn, Reply};

pub const INTROSPECT: &str = "/oauth/introspect";
pub const REGISTER: &str = "/api/auth/register";
pub const LOGIN: &str = "/api/auth/login";
pub const REFRESH: &str = "/api/auth/refresh";
pub const ME: &str = "/api/auth/me";
pub const LOGOUT: &str = "/api/auth/logout";

/// The benchmark's user.
pub struct Account {
    pub email: String,
    pub password: String,
}

impl Account {
    pub fn register_body(&self) -> Result<Bytes, BoxError> {
        let request = RegisterRequest {
            email: Some(self.email.clone()),
            password: Secret::new(self.password.clone()),
            ..RegisterRequest::default()
        };
        Ok(serde_json::to_vec(&request)?.into())
    }

    pub fn login_body(&self) -> Result<Bytes, BoxError> {
        let request = LoginRequest {
            email: Some(self.email.clone()),
            password: Secret::new(self.password.clone()),
            ..LoginRequest::default()
        };
        Ok(serde_json::to_vec(&request)?.into())
    }
}

pub async fn register(conn: &mut Conn, account: &Account) -> Result<(), BoxError> {
    let reply = conn.post_json(REGISTER, account.register_body()?).await?;
    expect_success(reply).map(drop).map_err(|e| format!("register: {e}").into())
}

/// Logs in and returns the tokens.
pub async fn login(conn: &mut Conn, body: Bytes) -> Result<TokenResponse, BoxError> {
    let reply = conn.post_json(LOGIN, body).await?;
    tokens(reply).map_err(|e| format!("login: {e}").into())
}

/// Ends the session of the access token in `bearer`.
pub async fn logout(conn: &mut Conn, bearer: &HeaderValue) -> Result<(), BoxError> {
    let reply = conn.post_json_as(LOGOUT, Bytes::from_static(b"{}"), bearer).await?;
    expect_success(reply).map(drop).map_err(|e| format!("logout: {e}").into())
}

pub fn refresh_body(refresh_token: &str) -> Result<Bytes, BoxError> {
    let request = RefreshRequest { refresh_token: Some(Secret::new(refresh_token)) };
    Ok(serde_json::to_vec(&request)?.into())
}

/// The `Authorization` header for an access token.
pub fn bearer(tokens: &TokenResponse) -> Result<HeaderValue, BoxError> {
    Ok(HeaderValue::from_str(&format!("Bearer {}", tokens.token.expose()))?)
}

/// The refresh token of a login or refresh response.
pub fn refresh_token(tokens: TokenResponse) -> Result<String, BoxError> {
    tokens.refresh_token.map(Secret::into_inner).ok_or_else(|| "the response carries no refresh_token".into())
}

/// The new refresh token of a successful refresh response, read without building the rest of
/// the response: the load generator's own work per refresh is CPU taken from the server.
pub fn rotated_refresh_token(reply: &Reply) -> Result<String, String> {
    #[derive(Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow)]
        data: Option<Data<'a>>,
    }
    #[derive(Deserialize)]
    struct Data<'a> {
        #[serde(borrow)]
        refresh_token: Option<Cow<'a, str>>,
    }
    if !reply.status.is_success() {
        return Err(reply.describe());
    }
    let envelope: Envelope<'_> =
        serde_json::from_slice(&reply.body).map_err(|e| format!("unexpected token response: {e}"))?;
    match envelope.data.and_then(|data| data.refresh_token) {
        Some(token) => Ok(token.into_owned()),
        None => Err(format!("the response carries no refresh_token: {}", reply.describe())),
    }
}

/// The tokens of a successful login or refresh response.
pub fn tokens(reply: Reply) -> Result<TokenResponse, String> {
    let reply = expect_success(reply)?;
    data(&reply.body)
        .and_then(|data| serde_json::from_value(data).map_err(|e| e.to_string()))
        .map_err(|e| format!("unexpected token response: {e}"))
}

/// The `data` member of a successful envelope. (`Envelope<T>` itself deserialises only for
/// `T: Default`, which the response types are not.)
fn data(body: &[u8]) -> Result<Value, String> {
    let mut envelope: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if envelope.get("success") != Some(&Value::Bool(true)) {
        let error = envelope.get("error").cloned().unwrap_or(Value::Null);
        return match serde_json::from_value::<ErrorBody>(error) {
            Ok(e) => Err(format!("{:?}: {}", e.code, e.message)),
            Err(_) => Err("an envelope without success or error".into()),
        };
    }
    Ok(envelope["data"].take())
}

/// The reply if its status is 2xx, else its description.
pub fn expect_success(reply: Reply) -> Result<Reply, String> {
    if reply.status.is_success() { Ok(reply) } else { Err(reply.describe()) }
}

#[cfg(test)]
mod tests {
    use hyper::StatusCode;

    use super::*;

    fn reply(status: StatusCode, body: &'static str) -> Reply {
        Reply { status, body: Bytes::from_static(body.as_bytes()) }
    }

    #[test]
    fn the_rotated_refresh_token_is_read_from_the_envelope() {
        let ok = r#"{"success":true,"data":{"token":"a.b.c","user":{"id":"u"},"refresh_token":"r\/2"}}"#;
        assert_eq!(rotated_refresh_token(&reply(StatusCode::OK, ok)).unwrap(), "r/2");
        let refused = r#"{"success":false,"error":{"code":"INVALID_TOKEN","message":"no"}}"#;
        assert!(rotated_refresh_token(&reply(StatusCode::UNAUTHORIZED, refused)).unwrap_err().contains("401"));
        let cookie_only = r#"{"success":true,"data":{"token":"a.b.c"}}"#;
        assert!(rotated_refresh_token(&reply(StatusCode::OK, cookie_only)).is_err());
    }
}
