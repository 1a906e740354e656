//! Store outages: requests that need the store get `503 UNAVAILABLE` quickly, `/readyz` turns
//! unready, the process stays up, and it recovers by itself with every committed session intact.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use reqwest::Method;

use crate::helpers::*;

/// A private redis-server whose every write is fsynced to its append-only file, so a crash
/// loses nothing it acknowledged; it can be killed and started again on the same port and data.
struct PrivateRedis {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PrivateRedis {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut redis = Self { port, dir: tempfile::tempdir().unwrap(), child: None };
        redis.resume();
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn resume(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string(), "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/test installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn crash(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.crash();
    }
}

/// What one refreshing client saw: its last acknowledged token, failures, slowest answer.
#[derive(Default)]
struct Client {
    token: String,
    session_id: String,
    failures: Vec<u16>,
    slowest: Duration,
}

#[tokio::test]
async fn a_redis_outage_under_load_answers_503_fast_and_recovers_without_losing_sessions() {
    let mut redis = PrivateRedis::start();
    let server = TestServer::start_raw(vec!["--session-store-url".into(), redis.url()]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let tokens = server.user(&unique_email()).await;
        let session_id = server.me(&tokens.access).await.data()["session_id"].as_str().unwrap().to_owned();
        let (client, url, stop) = (server.client.clone(), server.url("/api/auth/refresh"), stop.clone());
        load.spawn(async move {
            let mut seen = Client { token: tokens.refresh, session_id, ..Client::default() };
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let resp = client.post(&url).json(&serde_json::json!({"refresh_token": seen.token})).send().await;
                seen.slowest = seen.slowest.max(started.elapsed());
                let reply = read(resp.expect("the server stays up")).await;
                if reply.status == 200 {
                    seen.token = reply.body["data"]["refresh_token"].as_str().unwrap().to_owned();
                } else {
                    seen.failures.push(reply.status.as_u16());
                    if reply.status == 401 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            seen
        });
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    redis.crash();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ready = server.send(Method::GET, "/readyz", None, None, &[]).await;
    assert_eq!(ready.status, 503, "unready during the outage: {}", ready.body);
    server.send(Method::GET, "/healthz", None, None, &[]).await.assert_status(200);

    redis.resume();
    assert!(
        eventually(Duration::from_secs(10), async || server.send(Method::GET, "/readyz", None, None, &[]).await.status
            == 200)
        .await,
        "ready again once Redis is back"
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, Ordering::Relaxed);
    let clients = load.join_all().await;

    let reused: Vec<String> = server
        .audit("refresh_token_reused")
        .iter()
        .map(|e| e["session_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    for c in &clients {
        assert!(c.failures.contains(&503), "the outage was felt: {:?}", c.failures);
        assert!(c.failures.iter().all(|s| *s == 503 || *s == 401), "only 503s during the outage: {:?}", c.failures);
        assert!(c.slowest < Duration::from_secs(5), "an answer took {:?}", c.slowest);
        // The last acknowledged token rotates, unless the crash swallowed the answer of a
        // rotation Redis had committed, whose replay then ended the session as theft.
        let works = server.refresh(&c.token).await.status == 200;
        assert!(works || reused.contains(&c.session_id), "session {} lost its acknowledged state", c.session_id);
    }
}
