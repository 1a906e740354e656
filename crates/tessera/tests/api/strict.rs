//! Strict parsing of input (hardening issue, item 5): what is not exactly right is refused with
//! the spec's error, in the envelope.

use reqwest::Method;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn a_json_array_is_not_an_object() {
    let server = TestServer::start().await;
    let email = unique_email();
    server.register(&email).await;
    for body in [json!([email, PASSWORD]), json!([email, PASSWORD, "body"]), json!("text"), json!(null)] {
        let reply = server.post("/api/auth/login", body.clone()).await;
        reply.assert_error(400, "INVALID_REQUEST");
    }
    let reply = server.post("/api/auth/register", json!([unique_email(), PASSWORD])).await;
    reply.assert_error(400, "INVALID_REQUEST");
}

#[tokio::test]
async fn two_authorization_headers_are_refused_rather_than_the_first_believed() {
    let server = TestServer::start().await;
    let tokens = server.user(&unique_email()).await;
    let reply = read(
        http_client()
            .get(server.url("/api/auth/me"))
            .header("authorization", format!("Bearer {}", tokens.access))
            .header("authorization", "Bearer someone-else")
            .send()
            .await
            .unwrap(),
    )
    .await;
    reply.assert_error(400, "INVALID_REQUEST");
}

#[tokio::test]
async fn a_path_segment_that_is_not_utf8_gets_the_envelope() {
    let server = TestServer::start().await;
    let tokens = server.user(&unique_email()).await;
    let reply = server.send(Method::DELETE, "/api/auth/sessions/%FF%FE", Some(&tokens.access), None, &[]).await;
    reply.assert_error(404, "NOT_FOUND");
}

#[tokio::test]
async fn a_refresh_token_with_a_huge_generation_is_invalid_not_a_500() {
    use tessera_core::keys::KeyDir;
    use tessera_core::refresh::{RefreshClaims, RefreshTokenCodec};

    let server = TestServer::start().await;
    let tokens = server.user(&unique_email()).await;
    // Minted with the server's own key, so only the generation is wrong.
    let secret = KeyDir::new(server.data_dir.path().join("keys")).refresh_secret().unwrap();
    let codec = RefreshTokenCodec::new(&secret);
    let session_id = codec.decode(&tokens.refresh).expect("the server's token").session_id;
    for generation in [u64::MAX, i64::MAX as u64 + 1, i64::MAX as u64] {
        let forged = codec.encode(RefreshClaims { session_id, generation });
        server.refresh(forged.expose()).await.assert_error(401, "INVALID_TOKEN");
    }
    server.refresh(&tokens.refresh).await.data();
}

#[tokio::test]
async fn emails_that_look_the_same_are_the_same_account() {
    let server = TestServer::start().await;
    let email = unique_email();
    server.register(&email).await;
    let (local, domain) = email.split_once('@').unwrap();
    let full_width: String = local
        .chars()
        .map(|c| char::from_u32(c as u32 + 0xFEE0).filter(|_| c.is_ascii_alphanumeric()).unwrap_or(c))
        .collect();
    let reply = server
        .post("/api/auth/register", json!({"email": format!("{full_width}@{domain}"), "password": PASSWORD}))
        .await;
    reply.assert_error(409, "EMAIL_TAKEN");
    for invisible in
        [format!("{local}\u{200B}@{domain}"), format!("\u{FEFF}{email}"), format!("{local}@{}\u{00AD}", domain)]
    {
        let reply = server.post("/api/auth/register", json!({"email": invisible, "password": PASSWORD})).await;
        reply.assert_error(400, "INVALID_EMAIL");
    }
    let login =
        server.post("/api/auth/login", json!({"email": format!("{full_width}@{domain}"), "password": PASSWORD})).await;
    login.data();
}
