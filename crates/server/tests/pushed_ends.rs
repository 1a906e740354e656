//! Ends pushed between instances: two real server instances (tessera's HTTP stack on loopback
//! ports, in this process) share an in-memory store, which pushes its ends as PostgreSQL and
//! Redis do, with the periodic read of the feed set to an hour so that only the push can carry
//! an end from one instance to the other.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tessera_core::testing::memory::MemoryStore;
use tessera_server::config::{ServeArgs, Settings, StoreArgs};
use tessera_server::{Stores, build_state, run};

#[tokio::test]
async fn a_logout_on_one_instance_is_pushed_to_the_other_without_waiting_for_its_poll() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::resolve(ServeArgs {
        stores: StoreArgs { data_dir: Some(dir.path().to_owned()), ..StoreArgs::default() },
        issuer: Some("http://tessera.test".into()),
        argon2_memory_kib: Some(1024),
        argon2_iterations: Some(1),
        login_rate_limit: Some("off".into()),
        ..ServeArgs::default()
    })
    .unwrap();
    settings.revocation_poll = Duration::from_secs(3600);
    let memory = Arc::new(MemoryStore::new());
    let mut bases = Vec::new();
    for _ in 0..2 {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
        let bound = listener.local_addr().unwrap();
        let db = Stores { users: memory.clone(), clients: memory.clone(), sessions: memory.clone(), limits: None };
        let state = build_state(&settings, bound, db).await.unwrap();
        let settings = settings.clone();
        tokio::spawn(async move { run(&settings, listener, state, std::future::pending()).await });
        bases.push(format!("http://{bound}"));
    }
    let client = reqwest::Client::new();
    let (a, b) = (&bases[0], &bases[1]);
    let credentials = json!({"email": "ada@example.com", "password": "correct horse battery"});
    let registered = client.post(format!("{a}/api/auth/register")).json(&credentials).send().await.unwrap();
    assert_eq!(registered.status(), 201);
    let login: Value =
        client.post(format!("{a}/api/auth/login")).json(&credentials).send().await.unwrap().json().await.unwrap();
    let token = login["data"]["token"].as_str().unwrap().to_owned();
    let me_on_b = || client.get(format!("{b}/api/auth/me")).bearer_auth(&token).send();
    assert_eq!(me_on_b().await.unwrap().status(), 200);

    let logout = client.post(format!("{a}/api/auth/logout")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(logout.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    while me_on_b().await.unwrap().status() != 401 {
        assert!(Instant::now() < deadline, "instance B still accepts the logged-out token");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
