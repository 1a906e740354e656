//! The browser transport (README, "Browser transport"): refresh token only in an HttpOnly cookie, CSRF-checked.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::*;

const CSRF: (&str, &str) = ("x-requested-with", "tessera");

/// Logs in with the cookie transport; returns the access token and the cookie's value.
async fn cookie_login(server: &TestServer, email: &str) -> (String, String, Reply) {
    let reply = server
        .post("/api/auth/login", json!({"email": email, "password": PASSWORD, "refresh_transport": "cookie"}))
        .await;
    let access = reply.data()["token"].as_str().unwrap().to_owned();
    let cookie = cookie_value(&reply);
    (access, cookie, reply)
}

fn cookie_value(reply: &Reply) -> String {
    let set = reply.set_cookie().expect("Set-Cookie");
    set.split(';').next().unwrap().strip_prefix("__Secure-tessera_refresh=").expect("cookie name").to_owned()
}

#[tokio::test]
async fn cookie_login_puts_the_refresh_token_only_in_a_protected_cookie() {
    let server = TestServer::start().await;
    let email = unique_email();
    server.register(&email).await;
    let (_, cookie, reply) = cookie_login(&server, &email).await;
    assert!(reply.data().get("refresh_token").is_none(), "{}", reply.body);
    assert!(!reply.body.to_string().contains(&cookie));
    let set = reply.set_cookie().unwrap();
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/api/auth", "Max-Age=2592000"] {
        assert!(set.split("; ").any(|a| a == attribute), "{attribute} missing from {set}");
    }
}

#[tokio::test]
async fn insecure_cookies_drop_the_secure_attribute_and_the_prefix_browsers_would_refuse_without_it() {
    let server = TestServer::start_with(&["--insecure-cookies"]).await;
    let email = unique_email();
    server.register(&email).await;
    let reply = server
        .post("/api/auth/login", json!({"email": email, "password": PASSWORD, "refresh_transport": "cookie"}))
        .await;
    let set = reply.set_cookie().unwrap();
    assert!(!set.contains("Secure"), "{set}");
    assert!(set.starts_with("tessera_refresh="), "{set}");
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"), "{set}");
}

/// Cookies are scoped by host, not port (RFC 6265 §8.5): a server on another port of tessera's
/// host can plant a second refresh cookie (on `/api/auth/refresh`, so that browsers send it
/// first). tessera picks neither, says what happened, and clears every one it can name, so the
/// browser recovers with a sign-in instead of failing every refresh until the plant expires.
#[tokio::test]
async fn conflicting_refresh_cookies_pick_no_session_and_are_all_cleared() {
    let server = TestServer::start().await;
    let email = unique_email();
    server.register(&email).await;
    let (_, real, _) = cookie_login(&server, &email).await;
    // An attacker's own valid session, planted so that the browser sends it first.
    let attacker = unique_email();
    server.register(&attacker).await;
    let (_, planted, _) = cookie_login(&server, &attacker).await;
    let both = format!("__Secure-tessera_refresh={planted}; __Secure-tessera_refresh={real}");
    let host = server.base.trim_start_matches("http://").replace("127.0.0.1", "auth.example.com");
    let headers = [("cookie", both.as_str()), CSRF, ("host", host.as_str())];
    let reply = server.send(Method::POST, "/api/auth/refresh", None, None, &headers).await;
    reply.assert_error(400, "CONFLICTING_COOKIES");
    let cleared: Vec<&str> = reply.headers.get_all("set-cookie").iter().map(|v| v.to_str().unwrap()).collect();
    for (path, domain) in
        [("/api/auth", ""), ("/api/auth/refresh", ""), ("/", ""), ("/api/auth/refresh", "; Domain=example.com")]
    {
        let wanted =
            format!("__Secure-tessera_refresh=; HttpOnly; Secure; SameSite=Strict; Path={path}{domain}; Max-Age=0");
        assert!(cleared.contains(&wanted.as_str()), "{wanted} missing from {cleared:#?}");
    }
    assert!(cleared.iter().any(|c| c.contains("Domain=auth.example.com")), "{cleared:#?}");
    // Neither session was picked, nor ended: the user's own cookie, alone, is still the user's.
    let jar = format!("__Secure-tessera_refresh={real}");
    let reply = server.send(Method::POST, "/api/auth/refresh", None, None, &[("cookie", &jar), CSRF]).await;
    let me = server.me(reply.data()["token"].as_str().unwrap()).await;
    assert_eq!(me.data()["email"], email);
    // A logout that meets the conflict clears them all too.
    let (access, _, _) = cookie_login(&server, &email).await;
    let out = server.send(Method::POST, "/api/auth/logout", Some(&access), None, &[("cookie", &both), CSRF]).await;
    out.data();
    assert!(out.headers.get_all("set-cookie").iter().count() >= 6, "{:?}", out.headers);
}

#[tokio::test]
async fn a_cookie_refresh_rotates_the_cookie_and_keeps_the_token_out_of_the_body() {
    let server = TestServer::start().await;
    let email = unique_email();
    server.register(&email).await;
    let (_, cookie, _) = cookie_login(&server, &email).await;
    let jar = format!("__Secure-tessera_refresh={cookie}");
    let reply = server.send(Method::POST, "/api/auth/refresh", None, None, &[("cookie", &jar), CSRF]).await;
    assert!(reply.data().get("refresh_token").is_none());
    server.me(reply.data()["token"].as_str().unwrap()).await.data();
    let next = cookie_value(&reply);
    assert_ne!(next, cookie);

    // The old cookie is now reuse; the answer deletes the cookie.
    let replay = server.send(Method::POST, "/api/auth/refresh", None, None, &[("cookie", &jar), CSRF]).await;
    replay.assert_error(401, "INVALID_TOKEN");
    assert!(replay.set_cookie().is_some_and(|c| c.contains("Max-Age=0")));
}

#[tokio::test]
async fn cookie_requests_without_the_csrf_header_or_from_a_foreign_origin_are_rejected() {
    let server = TestServer::start_with(&["--allowed-origins", "https://app.example"]).await;
    let email = unique_email();
    server.register(&email).await;
    let (access, cookie, _) = cookie_login(&server, &email).await;
    let jar = format!("__Secure-tessera_refresh={cookie}");
    let refresh =
        async |headers: &[(&str, &str)]| server.send(Method::POST, "/api/auth/refresh", None, None, headers).await;

    refresh(&[("cookie", &jar)]).await.assert_error(403, "CSRF_REJECTED");
    refresh(&[("cookie", &jar), ("x-requested-with", "XMLHttpRequest")]).await.assert_error(403, "CSRF_REJECTED");
    refresh(&[("cookie", &jar), CSRF, ("origin", "https://evil.example")]).await.assert_error(403, "CSRF_REJECTED");

    // None of that used up the token: an allowed origin refreshes fine.
    refresh(&[("cookie", &jar), CSRF, ("origin", "https://app.example")]).await.data();
    let _ = access;
}

#[tokio::test]
async fn a_bearer_logout_that_also_carries_the_cookie_is_not_held_to_the_cookies_csrf_rule() {
    let server = TestServer::start().await;
    let email = unique_email();
    server.register(&email).await;
    let (access, cookie, _) = cookie_login(&server, &email).await;
    let jar = format!("__Secure-tessera_refresh={cookie}");
    // The Bearer token authenticates the logout (no cross-site page can send it), so the cookie
    // riding along without X-Requested-With does not make it fail.
    let logout = server.send(Method::POST, "/api/auth/logout", Some(&access), None, &[("cookie", &jar)]).await;
    assert_eq!(logout.data()["logged_out"], true);
    server.me(&access).await.assert_error(401, "UNAUTHORIZED");
    let refresh = server.send(Method::POST, "/api/auth/refresh", None, None, &[("cookie", &jar), CSRF]).await;
    refresh.assert_error(401, "INVALID_TOKEN");
}

#[tokio::test]
async fn a_cookie_logout_ends_the_session_and_clears_the_cookie() {
    let server = TestServer::start().await;
    let email = unique_email();
    server.register(&email).await;
    let (access, cookie, _) = cookie_login(&server, &email).await;
    let jar = format!("__Secure-tessera_refresh={cookie}");
    let reply = server.send(Method::POST, "/api/auth/logout", Some(&access), None, &[("cookie", &jar), CSRF]).await;
    assert_eq!(reply.data()["logged_out"], true);
    assert!(reply.set_cookie().is_some_and(|c| c.starts_with("__Secure-tessera_refresh=;") && c.contains("Max-Age=0")));
    let again = server.send(Method::POST, "/api/auth/refresh", None, None, &[("cookie", &jar), CSRF]).await;
    again.assert_error(401, "INVALID_TOKEN");
}

#[tokio::test]
async fn allowed_origins_get_cors_with_credentials_and_others_get_none() {
    let app = "http://127.0.0.1:9999";
    let server = TestServer::start_with(&["--allowed-origins", app, "--insecure-cookies"]).await;
    let preflight = |origin: &'static str| {
        server
            .client
            .request(Method::OPTIONS, server.url("/api/auth/refresh"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "x-requested-with, content-type")
            .send()
    };
    let allowed = preflight(app).await.unwrap();
    assert!(allowed.status().is_success(), "{}", allowed.status());
    let headers = allowed.headers();
    assert_eq!(headers["access-control-allow-origin"], app);
    assert_eq!(headers["access-control-allow-credentials"], "true");
    let allowed_headers = headers["access-control-allow-headers"].to_str().unwrap().to_ascii_lowercase();
    assert!(
        allowed_headers.contains("x-requested-with") && allowed_headers.contains("authorization"),
        "{allowed_headers}"
    );

    let foreign = preflight("http://evil.example").await.unwrap();
    assert!(foreign.headers().get("access-control-allow-origin").is_none());

    // The real request from the app: the cookie refresh works and its answer is readable.
    let email = unique_email();
    server.register(&email).await;
    let login = server
        .client
        .post(server.url("/api/auth/login"))
        .header("origin", app)
        .json(&json!({"email": email, "password": PASSWORD, "refresh_transport": "cookie"}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.headers()["access-control-allow-origin"], app);
    let cookie = login.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let refresh =
        server.send(Method::POST, "/api/auth/refresh", None, None, &[("cookie", &cookie), CSRF, ("origin", app)]).await;
    assert_eq!(refresh.status, 200, "{}", refresh.body);
    assert_eq!(refresh.header("access-control-allow-origin"), Some(app));
    // A foreign origin is still refused by the CSRF rule, CORS or not.
    let foreign = server
        .send(
            Method::POST,
            "/api/auth/refresh",
            None,
            None,
            &[("cookie", &cookie), CSRF, ("origin", "http://evil.example")],
        )
        .await;
    foreign.assert_error(403, "CSRF_REJECTED");
    assert!(foreign.header("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn an_allowed_origin_on_tesseras_own_host_at_another_port_is_warned_about_at_start_up() {
    let warning = "an allowed origin is tessera's own host on another port";
    let shared = TestServer::start_with(&[
        "--issuer",
        "https://auth.example.com",
        "--allowed-origins",
        "https://auth.example.com:8443,https://app.example.com",
    ])
    .await;
    let logged: Vec<Value> = shared
        .logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"].as_str().is_some_and(|m| m.starts_with(warning)))
        .collect();
    assert_eq!(logged.len(), 1, "{}", shared.logs());
    assert_eq!(logged[0]["origin"], "https://auth.example.com:8443");
    assert_eq!(logged[0]["level"], "WARN");
    let own = TestServer::start_with(&[
        "--issuer",
        "https://auth.example.com",
        "--allowed-origins",
        "https://app.example.com",
    ])
    .await;
    assert!(!own.logs().contains(warning), "a hostname of its own: no warning");
}
