//! The standard OAuth 2.0 endpoints, driven by a real OAuth client library (the `oauth2` crate)
//! and by hand where the library would hide the wire.

use std::time::Duration;

use oauth2::basic::{BasicClient, BasicErrorResponseType};
use oauth2::{ClientId, RefreshToken, RequestTokenError, TokenResponse, TokenUrl};
use reqwest::Method;
use serde_json::Value;

use crate::helpers::*;

/// An HTTP client as the `oauth2` crate wants it: no redirects followed.
fn oauth_http() -> reqwest::Client {
    let _ = http_client();
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

async fn post_form(server: &TestServer, path: &str, form: &[(&str, &str)]) -> Reply {
    read(http_client().post(server.url(path)).form(form).send().await.unwrap()).await
}

/// Asserts an RFC 6749 §5.2 error: status, `error`, a readable description, never the envelope.
fn assert_oauth_error(reply: &Reply, status: u16, error: &str) {
    assert_eq!((reply.status.as_u16(), reply.body["error"].as_str()), (status, Some(error)), "{}", reply.body);
    assert!(reply.body["error_description"].as_str().is_some_and(|d| d.len() > 10), "{}", reply.body);
    assert!(reply.body.get("success").is_none(), "not tessera's envelope: {}", reply.body);
    assert_eq!(reply.header("cache-control"), Some("no-store"));
}

#[tokio::test]
async fn metadata_names_the_endpoints_under_the_configured_issuer() {
    let server = TestServer::start_with(&["--issuer", "https://auth.example.com"]).await;
    let reply = server.send(Method::GET, "/.well-known/oauth-authorization-server", None, None, &[]).await;
    reply.assert_status(200);
    let m = &reply.body;
    assert_eq!(m["issuer"], "https://auth.example.com");
    assert_eq!(m["token_endpoint"], "https://auth.example.com/oauth/token");
    assert_eq!(m["revocation_endpoint"], "https://auth.example.com/oauth/revoke");
    assert_eq!(m["jwks_uri"], "https://auth.example.com/.well-known/jwks.json");
    assert!(m["grant_types_supported"].as_array().unwrap().contains(&Value::from("refresh_token")));
    assert!(m["response_types_supported"].is_array(), "required by RFC 8414");
    assert!(m["token_endpoint_auth_methods_supported"].is_array());
    assert!(m["revocation_endpoint_auth_methods_supported"].is_array());
}

#[tokio::test]
async fn an_oauth_client_library_refreshes_and_a_replay_ends_the_session() {
    let server = TestServer::start().await;
    let tokens = server.user(&unique_email()).await;
    let client = BasicClient::new(ClientId::new("any-public-client".into()))
        .set_token_uri(TokenUrl::new(server.url("/oauth/token")).unwrap());
    let http = oauth_http();

    let fresh = client.exchange_refresh_token(&RefreshToken::new(tokens.refresh.clone())).request_async(&http).await;
    let fresh = fresh.expect("the refresh grant");
    assert_eq!(fresh.token_type(), &oauth2::basic::BasicTokenType::Bearer);
    assert_eq!(fresh.expires_in(), Some(Duration::from_secs(900)));
    let access = fresh.access_token().secret().clone();
    let refresh = fresh.refresh_token().expect("a rotated refresh token").secret().clone();
    assert_ne!(refresh, tokens.refresh);
    server.me(&access).await.data();

    // The old token again: a replay. The library sees invalid_grant; the session is over.
    let replay = client.exchange_refresh_token(&RefreshToken::new(tokens.refresh.clone())).request_async(&http).await;
    match replay {
        Err(RequestTokenError::ServerResponse(e)) => {
            assert_eq!(*e.error(), BasicErrorResponseType::InvalidGrant);
            assert!(e.error_description().is_some_and(|d| d.contains("sign in again")), "{e:?}");
        }
        other => panic!("expected invalid_grant, got {other:?}"),
    }
    assert_eq!(server.audit("refresh_token_reused").len(), 1);
    server.me(&access).await.assert_error(401, "UNAUTHORIZED");
    let reply =
        post_form(&server, "/oauth/token", &[("grant_type", "refresh_token"), ("refresh_token", &refresh)]).await;
    assert_oauth_error(&reply, 400, "invalid_grant");
}

#[tokio::test]
async fn every_token_endpoint_error_is_an_rfc_6749_error() {
    let server = TestServer::start().await;
    let tokens = server.user(&unique_email()).await;
    let token_path = "/oauth/token";

    assert_oauth_error(&post_form(&server, token_path, &[]).await, 400, "invalid_request");
    assert_oauth_error(
        &post_form(&server, token_path, &[("grant_type", "refresh_token")]).await,
        400,
        "invalid_request",
    );
    for grant in
        ["password", "client_credentials", "authorization_code", "urn:ietf:params:oauth:grant-type:device_code"]
    {
        let reply = post_form(&server, token_path, &[("grant_type", grant), ("refresh_token", &tokens.refresh)]).await;
        assert_oauth_error(&reply, 400, "unsupported_grant_type");
    }
    for bad in ["garbage", &"A".repeat(76), &tokens.access] {
        let reply = post_form(&server, token_path, &[("grant_type", "refresh_token"), ("refresh_token", bad)]).await;
        assert_oauth_error(&reply, 400, "invalid_grant");
    }
    let repeated = read(
        http_client()
            .post(server.url(token_path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("grant_type=refresh_token&refresh_token={0}&refresh_token={0}", tokens.refresh))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_oauth_error(&repeated, 400, "invalid_request");
    let json = server
        .send(Method::POST, token_path, None, Some(serde_json::json!({"grant_type": "refresh_token"})), &[])
        .await;
    assert_oauth_error(&json, 400, "invalid_request");
    let huge = "x".repeat(20_000);
    let reply = post_form(&server, token_path, &[("grant_type", "refresh_token"), ("refresh_token", &huge)]).await;
    assert_eq!(reply.status, 413);
    let get = server.send(Method::GET, token_path, None, None, &[]).await;
    assert_eq!(get.status, 405);
    assert!(get.body.get("success").is_none());

    // A revoked (logged-out) session's token, and a client_id that is tolerated.
    server.send(Method::POST, "/api/auth/logout", Some(&tokens.access), None, &[]).await.data();
    let form = [("grant_type", "refresh_token"), ("refresh_token", tokens.refresh.as_str()), ("client_id", "web")];
    assert_oauth_error(&post_form(&server, token_path, &form).await, 400, "invalid_grant");

    let other = server.user(&unique_email()).await;
    let form = [("grant_type", "refresh_token"), ("refresh_token", other.refresh.as_str()), ("client_id", "web")];
    let ok = post_form(&server, token_path, &form).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.header("cache-control"), Some("no-store"));
    assert_eq!(ok.body["token_type"], "Bearer");
    assert!(ok.body["access_token"].is_string() && ok.body["refresh_token"].is_string());
}

#[tokio::test]
async fn an_expired_refresh_token_is_invalid_grant() {
    let server = TestServer::start_with(&["--refresh-ttl", "1s"]).await;
    let tokens = server.user(&unique_email()).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let reply =
        post_form(&server, "/oauth/token", &[("grant_type", "refresh_token"), ("refresh_token", &tokens.refresh)])
            .await;
    assert_oauth_error(&reply, 400, "invalid_grant");
}

#[tokio::test]
async fn revocation_ends_the_session_of_a_refresh_or_access_token_and_answers_200_for_anything() {
    let server = TestServer::start().await;
    let email = unique_email();
    let by_refresh = server.user(&email).await;
    let by_access = server.login(&email).await;
    let bystander = server.login(&email).await;

    let reply =
        post_form(&server, "/oauth/revoke", &[("token", &by_refresh.refresh), ("token_type_hint", "refresh_token")])
            .await;
    reply.assert_status(200);
    server.refresh(&by_refresh.refresh).await.assert_error(401, "INVALID_TOKEN");
    server.me(&by_refresh.access).await.assert_error(401, "UNAUTHORIZED");

    let reply = post_form(&server, "/oauth/revoke", &[("token", &by_access.access)]).await;
    reply.assert_status(200);
    server.me(&by_access.access).await.assert_error(401, "UNAUTHORIZED");
    server.refresh(&by_access.refresh).await.assert_error(401, "INVALID_TOKEN");

    for junk in ["garbage", &"A".repeat(76), &by_refresh.refresh] {
        post_form(&server, "/oauth/revoke", &[("token", junk), ("token_type_hint", "access_token")])
            .await
            .assert_status(200);
    }
    server.me(&bystander.access).await.data();
    assert_oauth_error(&post_form(&server, "/oauth/revoke", &[]).await, 400, "invalid_request");
}

/// `tessera clients …` against this server's database.
fn clients_cli(server: &TestServer, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .arg("clients")
        .args(args)
        .args(server.database_args())
        .output()
        .unwrap()
}

/// Registers a client; its id and secret.
pub fn add_client(server: &TestServer, name: &str) -> (String, String) {
    let out = clients_cli(server, &["add", name, "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    (v["client_id"].as_str().unwrap().to_owned(), v["client_secret"].as_str().unwrap().to_owned())
}

async fn introspect(server: &TestServer, client: Option<(&str, &str)>, token: &str) -> Reply {
    let mut request = http_client().post(server.url("/oauth/introspect")).form(&[("token", token)]);
    if let Some((id, secret)) = client {
        request = request.basic_auth(id, Some(secret));
    }
    read(request.send().await.unwrap()).await
}

#[tokio::test]
async fn clients_are_added_listed_and_removed_from_the_command_line() {
    let server = TestServer::start().await;
    let (id, secret) = add_client(&server, "billing");
    assert!(id.starts_with("tc_") && secret.len() >= 43, "{id} {secret}");
    let listed = clients_cli(&server, &["list", "--json"]);
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed[0]["client_id"], id.as_str());
    assert_eq!(listed[0]["name"], "billing");
    assert!(!String::from_utf8_lossy(&clients_cli(&server, &["list"]).stdout).contains(&secret), "never shown again");
    assert!(!clients_cli(&server, &["add", "billing"]).status.success(), "names are unique");
    assert!(!clients_cli(&server, &["add", "bad name!"]).status.success());

    let live = server.user(&unique_email()).await;
    assert_eq!(introspect(&server, Some((&id, &secret)), &live.access).await.body["active"], true);
    assert!(clients_cli(&server, &["remove", "billing"]).status.success());
    assert_eq!(introspect(&server, Some((&id, &secret)), &live.access).await.status, 401, "a removed client");
    assert!(!clients_cli(&server, &["remove", "billing"]).status.success());
}

#[tokio::test]
async fn introspection_needs_a_registered_client() {
    let server = TestServer::start().await;
    let (id, secret) = add_client(&server, "reports");
    let token = server.user(&unique_email()).await.access;
    for client in [None, Some((id.as_str(), "wrong")), Some(("tc_unknown", secret.as_str())), Some(("", ""))] {
        let reply = introspect(&server, client, &token).await;
        assert_oauth_error(&reply, 401, "invalid_client");
        assert!(reply.header("www-authenticate").is_some_and(|c| c.starts_with("Basic")));
    }
    let bearer = read(
        http_client()
            .post(server.url("/oauth/introspect"))
            .bearer_auth(&token)
            .form(&[("token", &token)])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_oauth_error(&bearer, 401, "invalid_client");
}

#[tokio::test]
async fn introspection_describes_live_tokens_and_nothing_else() {
    let server = TestServer::start().await;
    let (id, secret) = add_client(&server, "reports");
    let client = Some((id.as_str(), secret.as_str()));
    let email = unique_email();
    let tokens = server.user(&email).await;

    let live = introspect(&server, client, &tokens.access).await;
    live.assert_status(200);
    assert_eq!(live.header("cache-control"), Some("no-store"));
    let (_, claims) = jwt_parts(&tokens.access);
    for field in ["sub", "sid", "exp", "iat", "iss", "aud"] {
        assert_eq!(live.body[field], claims[field], "{field}: {}", live.body);
    }
    assert_eq!((live.body["active"].as_bool(), live.body["token_type"].as_str()), (Some(true), Some("Bearer")));

    // A refresh token can be looked at without being used up.
    let refresh = introspect(&server, client, &tokens.refresh).await;
    assert_eq!((refresh.body["active"].as_bool(), refresh.body["sid"].clone()), (Some(true), claims["sid"].clone()));
    assert_eq!(refresh.body["token_type"], "refresh_token");
    let rotated = tokens_of(&server.refresh(&tokens.refresh).await);
    assert_eq!(
        introspect(&server, client, &tokens.refresh).await.body,
        serde_json::json!({"active": false}),
        "rotated"
    );
    assert_eq!(introspect(&server, client, &rotated.refresh).await.body["active"], true);

    let mut forged = tokens.access.clone();
    forged.pop();
    forged.push(if tokens.access.ends_with('A') { 'B' } else { 'A' });
    for dead in [forged.as_str(), "garbage", &"A".repeat(76)] {
        assert_eq!(introspect(&server, client, dead).await.body, serde_json::json!({"active": false}), "{dead}");
    }
    server.send(Method::POST, "/api/auth/logout", Some(&rotated.access), None, &[]).await.data();
    for ended in [&rotated.access, &rotated.refresh, &tokens.access] {
        assert_eq!(introspect(&server, client, ended).await.body, serde_json::json!({"active": false}));
    }

    let short = TestServer::start_with(&["--access-ttl", "1s"]).await;
    let (id, secret) = add_client(&short, "reports");
    let expiring = short.user(&unique_email()).await.access;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let expired = introspect(&short, Some((&id, &secret)), &expiring).await;
    assert_eq!(expired.body, serde_json::json!({"active": false}));
}

#[tokio::test]
async fn introspection_names_the_username_as_username_and_the_email_as_email() {
    let server = TestServer::start().await;
    let (id, secret) = add_client(&server, "directory");
    let client = Some((id.as_str(), secret.as_str()));
    let sign_up = async |names: Value, login: Value| {
        let mut body = names;
        body["password"] = Value::from(PASSWORD);
        let reply = server.post("/api/auth/register", body).await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        let mut login = login;
        login["password"] = Value::from(PASSWORD);
        tokens_of(&server.post("/api/auth/login", login).await).access
    };
    let email = unique_email();
    let by_email = serde_json::json!({ "email": email });
    let email_only = sign_up(by_email.clone(), by_email).await;
    let by_name = serde_json::json!({"username": "grace_h"});
    let username_only = sign_up(by_name.clone(), by_name).await;
    let both = serde_json::json!({"email": format!("ada-{email}"), "username": "Ada_L"});
    let both = sign_up(both, serde_json::json!({"username": "ada_l"})).await;

    let found = introspect(&server, client, &email_only).await.body;
    assert_eq!((found["active"].clone(), found["email"].clone()), (Value::from(true), Value::from(email.as_str())));
    assert!(found.get("username").is_none(), "an email is not a username: {found}");
    let found = introspect(&server, client, &username_only).await.body;
    assert_eq!(found["username"], "grace_h");
    assert!(found.get("email").is_none(), "{found}");
    let found = introspect(&server, client, &both).await.body;
    assert_eq!(found["username"], "Ada_L");
    assert_eq!(found["email"], format!("ada-{email}"));
}

#[tokio::test]
async fn failed_client_authentications_are_counted_in_metrics() {
    let server = TestServer::start().await;
    let (id, _) = add_client(&server, "counted");
    let token = server.user(&unique_email()).await.access;
    for _ in 0..2 {
        assert_oauth_error(&introspect(&server, Some((&id, "wrong")), &token).await, 401, "invalid_client");
    }
    let text = http_client().get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        text.lines().any(|l| l == "tessera_audit_events_total{event=\"client_authentication_failed\"} 2"),
        "{text}"
    );
    for event in tessera_core::audit::AuditEvent::ALL {
        let prefix = format!("tessera_audit_events_total{{event=\"{}\"}} ", event.as_str());
        assert!(text.lines().any(|l| l.starts_with(&prefix)), "{event:?} is not exported:\n{text}");
    }
}

#[tokio::test]
async fn failed_client_authentications_are_throttled_per_client() {
    let server = TestServer::start_with(&["--login-failure-limit", "3/15min"]).await;
    let (id, secret) = add_client(&server, "guessed");
    let (other, other_secret) = add_client(&server, "other");
    let token = server.user(&unique_email()).await.access;
    assert_eq!(introspect(&server, Some((&id, &secret)), &token).await.body["active"], true, "a success is free");
    for _ in 0..3 {
        assert_oauth_error(&introspect(&server, Some((&id, "guess")), &token).await, 401, "invalid_client");
    }
    let limited = introspect(&server, Some((&id, "guess")), &token).await;
    assert_oauth_error(&limited, 429, "slow_down");
    assert!(
        limited.header("retry-after").and_then(|s| s.parse::<u64>().ok()).is_some_and(|s| s >= 1),
        "{:?}",
        limited.headers
    );
    assert_eq!(introspect(&server, Some((&id, &secret)), &token).await.status, 429, "the client's budget is spent");
    assert_eq!(introspect(&server, Some((&other, &other_secret)), &token).await.body["active"], true, "others are not");
}
