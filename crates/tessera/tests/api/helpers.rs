//! The harness: every test starts the real `tessera serve` binary on a random loopback port with
//! a fresh data directory, and speaks HTTP to it.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;

pub const PASSWORD: &str = "correct horse battery";

/// The stores the suite runs against, from `TESSERA_TEST_BACKEND`: `sqlite` (the default),
/// `postgres`, `redis` or `redis-cluster` (sessions in Redis, users in SQLite).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    Redis,
    RedisCluster,
}

pub fn backend() -> Backend {
    match std::env::var("TESSERA_TEST_BACKEND").as_deref() {
        Err(_) | Ok("sqlite") => Backend::Sqlite,
        Ok("postgres") => Backend::Postgres,
        Ok("redis") => Backend::Redis,
        Ok("redis-cluster") => Backend::RedisCluster,
        Ok(other) => panic!("unknown TESSERA_TEST_BACKEND `{other}`: use sqlite, postgres, redis or redis-cluster"),
    }
}

/// For tests that bring stores of their own (or none but the embedded default), so that the
/// suite's run on each backend would only repeat them: whether this is the SQLite run, saying
/// so when it is not.
pub fn first_run_only(test: &str) -> bool {
    on_sqlite_run(test, "does not use the suite's backend")
}

/// For the few tests that inspect SQLite's session table directly: says so when it does not apply.
pub fn sqlite_only(test: &str) -> bool {
    on_sqlite_run(test, "inspects the SQLite file")
}

fn on_sqlite_run(test: &str, why: &str) -> bool {
    let applies = backend() == Backend::Sqlite;
    if !applies {
        eprintln!("{test}: {why}; covered by the SQLite run");
    }
    applies
}

/// Flags for users and sessions in a fresh PostgreSQL database.
pub async fn postgres_args() -> [String; 2] {
    ["--database-url".into(), fresh_postgres_database().await]
}

/// Flags for sessions in the test Redis under a fresh key prefix.
pub fn redis_args() -> [String; 4] {
    let url = std::env::var("TESSERA_TEST_REDIS_URL")
        .expect("TESSERA_TEST_REDIS_URL is not set: run the suite with scripts/test, which starts a Redis");
    let prefix = format!("t-{}", unique_email());
    ["--session-store-url".into(), url, "--redis-key-prefix".into(), prefix]
}

/// A new, empty database on the test PostgreSQL (`TESSERA_TEST_POSTGRES_URL`).
async fn fresh_postgres_database() -> String {
    let url = std::env::var("TESSERA_TEST_POSTGRES_URL")
        .expect("TESSERA_TEST_POSTGRES_URL is not set: run the suite with scripts/test, which starts a PostgreSQL");
    let name = format!("t{}", unique_email().replace(['@', '.', '-'], "_"));
    let admin = sqlx::PgPool::connect(&url).await.expect("connect to the test PostgreSQL");
    sqlx::raw_sql(&format!("CREATE DATABASE {name}")).execute(&admin).await.expect("create database");
    admin.close().await;
    let (base, _) = url.rsplit_once('/').expect("database in the URL");
    format!("{base}/{name}")
}

/// Flags every test server gets unless a test says otherwise: cheap argon2 (the default cost is
/// checked by a unit test and by `default_argon2_cost_is_used`), no login rate limit.
const BASE_ARGS: &[&str] =
    &["--argon2-memory-kib", "1024", "--argon2-iterations", "1", "--login-rate-limit", "off", "--log-format", "json"];

pub struct TestServer {
    pub base: String,
    pub client: reqwest::Client,
    child: ChildGuard,
    logs: Arc<Mutex<Vec<String>>>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// The open-file limit (soft and hard) the server starts under, when a test sets one.
    file_limit: Option<u64>,
    /// With `--data-dir` this directory; or, for [`TestServer::start_fresh`], the working
    /// directory the server starts in, with whatever data directory its flags name.
    pub data_dir: Arc<TempDir>,
    /// Started as a newcomer starts it: in `data_dir` as the working directory, without the
    /// harness's flags (the address comes from `TESSERA_LISTEN`).
    fresh: bool,
}

/// A response, already read.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn data(&self) -> &Value {
        assert_eq!(self.body["success"], true, "expected success, got {} {}", self.status, self.body);
        &self.body["data"]
    }

    /// Asserts the status of an answer that is not in the envelope (`/healthz`, `/readyz`).
    pub fn assert_status(&self, status: u16) {
        assert_eq!(self.status.as_u16(), status, "{}", self.body);
    }

    /// Asserts the error envelope with this status and code.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(
            (self.status.as_u16(), self.body["error"]["code"].as_str()),
            (status, Some(code)),
            "body: {}",
            self.body
        );
        assert_eq!(self.body["success"], false);
        assert!(self.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", self.body);
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn set_cookie(&self) -> Option<&str> {
        self.header("set-cookie")
    }
}

/// An access and refresh token of one session.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub access: String,
    pub refresh: String,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    pub async fn start_with(extra: &[&str]) -> Self {
        Self::start_with_env(extra, &[]).await
    }

    /// Starts with extra flags and `TESSERA_*` variables, on the backend of [`backend`].
    pub async fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Self {
        let data_dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        // A flag given by the test replaces the base flag of the same name.
        let overridden = |flag: &&str| extra.contains(flag);
        let base = BASE_ARGS.chunks(2).filter(|pair| !overridden(&pair[0])).flatten();
        let mut args: Vec<String> = base.chain(extra).map(|s| s.to_string()).collect();
        match backend() {
            Backend::Sqlite => {}
            Backend::Postgres => args.extend(postgres_args().await),
            Backend::Redis => args.extend(redis_args()),
            Backend::RedisCluster => {
                let nodes = std::env::var("TESSERA_TEST_REDIS_CLUSTER_NODES")
                    .expect("TESSERA_TEST_REDIS_CLUSTER_NODES is not set: run the suite with scripts/test");
                let url = format!("redis+cluster://{}", nodes.replace("redis://", ""));
                args.extend([
                    "--session-store-url".into(),
                    url,
                    "--redis-key-prefix".into(),
                    format!("t-{}", unique_email()),
                ]);
            }
        }
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Self::spawn(data_dir, args, env, "127.0.0.1:0", None, false).await
    }

    /// Starts `tessera serve` with exactly `args`, as the README's first command does on a fresh
    /// clone: in an empty working directory, with nothing prepared (the data directory is the
    /// default `./tessera-data` unless `args` name another). Only `TESSERA_LISTEN` (a random port)
    /// and `TESSERA_LOG_FORMAT` (json, to read the address) are set.
    pub async fn start_fresh(args: &[&str]) -> Self {
        let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        let args = args.iter().map(|s| s.to_string()).collect();
        let env = vec![("TESSERA_LOG_FORMAT".to_owned(), "json".to_owned())];
        Self::spawn(dir, args, env, "127.0.0.1:0", None, true).await
    }

    /// Starts with extra flags under an open-file limit of `limit` (soft and hard).
    pub async fn start_with_file_limit(extra: &[&str], limit: u64) -> Self {
        let data_dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        let args = BASE_ARGS.iter().chain(extra).map(|s| s.to_string()).collect();
        Self::spawn(data_dir, args, Vec::new(), "127.0.0.1:0", Some(limit), false).await
    }

    async fn spawn(
        data_dir: Arc<TempDir>,
        args: Vec<String>,
        env: Vec<(String, String)>,
        listen: &str,
        file_limit: Option<u64>,
        fresh: bool,
    ) -> Self {
        let client = http_client();
        let mut command = Command::new(env!("CARGO_BIN_EXE_tessera"));
        command.arg("serve");
        if fresh {
            command.current_dir(data_dir.path()).env("TESSERA_LISTEN", listen);
        } else {
            command.args(["--listen", listen, "--data-dir"]).arg(data_dir.path());
        }
        if let Some(limit) = file_limit {
            use std::os::unix::process::CommandExt;
            let limit = libc::rlimit { rlim_cur: limit, rlim_max: limit };
            // SAFETY: between fork and exec the closure only calls setrlimit, which is
            // async-signal-safe, on a struct it owns.
            #[allow(unsafe_code)]
            unsafe {
                command.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let mut child = command
            .args(&args)
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map(ChildGuard)
            .expect("start tessera serve");
        let (logs, addr) = follow_logs(child.0.stdout.take().expect("stdout"), Duration::from_secs(20)).await;
        let Some(addr) = addr else {
            let status = child.0.try_wait().ok().flatten();
            let logs = logs.lock().unwrap().join("\n");
            panic!("tessera serve did not start (exit: {status:?}); args {args:?}; its log:\n{logs}");
        };
        Self { base: format!("http://{addr}"), client, child, logs, args, env, file_limit, data_dir, fresh }
    }

    /// Another instance sharing this one's data directory (signing keys), flags and stores.
    pub async fn sibling(&self) -> Self {
        Self::spawn(
            self.data_dir.clone(),
            self.args.clone(),
            self.env.clone(),
            "127.0.0.1:0",
            self.file_limit,
            self.fresh,
        )
        .await
    }

    /// Starts a server with exactly these flags (beside the base ones), whatever the backend.
    pub async fn start_raw(args: Vec<String>) -> Self {
        let data_dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        let args = BASE_ARGS.iter().map(|s| s.to_string()).chain(args).collect();
        Self::spawn(data_dir, args, Vec::new(), "127.0.0.1:0", None, false).await
    }

    /// Stops the server (SIGKILL when `hard`, else SIGTERM and wait) and starts it again on the
    /// same address and data directory with the same flags, as an operator would.
    pub async fn restart(self, hard: bool) -> Self {
        self.restart_after(hard, Duration::ZERO).await
    }

    /// [`restart`](Self::restart), with the server down for `down` in between.
    pub async fn restart_after(mut self, hard: bool, down: Duration) -> Self {
        self.stop(hard);
        tokio::time::sleep(down).await;
        let data_dir = self.data_dir.clone();
        let (args, env, file_limit, fresh) = (self.args.clone(), self.env.clone(), self.file_limit, self.fresh);
        let listen = self.base.trim_start_matches("http://").to_owned();
        drop(self);
        Self::spawn(data_dir, args, env, &listen, file_limit, fresh).await
    }

    pub fn stop(&mut self, hard: bool) {
        let signal = if hard { libc::SIGKILL } else { libc::SIGTERM };
        signal_process(self.child.0.id(), signal);
        let _ = self.child.0.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        self.child.0.wait().expect("wait")
    }

    /// Flags that name this server's database to another `tessera` command.
    pub fn database_args(&self) -> Vec<String> {
        match self.args.iter().position(|a| a == "--database-url") {
            Some(i) => vec!["--database-url".into(), self.args[i + 1].clone()],
            None => vec!["--data-dir".into(), self.data_dir.path().display().to_string()],
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// Audit events of this kind logged so far, once the log has been quiet for 100 ms (the
    /// server logs an event before it answers, but our reader thread may lag behind).
    pub fn audit(&self, event: &str) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut seen = self.logs.lock().unwrap().len();
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let now = self.logs.lock().unwrap().len();
            if now == seen || Instant::now() > deadline {
                break;
            }
            seen = now;
        }
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["target"] == "audit" && v["event"] == event)
            .collect()
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = self.client.request(method, self.url(path));
        if let Some(token) = bearer {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        read(req.send().await.expect("request")).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(Method::POST, path, None, Some(body), &[]).await
    }

    pub async fn get(&self, path: &str, bearer: &str) -> Reply {
        self.send(Method::GET, path, Some(bearer), None, &[]).await
    }

    pub async fn register(&self, email: &str) -> Reply {
        let reply = self.post("/api/auth/register", json!({"email": email, "password": PASSWORD})).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        reply
    }

    pub async fn login(&self, email: &str) -> Tokens {
        let reply = self.post("/api/auth/login", json!({"email": email, "password": PASSWORD})).await;
        let data = reply.data();
        Tokens {
            access: data["token"].as_str().unwrap().to_owned(),
            refresh: data["refresh_token"].as_str().unwrap().to_owned(),
        }
    }

    /// A new user with one session.
    pub async fn user(&self, email: &str) -> Tokens {
        self.register(email).await;
        self.login(email).await
    }

    pub async fn refresh(&self, refresh_token: &str) -> Reply {
        self.post("/api/auth/refresh", json!({"refresh_token": refresh_token})).await
    }

    pub async fn me(&self, access: &str) -> Reply {
        self.get("/api/auth/me", access).await
    }
}

/// Collects a server's JSON log lines from its stdout, and waits (up to `within`) for its
/// `listening` line: the logs so far and after, and the address it listens on.
pub async fn follow_logs(stdout: ChildStdout, within: Duration) -> (Arc<Mutex<Vec<String>>>, Option<String>) {
    let logs = Arc::new(Mutex::new(Vec::new()));
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let sink = logs.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && v["message"] == "listening"
            {
                let _ = addr_tx.send(v["addr"].as_str().unwrap_or_default().to_owned());
            }
            sink.lock().unwrap().push(line);
        }
    });
    let addr = tokio::task::spawn_blocking(move || addr_rx.recv_timeout(within).ok()).await.unwrap();
    (logs, addr)
}

/// Owns a server process from the moment it is spawned: whatever panics, it is killed.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        signal_process(self.0.id(), libc::SIGKILL);
        let _ = self.0.wait();
    }
}

/// The tests' HTTP client (rustls needs its crypto provider chosen once per process).
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

pub async fn read(resp: reqwest::Response) -> Reply {
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Reply { status, headers, body }
}

pub fn tokens_of(reply: &Reply) -> Tokens {
    let data = reply.data();
    Tokens {
        access: data["token"].as_str().unwrap().to_owned(),
        refresh: data["refresh_token"].as_str().unwrap().to_owned(),
    }
}

/// The decoded header and payload of a JWT.
pub fn jwt_parts(token: &str) -> (Value, Value) {
    let mut it =
        token.split('.').map(|s| serde_json::from_slice::<Value>(&URL_SAFE_NO_PAD.decode(s).unwrap()).unwrap());
    (it.next().unwrap(), it.next().unwrap())
}

pub fn unique_email() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!("user{}-{}@example.com", std::process::id(), NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

pub fn signal_term(pid: u32) {
    signal_process(pid, libc::SIGTERM);
}

pub fn signal_kill(pid: u32) {
    signal_process(pid, libc::SIGKILL);
}

#[allow(unsafe_code)]
fn signal_process(pid: u32, signal: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid as i32, signal);
    }
}

/// Polls `check` until it holds or `within` passes.
pub async fn eventually(within: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
