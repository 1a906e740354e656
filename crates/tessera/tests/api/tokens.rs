//! Access-token claims, the JWKS, and what the refresh token is (and is not).

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn login_answers_with_a_bearer_pair_and_the_user() {
    let server = TestServer::start().await;
    let email = unique_email();
    let registered = server.register(&email).await;
    let user = registered.data()["user"].clone();
    assert!(user["created_at"].as_str().unwrap().ends_with('Z'));
    let reply = server.post("/api/auth/login", json!({"email": email, "password": PASSWORD})).await;
    let data = reply.data();
    assert_eq!(data["token_type"], "Bearer");
    assert_eq!(data["expires_in"], 900, "default access lifetime is 15 minutes");
    assert_eq!(data["user"], user);
    assert_eq!(reply.header("cache-control"), Some("no-store"));
}

#[tokio::test]
async fn the_access_token_carries_every_claim_and_verifies_against_the_jwks() {
    let server =
        TestServer::start_with(&["--access-ttl", "3600", "--issuer", "https://auth.example", "--audience", "api"])
            .await;
    let email = unique_email();
    let user_id = server.register(&email).await.data()["user"]["id"].as_str().unwrap().to_owned();
    let login = server.post("/api/auth/login", json!({"email": email, "password": PASSWORD})).await;
    assert_eq!(login.data()["expires_in"], 3600);
    let token = login.data()["token"].as_str().unwrap();
    let (header, claims) = jwt_parts(token);
    assert_eq!(header["alg"], "ES256");
    assert_eq!(claims["iss"], "https://auth.example");
    assert_eq!(claims["aud"], "api");
    assert_eq!(claims["sub"], user_id.as_str());
    assert_eq!(claims["email"], email.as_str());
    let me = server.me(token).await;
    assert_eq!(claims["sid"], me.data()["session_id"]);
    assert!(claims["jti"].as_str().is_some_and(|j| j.len() >= 16));
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 3600);

    let jwks = server.send(Method::GET, "/.well-known/jwks.json", None, None, &[]).await;
    assert!(jwks.header("cache-control").is_some_and(|c| c.contains("max-age=")));
    let key = jwks.body["keys"].as_array().unwrap().iter().find(|k| k["kid"] == header["kid"]).expect("kid published");
    assert_eq!(
        (key["kty"].as_str(), key["crv"].as_str(), key["alg"].as_str(), key["use"].as_str()),
        (Some("EC"), Some("P-256"), Some("ES256"), Some("sig"))
    );
    let decoding = DecodingKey::from_ec_components(key["x"].as_str().unwrap(), key["y"].as_str().unwrap()).unwrap();
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_issuer(&["https://auth.example"]);
    validation.set_audience(&["api"]);
    jsonwebtoken::decode::<Value>(token, &decoding, &validation).expect("verifies with the published key");
}

#[tokio::test]
async fn a_short_access_ttl_expires_for_real() {
    let server = TestServer::start_with(&["--access-ttl", "2s"]).await;
    let tokens = server.user(&unique_email()).await;
    server.me(&tokens.access).await.data();
    tokio::time::sleep(Duration::from_millis(3100)).await;
    server.me(&tokens.access).await.assert_error(401, "UNAUTHORIZED");
    // The session itself lives on: refresh gives a working token.
    let fresh = tokens_of(&server.refresh(&tokens.refresh).await);
    server.me(&fresh.access).await.data();
}

#[tokio::test]
async fn tokens_with_alg_none_or_hmac_are_refused() {
    let server = TestServer::start().await;
    let tokens = server.user(&unique_email()).await;
    let (header, _) = jwt_parts(&tokens.access);
    let payload = tokens.access.split('.').nth(1).unwrap();
    for alg in ["none", "HS256"] {
        let forged_header = URL_SAFE_NO_PAD.encode(json!({"alg": alg, "typ": "JWT", "kid": header["kid"]}).to_string());
        let forged = format!("{forged_header}.{payload}.");
        server.me(&forged).await.assert_error(401, "UNAUTHORIZED");
    }
}

#[tokio::test]
async fn the_refresh_token_is_opaque_and_the_store_holds_nothing_that_works_as_one() {
    let server = TestServer::start().await;
    let tokens = server.user(&unique_email()).await;
    let refresh = &tokens.refresh;
    assert!(!refresh.contains('.'), "not a JWT");
    assert!(refresh.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "URL-safe");
    let raw = URL_SAFE_NO_PAD.decode(refresh).unwrap();
    assert!(raw.len() >= 32 + 16, "carries a 256-bit MAC beside the session id");
    let next = tokens_of(&server.refresh(refresh).await).refresh;
    if !sqlite_only("the store holds nothing that works as a token") {
        return;
    }

    let mut stored = Vec::new();
    for entry in std::fs::read_dir(server.data_dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            stored.extend(std::fs::read(path).unwrap());
        }
    }
    for token in [refresh, &next] {
        let raw = URL_SAFE_NO_PAD.decode(token).unwrap();
        let mac = &raw[raw.len() - 32..];
        assert!(!contains(&stored, token.as_bytes()), "the token's text is not stored");
        assert!(!contains(&stored, mac), "nor its secret part");
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn keys_and_database_are_private_to_the_owner() {
    let server = TestServer::start().await;
    server.user(&unique_email()).await;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = server.data_dir.path();
    assert_eq!(mode(&dir.join("keys")), 0o700);
    for entry in std::fs::read_dir(dir.join("keys")).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    if sqlite_only("the database file is private") {
        assert_eq!(mode(&dir.join("tessera.db")), 0o600);
    }
}

#[tokio::test]
async fn a_rotated_key_is_published_before_it_signs_and_the_server_picks_it_up() {
    let server = TestServer::start().await;
    let before = server.user(&unique_email()).await;
    let old_kid = jwt_parts(&before.access).0["kid"].as_str().unwrap().to_owned();
    let rotated_at = std::time::Instant::now();
    let rotate = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["keys", "rotate", "--activate-in", "4s", "--data-dir"])
        .arg(server.data_dir.path())
        .output()
        .unwrap();
    assert!(rotate.status.success(), "{}", String::from_utf8_lossy(&rotate.stderr));

    let kids = async || -> Vec<String> {
        let jwks = server.send(Method::GET, "/.well-known/jwks.json", None, None, &[]).await;
        jwks.body["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_owned()).collect()
    };
    assert!(eventually(Duration::from_secs(3), async || kids().await.len() == 2).await, "new key published");
    let new_kid = kids().await.into_iter().find(|k| *k != old_kid).unwrap();
    let signed_now = tokens_of(&server.refresh(&before.refresh).await);
    assert!(rotated_at.elapsed() < Duration::from_secs(4), "the machine is too slow for this test's timing");
    assert_eq!(jwt_parts(&signed_now.access).0["kid"].as_str(), Some(old_kid.as_str()), "not signing before its time");
    tokio::time::sleep(Duration::from_secs(4).saturating_sub(rotated_at.elapsed()) + Duration::from_millis(200)).await;
    let signed_later = tokens_of(&server.refresh(&signed_now.refresh).await);
    assert_eq!(jwt_parts(&signed_later.access).0["kid"].as_str(), Some(new_kid.as_str()));
    server.me(&signed_now.access).await.data();
    server.me(&signed_later.access).await.data();
    assert!(kids().await.contains(&old_kid), "the old key stays while its tokens live");
}
