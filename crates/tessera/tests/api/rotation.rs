//! Refresh-token rotation (README, "Tokens and sessions"): strict by default, grace on request, reuse ends the session.

use std::time::Duration;

use crate::helpers::*;

#[tokio::test]
async fn refresh_rotates_and_the_presented_token_dies_at_once() {
    let server = TestServer::start().await;
    let first = server.user(&unique_email()).await;
    let reply = server.refresh(&first.refresh).await;
    let data = reply.data();
    assert_eq!(data["token_type"], "Bearer");
    assert_eq!(data["expires_in"], 900);
    assert!(data.get("user").is_none());
    let second = tokens_of(&reply);
    assert_ne!(second.refresh, first.refresh);
    server.me(&second.access).await.data();
    assert_eq!(
        server.me(&second.access).await.data()["session_id"],
        server.me(&first.access).await.data()["session_id"],
        "same session"
    );
    // Strict default: presenting the rotated token again, even at once, is reuse.
    server.refresh(&first.refresh).await.assert_error(401, "INVALID_TOKEN");
}

#[tokio::test]
async fn reused_refresh_token_ends_the_session() {
    let server = TestServer::start().await;
    let email = unique_email();
    let stolen = server.user(&email).await;
    let other_session = server.login(&email).await;
    let rotated = tokens_of(&server.refresh(&stolen.refresh).await);
    let session_id = server.me(&rotated.access).await.data()["session_id"].as_str().unwrap().to_owned();

    // The thief replays the old token.
    server.refresh(&stolen.refresh).await.assert_error(401, "INVALID_TOKEN");

    // The whole family is dead: the newest refresh token and every access token of the session.
    server.refresh(&rotated.refresh).await.assert_error(401, "INVALID_TOKEN");
    server.me(&rotated.access).await.assert_error(401, "UNAUTHORIZED");
    server.me(&stolen.access).await.assert_error(401, "UNAUTHORIZED");
    // Other sessions of the same user live on.
    server.me(&other_session.access).await.data();
    server.refresh(&other_session.refresh).await.data();

    let events = server.audit("refresh_token_reused");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["session_id"], session_id.as_str());
}

#[tokio::test]
async fn within_the_grace_window_the_predecessor_gets_the_same_successor_byte_for_byte() {
    let server = TestServer::start_with(&["--refresh-grace", "10s"]).await;
    let first = server.user(&unique_email()).await;
    let successor = tokens_of(&server.refresh(&first.refresh).await);
    for _ in 0..3 {
        let again = tokens_of(&server.refresh(&first.refresh).await);
        assert_eq!(again.refresh, successor.refresh);
        server.me(&again.access).await.data();
    }
    assert!(server.audit("refresh_token_reused").is_empty());
    // Once the successor is used, the predecessor is plain reuse again.
    let third = tokens_of(&server.refresh(&successor.refresh).await);
    server.refresh(&first.refresh).await.assert_error(401, "INVALID_TOKEN");
    server.refresh(&third.refresh).await.assert_error(401, "INVALID_TOKEN");
    assert_eq!(server.audit("refresh_token_reused").len(), 1);
}

#[tokio::test]
async fn after_the_grace_window_the_predecessor_is_reuse() {
    let server = TestServer::start_with(&["--refresh-grace", "1s"]).await;
    let first = server.user(&unique_email()).await;
    let successor = tokens_of(&server.refresh(&first.refresh).await);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    server.refresh(&first.refresh).await.assert_error(401, "INVALID_TOKEN");
    server.refresh(&successor.refresh).await.assert_error(401, "INVALID_TOKEN");
    assert_eq!(server.audit("refresh_token_reused").len(), 1);
}

/// Presents one token 32 times at once and returns the refresh tokens handed out.
async fn storm(server: &TestServer, token: &str) -> Vec<String> {
    let mut racers = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let client = server.client.clone();
        let url = server.url("/api/auth/refresh");
        let body = serde_json::json!({"refresh_token": token});
        racers.spawn(async move { read(client.post(url).json(&body).send().await.unwrap()).await });
    }
    let replies = racers.join_all().await;
    for r in &replies {
        assert!(r.status == 200 || r.status == 401, "{} {}", r.status, r.body);
    }
    replies
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.body["data"]["refresh_token"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn concurrent_refreshes_of_one_token_leave_at_most_one_live_token() {
    let server = TestServer::start().await;
    let tokens = server.user(&unique_email()).await;
    let issued = storm(&server, &tokens.refresh).await;
    assert!(issued.len() <= 1, "strict: at most one rotation wins, got {}", issued.len());
    let mut live = 0;
    for token in issued.iter().chain([&tokens.refresh]) {
        if server.refresh(token).await.status == 200 {
            live += 1;
        }
    }
    assert!(live <= 1, "{live} live refresh tokens in one session");
}

#[tokio::test]
async fn with_grace_concurrent_refreshes_all_get_the_one_successor() {
    let server = TestServer::start_with(&["--refresh-grace", "10s"]).await;
    let tokens = server.user(&unique_email()).await;
    let issued = storm(&server, &tokens.refresh).await;
    assert_eq!(issued.len(), 32, "every racer is served");
    assert!(issued.iter().all(|t| *t == issued[0]), "one successor, byte for byte");
    server.refresh(&issued[0]).await.data();
    assert!(server.audit("refresh_token_reused").is_empty());
}

#[tokio::test]
async fn rotation_renews_the_refresh_ttl_up_to_the_session_max_lifetime() {
    let server = TestServer::start_with(&["--refresh-ttl", "2s", "--session-max-lifetime", "5s"]).await;
    let mut tokens = server.user(&unique_email()).await;
    // Each rotation renews the 2 s lifetime: 1.5 s apart we outlive the first token's 2 s.
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        tokens = tokens_of(&server.refresh(&tokens.refresh).await);
    }
    // Past the absolute lifetime a recently renewed token still dies.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    tokens = tokens_of(&server.refresh(&tokens.refresh).await);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    server.refresh(&tokens.refresh).await.assert_error(401, "INVALID_TOKEN");
    assert!(server.audit("refresh_token_reused").is_empty(), "expiry is not theft");
}

#[tokio::test]
async fn an_unused_refresh_token_expires_after_its_ttl() {
    let server = TestServer::start_with(&["--refresh-ttl", "1s"]).await;
    let tokens = server.user(&unique_email()).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    server.refresh(&tokens.refresh).await.assert_error(401, "INVALID_TOKEN");
}
