//! Resource servers: the real `tessera-todos` trusts the real `tessera serve` through
//! `tessera-verify`, and every way a session ends reaches it within a second.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::json;
use tokio_tungstenite::tungstenite;

use crate::helpers::*;
use crate::todos::*;

/// Polls the todo API until `token` is refused; returns how long that took.
async fn refused_within(todos: &TodoServer, token: &str, within: Duration) -> Duration {
    let start = Instant::now();
    assert!(
        eventually(within, async || todos.todos(token).await.status == 401).await,
        "the todo API still accepts the token after {within:?}"
    );
    start.elapsed()
}

fn assert_invalid_token(reply: &Reply, what: &str) {
    assert_eq!(reply.status, 401, "{what}: {}", reply.body);
    let challenge = reply.header("www-authenticate").unwrap_or_default();
    assert!(challenge.starts_with(r#"Bearer error="invalid_token""#), "{what}: {challenge}");
}

async fn logout(server: &TestServer, access: &str) {
    server.send(Method::POST, "/api/auth/logout", Some(access), None, &[]).await.data();
}

#[tokio::test]
async fn the_lesson_flow_reaches_the_todo_api() {
    let server = TestServer::start().await;
    let todos = TodoServer::start(&server, &[]).await;
    let tokens = server.user(&unique_email()).await;

    let added = todos.add(&tokens.access, "buy milk").await;
    assert_eq!(added.status, 201);
    let listed = todos.todos(&tokens.access).await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.body[0]["title"], "buy milk");
    // RFC 3339 in UTC, as every tessera API answers times.
    let created = added.body["created_at"].as_str().unwrap_or_else(|| panic!("{}", added.body));
    let b = created.as_bytes();
    assert!(b.len() >= 20 && b[4] == b'-' && b[10] == b'T' && created.ends_with('Z'), "{created}");
    assert_eq!(listed.body[0]["created_at"], created);

    let rotated = tokens_of(&server.refresh(&tokens.refresh).await);
    assert_eq!(todos.todos(&rotated.access).await.body[0]["title"], "buy milk");

    logout(&server, &rotated.access).await;
    let took = refused_within(&todos, &rotated.access, Duration::from_secs(1)).await;
    assert_invalid_token(&todos.todos(&rotated.access).await, "after logout");
    assert_invalid_token(&todos.todos(&tokens.access).await, "the older token of the session");
    server.refresh(&rotated.refresh).await.assert_error(401, "INVALID_TOKEN");
    eprintln!("logout reached the todo API in {took:?}");
}

#[tokio::test]
async fn each_user_sees_only_their_own_todos_and_no_token_gets_a_bare_challenge() {
    let server = TestServer::start().await;
    let todos = TodoServer::start(&server, &[]).await;
    let (ada, bob) = (server.user(&unique_email()).await, server.user(&unique_email()).await);
    todos.add(&ada.access, "ada's").await;
    assert_eq!(todos.todos(&bob.access).await.body, json!([]));
    assert_eq!(todos.add(&bob.access, "").await.status, 400);

    let anonymous = todos.send(Method::GET, "/todos", None, None).await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.header("www-authenticate"), Some("Bearer"), "RFC 6750 §3.1: no error code without a token");
}

#[tokio::test]
async fn revoking_a_session_and_reuse_detection_reach_the_todo_api() {
    let server = TestServer::start().await;
    let todos = TodoServer::start(&server, &[]).await;
    let email = unique_email();
    let laptop = server.user(&email).await;
    let phone = server.login(&email).await;
    assert_eq!(todos.todos(&phone.access).await.status, 200);

    let sessions = server.get("/api/auth/sessions", &laptop.access).await;
    let phone_sid = jwt_parts(&phone.access).1["sid"].as_str().unwrap().to_owned();
    assert!(sessions.data()["sessions"].as_array().unwrap().iter().any(|s| s["id"] == phone_sid.as_str()));
    server
        .send(Method::DELETE, &format!("/api/auth/sessions/{phone_sid}"), Some(&laptop.access), None, &[])
        .await
        .data();
    refused_within(&todos, &phone.access, Duration::from_secs(1)).await;
    assert_eq!(todos.todos(&laptop.access).await.status, 200, "the other session lives on");

    // A thief replays the laptop's refresh token after the laptop rotated it.
    let rotated = tokens_of(&server.refresh(&laptop.refresh).await);
    server.refresh(&laptop.refresh).await.assert_error(401, "INVALID_TOKEN");
    refused_within(&todos, &rotated.access, Duration::from_secs(1)).await;
}

#[tokio::test]
async fn tokens_of_a_rotated_in_key_and_of_the_old_key_are_both_accepted() {
    let server = TestServer::start().await;
    let todos = TodoServer::start(&server, &[]).await;
    let email = unique_email();
    let old = server.user(&email).await;
    let rotate = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["keys", "rotate", "--activate-in", "0s", "--data-dir"])
        .arg(server.data_dir.path())
        .output()
        .unwrap();
    assert!(rotate.status.success(), "{}", String::from_utf8_lossy(&rotate.stderr));
    let old_kid = jwt_parts(&old.access).0["kid"].clone();
    let mut new = server.login(&email).await;
    assert!(
        eventually(Duration::from_secs(3), async || {
            new = server.login(&email).await;
            jwt_parts(&new.access).0["kid"] != old_kid
        })
        .await,
        "the server signs with the new key"
    );
    assert_eq!(todos.todos(&new.access).await.status, 200, "a token of the new key (one JWKS refetch)");
    assert_eq!(todos.todos(&old.access).await.status, 200, "a token of the old key");
}

#[tokio::test]
async fn forged_and_foreign_tokens_are_refused_with_a_challenge() {
    let server = TestServer::start().await;
    let todos = TodoServer::start(&server, &[]).await;
    let good = server.user(&unique_email()).await.access;
    let (header, payload) = jwt_parts(&good);
    let payload_b64 = good.split('.').nth(1).unwrap();
    let kid = header["kid"].as_str().unwrap();

    let none_header = URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT", "kid": kid}).to_string());
    let alg_none = format!("{none_header}.{payload_b64}.");
    assert_invalid_token(&todos.todos(&alg_none).await, "alg none");

    // HS256 keyed with the public key, in every spelling an attacker might try.
    let jwks = server.send(Method::GET, "/.well-known/jwks.json", None, None, &[]).await.body;
    let jwk = jwks["keys"][0].clone();
    let mut raw_point = URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap();
    raw_point.extend(URL_SAFE_NO_PAD.decode(jwk["y"].as_str().unwrap()).unwrap());
    for secret in [jwk.to_string().into_bytes(), raw_point] {
        let mut hs = Header::new(Algorithm::HS256);
        hs.kid = Some(kid.to_owned());
        let forged = jsonwebtoken::encode(&hs, &payload, &EncodingKey::from_secret(&secret)).unwrap();
        assert_invalid_token(&todos.todos(&forged).await, "HS256 with the public key");
    }

    // A tessera with its own keys that claims to be this issuer.
    let impostor = TestServer::start_with(&["--issuer", &server.base]).await;
    let foreign = impostor.user(&unique_email()).await.access;
    assert_invalid_token(&todos.todos(&foreign).await, "another instance's key");

    let mut tampered = payload.clone();
    tampered["sub"] = json!("00000000-0000-4000-8000-000000000000");
    let tampered = format!(
        "{}.{}.{}",
        good.split('.').next().unwrap(),
        URL_SAFE_NO_PAD.encode(tampered.to_string()),
        good.split('.').nth(2).unwrap()
    );
    assert_invalid_token(&todos.todos(&tampered).await, "tampered payload");

    for garbage in ["garbage", "a.b.c", "eyJ.eyJ.sig", &"A".repeat(10_000)] {
        assert_invalid_token(&todos.todos(garbage).await, garbage);
    }

    let billing = TodoServer::start(&server, &["--audience", "billing"]).await;
    assert_invalid_token(&billing.todos(&good).await, "the wrong audience");

    let short = TestServer::start_with(&["--access-ttl", "1s"]).await;
    let short_todos = TodoServer::start(&short, &[]).await;
    let expiring = short.user(&unique_email()).await.access;
    let exp = jwt_parts(&expiring).1["exp"].as_i64().unwrap();
    while tessera_core::Timestamp::now().as_millis() < exp * 1000 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let expired = short_todos.todos(&expiring).await;
    assert_invalid_token(&expired, "expired");
    assert!(expired.header("www-authenticate").unwrap().contains("expired"));

    assert_eq!(todos.metric("tessera_verify_jwks_fetches_total").await, 2.0, "start-up, then one refetch");
}

#[tokio::test]
async fn two_authorization_headers_are_refused() {
    let server = TestServer::start().await;
    let todos = TodoServer::start(&server, &[]).await;
    let token = server.user(&unique_email()).await.access;
    let reply = read(
        http_client()
            .get(format!("{}/todos", todos.base))
            .header("authorization", format!("Bearer {token}"))
            .header("authorization", "Bearer other")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 400, "{}", reply.body);
}

#[tokio::test]
async fn the_verifier_reconnects_after_tessera_restarts() {
    let server = TestServer::start().await;
    let todos = TodoServer::start(&server, &[]).await;
    let email = unique_email();
    let before = server.user(&email).await;
    let server = server.restart(false).await;
    assert_eq!(todos.todos(&before.access).await.status, 200, "tokens survive the restart");
    // Give the feed time to reconnect, then end a session after the restart.
    let tokens = server.login(&email).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    logout(&server, &tokens.access).await;
    refused_within(&todos, &tokens.access, Duration::from_secs(1)).await;
    assert!(todos.metric("tessera_verify_feed_reconnects_total").await >= 1.0);
}

/// While tessera is down the verifier keeps trying about once a second, so an end made right
/// after tessera is back reaches it at once, not after a backoff grown long during the outage.
#[tokio::test]
async fn a_logout_right_after_tessera_restarts_reaches_the_verifier_within_a_second_and_a_half() {
    let server = TestServer::start().await;
    let todos = TodoServer::start(&server, &[]).await;
    let email = unique_email();
    server.register(&email).await;
    let server = server.restart_after(false, Duration::from_secs(8)).await;
    let tokens = server.login(&email).await;
    logout(&server, &tokens.access).await;
    let took = refused_within(&todos, &tokens.access, Duration::from_millis(1500)).await;
    eprintln!("a logout right after tessera's restart reached the todo API in {took:?}");
}

#[tokio::test]
async fn a_logout_on_one_instance_reaches_a_todo_api_fed_by_another() {
    let mut args: Vec<String> = vec!["--issuer".into(), "https://auth.test".into()];
    args.extend(postgres_args().await);
    args.extend(redis_args());
    let a = TestServer::start_raw(args).await;
    let b = a.sibling().await;
    let todos = TodoServer::start_raw(&["--issuer", "https://auth.test", "--tessera-url", &b.base], &[]).await;
    let tokens = a.user(&unique_email()).await;
    assert_eq!(todos.todos(&tokens.access).await.status, 200);
    logout(&a, &tokens.access).await;
    let took = refused_within(&todos, &tokens.access, Duration::from_millis(1500)).await;
    eprintln!("a logout on A reached the todo API fed by B in {took:?}");
}

#[tokio::test]
async fn a_silent_feed_fails_closed_by_default() {
    let mut server = TestServer::start().await;
    let todos = TodoServer::start(&server, &["--max-feed-silence", "1s"]).await;
    let tokens = server.user(&unique_email()).await;
    assert_eq!(todos.todos(&tokens.access).await.status, 200);
    server.stop(true);
    assert!(
        eventually(Duration::from_secs(5), async || todos.todos(&tokens.access).await.status == 503).await,
        "with tessera gone past the bound, tokens are refused"
    );
    let reply = todos.todos(&tokens.access).await;
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert_eq!(todos.metric("tessera_verify_feed_stale").await, 1.0);
}

#[tokio::test]
async fn a_silent_feed_can_fail_open_and_says_so() {
    let mut server = TestServer::start().await;
    let todos = TodoServer::start(&server, &["--max-feed-silence", "1s", "--on-feed-loss", "fail-open"]).await;
    let tokens = server.user(&unique_email()).await;
    server.stop(true);
    assert!(
        eventually(Duration::from_secs(5), async || todos.metric("tessera_verify_feed_stale").await == 1.0).await,
        "the metric says the feed is stale"
    );
    assert_eq!(todos.todos(&tokens.access).await.status, 200, "still serving");
    assert!(
        eventually(Duration::from_secs(2), async || todos.logs().contains("fail-open")).await,
        "and the log says why: {}",
        todos.logs()
    );
}

#[tokio::test]
async fn the_socket_needs_a_valid_token_at_the_handshake_and_pushes_the_callers_todos() {
    let server = TestServer::start().await;
    let todos = TodoServer::start(&server, &[]).await;
    let (ada, bob) = (server.user(&unique_email()).await, server.user(&unique_email()).await);

    for token in [None, Some("garbage")] {
        let refused = match token {
            None => tokio_tungstenite::connect_async(format!("{}/todos/ws", todos.base.replace("http", "ws"))).await,
            Some(t) => todos.socket(t).await.map(|s| (s, Default::default())),
        };
        match refused {
            Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 401),
            other => panic!("the handshake must be refused, got {:?}", other.map(|_| ())),
        }
    }

    let (mut socket, protocol) = todos.browser_socket(&ada.access).await.expect("the browser way");
    assert_eq!(protocol.as_deref(), Some("tessera"), "the server selects the protocol that is not the token");
    assert_eq!(next_json(&mut socket).await["type"], "todos");
    todos.add(&bob.access, "bob's").await;
    todos.add(&ada.access, "ada's").await;
    let pushed = next_json(&mut socket).await;
    assert_eq!((pushed["type"].as_str(), pushed["todo"]["title"].as_str()), (Some("todo_added"), Some("ada's")));
}

#[tokio::test]
async fn the_socket_closes_within_a_second_of_logout() {
    let server = TestServer::start().await;
    let todos = TodoServer::start(&server, &[]).await;
    let tokens = server.user(&unique_email()).await;
    let mut socket = todos.socket(&tokens.access).await.unwrap();
    next_json(&mut socket).await;
    logout(&server, &tokens.access).await;
    let start = Instant::now();
    let end = until_closed(&mut socket, Duration::from_secs(3)).await;
    assert_eq!(end.close, Some((4001, "session ended".into())));
    assert!(start.elapsed() < Duration::from_secs(1), "closed after {:?}", start.elapsed());
}

#[tokio::test]
async fn the_socket_closes_when_its_token_expires_without_renewal() {
    let server = TestServer::start_with(&["--access-ttl", "2s"]).await;
    let todos = TodoServer::start(&server, &[]).await;
    let tokens = server.user(&unique_email()).await;
    let mut socket = todos.socket(&tokens.access).await.unwrap();
    let end = until_closed(&mut socket, Duration::from_secs(5)).await;
    assert_eq!(end.close, Some((4002, "token expired".into())));
}

#[tokio::test]
async fn the_socket_stays_open_past_expiry_with_in_band_renewal() {
    // `exp` is in whole seconds, so a 4 s token may have just over 3 s left when minted: renewed
    // every 1.5 s, each token has well over a second to spare even on a loaded machine.
    let server = TestServer::start_with(&["--access-ttl", "4s"]).await;
    let todos = TodoServer::start(&server, &[]).await;
    let mut tokens = server.user(&unique_email()).await;
    let mut socket = todos.socket(&tokens.access).await.unwrap();
    next_json(&mut socket).await;
    for _ in 0..4 {
        let end = until_closed(&mut socket, Duration::from_millis(1500)).await;
        assert_eq!(end.close, None, "open while renewed");
        tokens = tokens_of(&server.refresh(&tokens.refresh).await);
        send_token(&mut socket, &tokens.access).await;
        assert_eq!(next_json(&mut socket).await["type"], "token_accepted");
    }
    logout(&server, &tokens.access).await;
    let end = until_closed(&mut socket, Duration::from_secs(3)).await;
    assert_eq!(end.close.map(|c| c.0), Some(4001), "the renewed session's end closes it");
}

#[tokio::test]
async fn a_renewal_with_another_users_token_closes_the_socket() {
    let server = TestServer::start().await;
    let todos = TodoServer::start(&server, &[]).await;
    let (ada, bob) = (server.user(&unique_email()).await, server.user(&unique_email()).await);
    let mut socket = todos.socket(&ada.access).await.unwrap();
    next_json(&mut socket).await;
    send_token(&mut socket, &bob.access).await;
    let end = until_closed(&mut socket, Duration::from_secs(3)).await;
    assert_eq!(end.close.map(|c| c.0), Some(4003));
}

#[tokio::test]
async fn the_client_library_keeps_a_socket_fed_and_stops_when_the_session_ends() {
    use tessera_client::{Client, Error, MemoryStore};

    let server = TestServer::start_with(&["--access-ttl", "4s"]).await;
    let todos = TodoServer::start(&server, &[]).await;
    let email = unique_email();
    server.register(&email).await;
    let client = Client::new(&server.base, MemoryStore::new()).unwrap();
    client.login(&email, PASSWORD).await.unwrap();

    let mut token = client.socket_token().await.unwrap();
    let mut socket = todos.socket(&token.token).await.unwrap();
    next_json(&mut socket).await;
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        let end = until_closed(&mut socket, token.renew_in()).await;
        assert_eq!(end.close, None, "the socket is renewed before its token expires");
        token = client.renew_socket_token(&token).await.unwrap();
        send_token(&mut socket, &token.token).await;
        assert_eq!(next_json(&mut socket).await["type"], "token_accepted");
    }

    logout(&server, &token.token).await;
    assert_eq!(until_closed(&mut socket, Duration::from_secs(3)).await.close.map(|c| c.0), Some(4001));
    // The reconnect: the stored token is refused at the handshake, and renewing it says the
    // session ended rather than handing out anything else.
    let again = client.socket_token().await.unwrap();
    assert!(matches!(todos.socket(&again.token).await, Err(tungstenite::Error::Http(r)) if r.status() == 401));
    assert!(matches!(client.renew_socket_token(&again).await, Err(Error::SessionExpired)));
    assert!(matches!(client.socket_token().await, Err(Error::NotLoggedIn)), "no silent fallback to anything");
}
