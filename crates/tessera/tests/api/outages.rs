//! Store outages: requests that need the store get `503 UNAVAILABLE` quickly, `/readyz` turns
//! unready, the process stays up, and it recovers by itself with every committed session intact.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use reqwest::Method;

use crate::helpers::*;
use crate::todos::TodoServer;

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

/// A private PostgreSQL cluster that can be crashed (`pg_ctl stop -m immediate`) and started
/// again on the same port and data.
struct PrivatePostgres {
    port: u16,
    dir: tempfile::TempDir,
    bin: std::path::PathBuf,
}

impl PrivatePostgres {
    fn start() -> Self {
        let bin = std::env::var("TESSERA_TEST_POSTGRES_BIN")
            .expect("TESSERA_TEST_POSTGRES_BIN is not set: run the suite with scripts/test, which installs PostgreSQL");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let pg = Self { port, dir: tempfile::tempdir().unwrap(), bin: bin.into() };
        if Self::as_root() {
            let status = Command::new("chown").arg("postgres:").arg(pg.dir.path()).status().unwrap();
            assert!(status.success());
        }
        let initdb = pg.run("initdb", &["-D", &pg.data(), "-U", "postgres", "--auth=trust", "-E", "UTF8"]);
        assert!(initdb.status.success(), "initdb: {}", String::from_utf8_lossy(&initdb.stderr));
        pg.resume();
        pg
    }

    /// PostgreSQL refuses to run as root: then it runs as the `postgres` user.
    fn as_root() -> bool {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
    }

    fn data(&self) -> String {
        self.dir.path().join("db").display().to_string()
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn run(&self, tool: &str, args: &[&str]) -> std::process::Output {
        let path = self.bin.join(tool);
        let mut cmd = if Self::as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        cmd.args(args).stdin(Stdio::null()).output().unwrap()
    }

    fn resume(&self) {
        let options =
            format!("-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=on", self.port, self.dir.path().display());
        let log = self.dir.path().join("server.log").display().to_string();
        let out = self.run("pg_ctl", &["-D", &self.data(), "-l", &log, "-w", "-t", "30", "-o", &options, "start"]);
        assert!(out.status.success(), "pg_ctl start: {}", String::from_utf8_lossy(&out.stdout));
    }

    fn crash(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "immediate", "stop"]);
    }
}

impl Drop for PrivatePostgres {
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

#[tokio::test]
async fn a_postgres_outage_answers_503_fast_and_recovers_without_losing_sessions() {
    let pg = PrivatePostgres::start();
    let server = TestServer::start_raw(vec!["--database-url".into(), pg.url()]).await;
    let mut sessions = Vec::new();
    for _ in 0..3 {
        let tokens = server.user(&unique_email()).await;
        sessions.push(tokens_of(&server.refresh(&tokens.refresh).await));
    }

    pg.crash();
    for (path, body) in [
        ("/api/auth/refresh", serde_json::json!({"refresh_token": sessions[0].refresh})),
        ("/api/auth/login", serde_json::json!({"email": unique_email(), "password": PASSWORD})),
    ] {
        let started = Instant::now();
        server.post(path, body).await.assert_error(503, "UNAVAILABLE");
        assert!(started.elapsed() < Duration::from_secs(5), "{path} answered in {:?}", started.elapsed());
    }
    assert_eq!(server.send(Method::GET, "/readyz", None, None, &[]).await.status, 503);
    server.me(&sessions[1].access).await.data();

    pg.resume();
    assert!(
        eventually(Duration::from_secs(15), async || server.send(Method::GET, "/readyz", None, None, &[]).await.status
            == 200)
        .await,
        "ready again once PostgreSQL is back"
    );
    for tokens in &sessions {
        server.refresh(&tokens.refresh).await.data();
    }
}

#[tokio::test]
async fn failed_logins_are_still_counted_in_the_instance_while_redis_is_down() {
    let mut redis = PrivateRedis::start();
    let server = TestServer::start_raw(vec![
        "--session-store-url".into(),
        redis.url(),
        "--login-failure-limit".into(),
        "5/15min".into(),
    ])
    .await;
    let email = unique_email();
    server.register(&email).await;
    redis.crash();
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let reply =
            server.post("/api/auth/login", serde_json::json!({"email": email, "password": "wrong password"})).await;
        statuses.push(reply.status.as_u16());
    }
    // A wrong password needs no session store: 401 until the account's budget, counted in this
    // instance while the shared one is down, is spent; then 429. Guessing does not fail open.
    assert_eq!(statuses[..5], [401; 5], "{statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");
    assert_eq!(
        server.logs().matches("the shared rate-limit store failed").count(),
        1,
        "the fallback is logged once: {}",
        server.logs()
    );
}

/// "Alive" means fresh: a tessera that cannot read its session store says nothing on its feed,
/// also to a verifier that reconnects, so the verifier's silence bound runs out and it fails
/// closed, though tessera itself still answers. The bound here is longer than the verifier's
/// reconnect cycle (three missed heartbeats), which once reset the silence clock for ever.
#[tokio::test]
async fn a_verifier_fails_closed_while_tessera_cannot_read_its_session_store_and_recovers() {
    if !first_run_only("a_verifier_fails_closed_while_tessera_cannot_read_its_session_store_and_recovers") {
        return;
    }
    const BOUND: Duration = Duration::from_secs(18);
    let mut redis = PrivateRedis::start();
    let server = TestServer::start_raw(vec!["--session-store-url".into(), redis.url()]).await;
    let todos = TodoServer::start(&server, &["--max-feed-silence", "18s"]).await;
    let tokens = server.user(&unique_email()).await;
    assert_eq!(todos.todos(&tokens.access).await.status, 200);

    redis.crash();
    let crashed = Instant::now();
    let closed = eventually(BOUND + Duration::from_secs(8), async || todos.todos(&tokens.access).await.status == 503);
    assert!(closed.await, "the todo API still accepts tokens {:?} into the outage", crashed.elapsed());
    eprintln!("the verifier failed closed {:?} after Redis stopped (bound {BOUND:?})", crashed.elapsed());
    let refused = todos.todos(&tokens.access).await;
    assert!(refused.header("retry-after").is_some(), "{:?}", refused.headers);

    redis.resume();
    let back = eventually(Duration::from_secs(15), async || todos.todos(&tokens.access).await.status == 200);
    assert!(back.await, "the verifier recovers once tessera reads its store again");
}
