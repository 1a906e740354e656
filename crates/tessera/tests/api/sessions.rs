//! Logout, logout-all, the session list and revoking one session.

use reqwest::Method;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn logout_rejects_the_refresh_and_access_tokens_at_once() {
    let server = TestServer::start().await;
    let email = unique_email();
    let tokens = server.user(&email).await;
    let other = server.login(&email).await;
    let reply = server.send(Method::POST, "/api/auth/logout", Some(&tokens.access), None, &[]).await;
    assert_eq!(reply.data()["logged_out"], true);
    server.me(&tokens.access).await.assert_error(401, "UNAUTHORIZED");
    server.refresh(&tokens.refresh).await.assert_error(401, "INVALID_TOKEN");
    assert!(server.audit("refresh_token_reused").is_empty(), "a dead session is not theft");
    server.me(&other.access).await.data();
    assert_eq!(server.audit("logged_out").len(), 1);
}

#[tokio::test]
async fn logout_needs_a_bearer_token() {
    let server = TestServer::start().await;
    let tokens = server.user(&unique_email()).await;
    let reply =
        server.send(Method::POST, "/api/auth/logout", None, Some(json!({"refresh_token": tokens.refresh})), &[]).await;
    reply.assert_error(401, "UNAUTHORIZED");
    server.refresh(&tokens.refresh).await.data();
}

#[tokio::test]
async fn logout_with_a_refresh_token_of_another_own_session_ends_both() {
    let server = TestServer::start().await;
    let email = unique_email();
    let a = server.user(&email).await;
    let b = server.login(&email).await;
    let stranger = server.user(&unique_email()).await;
    server
        .send(Method::POST, "/api/auth/logout", Some(&a.access), Some(json!({"refresh_token": b.refresh})), &[])
        .await
        .data();
    server.me(&b.access).await.assert_error(401, "UNAUTHORIZED");
    // Someone else's token in the body does nothing to their session.
    let c = server.login(&email).await;
    server
        .send(Method::POST, "/api/auth/logout", Some(&c.access), Some(json!({"refresh_token": stranger.refresh})), &[])
        .await
        .data();
    server.me(&stranger.access).await.data();
}

#[tokio::test]
async fn logout_all_ends_every_session_of_the_user_only() {
    let server = TestServer::start().await;
    let email = unique_email();
    let sessions: Vec<Tokens> = vec![server.user(&email).await, server.login(&email).await, server.login(&email).await];
    let stranger = server.user(&unique_email()).await;
    let reply = server.send(Method::POST, "/api/auth/logout-all", Some(&sessions[1].access), None, &[]).await;
    assert_eq!(reply.data()["sessions_ended"], 3);
    for s in &sessions {
        server.me(&s.access).await.assert_error(401, "UNAUTHORIZED");
        server.refresh(&s.refresh).await.assert_error(401, "INVALID_TOKEN");
    }
    server.me(&stranger.access).await.data();
}

#[tokio::test]
async fn the_session_list_shows_the_callers_active_sessions() {
    let server = TestServer::start().await;
    let email = unique_email();
    server.register(&email).await;
    let login = |ua: &'static str| {
        let server = &server;
        let email = email.clone();
        async move {
            let reply = server
                .send(
                    Method::POST,
                    "/api/auth/login",
                    None,
                    Some(json!({"email": email, "password": PASSWORD})),
                    &[("user-agent", ua)],
                )
                .await;
            tokens_of(&reply)
        }
    };
    let laptop = login("Laptop/1.0").await;
    let phone = login("Phone/2.0").await;
    let ended = login("Old/0.1").await;
    server.send(Method::POST, "/api/auth/logout", Some(&ended.access), None, &[]).await.data();
    server.user(&unique_email()).await;

    let list = server.get("/api/auth/sessions", &phone.access).await;
    let sessions = list.data()["sessions"].as_array().unwrap().clone();
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    assert_eq!(sessions[0]["user_agent"], "Laptop/1.0");
    assert_eq!(sessions[1]["user_agent"], "Phone/2.0");
    assert_eq!((sessions[0]["current"].as_bool(), sessions[1]["current"].as_bool()), (Some(false), Some(true)));
    for s in &sessions {
        assert_eq!(s["ip"], "127.0.0.1");
        for field in ["id", "created_at", "last_used_at", "expires_at"] {
            assert!(s[field].as_str().is_some_and(|v| !v.is_empty()), "{field} in {s}");
        }
    }
    assert_eq!(sessions[0]["id"], server.me(&laptop.access).await.data()["session_id"]);
}

#[tokio::test]
async fn revoking_a_session_ends_it_and_only_the_owner_may() {
    let server = TestServer::start().await;
    let email = unique_email();
    let laptop = server.user(&email).await;
    let phone = server.login(&email).await;
    let stranger = server.user(&unique_email()).await;
    let phone_sid = server.me(&phone.access).await.data()["session_id"].as_str().unwrap().to_owned();
    let path = format!("/api/auth/sessions/{phone_sid}");

    server.send(Method::DELETE, &path, Some(&stranger.access), None, &[]).await.assert_error(404, "NOT_FOUND");
    server.me(&phone.access).await.data();
    for bad in ["/api/auth/sessions/not-a-uuid", "/api/auth/sessions/00000000-0000-4000-8000-000000000000"] {
        server.send(Method::DELETE, bad, Some(&laptop.access), None, &[]).await.assert_error(404, "NOT_FOUND");
    }

    let reply = server.send(Method::DELETE, &path, Some(&laptop.access), None, &[]).await;
    assert_eq!(reply.data()["revoked"], true);
    server.me(&phone.access).await.assert_error(401, "UNAUTHORIZED");
    server.refresh(&phone.refresh).await.assert_error(401, "INVALID_TOKEN");
    server.me(&laptop.access).await.data();
    server.send(Method::DELETE, &path, Some(&laptop.access), None, &[]).await.assert_error(404, "NOT_FOUND");
    assert_eq!(server.audit("session_revoked").len(), 1);
}
