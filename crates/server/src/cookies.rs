//! The browser transport of refresh tokens (SPEC §4): the `HttpOnly` cookie and the CSRF check
//! that cookie-authenticated requests must pass.

use axum::http::{HeaderMap, HeaderValue, header};
use tessera_core::Timestamp;
use tessera_proto::ErrorCode;

use crate::error::AppError;

pub const COOKIE_NAME: &str = "tessera_refresh";
pub const COOKIE_PATH: &str = "/api/auth";
pub const CSRF_HEADER: &str = "x-requested-with";
pub const CSRF_VALUE: &str = "tessera";

#[derive(Debug, Clone)]
pub struct CookiePolicy {
    /// `false` only with `--insecure-cookies`, for plain-http development.
    pub secure: bool,
    /// Origins allowed besides the server's own, each `scheme://host[:port]` exactly.
    pub allowed_origins: Vec<String>,
    /// The scheme of the server's own origin: that of its public URL (`--issuer`), which is
    /// `https` behind a TLS-terminating proxy although the server itself speaks plain http.
    pub own_scheme: &'static str,
}

impl CookiePolicy {
    /// `Set-Cookie` carrying `token` until `expires_at`.
    pub fn set(&self, token: &str, expires_at: Timestamp, now: Timestamp) -> HeaderValue {
        let max_age = expires_at.since(now).as_secs();
        self.header(token, max_age)
    }

    /// `Set-Cookie` that deletes the cookie.
    pub fn clear(&self) -> HeaderValue {
        self.header("", 0)
    }

    fn header(&self, value: &str, max_age: u64) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        let text =
            format!("{COOKIE_NAME}={value}; HttpOnly{secure}; SameSite=Strict; Path={COOKIE_PATH}; Max-Age={max_age}");
        // The token is base64url and the rest is ASCII, so this cannot fail.
        HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// The refresh token of the request's cookie, once the request passed the CSRF check.
    /// `Ok(None)` when there is no such cookie.
    pub fn token_from_cookie<'h>(&self, headers: &'h HeaderMap) -> Result<Option<&'h str>, AppError> {
        let Some(token) = cookie_value(headers, COOKIE_NAME) else {
            return Ok(None);
        };
        self.check_csrf(headers)?;
        Ok(Some(token))
    }

    /// A cookie-authenticated request must send `X-Requested-With: tessera` (which a cross-site
    /// form cannot, and a cross-site script cannot without a CORS preflight), and any `Origin` it
    /// sends must be this server's or an allowed one.
    fn check_csrf(&self, headers: &HeaderMap) -> Result<(), AppError> {
        let rejected = |why: &'static str| AppError::new(ErrorCode::CsrfRejected, why);
        if headers.get(CSRF_HEADER).is_none_or(|v| v.as_bytes() != CSRF_VALUE.as_bytes()) {
            return Err(rejected("Cookie-authenticated requests must send X-Requested-With: tessera"));
        }
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Ok(());
        };
        // Scheme, host and port compared exactly: an `Origin` is never spelled any other way.
        let origin = origin.to_str().map_err(|_| rejected("Origin not allowed"))?;
        let same_origin = headers.get(header::HOST).and_then(|h| h.to_str().ok()).is_some_and(|host| {
            origin.strip_prefix(self.own_scheme).and_then(|rest| rest.strip_prefix("://")) == Some(host)
        });
        if same_origin || self.allowed_origins.iter().any(|o| o == origin) {
            Ok(())
        } else {
            Err(rejected("Origin not allowed"))
        }
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, v)| *k == name && !v.is_empty())
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> CookiePolicy {
        CookiePolicy { secure: true, allowed_origins: vec!["https://app.example".into()], own_scheme: "http" }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn the_cookie_has_every_protective_attribute() {
        let now = Timestamp::from_millis(0);
        let value = policy().set("tok", Timestamp::from_millis(60_000), now);
        assert_eq!(value, "tessera_refresh=tok; HttpOnly; Secure; SameSite=Strict; Path=/api/auth; Max-Age=60");
        let dev = CookiePolicy { secure: false, allowed_origins: vec![], own_scheme: "http" };
        assert!(!dev.clear().to_str().unwrap().contains("Secure"));
    }

    #[test]
    fn the_token_is_found_among_other_cookies() {
        let h = headers(&[("cookie", "a=1; tessera_refresh=abc; b=2"), ("x-requested-with", "tessera")]);
        assert_eq!(policy().token_from_cookie(&h).unwrap(), Some("abc"));
        assert_eq!(policy().token_from_cookie(&headers(&[("cookie", "a=1")])).unwrap(), None);
    }

    #[test]
    fn csrf_needs_the_header_and_an_allowed_origin() {
        let reject = |pairs: &[(&'static str, &'static str)]| {
            let err = policy().token_from_cookie(&headers(pairs)).unwrap_err();
            assert_eq!(err.code, ErrorCode::CsrfRejected);
        };
        reject(&[("cookie", "tessera_refresh=abc")]);
        reject(&[("cookie", "tessera_refresh=abc"), ("x-requested-with", "XMLHttpRequest")]);
        reject(&[
            ("cookie", "tessera_refresh=abc"),
            ("x-requested-with", "tessera"),
            ("origin", "https://evil.example"),
        ]);
        reject(&[("cookie", "tessera_refresh=abc"), ("x-requested-with", "tessera"), ("origin", "null")]);
        let csrf = [("cookie", "tessera_refresh=abc"), ("x-requested-with", "tessera")];
        for near_miss in
            ["https://app.example/", "https://app.example//", "http://app.example", "https://app.example:8443"]
        {
            reject(&[csrf[0], csrf[1], ("origin", near_miss)]);
        }
        // The server's own host, but not its scheme.
        reject(&[csrf[0], csrf[1], ("origin", "https://auth.local:8080"), ("host", "auth.local:8080")]);

        let ok = |pairs: &[(&'static str, &'static str)]| assert!(policy().token_from_cookie(&headers(pairs)).is_ok());
        ok(&[("cookie", "tessera_refresh=abc"), ("x-requested-with", "tessera"), ("origin", "https://app.example")]);
        ok(&[
            ("cookie", "tessera_refresh=abc"),
            ("x-requested-with", "tessera"),
            ("origin", "http://auth.local:8080"),
            ("host", "auth.local:8080"),
        ]);
    }
}
