//! Restarts, crashes, shutdown, health and logs.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::helpers::*;

#[tokio::test]
async fn a_restart_keeps_users_sessions_and_the_signing_key() {
    let server = TestServer::start().await;
    let email = unique_email();
    let tokens = server.user(&email).await;
    let kid = jwt_parts(&tokens.access).0["kid"].clone();
    let server = server.restart(false).await;
    server.me(&tokens.access).await.data();
    let rotated = tokens_of(&server.refresh(&tokens.refresh).await);
    assert_eq!(jwt_parts(&rotated.access).0["kid"], kid, "the same signing key");
    server.login(&email).await;
}

/// An instance that opened or rotated a session knows its user and signs the next access token
/// while the rotation commits; after a restart it knows nothing and signs after the rotation.
/// The tokens say the same either way, and a token signed early for a rotation that then fails
/// is never handed out.
#[tokio::test]
async fn a_refresh_mints_the_same_claims_whether_or_not_the_instance_remembers_the_session() {
    let server = TestServer::start().await;
    let email = unique_email();
    let login = server.user(&email).await;
    let known = tokens_of(&server.refresh(&login.refresh).await);
    let server = server.restart(false).await;
    let forgotten = tokens_of(&server.refresh(&known.refresh).await);
    let said = |token: &str| {
        let claims = jwt_parts(token).1;
        ["iss", "aud", "sub", "sid", "email", "is_anonymous"].map(|name| claims[name].clone())
    };
    assert_eq!(said(&known.access), said(&login.access));
    assert_eq!(said(&forgotten.access), said(&login.access));
    server.me(&forgotten.access).await.data();

    // Known again: the reuse of a spent token is refused, and the session ends.
    let again = tokens_of(&server.refresh(&forgotten.refresh).await);
    server.refresh(&forgotten.refresh).await.assert_error(401, "INVALID_TOKEN");
    server.me(&again.access).await.assert_error(401, "UNAUTHORIZED");
}

#[tokio::test]
async fn logout_survives_a_restart() {
    let server = TestServer::start().await;
    let tokens = server.user(&unique_email()).await;
    server.send(Method::POST, "/api/auth/logout", Some(&tokens.access), None, &[]).await.data();
    let server = server.restart(true).await;
    server.me(&tokens.access).await.assert_error(401, "UNAUTHORIZED");
    server.refresh(&tokens.refresh).await.assert_error(401, "INVALID_TOKEN");
}

/// What a refreshing client last got back, and whether a request was in flight at the crash.
struct Chain {
    token: String,
    session_id: String,
}

#[tokio::test]
async fn kill_9_under_load_loses_no_acknowledged_user_or_rotation() {
    kill_9_under_refresh_load(8).await;
}

/// With 32 sessions rotating at once, SQLite's writer commits them in groups (one statement per
/// group, answered after its commit), so the kill lands while groups are being committed.
#[tokio::test]
async fn kill_9_while_groups_of_rotations_commit_loses_no_acknowledged_rotation() {
    kill_9_under_refresh_load(32).await;
}

async fn kill_9_under_refresh_load(sessions: usize) {
    let server = TestServer::start().await;
    let mut chains = Vec::new();
    for _ in 0..sessions {
        let tokens = server.user(&unique_email()).await;
        let session_id = server.me(&tokens.access).await.data()["session_id"].as_str().unwrap().to_owned();
        chains.push(Arc::new(Mutex::new(Chain { token: tokens.refresh, session_id })));
    }
    let registered = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = tokio::task::JoinSet::new();
    for chain in &chains {
        let (chain, client, url, stop) =
            (chain.clone(), server.client.clone(), server.url("/api/auth/refresh"), stop.clone());
        load.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let token = chain.lock().await.token.clone();
                let Ok(resp) = client.post(&url).json(&json!({"refresh_token": token})).send().await else {
                    break;
                };
                let reply = read(resp).await;
                if reply.status != 200 {
                    break;
                }
                chain.lock().await.token = reply.body["data"]["refresh_token"].as_str().unwrap().to_owned();
            }
        });
    }
    for _ in 0..2 {
        let (registered, client, url, stop) =
            (registered.clone(), server.client.clone(), server.url("/api/auth/register"), stop.clone());
        load.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let email = unique_email();
                let Ok(resp) = client.post(&url).json(&json!({"email": email, "password": PASSWORD})).send().await
                else {
                    break;
                };
                if resp.status() == 201 {
                    registered.lock().await.push(email);
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let server = server.restart(true).await;
    stop.store(true, Ordering::Relaxed);
    load.join_all().await;

    let registered = registered.lock().await.clone();
    assert!(registered.len() > 5, "the load ran: {} registrations", registered.len());
    for email in &registered {
        server.login(email).await;
    }
    let mut outcomes = HashMap::new();
    for chain in &chains {
        let chain = chain.lock().await;
        let reply = server.refresh(&chain.token).await;
        // The last acknowledged token works, or a rotation whose answer the crash swallowed is
        // committed after it (its replay is then detected as reuse). A rolled-back rotation
        // would make the token "from the future": rejected without a reuse event.
        let reused = server.audit("refresh_token_reused").iter().any(|e| e["session_id"] == chain.session_id.as_str());
        assert!(
            reply.status == 200 || reused,
            "session {} lost its acknowledged rotation: {}",
            chain.session_id,
            reply.body
        );
        *outcomes.entry(reply.status.as_u16()).or_insert(0) += 1;
    }
    eprintln!("after kill -9: {} registrations kept, refresh outcomes {outcomes:?}", registered.len());
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests() {
    // The default argon2 cost makes a login take long enough to be in flight.
    let server = TestServer::start_with(&["--argon2-memory-kib", "19456", "--argon2-iterations", "2"]).await;
    let email = unique_email();
    server.register(&email).await;
    let client = server.client.clone();
    let url = server.url("/api/auth/login");
    let in_flight: Vec<_> = (0..4)
        .map(|_| {
            let (client, url, email) = (client.clone(), url.clone(), email.clone());
            tokio::spawn(
                async move { client.post(url).json(&json!({"email": email, "password": PASSWORD})).send().await },
            )
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    super::helpers::signal_term(server.pid());
    for request in in_flight {
        let resp = request.await.unwrap().expect("the in-flight request is answered");
        assert_eq!(resp.status(), 200);
    }
    let (server, status) = tokio::task::spawn_blocking(move || {
        let mut server = server;
        let status = server.wait_exit();
        (server, status)
    })
    .await
    .unwrap();
    assert!(status.success(), "{status:?}");
    // Lines are written by a logging thread: what it held at the exit was written out.
    assert!(
        super::helpers::eventually(Duration::from_secs(2), async || server
            .logs()
            .lines()
            .any(|l| l.contains("\"stopped\"")))
        .await,
        "the last line is logged: {}",
        server.logs()
    );
    assert_eq!(server.audit("login_succeeded").len(), 4);
}

#[tokio::test]
async fn health_and_readiness_answer() {
    let server = TestServer::start().await;
    let health = server.send(Method::GET, "/healthz", None, None, &[]).await;
    assert_eq!((health.status.as_u16(), &health.body), (200, &json!({"status": "ok"})));
    let ready = server.send(Method::GET, "/readyz", None, None, &[]).await;
    assert_eq!((ready.status.as_u16(), &ready.body), (200, &json!({"status": "ready"})));
}

#[tokio::test]
async fn logs_carry_request_ids_and_never_a_token_or_password() {
    let server = TestServer::start().await;
    let email = unique_email();
    let tokens = server.user(&email).await;
    let rotated = tokens_of(&server.refresh(&tokens.refresh).await);
    server.refresh(&tokens.refresh).await; // reuse, logged as a warning
    server.post("/api/auth/login", json!({"email": email, "password": "wrong password 123"})).await;
    server.me(&rotated.access).await;
    let logs = server.logs();
    for secret in [PASSWORD, "wrong password 123", &tokens.access, &tokens.refresh, &rotated.access, &rotated.refresh] {
        assert!(!logs.contains(secret), "a secret is in the log");
    }
    let audit: Vec<Value> = ["login_succeeded", "login_failed", "token_refreshed", "refresh_token_reused"]
        .iter()
        .flat_map(|e| server.audit(e))
        .collect();
    assert!(audit.len() >= 4, "{audit:?}");
    for event in audit {
        assert!(event["span"]["request_id"].as_str().is_some_and(|id| !id.is_empty()), "{event}");
    }
}

#[tokio::test]
async fn metrics_count_responses_and_audit_events() {
    let server = TestServer::start().await;
    let tokens = server.user(&unique_email()).await;
    server.refresh(&tokens.refresh).await.data();
    server.refresh(&tokens.refresh).await.assert_error(401, "INVALID_TOKEN");
    let resp = server.client.get(server.url("/metrics")).send().await.unwrap();
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = resp.text().await.unwrap();
    for line in [
        "tessera_audit_events_total{event=\"login_succeeded\"} 1",
        "tessera_audit_events_total{event=\"token_refreshed\"} 1",
        "tessera_audit_events_total{event=\"refresh_token_reused\"} 1",
        "tessera_revoked_sessions 1",
        "tessera_signing_keys 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
    }
    assert!(text.contains("tessera_http_responses_total{class=\"4xx\"} 1"), "{text}");
}

#[tokio::test]
async fn settings_come_from_the_file_then_the_environment_then_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tessera.toml");
    std::fs::write(&file, "access_ttl = 100\nrefresh_ttl = \"2h\"\naudience = \"from-file\"\n").unwrap();
    let file = file.to_str().unwrap();
    let env = [("TESSERA_ACCESS_TTL", "200"), ("TESSERA_AUDIENCE", "from-env")];
    let expires_in = async |server: &TestServer| {
        let email = unique_email();
        server.register(&email).await;
        let reply = server.post("/api/auth/login", json!({"email": email, "password": PASSWORD})).await;
        let aud = jwt_parts(reply.data()["token"].as_str().unwrap()).1["aud"].clone();
        (reply.data()["expires_in"].as_u64().unwrap(), aud)
    };
    let from_file = TestServer::start_with(&["--config", file]).await;
    assert_eq!(expires_in(&from_file).await, (100, json!("from-file")));
    let from_env = TestServer::start_with_env(&["--config", file], &env).await;
    assert_eq!(expires_in(&from_env).await, (200, json!("from-env")));
    let from_flag = TestServer::start_with_env(&["--config", file, "--access-ttl", "5m"], &env).await;
    assert_eq!(expires_in(&from_flag).await, (300, json!("from-env")));
}

#[tokio::test]
async fn the_web_page_is_served_from_the_binary_with_a_strict_policy() {
    let server = TestServer::start().await;
    for (path, content_type) in [("/", "text/html"), ("/app.js", "text/javascript"), ("/app.css", "text/css")] {
        let resp = server.client.get(server.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let headers = resp.headers().clone();
        assert!(headers["content-type"].to_str().unwrap().starts_with(content_type), "{path}");
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"), "{csp}");
        let body = resp.text().await.unwrap();
        assert!(!body.contains("http://") && !body.contains("https://"), "{path} loads nothing from elsewhere");
    }
}

#[tokio::test]
async fn shutdown_has_a_deadline_even_with_a_client_holding_a_half_sent_request() {
    use tokio::io::AsyncWriteExt;
    let mut server = TestServer::start_with(&["--shutdown-timeout", "1s"]).await;
    let mut stuck = tokio::net::TcpStream::connect(server.base.trim_start_matches("http://")).await.unwrap();
    stuck.write_all(b"POST /api/auth/login HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"em").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    super::helpers::signal_term(server.pid());
    let started = std::time::Instant::now();
    let pid = server.pid();
    let exit = tokio::task::spawn_blocking(move || server.wait_exit());
    match tokio::time::timeout(Duration::from_secs(8), exit).await {
        Ok(status) => assert!(status.unwrap().success()),
        Err(_) => {
            super::helpers::signal_kill(pid);
            panic!("still running 8 s after SIGTERM with --shutdown-timeout 1s");
        }
    }
    assert!(started.elapsed() >= Duration::from_millis(900), "in-flight work had its second");
    drop(stuck);
}

#[test]
fn keys_rotate_reads_the_data_dir_and_access_ttl_from_the_config_file() {
    use tessera_core::Timestamp;
    use tessera_core::keys::KeyDir;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let keys = KeyDir::new(data_dir.join("keys"));
    let now = Timestamp::now();
    let hour = Duration::from_secs(3600);
    // Key A signed until 20 minutes ago, when key B took over: with one-hour access tokens, A's
    // tokens still live, so A must stay published (a 15-minute default would delete it).
    keys.init(now.saturating_sub(3 * hour)).unwrap();
    let a = keys.load_keys().unwrap().kids()[0].to_owned();
    let twenty_minutes_ago = now.saturating_sub(Duration::from_secs(20 * 60));
    keys.add_key(twenty_minutes_ago, twenty_minutes_ago).unwrap();
    let file = dir.path().join("tessera.toml");
    std::fs::write(&file, format!("data_dir = {:?}\naccess_ttl = \"1h\"\n", data_dir.display().to_string())).unwrap();

    let rotate = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["keys", "rotate", "--activate-in", "5m", "--config"])
        .arg(&file)
        .env_remove("TESSERA_DATA_DIR")
        .env_remove("TESSERA_ACCESS_TTL")
        .output()
        .unwrap();
    assert!(rotate.status.success(), "{}", String::from_utf8_lossy(&rotate.stderr));
    let kids = keys.load_keys().unwrap();
    assert!(kids.kids().contains(&a.as_str()), "the key of live tokens was kept: {:?}", kids.kids());
    assert_eq!(kids.kids().len(), 3, "and the new key was added in the configured data directory");
}

#[tokio::test]
async fn an_allowed_origin_that_is_not_an_origin_stops_the_server_at_start_up() {
    for bad in ["*", "https://app.example.com/login", "app.example.com"] {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(["serve", "--listen", "127.0.0.1:0", "--allowed-origins"])
            .arg(format!("https://ok.example.com,{bad}"))
            .arg("--data-dir")
            .arg(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad} was accepted");
        assert!(stderr.contains("--allowed-origins") && stderr.contains(&format!("`{bad}`")), "{stderr}");
    }
}
