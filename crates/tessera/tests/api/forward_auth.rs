//! Forward-auth (`GET /api/auth/verify`): what nginx's `auth_request`, Traefik's `ForwardAuth`
//! and Caddy's `forward_auth` ask about each request.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::*;

fn header<'r>(reply: &'r Reply, name: &str) -> Option<&'r str> {
    reply.headers.get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn a_live_session_is_answered_with_its_caller_in_headers() {
    let server = TestServer::start().await;
    let email = unique_email();
    let reply = server
        .post("/api/auth/register", json!({"email": email, "username": "forward_ada", "password": PASSWORD}))
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let tokens = server.login(&email).await;
    let claims = jwt_parts(&tokens.access).1;

    let reply = server.get("/api/auth/verify", &tokens.access).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(header(&reply, "x-tessera-user-id"), claims["sub"].as_str());
    assert_eq!(header(&reply, "x-tessera-session-id"), claims["sid"].as_str());
    assert_eq!(header(&reply, "x-tessera-email"), Some(email.as_str()));
    assert_eq!(header(&reply, "x-tessera-username"), Some("forward_ada"));
    assert_eq!(header(&reply, "x-tessera-anonymous"), Some("false"));
    assert_eq!(reply.data()["session_id"], claims["sid"]);

    let head = server.send(Method::HEAD, "/api/auth/verify", Some(&tokens.access), None, &[]).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(header(&head, "x-tessera-user-id"), claims["sub"].as_str());
}

#[tokio::test]
async fn a_guest_is_anonymous_without_email_or_username() {
    let server = TestServer::start_with(&["--allow-anonymous"]).await;
    let guest = tokens_of(&server.post("/api/auth/anonymous", json!({})).await);
    let reply = server.get("/api/auth/verify", &guest.access).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(header(&reply, "x-tessera-anonymous"), Some("true"));
    assert_eq!(header(&reply, "x-tessera-email"), None);
    assert_eq!(header(&reply, "x-tessera-username"), None);
}

#[tokio::test]
async fn no_token_a_bad_one_or_an_ended_session_is_refused_with_a_challenge() {
    let server = TestServer::start().await;
    let tokens = server.user(&unique_email()).await;
    let none = server.send(Method::GET, "/api/auth/verify", None, None, &[]).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert!(header(&none, "www-authenticate").is_some_and(|v| v.starts_with("Bearer")), "{:?}", none.headers);
    assert_eq!(header(&none, "x-tessera-user-id"), None);

    let forged = format!("{}x", tokens.access);
    assert_eq!(server.get("/api/auth/verify", &forged).await.status, StatusCode::UNAUTHORIZED);

    let logout = server.send(Method::POST, "/api/auth/logout", Some(&tokens.access), None, &[]).await;
    assert_eq!(logout.status, StatusCode::OK, "{}", logout.body);
    let ended = server.get("/api/auth/verify", &tokens.access).await;
    assert_eq!(ended.status, StatusCode::UNAUTHORIZED);
    assert!(header(&ended, "www-authenticate").is_some_and(|v| v.contains("invalid_token")));
    assert_eq!(header(&ended, "x-tessera-user-id"), None);
}
