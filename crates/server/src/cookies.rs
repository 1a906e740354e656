//! The browser transport of refresh tokens (README, "Browser transport"): the `HttpOnly` cookie and the CSRF check
//! that cookie-authenticated requests must pass.

use axum::http::{HeaderMap, HeaderValue, header};
use tessera_core::Timestamp;
use tessera_proto::{RefreshTransport, Secret};

use crate::rejection::Rejection;

/// The cookie's name with `Secure`. The `__Secure-` prefix makes browsers refuse the name from
/// any page that is not https, so a man in the middle of some plain-http page of the site
/// cannot plant a cookie of this name. (`__Host-` would also refuse one planted by a sibling
/// host, but it requires `Path=/`, and README, "Browser transport" scopes the cookie to `/api/auth` so that no
/// other path of the host — a page, an app on another port — ever receives the token.)
pub const SECURE_COOKIE_NAME: &str = "__Secure-tessera_refresh";
/// The cookie's name without `Secure` (`--insecure-cookies`, plain-http development), where
/// browsers would refuse a prefixed name.
pub const DEV_COOKIE_NAME: &str = "tessera_refresh";
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

    /// `Set-Cookie` headers that delete every cookie of the refresh cookie's name that tessera
    /// can name: on the paths of its API and above, host-only and for each parent domain of the
    /// request's host (where a sibling host may have planted one with `Domain`). A cookie set
    /// for a domain tessera is not under cannot be deleted by tessera, and is not sent to it
    /// either.
    pub fn clear_everywhere(&self, headers: &HeaderMap) -> Vec<HeaderValue> {
        const PATHS: [&str; 6] =
            ["/api/auth", "/api/auth/refresh", "/api/auth/logout", "/api/auth/upgrade", "/api", "/"];
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
        let host =
            host.rsplit_once(':').filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(h, _)| h);
        let is_name = !host.is_empty() && host.parse::<std::net::IpAddr>().is_err() && !host.starts_with('[');
        let mut domains = vec![None];
        if is_name {
            let labels: Vec<&str> = host.split('.').collect();
            // Every suffix of two labels or more: a.b.example.com, b.example.com, example.com.
            domains.extend((0..labels.len().saturating_sub(1)).map(|i| Some(labels[i..].join("."))));
        }
        let secure = if self.secure { "; Secure" } else { "" };
        let name = self.name();
        let mut cookies = Vec::new();
        for domain in &domains {
            let domain = domain.as_ref().map(|d| format!("; Domain={d}")).unwrap_or_default();
            for path in PATHS {
                let text = format!("{name}=; HttpOnly{secure}; SameSite=Strict; Path={path}{domain}; Max-Age=0");
                cookies.extend(HeaderValue::try_from(text).ok());
            }
        }
        cookies
    }

    /// Whether the request carries several refresh cookies.
    pub fn conflicting(&self, headers: &HeaderMap) -> bool {
        cookie_values(headers, self.name()).nth(1).is_some()
    }

    pub fn name(&self) -> &'static str {
        if self.secure { SECURE_COOKIE_NAME } else { DEV_COOKIE_NAME }
    }

    fn header(&self, value: &str, max_age: u64) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        let name = self.name();
        let text = format!("{name}={value}; HttpOnly{secure}; SameSite=Strict; Path={COOKIE_PATH}; Max-Age={max_age}");
        // The token is base64url and the rest is ASCII, so this cannot fail.
        HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// The refresh token of the request's cookie, once the request passed the CSRF check.
    /// `Ok(None)` when there is no such cookie.
    ///
    /// Several cookies of that name mean one was planted — by a server on another port of
    /// tessera's host (cookies do not respect ports), by a sibling host with `Domain`, or with a
    /// longer `Path` so that browsers send it first. tessera then refuses to guess which is the
    /// user's (a planted cookie must not pick the session a browser refreshes), answers
    /// `400 CONFLICTING_COOKIES`, and deletes every one it can name, so that the browser
    /// recovers with a new sign-in instead of failing every refresh until the planted cookie
    /// expires.
    pub fn token_from_cookie<'h>(&self, headers: &'h HeaderMap) -> Result<Option<&'h str>, Rejection> {
        let mut values = cookie_values(headers, self.name());
        let Some(token) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(Rejection::ConflictingCookies { clear: self.clear_everywhere(headers) });
        }
        self.check_csrf(headers)?;
        Ok(Some(token))
    }

    /// The refresh token a request presents: `in_body` if there is one, else the cookie's (after
    /// the CSRF check), with how it came; `MISSING_TOKEN` when there is neither.
    pub fn presented_token<'r>(
        &self,
        in_body: Option<&'r Secret>,
        headers: &'r HeaderMap,
    ) -> Result<(&'r str, RefreshTransport), Rejection> {
        if let Some(token) = in_body {
            return Ok((token.expose(), RefreshTransport::Body));
        }
        match self.token_from_cookie(headers)? {
            Some(token) => Ok((token, RefreshTransport::Cookie)),
            None => Err(Rejection::NoRefreshToken),
        }
    }

    /// A cookie-authenticated request must send `X-Requested-With: tessera` (which a cross-site
    /// form cannot, and a cross-site script cannot without a CORS preflight), and any `Origin` it
    /// sends must be this server's or an allowed one.
    fn check_csrf(&self, headers: &HeaderMap) -> Result<(), Rejection> {
        let rejected = Rejection::Csrf;
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

/// The allowed origins on tessera's own host at another port. Browsers send a host's cookies to
/// every port of it (RFC 6265 §8.5), so an app there receives tessera's refresh cookie with any
/// request to its own `/api/auth/…`, and can replace, delete or shadow it: tessera needs a
/// hostname of its own, except in development.
pub fn origins_on_tessera_host<'o>(issuer: &str, allowed: &'o [String]) -> Vec<&'o str> {
    let Some((host, port)) = host_and_port(issuer) else {
        return Vec::new();
    };
    allowed
        .iter()
        .filter(|o| host_and_port(o).is_some_and(|(h, p)| h.eq_ignore_ascii_case(host) && p != port))
        .map(String::as_str)
        .collect()
}

/// The host and port of an `http(s)://` URL, the port defaulted by the scheme.
fn host_and_port(url: &str) -> Option<(&str, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let default = if scheme.eq_ignore_ascii_case("https") { 443 } else { 80 };
    match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => Some((host, port.parse().ok()?)),
        _ => Some((authority, default)),
    }
}

/// CORS for tessera's API: the configured allowed origins (`--allowed-origins`) may call it
/// from their pages with credentials — the refresh cookie — and the headers tessera's clients
/// send. Nobody else gets CORS headers, so a browser keeps other origins' scripts from reading
/// the answers. The CSRF rule of cookie-authenticated requests holds as before: the preflight
/// lets `X-Requested-With` through only for these origins, and the `Origin` check stays.
///
/// Only a real preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is
/// answered without going to a route (in [`crate::middleware`]); a plain `OPTIONS` still gets
/// the envelope's `405`. These are the headers for an allowed `origin`.
pub fn cors_headers(headers: &mut HeaderMap, origin: HeaderValue, preflight: bool) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
    headers.append(header::VARY, HeaderValue::from_static("origin"));
    if preflight {
        headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, DELETE"));
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type, x-requested-with"),
        );
        headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    } else {
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("retry-after, www-authenticate, x-request-id"),
        );
    }
}

/// The values of cookie `name` in the request's `Cookie` headers.
fn cookie_values<'h>(headers: &'h HeaderMap, name: &str) -> impl Iterator<Item = &'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(move |(k, v)| *k == name && !v.is_empty())
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> CookiePolicy {
        CookiePolicy { secure: true, allowed_origins: vec!["https://app.example".into()], own_scheme: "http" }
    }

    #[test]
    fn origins_on_tessera_host_at_another_port_are_found() {
        let allowed: Vec<String> =
            ["https://auth.example.com:8443", "https://app.example.com", "https://AUTH.example.com"]
                .map(String::from)
                .into();
        assert_eq!(
            origins_on_tessera_host("https://auth.example.com", &allowed),
            vec!["https://auth.example.com:8443"]
        );
        let dev: Vec<String> = vec!["http://127.0.0.1:8081".into()];
        assert_eq!(origins_on_tessera_host("http://127.0.0.1:8080", &dev), vec!["http://127.0.0.1:8081"]);
        assert!(
            origins_on_tessera_host("https://auth.example.com/base", &["https://app.example.com".into()]).is_empty()
        );
    }

    #[test]
    fn everything_clearable_is_cleared() {
        let all = policy().clear_everywhere(&headers(&[("host", "auth.example.com:8443")]));
        let text: Vec<&str> = all.iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(text.len(), 6 * 3, "host-only, auth.example.com, example.com: {text:#?}");
        assert!(text.iter().all(|c| c.starts_with("__Secure-tessera_refresh=;") && c.ends_with("Max-Age=0")));
        assert!(text.iter().all(|c| !c.contains("Domain=com;")), "never a bare top-level domain");
        let by_ip = policy().clear_everywhere(&headers(&[("host", "127.0.0.1:8080")]));
        assert_eq!(by_ip.len(), 6, "no Domain for an address");
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
        assert_eq!(
            value,
            "__Secure-tessera_refresh=tok; HttpOnly; Secure; SameSite=Strict; Path=/api/auth; Max-Age=60"
        );
        let dev = CookiePolicy { secure: false, allowed_origins: vec![], own_scheme: "http" };
        assert_eq!(dev.clear(), "tessera_refresh=; HttpOnly; SameSite=Strict; Path=/api/auth; Max-Age=0");
    }

    #[test]
    fn the_token_is_found_among_other_cookies() {
        let h = headers(&[("cookie", "a=1; __Secure-tessera_refresh=abc; b=2"), ("x-requested-with", "tessera")]);
        assert_eq!(policy().token_from_cookie(&h).unwrap(), Some("abc"));
        assert_eq!(policy().token_from_cookie(&headers(&[("cookie", "a=1")])).unwrap(), None);
        let unprefixed = headers(&[("cookie", "tessera_refresh=abc"), ("x-requested-with", "tessera")]);
        assert_eq!(policy().token_from_cookie(&unprefixed).unwrap(), None, "with Secure, only the prefixed name");
    }

    #[test]
    fn a_second_planted_cookie_is_refused_rather_than_guessed() {
        for cookies in [
            &[("cookie", "__Secure-tessera_refresh=planted; __Secure-tessera_refresh=real")][..],
            &[("cookie", "__Secure-tessera_refresh=planted"), ("cookie", "__Secure-tessera_refresh=real")],
        ] {
            let mut h = headers(cookies);
            h.append("x-requested-with", HeaderValue::from_static("tessera"));
            let err = policy().token_from_cookie(&h).unwrap_err();
            assert!(matches!(err, Rejection::ConflictingCookies { ref clear } if !clear.is_empty()), "{err:?}");
        }
    }

    #[test]
    fn csrf_needs_the_header_and_an_allowed_origin() {
        let reject = |pairs: &[(&'static str, &'static str)]| {
            let err = policy().token_from_cookie(&headers(pairs)).unwrap_err();
            assert!(matches!(err, Rejection::Csrf(_)), "{err:?}");
        };
        reject(&[("cookie", "__Secure-tessera_refresh=abc")]);
        reject(&[("cookie", "__Secure-tessera_refresh=abc"), ("x-requested-with", "XMLHttpRequest")]);
        reject(&[
            ("cookie", "__Secure-tessera_refresh=abc"),
            ("x-requested-with", "tessera"),
            ("origin", "https://evil.example"),
        ]);
        reject(&[("cookie", "__Secure-tessera_refresh=abc"), ("x-requested-with", "tessera"), ("origin", "null")]);
        let csrf = [("cookie", "__Secure-tessera_refresh=abc"), ("x-requested-with", "tessera")];
        for near_miss in
            ["https://app.example/", "https://app.example//", "http://app.example", "https://app.example:8443"]
        {
            reject(&[csrf[0], csrf[1], ("origin", near_miss)]);
        }
        // The server's own host, but not its scheme.
        reject(&[csrf[0], csrf[1], ("origin", "https://auth.local:8080"), ("host", "auth.local:8080")]);

        let ok = |pairs: &[(&'static str, &'static str)]| assert!(policy().token_from_cookie(&headers(pairs)).is_ok());
        ok(&[
            ("cookie", "__Secure-tessera_refresh=abc"),
            ("x-requested-with", "tessera"),
            ("origin", "https://app.example"),
        ]);
        ok(&[
            ("cookie", "__Secure-tessera_refresh=abc"),
            ("x-requested-with", "tessera"),
            ("origin", "http://auth.local:8080"),
            ("host", "auth.local:8080"),
        ]);
    }
}
