//! `tessera gateway` in front of a service in another language: the real binary, a real tessera,
//! and a Node app (`tests/upstream/app.mjs`, with the `ws` package) that reports what reached it.

use std::io::{BufRead, BufReader, Read as _, Write as _};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::helpers::*;

/// The Node app behind the gateway.
pub struct Upstream {
    pub base: String,
    child: Child,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Upstream {
    pub fn start() -> Self {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/upstream");
        assert!(
            dir.join("node_modules/ws").exists(),
            "{} has no node_modules: run `npm ci` there (scripts/test does)",
            dir.display()
        );
        let mut child = Command::new("node")
            .arg("app.mjs")
            .current_dir(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start node (the test upstream needs Node.js)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line.trim().strip_prefix("listening ").unwrap_or_else(|| panic!("the upstream said {line:?}"));
        Self { base: format!("http://127.0.0.1:{port}"), child }
    }

    /// What the app received, asked directly (not through the gateway).
    pub async fn get(&self, path: &str) -> Value {
        http_client().get(format!("{}{path}", self.base)).send().await.unwrap().json().await.unwrap()
    }

    /// Whether any request target the app received contains `needle`.
    pub async fn saw(&self, needle: &str) -> bool {
        self.get("/seen").await.as_array().unwrap().iter().any(|t| t.as_str().unwrap().contains(needle))
    }
}

pub struct Gateway {
    pub base: String,
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    /// `tessera gateway` trusting `issuer`, in front of `upstream`.
    pub async fn start(issuer: &TestServer, upstream: &str, extra: &[&str]) -> Self {
        Self::start_raw(&["--issuer", &issuer.base], upstream, extra).await
    }

    pub async fn start_raw(issuer: &[&str], upstream: &str, extra: &[&str]) -> Self {
        Self::start_in(Command::new(env!("CARGO_BIN_EXE_tessera")), issuer, upstream, extra).await
    }

    /// The gateway run by `command` (the binary, or a wrapper that runs it).
    async fn start_in(mut command: Command, issuer: &[&str], upstream: &str, extra: &[&str]) -> Self {
        let mut child = command
            .args(["gateway", "--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(issuer)
            .args(["--upstream", upstream])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tessera gateway");
        let (logs, addr) = follow_logs(child.stdout.take().unwrap(), Duration::from_secs(30)).await;
        let Some(addr) = addr else {
            let _ = child.kill();
            panic!("tessera gateway did not start ({extra:?}): {}", logs.lock().unwrap().join("\n"))
        };
        Self { base: format!("http://{addr}"), child, logs }
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub async fn send(&self, method: Method, path: &str, bearer: Option<&str>, headers: &[(&str, &str)]) -> Reply {
        let mut request = http_client().request(method, format!("{}{path}", self.base));
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        read(request.send().await.expect("request to the gateway")).await
    }

    pub async fn get(&self, path: &str, bearer: Option<&str>) -> Reply {
        self.send(Method::GET, path, bearer, &[]).await
    }

    /// Opens `/ws` the way a browser does: `tessera` and `tessera.bearer.<token>` offered.
    pub async fn socket(&self, token: &str) -> Result<(crate::todos::Socket, Option<String>), tungstenite::Error> {
        let mut request = format!("{}/ws", self.base.replace("http://", "ws://")).into_client_request().unwrap();
        let offer = format!("tessera, tessera.bearer.{token}");
        request.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_str(&offer).unwrap());
        let (socket, response) = tokio_tungstenite::connect_async(request).await?;
        let protocol = response.headers().get("sec-websocket-protocol").map(|v| v.to_str().unwrap().to_owned());
        Ok((socket, protocol))
    }
}

/// A tessera, the Node app, and a gateway in front of it with `extra` flags.
async fn setup(server_args: &[&str], extra: &[&str]) -> (TestServer, Upstream, Gateway) {
    let server = TestServer::start_with(server_args).await;
    let upstream = Upstream::start();
    let gateway = Gateway::start(&server, &upstream.base, extra).await;
    (server, upstream, gateway)
}

async fn logout(server: &TestServer, access: &str) {
    let reply = server.send(Method::POST, "/api/auth/logout", Some(access), None, &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
}

#[tokio::test]
async fn no_token_a_bad_one_or_a_forged_one_never_reaches_the_app() {
    let (server, upstream, gateway) = setup(&[], &[]).await;
    let tokens = server.user(&unique_email()).await;

    let none = gateway.get("/echo?probe=none", None).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert_eq!(none.header("www-authenticate"), Some("Bearer"));

    let garbage = gateway.get("/echo?probe=garbage", Some("garbage")).await;
    assert_eq!(garbage.status, StatusCode::UNAUTHORIZED);
    assert!(garbage.header("www-authenticate").is_some_and(|v| v.contains(r#"error="invalid_token""#)));

    // The same claims under a signature that is not tessera's.
    let (header, claims) = jwt_parts(&tokens.access);
    let key = jsonwebtoken::EncodingKey::from_secret(b"not tessera's key");
    let mut forged_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    forged_header.kid = header["kid"].as_str().map(str::to_owned);
    let forged = jsonwebtoken::encode(&forged_header, &claims, &key).unwrap();
    assert_eq!(gateway.get("/echo?probe=forged", Some(&forged)).await.status, StatusCode::UNAUTHORIZED);

    let two = gateway
        .send(Method::GET, "/echo?probe=two", None, &[("authorization", "Bearer a"), ("authorization", "Bearer b")])
        .await;
    assert_eq!(two.status, StatusCode::BAD_REQUEST);

    for probe in ["none", "garbage", "forged", "two"] {
        assert!(!upstream.saw(&format!("probe={probe}")).await, "probe={probe} reached the app");
    }
    assert_eq!(gateway.get("/echo?probe=good", Some(&tokens.access)).await.status, StatusCode::OK);
    assert!(upstream.saw("probe=good").await);
}

#[tokio::test]
async fn the_caller_arrives_in_headers_and_spoofed_ones_do_not() {
    let (server, _upstream, gateway) = setup(&[], &[]).await;
    let email = unique_email();
    let reply =
        server.post("/api/auth/register", json!({"email": email, "username": "gate_ada", "password": PASSWORD})).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let tokens = server.login(&email).await;
    let claims = jwt_parts(&tokens.access).1;
    let spoofs = [
        ("x-tessera-user-id", "someone-else"),
        ("x-tessera-admin", "true"),
        ("X-Tessera-Anonymous", "true"),
        ("x-forwarded-for", "203.0.113.9"),
        ("x-forwarded-proto", "https"),
    ];

    let echo = gateway.send(Method::GET, "/echo?x=1", Some(&tokens.access), &spoofs).await;
    assert_eq!(echo.status, StatusCode::OK, "{}", echo.body);
    let headers = &echo.body["headers"];
    assert_eq!(headers["x-tessera-user-id"], claims["sub"]);
    assert_eq!(headers["x-tessera-session-id"], claims["sid"]);
    assert_eq!(headers["x-tessera-email"], email.as_str());
    assert_eq!(headers["x-tessera-username"], "gate_ada");
    assert_eq!(headers["x-tessera-anonymous"], "false");
    assert!(headers.get("x-tessera-admin").is_none(), "{headers}");
    assert_eq!(headers["authorization"], format!("Bearer {}", tokens.access).as_str(), "passed on unchanged");
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1", "a client's own X-Forwarded-For is not believed");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-host"], gateway.base.trim_start_matches("http://"));
    assert_eq!(echo.body["path"], "/echo?x=1");
}

/// Under an open-file limit too small for `--max-connections`, the gateway takes only the
/// connections the limit holds (two files each: the client's and the upstream's). Those past
/// it are refused, and every one it takes reaches the app: none gets a `502` for want of a file.
#[tokio::test]
async fn the_open_file_limit_caps_connections_so_none_fails_for_want_of_a_file() {
    let server = TestServer::start().await;
    let upstream = Upstream::start();
    let mut limited = Command::new("prlimit");
    limited.args(["--nofile=320:320", "--", env!("CARGO_BIN_EXE_tessera")]);
    let caps = ["--max-connections", "1000", "--max-connections-per-address", "1000"];
    let gateway = Gateway::start_in(limited, &["--issuer", &server.base], &upstream.base, &caps).await;
    assert!(gateway.logs().contains("the open-file limit leaves room for fewer connections"), "{}", gateway.logs());
    let email = unique_email();
    server.post("/api/auth/register", json!({"email": email, "password": PASSWORD})).await;
    let token = server.login(&email).await.access;
    let addr = gateway.base.trim_start_matches("http://").to_owned();
    let request = format!("GET /echo HTTP/1.1\r\nHost: app\r\nAuthorization: Bearer {token}\r\n\r\n");
    // Held open all at once, each with one request: more than the limit holds without a cap.
    let mut held = Vec::new();
    for _ in 0..200 {
        let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
        use tokio::io::AsyncWriteExt as _;
        let _ = conn.write_all(request.as_bytes()).await;
        held.push(conn);
    }
    let (mut answered, mut refused) = (0, 0);
    for mut conn in held {
        use tokio::io::AsyncReadExt as _;
        let mut head = [0u8; 12];
        match tokio::time::timeout(Duration::from_secs(10), conn.read_exact(&mut head)).await {
            Ok(Ok(_)) => {
                let status = String::from_utf8_lossy(&head[9..12]).into_owned();
                assert_eq!(status, "200", "an accepted connection was not proxied");
                answered += 1;
            }
            Ok(Err(_)) => refused += 1,
            Err(_) => panic!("a connection got neither an answer nor a refusal"),
        }
    }
    assert!(answered > 0 && refused > 0, "{answered} answered, {refused} refused");
    assert_eq!(gateway.get("/echo", Some(&token)).await.status, StatusCode::OK, "still serving");
}

/// An upstream that closes each connection right after its answer, without saying so: every
/// idle connection the gateway keeps is closed under it, sometimes while a request is on its
/// way. Each request is answered all the same (sent again on a new connection).
#[tokio::test]
async fn an_upstream_closing_idle_connections_costs_no_request() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let (mut conn, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && conn.read_exact(&mut byte).await.is_ok() {
                    head.push(byte[0]);
                }
                let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
            });
        }
    });
    let server = TestServer::start().await;
    let gateway = Gateway::start(&server, &upstream, &[]).await;
    let email = unique_email();
    server.post("/api/auth/register", json!({"email": email, "password": PASSWORD})).await;
    let token = server.login(&email).await.access;
    for i in 0..100 {
        let reply = gateway.get("/", Some(&token)).await;
        assert_eq!(reply.status, StatusCode::OK, "request {i}: {}", reply.body);
    }
}

#[tokio::test]
async fn a_trusted_proxys_forwarding_headers_are_kept() {
    let (server, _upstream, gateway) = setup(&[], &["--trusted-proxies", "127.0.0.1"]).await;
    let tokens = server.user(&unique_email()).await;
    let forwarded =
        [("x-forwarded-for", "203.0.113.9"), ("x-forwarded-proto", "https"), ("x-forwarded-host", "app.test")];
    let echo = gateway.send(Method::GET, "/echo", Some(&tokens.access), &forwarded).await;
    let headers = &echo.body["headers"];
    assert_eq!(headers["x-forwarded-for"], "203.0.113.9, 127.0.0.1", "{headers}");
    assert_eq!(headers["x-forwarded-proto"], "https");
    assert_eq!(headers["x-forwarded-host"], "app.test");
}

#[tokio::test]
async fn public_paths_need_no_token_but_refuse_a_dead_one() {
    let (server, _upstream, gateway) = setup(&[], &["--public", "/public"]).await;
    let tokens = server.user(&unique_email()).await;

    let anonymous = gateway.send(Method::GET, "/public/page", None, &[("x-tessera-user-id", "forged")]).await;
    assert_eq!(anonymous.status, StatusCode::OK, "{}", anonymous.body);
    assert!(anonymous.body["headers"].get("x-tessera-user-id").is_none(), "{}", anonymous.body);
    assert_eq!(gateway.get("/publicity", None).await.status, StatusCode::UNAUTHORIZED, "a prefix is whole segments");

    let known = gateway.get("/public/page", Some(&tokens.access)).await;
    assert_eq!(known.body["headers"]["x-tessera-user-id"], jwt_parts(&tokens.access).1["sub"]);

    logout(&server, &tokens.access).await;
    // Until the gateway hears of the logout (within a second) the token still passes, as its
    // user; once it has, the token is refused. Never is it passed on as an anonymous visitor.
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    loop {
        let reply = gateway.get("/public/page", Some(&tokens.access)).await;
        if reply.status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        let user = &reply.body["headers"]["x-tessera-user-id"];
        assert_eq!(*user, jwt_parts(&tokens.access).1["sub"], "a dead token never passes as an anonymous visitor");
        assert!(std::time::Instant::now() < deadline, "the ended session's token still passes after a second");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn logout_and_a_replayed_refresh_token_reach_the_gateway_within_a_second() {
    let (server, _upstream, gateway) = setup(&[], &[]).await;
    let email = unique_email();
    let tokens = server.user(&email).await;
    assert_eq!(gateway.get("/echo", Some(&tokens.access)).await.status, StatusCode::OK);
    logout(&server, &tokens.access).await;
    let refused = eventually(Duration::from_secs(1), async || {
        gateway.get("/echo", Some(&tokens.access)).await.status == StatusCode::UNAUTHORIZED
    })
    .await;
    assert!(refused, "a logged-out token still passes the gateway after a second");

    // A thief replays a refresh token its owner already used: the session ends everywhere.
    let owner = server.login(&email).await;
    let rotated = tokens_of(&server.refresh(&owner.refresh).await);
    assert_eq!(gateway.get("/echo", Some(&rotated.access)).await.status, StatusCode::OK);
    server.refresh(&owner.refresh).await.assert_error(401, "INVALID_TOKEN");
    let refused = eventually(Duration::from_secs(1), async || {
        gateway.get("/echo", Some(&rotated.access)).await.status == StatusCode::UNAUTHORIZED
    })
    .await;
    assert!(refused, "the session a replay ended still passes the gateway after a second");
}

#[tokio::test]
async fn responses_stream_and_a_large_upload_passes() {
    let (server, _upstream, gateway) = setup(&[], &[]).await;
    let tokens = server.user(&unique_email()).await;

    // Server-sent events arrive one by one, as the app writes them.
    let response = http_client().get(format!("{}/sse", gateway.base)).bearer_auth(&tokens.access).send().await.unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut response = response;
    let first = response.chunk().await.unwrap().unwrap();
    assert_eq!(&first[..], b"data: 1\n\n", "the first event came alone, before the stream ended");
    let mut rest = Vec::new();
    while let Some(chunk) = response.chunk().await.unwrap() {
        rest.extend_from_slice(&chunk);
    }
    assert_eq!(String::from_utf8(rest).unwrap(), "data: 2\n\ndata: 3\n\n");

    let upload: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let digest = hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &upload).as_ref());
    let reply = read(
        http_client()
            .post(format!("{}/upload", gateway.base))
            .bearer_auth(&tokens.access)
            .body(upload.clone())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["bytes"], upload.len());
    assert_eq!(reply.body["sha256"], digest.as_str());
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn an_unreachable_upstream_is_502_and_a_slow_one_504() {
    let server = TestServer::start().await;
    let tokens = server.user(&unique_email()).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let down = Gateway::start(&server, &nowhere, &[]).await;
    let reply = down.get("/echo", Some(&tokens.access)).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(reply.body["error"], "bad_gateway", "{}", reply.body);

    let upstream = Upstream::start();
    let slow = Gateway::start(&server, &upstream.base, &["--upstream-timeout", "1s"]).await;
    let reply = slow.get("/slow", Some(&tokens.access)).await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(reply.body["error"], "gateway_timeout", "{}", reply.body);
}

#[tokio::test]
async fn ambiguous_framing_never_reaches_the_app() {
    let (server, upstream, gateway) = setup(&[], &[]).await;
    let tokens = server.user(&unique_email()).await;
    let addr = gateway.base.trim_start_matches("http://").to_owned();
    let exchange = |probe: &str, framing: &str, body: &str| {
        let mut stream = std::net::TcpStream::connect(&addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let request = format!(
            "POST /upload?probe={probe} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n{framing}\r\n{body}",
            tokens.access
        );
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).to_string()
    };
    // Two lengths: refused.
    let answer = exchange("lengths", "Content-Length: 5\r\nContent-Length: 6\r\n", "hello");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(!upstream.saw("probe=lengths").await, "two lengths reached the app");
    // A length and chunked: read as chunked (RFC 9112 §6.3), the length never passed on, and the
    // connection closed after the answer (read_to_end returned), so no second request can hide
    // in the body.
    let answer = exchange("both", "Content-Length: 100\r\nTransfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""bytes":5"#), "the app read the chunked body: {answer}");
}

#[tokio::test]
async fn a_socket_closes_with_4001_when_its_session_ends_and_the_app_sees_it() {
    let (server, upstream, gateway) = setup(&[], &[]).await;
    let tokens = server.user(&unique_email()).await;
    let claims = jwt_parts(&tokens.access).1;
    let (mut socket, protocol) = gateway.socket(&tokens.access).await.expect("handshake");
    assert_eq!(protocol.as_deref(), Some("tessera"), "the browser gets one of its offers");
    let hello: Value = serde_json::from_str(&socket.next().await.unwrap().unwrap().into_text().unwrap()).unwrap();
    assert_eq!(hello["user"], claims["sub"], "{hello}");
    assert!(
        !hello["offered"].as_str().unwrap_or_default().contains("tessera.bearer"),
        "the token never reaches the app: {hello}"
    );
    socket.send(Message::text("ping?")).await.unwrap();
    assert_eq!(socket.next().await.unwrap().unwrap().into_text().unwrap(), "ping?");

    logout(&server, &tokens.access).await;
    // Within a second of the logout; the test allows two on a busy machine.
    let frame = close_frame(&mut socket, Duration::from_secs(2)).await.expect("a close frame with a code");
    assert_eq!(frame.code, CloseCode::Library(4001));
    assert_eq!(frame.reason.as_str(), "session ended");
    let app_saw = eventually(Duration::from_secs(2), async || {
        upstream.get("/ws-closes").await.as_array().unwrap().iter().any(|c| c["code"] == 4001)
    })
    .await;
    assert!(app_saw, "the app did not see the socket close: {}", upstream.get("/ws-closes").await);

    // Reconnecting with the ended session's token is refused at the handshake.
    match gateway.socket(&tokens.access).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 401),
        other => panic!("the handshake of an ended session was not refused: {:?}", other.map(|(_, p)| p)),
    }
}

#[tokio::test]
async fn a_socket_closes_with_4002_when_its_token_expires() {
    let (server, _upstream, gateway) = setup(&["--access-ttl", "2s"], &[]).await;
    let tokens = server.user(&unique_email()).await;
    let (mut socket, _) = gateway.socket(&tokens.access).await.expect("handshake");
    let frame = close_frame(&mut socket, Duration::from_secs(5)).await.expect("a close frame with a code");
    assert_eq!(frame.code, CloseCode::Library(4002));
    assert_eq!(frame.reason.as_str(), "token expired");
}

#[tokio::test]
async fn the_gateways_own_routes_never_reach_the_app() {
    let (server, upstream, gateway) = setup(&[], &[]).await;
    let tokens = server.user(&unique_email()).await;
    let health = gateway.get("/.tessera/healthz", None).await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.body["status"], "ok");
    assert_eq!(gateway.get("/echo", Some(&tokens.access)).await.status, StatusCode::OK);
    assert_eq!(gateway.get("/echo", None).await.status, StatusCode::UNAUTHORIZED);
    let metrics = gateway.get("/.tessera/metrics", None).await;
    let text = metrics.body.as_str().unwrap_or_default();
    assert!(text.contains(r#"tessera_gateway_requests_total{outcome="forwarded"} 1"#), "{text}");
    assert!(text.contains(r#"tessera_gateway_requests_total{outcome="no_token"} 1"#), "{text}");
    assert!(text.contains("tessera_gateway_feed_connected 1"), "{text}");
    for path in ["/.tessera/other", "/.tessera", "/.tessera/"] {
        assert_eq!(gateway.get(path, Some(&tokens.access)).await.status, StatusCode::NOT_FOUND, "{path}");
    }
    assert!(!upstream.saw(".tessera").await, "{}", gateway.logs());
}

/// The close frame a socket gets within `within`.
async fn close_frame(socket: &mut crate::todos::Socket, within: Duration) -> Option<tungstenite::protocol::CloseFrame> {
    tokio::time::timeout(within, async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                other => panic!("the socket ended without a close frame: {other:?}"),
            }
        }
    })
    .await
    .expect("no close frame in time")
}

#[tokio::test]
async fn a_logout_on_one_instance_reaches_a_gateway_fed_by_another() {
    let mut args: Vec<String> = vec!["--issuer".into(), "https://auth.test".into()];
    args.extend(postgres_args().await);
    args.extend(redis_args());
    let a = TestServer::start_raw(args).await;
    let b = a.sibling().await;
    let upstream = Upstream::start();
    let gateway =
        Gateway::start_raw(&["--issuer", "https://auth.test", "--tessera-url", &b.base], &upstream.base, &[]).await;
    let tokens = a.user(&unique_email()).await;
    assert_eq!(gateway.get("/echo", Some(&tokens.access)).await.status, StatusCode::OK);
    let (mut socket, _) = gateway.socket(&tokens.access).await.expect("handshake");
    logout(&a, &tokens.access).await;
    let frame = close_frame(&mut socket, Duration::from_secs(2)).await.expect("a close frame with a code");
    assert_eq!(frame.code, CloseCode::Library(4001));
    assert_eq!(gateway.get("/echo", Some(&tokens.access)).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn open_sockets_count_toward_the_connection_cap() {
    let (server, _upstream, gateway) = setup(&[], &["--max-connections", "2"]).await;
    let tokens = server.user(&unique_email()).await;
    let (first, _) = gateway.socket(&tokens.access).await.expect("first socket");
    let (_second, _) = gateway.socket(&tokens.access).await.expect("second socket");
    // Both places are taken by sockets, which are never pushed out as idle: a newcomer is refused.
    let refused = http_client().get(format!("{}/.tessera/healthz", gateway.base)).send().await;
    assert!(refused.is_err(), "a third connection was served: {refused:?}");
    drop(first);
    let served = eventually(Duration::from_secs(3), async || {
        http_client().get(format!("{}/.tessera/healthz", gateway.base)).send().await.is_ok()
    })
    .await;
    assert!(served, "a closed socket did not give its place back");
}

#[tokio::test]
async fn a_silent_feed_closes_sockets_with_1013_and_refuses_requests() {
    let (mut server, _upstream, gateway) = setup(&[], &["--max-feed-silence", "2s"]).await;
    let tokens = server.user(&unique_email()).await;
    let (mut socket, _) = gateway.socket(&tokens.access).await.expect("handshake");
    server.stop(true);
    let frame = close_frame(&mut socket, Duration::from_secs(10)).await.expect("a close frame with a code");
    assert_eq!(frame.code, CloseCode::Again);
    let refused = gateway.get("/echo", Some(&tokens.access)).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE, "fails closed: {}", refused.body);
    assert!(refused.header("retry-after").is_some());
}

#[tokio::test]
async fn a_stopping_gateway_closes_its_sockets_with_1001() {
    let (server, upstream, gateway) = setup(&[], &[]).await;
    let tokens = server.user(&unique_email()).await;
    let (mut socket, _) = gateway.socket(&tokens.access).await.expect("handshake");
    signal_term(gateway.pid());
    let frame = close_frame(&mut socket, Duration::from_secs(5)).await.expect("a close frame with a code");
    assert_eq!(frame.code, CloseCode::Away);
    let app_saw = eventually(Duration::from_secs(2), async || {
        upstream.get("/ws-closes").await.as_array().unwrap().iter().any(|c| c["code"] == 1001)
    })
    .await;
    assert!(app_saw, "the app did not see the socket close");
}

#[tokio::test]
async fn every_worker_proxies_requests_and_closes_its_sockets() {
    let (server, _upstream, gateway) = setup(&[], &["--workers", "3"]).await;
    assert!(gateway.logs().contains(r#""workers":3"#), "{}", gateway.logs());
    // A thread names itself once it runs: until then it carries the process's name.
    let threads = || -> Vec<String> {
        std::fs::read_dir(format!("/proc/{}/task", gateway.pid()))
            .unwrap()
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .map(|name| name.trim().to_owned())
            .collect()
    };
    let named = eventually(Duration::from_secs(2), async || {
        ["gateway-1", "gateway-2"].iter().all(|worker| threads().iter().any(|t| t == worker))
    })
    .await;
    assert!(named, "a worker thread is missing: {:?}", threads());
    // Sockets and plain requests on many connections, which the workers take from one listener.
    let mut sockets = Vec::new();
    for _ in 0..12 {
        let tokens = server.user(&unique_email()).await;
        let (mut socket, _) = gateway.socket(&tokens.access).await.expect("handshake");
        socket.next().await.expect("the app's hello").unwrap();
        sockets.push((tokens, socket));
    }
    let token = &sockets[0].0.access;
    let requests = (0..48).map(|_| async {
        let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
        client.get(format!("{}/echo", gateway.base)).bearer_auth(token).send().await.unwrap().status()
    });
    for status in futures_util::future::join_all(requests).await {
        assert_eq!(status, StatusCode::OK);
    }
    // Each session's logout closes its socket, whichever worker holds it.
    for (tokens, socket) in &mut sockets[6..] {
        logout(&server, &tokens.access).await;
        let frame = close_frame(socket, Duration::from_secs(2)).await.expect("a close frame with a code");
        assert_eq!(frame.code, CloseCode::Library(4001));
    }
    // And a stop closes the rest with 1001, on every worker, then the process exits.
    signal_term(gateway.pid());
    for (_, socket) in &mut sockets[..6] {
        let frame = close_frame(socket, Duration::from_secs(5)).await.expect("a close frame with a code");
        assert_eq!(frame.code, CloseCode::Away);
    }
    let exited = eventually(Duration::from_secs(10), async || {
        !std::path::Path::new(&format!("/proc/{}/task", gateway.pid())).exists()
            || std::fs::read_to_string(format!("/proc/{}/stat", gateway.pid())).is_ok_and(|s| s.contains(") Z "))
    })
    .await;
    assert!(exited, "the gateway did not exit after its sockets closed");
}
