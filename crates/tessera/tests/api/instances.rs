//! Several `tessera serve` instances sharing PostgreSQL (users), Redis (sessions) and a key
//! directory behave as one server.

use std::time::{Duration, Instant};

use reqwest::Method;

use crate::helpers::*;

async fn two_instances() -> (TestServer, TestServer) {
    let mut args: Vec<String> = vec!["--issuer".into(), "https://auth.test".into()];
    args.extend(postgres_args().await);
    args.extend(redis_args());
    let a = TestServer::start_raw(args).await;
    let b = a.sibling().await;
    (a, b)
}

#[tokio::test]
async fn a_token_rotated_on_one_instance_is_reuse_on_another() {
    let (a, b) = two_instances().await;
    let email = unique_email();
    let tokens = a.user(&email).await;
    b.me(&tokens.access).await.data();
    let rotated = tokens_of(&a.refresh(&tokens.refresh).await);
    b.refresh(&tokens.refresh).await.assert_error(401, "INVALID_TOKEN");
    assert_eq!(b.audit("refresh_token_reused").len(), 1);
    a.refresh(&rotated.refresh).await.assert_error(401, "INVALID_TOKEN");
    assert!(
        eventually(Duration::from_secs(2), async || a.me(&rotated.access).await.status == 401).await,
        "the session ended by B is ended on A too"
    );
}

#[tokio::test]
async fn a_logout_on_one_instance_is_enforced_by_the_others_within_a_second() {
    let (a, b) = two_instances().await;
    let tokens = a.user(&unique_email()).await;
    b.me(&tokens.access).await.data();
    a.send(Method::POST, "/api/auth/logout", Some(&tokens.access), None, &[]).await.data();
    let ended = Instant::now();
    assert!(eventually(Duration::from_secs(3), async || b.me(&tokens.access).await.status == 401).await);
    let took = ended.elapsed();
    assert!(took < Duration::from_millis(1500), "B took {took:?} to learn of the logout");
    b.refresh(&tokens.refresh).await.assert_error(401, "INVALID_TOKEN");
}

#[tokio::test]
async fn a_key_rotation_reaches_every_instance() {
    let (a, b) = two_instances().await;
    let rotate = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["keys", "rotate", "--activate-in", "0s", "--data-dir"])
        .arg(a.data_dir.path())
        .output()
        .unwrap();
    assert!(rotate.status.success(), "{}", String::from_utf8_lossy(&rotate.stderr));
    let kids = async |server: &TestServer| -> usize {
        let jwks = server.send(Method::GET, "/.well-known/jwks.json", None, None, &[]).await;
        jwks.body["keys"].as_array().map_or(0, Vec::len)
    };
    assert!(eventually(Duration::from_secs(3), async || kids(&a).await == 2 && kids(&b).await == 2).await);
    let tokens = a.user(&unique_email()).await;
    b.me(&tokens.access).await.data();
    let from_b = tokens_of(&b.refresh(&tokens.refresh).await);
    assert_eq!(jwt_parts(&from_b.access).0["kid"], jwt_parts(&tokens.access).0["kid"], "both sign with the new key");
}
