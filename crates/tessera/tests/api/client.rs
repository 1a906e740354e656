//! The Rust client library against a real server.

use std::time::Duration;

use tessera_client::{Client, Error, ErrorCode, LoginName, MemoryStore, TokenSet, unix_now};

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

const GUESTS: &[&str] = &["--allow-anonymous"];
const NEW_PASSWORD: &str = "a brand new passphrase";

/// A name no other test uses, valid as a username.
fn unique_username() -> String {
    unique_email().split('@').next().unwrap().to_owned()
}

async fn guest(server: &TestServer) -> Client {
    let client = Client::new(&server.base, MemoryStore::new()).unwrap();
    let tokens = client.sign_in_anonymously().await.unwrap();
    assert!(tokens.is_anonymous && tokens.email.is_empty() && tokens.username.is_none(), "{tokens:?}");
    client
}

fn api_code<T: std::fmt::Debug>(result: Result<T, Error>) -> ErrorCode {
    match result {
        Err(Error::Api { code, .. }) => code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_guest_upgraded_in_place_keeps_its_user_id_and_session() {
    let server = TestServer::start_with(GUESTS).await;
    let client = Client::new(&server.base, MemoryStore::new()).unwrap();
    assert!(client.settings().await.unwrap().allow_anonymous);
    let as_guest = client.sign_in_anonymously().await.unwrap();
    assert!(as_guest.is_anonymous && as_guest.email.is_empty(), "{as_guest:?}");
    let before = client.me().await.unwrap();
    assert!(before.is_anonymous && before.email.is_none());

    let email = unique_email();
    let username = unique_username();
    let upgraded = client.upgrade(Some(&email), Some(&username), PASSWORD).await.unwrap();
    assert!(!upgraded.is_anonymous, "{upgraded:?}");
    assert_eq!((upgraded.email.as_str(), upgraded.username.as_deref()), (email.as_str(), Some(username.as_str())));
    assert_ne!(upgraded.refresh_token, as_guest.refresh_token, "the session's refresh token was rotated");
    assert_eq!(client.tokens().unwrap(), Some(upgraded), "the new pair is stored");
    let after = client.me().await.unwrap();
    assert_eq!((&after.id, &after.session_id), (&before.id, &before.session_id));
    assert!(!after.is_anonymous && after.email.as_deref() == Some(email.as_str()));
    // The stored (rotated) pair goes on refreshing: the upgrade did not leave a stale token behind.
    client.refresh().await.unwrap();
    assert_eq!(client.me().await.unwrap().session_id, before.session_id);
    assert!(server.audit("refresh_token_reused").is_empty());

    // The new names sign in.
    let other = Client::new(&server.base, MemoryStore::new()).unwrap();
    assert_eq!(other.login_with_username(&username, PASSWORD).await.unwrap().email, email);
    // A second upgrade is refused; the session goes on.
    assert_eq!(api_code(client.upgrade(Some(&unique_email()), None, PASSWORD).await), ErrorCode::AlreadyRegistered);
    client.me().await.unwrap();
}

#[tokio::test]
async fn an_upgrade_after_expiry_shares_the_refresh_with_concurrent_requests() {
    let server = TestServer::start_with(&["--allow-anonymous", "--access-ttl", "3s"]).await;
    let client = guest(&server).await;
    let id = client.me().await.unwrap().id;
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let client = client.clone();
        requests.spawn(async move { client.me().await.map(|me| me.id) });
    }
    let email = unique_email();
    client.upgrade(Some(&email), None, PASSWORD).await.unwrap();
    for me in requests.join_all().await {
        assert_eq!(me.expect("every request succeeds"), id);
    }
    assert!(server.audit("refresh_token_reused").is_empty(), "the upgrade and a refresh raced");
    let me = client.me().await.unwrap();
    assert_eq!((me.id, me.email), (id, Some(email)));
}

#[tokio::test]
async fn an_upgrade_to_a_taken_name_leaves_the_guest_session_working() {
    let server = TestServer::start_with(GUESTS).await;
    let taken = unique_email();
    server.register(&taken).await;
    let client = guest(&server).await;
    let before = client.tokens().unwrap();
    assert_eq!(api_code(client.upgrade(Some(&taken), None, PASSWORD).await), ErrorCode::EmailTaken);
    assert_eq!(client.tokens().unwrap(), before, "the tokens are kept");
    assert!(client.me().await.unwrap().is_anonymous);
    // The kept refresh token is still the session's current one.
    client.refresh().await.unwrap();
    let free = unique_email();
    assert!(!client.upgrade(Some(&free), None, PASSWORD).await.unwrap().is_anonymous);
    assert!(server.audit("refresh_token_reused").is_empty());
}

#[tokio::test]
async fn a_wrong_current_password_is_invalid_credentials_and_keeps_the_session() {
    let server = TestServer::start().await;
    let (client, _) = logged_in(&server).await;
    let before = client.tokens().unwrap();
    assert!(matches!(client.change_password("not the password", NEW_PASSWORD).await, Err(Error::InvalidCredentials)));
    assert_eq!(client.tokens().unwrap(), before, "neither refreshed nor forgotten");
    client.me().await.unwrap();
    assert!(server.audit("token_refreshed").is_empty());
}

#[tokio::test]
async fn a_password_change_ends_the_other_sessions_and_keeps_this_one() {
    let server = TestServer::start().await;
    let (client, email) = logged_in(&server).await;
    let elsewhere = Client::new(&server.base, MemoryStore::new()).unwrap();
    elsewhere.login(&email, PASSWORD).await.unwrap();
    assert_eq!(client.change_password(PASSWORD, NEW_PASSWORD).await.unwrap(), 1);
    assert!(matches!(elsewhere.me().await, Err(Error::SessionExpired)));
    assert!(elsewhere.tokens().unwrap().is_none());
    client.me().await.unwrap();
    client.refresh().await.unwrap();
    let fresh = Client::new(&server.base, MemoryStore::new()).unwrap();
    assert!(matches!(fresh.login(&email, PASSWORD).await, Err(Error::InvalidCredentials)));
    fresh.login(&email, NEW_PASSWORD).await.unwrap();
}

#[tokio::test]
async fn a_guest_has_no_password_to_change() {
    let server = TestServer::start_with(GUESTS).await;
    let client = guest(&server).await;
    assert_eq!(api_code(client.change_password(PASSWORD, NEW_PASSWORD).await), ErrorCode::GuestAccount);
    client.me().await.unwrap();
}

#[tokio::test]
async fn deleting_the_account_forgets_the_tokens_and_frees_the_email() {
    let server = TestServer::start().await;
    let (client, email) = logged_in(&server).await;
    let access = client.access_token().await.unwrap();
    assert!(matches!(client.delete_account(Some("not the password")).await, Err(Error::InvalidCredentials)));
    assert!(client.tokens().unwrap().is_some(), "a wrong password changes nothing");
    client.delete_account(Some(PASSWORD)).await.unwrap();
    assert!(client.tokens().unwrap().is_none());
    assert!(matches!(client.me().await, Err(Error::NotLoggedIn)));
    server.me(&access).await.assert_error(401, "UNAUTHORIZED");
    client.register(&email, PASSWORD).await.unwrap();
    client.login(&email, PASSWORD).await.unwrap();
}

#[tokio::test]
async fn a_guest_deletes_its_account_without_a_password() {
    let server = TestServer::start_with(GUESTS).await;
    let client = guest(&server).await;
    client.delete_account(None).await.unwrap();
    assert!(client.tokens().unwrap().is_none());
}

#[tokio::test]
async fn username_accounts_log_in_by_username_and_keep_no_email() {
    let server = TestServer::start().await;
    let client = Client::new(&server.base, MemoryStore::new()).unwrap();
    let username = unique_username();
    let user = client.register_with_username(&username, PASSWORD).await.unwrap();
    assert_eq!((user.email, user.username.as_deref()), (None, Some(username.as_str())));
    let tokens = client.login_with_username(&username.to_uppercase(), PASSWORD).await.unwrap();
    assert_eq!((tokens.email.as_str(), tokens.username.as_deref()), ("", Some(username.as_str())));
    assert_eq!(tokens.display_name(), username);
    assert_eq!(client.me().await.unwrap().username.as_deref(), Some(username.as_str()));
    assert!(matches!(client.login_with_username(&username, "not the password").await, Err(Error::InvalidCredentials)));

    // Both names: either logs in, and the token set has both.
    let (email, both) = (unique_email(), unique_username());
    client.register_with(Some(&email), Some(&both), PASSWORD).await.unwrap();
    let by_email = client.login_as(LoginName::Email(&email), PASSWORD).await.unwrap();
    assert_eq!(by_email.username.as_deref(), Some(both.as_str()));
    let by_name = client.login_as(LoginName::Username(&both), PASSWORD).await.unwrap();
    assert_eq!(by_name.email, email);
    assert_eq!(api_code(client.register_with_username(&both, PASSWORD).await), ErrorCode::UsernameTaken);
}

#[tokio::test]
async fn a_registered_session_ended_elsewhere_is_session_expired_never_a_guest() {
    // Guests are allowed here: the client must still not fall back to one.
    let server = TestServer::start_with(GUESTS).await;
    let (client, _) = logged_in(&server).await;
    let access = client.access_token().await.unwrap();
    server.send(reqwest::Method::POST, "/api/auth/logout-all", Some(&access), None, &[]).await.data();
    assert!(matches!(client.me().await, Err(Error::SessionExpired)));
    assert!(client.tokens().unwrap().is_none());
    assert!(matches!(client.access_token().await, Err(Error::NotLoggedIn)));

    // A guest's ended session ends the same way.
    let guest = guest(&server).await;
    let access = guest.access_token().await.unwrap();
    server.send(reqwest::Method::POST, "/api/auth/logout", Some(&access), None, &[]).await.data();
    assert!(matches!(guest.me().await, Err(Error::SessionExpired)));
    assert!(guest.tokens().unwrap().is_none());
    assert_eq!(server.audit("anonymous_signed_in").len(), 1, "only the guest this test asked for");
}
