//! Logouts when the store fails on purpose: two real server instances (tessera's HTTP stack on
//! loopback ports, in this process) share an in-memory store behind a fault-injecting wrapper,
//! so a test can break the store's end of a session — before it commits, or after — and watch
//! the end still reach the other instance.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tessera_core::store::SessionStore;
use tessera_core::testing::faults::{Faults, FaultyStore, Op};
use tessera_core::testing::memory::MemoryStore;
use tessera_server::config::{ServeArgs, Settings, StoreArgs};
use tessera_server::{Stores, build_state, run};

struct Cluster {
    a: String,
    b: String,
    faults: Faults,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// Two instances with one store, whose session operations go through `Faults`.
async fn two_instances() -> Cluster {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings::resolve(ServeArgs {
        stores: StoreArgs { data_dir: Some(dir.path().to_owned()), ..StoreArgs::default() },
        issuer: Some("http://tessera.test".into()),
        argon2_memory_kib: Some(1024),
        argon2_iterations: Some(1),
        login_rate_limit: Some("off".into()),
        ..ServeArgs::default()
    })
    .unwrap();
    let memory = Arc::new(MemoryStore::new());
    let faults = Faults::new();
    let sessions: Arc<dyn SessionStore> = Arc::new(FaultyStore::with_faults(memory.clone(), faults.clone()));
    let mut bases = Vec::new();
    for _ in 0..2 {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
        let bound = listener.local_addr().unwrap();
        let db = Stores { users: memory.clone(), clients: memory.clone(), sessions: sessions.clone(), limits: None };
        let state = build_state(&settings, bound, db).await.unwrap();
        let settings = settings.clone();
        tokio::spawn(async move { run(&settings, listener, state, std::future::pending()).await });
        bases.push(format!("http://{bound}"));
    }
    let b = bases.pop().unwrap();
    let a = bases.pop().unwrap();
    Cluster { a, b, faults, client: reqwest::Client::new(), _dir: dir }
}

impl Cluster {
    async fn call(&self, base: &str, path: &str, bearer: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let mut request = self.client.post(format!("{base}{path}"));
        if path.ends_with("/me") {
            request = self.client.get(format!("{base}{path}"));
        }
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A new user's session on instance A: (access token, refresh token).
    async fn session(&self) -> (String, String) {
        let credentials = json!({"email": "ada@example.com", "password": "correct horse battery"});
        let (status, _) = self.call(&self.a, "/api/auth/register", None, Some(credentials.clone())).await;
        assert_eq!(status, 201);
        let (status, body) = self.call(&self.a, "/api/auth/login", None, Some(credentials)).await;
        assert_eq!(status, 200, "{body}");
        let data = &body["data"];
        (data["token"].as_str().unwrap().to_owned(), data["refresh_token"].as_str().unwrap().to_owned())
    }

    async fn me(&self, base: &str, access: &str) -> u16 {
        self.call(base, "/api/auth/me", Some(access), None).await.0
    }

    async fn refresh(&self, base: &str, refresh: &str) -> (u16, Value) {
        self.call(base, "/api/auth/refresh", None, Some(json!({"refresh_token": refresh}))).await
    }
}

async fn within(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// What must hold however the store failed: the logging-out instance refuses the session at
/// once, the other within seconds, and the refresh token is dead on both.
async fn logout_reaches_both_instances(cluster: &Cluster, access: &str, refresh: &str) {
    let (status, body) = cluster.call(&cluster.a, "/api/auth/logout", Some(access), None).await;
    assert_eq!(status, 503, "the store failed, and the answer says so: {body}");
    assert_eq!(body["error"]["code"], "UNAVAILABLE");
    assert_eq!(cluster.me(&cluster.a, access).await, 401, "the logging-out instance refuses the token at once");
    assert_eq!(cluster.refresh(&cluster.a, refresh).await.0, 401, "and the refresh token");
    assert!(
        within(Duration::from_secs(5), async || cluster.me(&cluster.b, access).await == 401).await,
        "the other instance still accepts the access token 5 s after the logout"
    );
    let (status, body) = cluster.refresh(&cluster.b, refresh).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "INVALID_TOKEN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_the_store_failed_to_record_is_retried_until_every_instance_knows() {
    let cluster = two_instances().await;
    let (access, refresh) = cluster.session().await;
    assert_eq!(cluster.me(&cluster.b, &access).await, 200);
    // The end and its feed entry fail three times before the store takes them.
    cluster.faults.fail_next(Op::EndSession, 3);
    logout_reaches_both_instances(&cluster, &access, &refresh).await;
    assert_eq!(cluster.faults.injected(Op::EndSession), 3, "retried past the failures");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_whose_answer_was_lost_after_the_store_committed_it_reaches_every_instance() {
    let cluster = two_instances().await;
    let (access, refresh) = cluster.session().await;
    cluster.faults.fail_next_after_commit(Op::EndSession, 1);
    logout_reaches_both_instances(&cluster, &access, &refresh).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_everywhere_the_store_failed_to_record_is_retried_too() {
    let cluster = two_instances().await;
    let (access, refresh) = cluster.session().await;
    cluster.faults.fail_next(Op::EndUserSessions, 2);
    let (status, _) = cluster.call(&cluster.a, "/api/auth/logout-all", Some(&access), None).await;
    assert_eq!(status, 503);
    assert!(
        within(Duration::from_secs(5), async || cluster.me(&cluster.b, &access).await == 401).await,
        "the other instance still accepts the access token 5 s after the logout"
    );
    assert_eq!(cluster.refresh(&cluster.b, &refresh).await.0, 401);
}
