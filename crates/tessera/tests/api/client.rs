//! The Rust client library against a real server.

use std::time::Duration;

use tessera_client::{Client, Error, MemoryStore, TokenSet, unix_now};

use crate::helpers::*;

async fn logged_in(server: &TestServer) -> (Client, String) {
    let email = unique_email();
    server.register(&email).await;
    let client = Client::new(&server.base, MemoryStore::new()).unwrap();
    client.login(&email, PASSWORD).await.unwrap();
    (client, email)
}

#[tokio::test]
async fn fifty_concurrent_requests_after_expiry_cause_exactly_one_refresh() {
    let server = TestServer::start_with(&["--access-ttl", "3s"]).await;
    let (client, email) = logged_in(&server).await;
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let client = client.clone();
        requests.spawn(async move { client.me().await });
    }
    for me in requests.join_all().await {
        assert_eq!(me.expect("every request succeeds").email, Some(email.clone()));
    }
    assert_eq!(server.audit("token_refreshed").len(), 1);
    assert!(server.audit("refresh_token_reused").is_empty());
}

#[tokio::test]
async fn a_401_is_refreshed_once_and_retried_once() {
    let server = TestServer::start().await;
    let (client, email) = logged_in(&server).await;
    // Tokens that look fresh but whose access token the server refuses.
    let mut tokens = client.tokens().unwrap().unwrap();
    tokens.access_token = "not-a-valid-token".into();
    tokens.expires_at = unix_now() + 600;
    let client = Client::new(&server.base, MemoryStore::with(tokens)).unwrap();
    assert_eq!(client.me().await.unwrap().email, Some(email.clone()));
    assert_eq!(server.audit("token_refreshed").len(), 1);
}

#[tokio::test]
async fn an_ended_session_is_session_expired_and_forgotten() {
    let server = TestServer::start().await;
    let (client, _) = logged_in(&server).await;
    let access = client.access_token().await.unwrap();
    server.send(reqwest::Method::POST, "/api/auth/logout", Some(&access), None, &[]).await.data();
    assert!(matches!(client.me().await, Err(Error::SessionExpired)));
    assert!(client.tokens().unwrap().is_none(), "no silent continuation");
    assert!(matches!(client.me().await, Err(Error::NotLoggedIn)));
}

#[tokio::test]
async fn tokens_are_refreshed_before_they_expire() {
    let server = TestServer::start_with(&["--access-ttl", "10s"]).await;
    let (client, _) = logged_in(&server).await;
    let first: TokenSet = client.tokens().unwrap().unwrap();
    // A 10 s token is due at 80 %, i.e. 2 s before expiry (whole seconds: between 8 and 9 s).
    tokio::time::sleep(Duration::from_millis(8500)).await;
    let token = client.access_token().await.unwrap();
    assert_ne!(token, first.access_token);
    assert!(unix_now() < first.expires_at, "refreshed before the old token expired");
    server.me(&token).await.data();
}

#[tokio::test]
async fn wrong_credentials_and_unreachable_servers_are_distinct_errors() {
    let server = TestServer::start().await;
    let email = unique_email();
    server.register(&email).await;
    let client = Client::new(&server.base, MemoryStore::new()).unwrap();
    assert!(matches!(client.login(&email, "wrong password").await, Err(Error::InvalidCredentials)));
    let nowhere = Client::new("http://127.0.0.1:9", MemoryStore::new()).unwrap();
    assert!(matches!(nowhere.login(&email, PASSWORD).await, Err(Error::Unreachable { .. })));
}
