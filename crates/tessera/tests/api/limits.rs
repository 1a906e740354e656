//! The HTTP layer under abuse: slow and idle connections, connection floods, password guessing
//! from many addresses, and forwarding headers.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::helpers::{PASSWORD, TestServer, http_client, read, unique_email};

fn addr(server: &TestServer) -> SocketAddr {
    server.base.trim_start_matches("http://").parse().unwrap()
}

/// A connection from `from` (any 127.0.0.0/8 address works on loopback).
async fn connect_from(server: &TestServer, from: IpAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(addr(server)).await
}

/// Reads until the server closes the connection; the bytes it sent, or `None` if it did not
/// close within `within`.
async fn until_closed(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    let read_all = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(within, read_all).await.ok().map(|()| received)
}

async fn healthy(server: &TestServer) -> bool {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(3)).build().unwrap();
    client.get(server.url("/healthz")).send().await.is_ok_and(|r| r.status() == StatusCode::OK)
}

/// How many slow connections a flood test opens: 3 000, or fewer when this process's open-file
/// limit is lower (always far more than one address's share of 128).
fn flood_size() -> usize {
    let fds = raise_fd_limit();
    let count = 3000.min(usize::try_from(fds).unwrap_or(0).saturating_sub(200));
    assert!(count >= 600, "the open-file limit ({fds}) is too low for a flood test");
    count
}

/// Lets this process open as many sockets as its hard limit allows.
#[allow(unsafe_code)]
fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit);
        libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit);
    }
    limit.rlim_cur
}

#[tokio::test]
async fn half_sent_headers_are_cut_off_at_the_header_timeout() {
    let server = TestServer::start_with(&["--header-timeout", "1s"]).await;
    let mut slow = TcpStream::connect(addr(&server)).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: ").await.unwrap();
    let started = Instant::now();
    assert!(healthy(&server).await, "others are served meanwhile");
    assert!(
        until_closed(&mut slow, Duration::from_secs(5)).await.is_some(),
        "still open 5 s after a 1 s header timeout"
    );
    assert!(started.elapsed() >= Duration::from_millis(800), "closed only once the timeout passed");

    // A connection that sends nothing at all is cut off on the same clock.
    let mut silent = TcpStream::connect(addr(&server)).await.unwrap();
    assert!(until_closed(&mut silent, Duration::from_secs(5)).await.is_some(), "a silent connection stayed open");
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_gets_408_in_the_envelope() {
    let server = TestServer::start_with(&["--body-timeout", "1s"]).await;
    let mut slow = TcpStream::connect(addr(&server)).await.unwrap();
    slow.write_all(
        b"POST /api/auth/login HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"em",
    )
    .await
    .unwrap();
    // A byte now and then does not keep the request alive: the timeout covers the whole body.
    let trickle = async {
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if slow.write_all(b" ").await.is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(1500), trickle).await;
    let answer = until_closed(&mut slow, Duration::from_secs(5)).await.expect("answered and closed in time");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    let body: Value = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap_or_default()).unwrap();
    assert_eq!(body["success"], false);
    assert_eq!(body["error"]["code"], "REQUEST_TIMEOUT");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_at_the_idle_timeout() {
    let server = TestServer::start_with(&["--idle-timeout", "1s", "--header-timeout", "5s"]).await;
    let mut conn = TcpStream::connect(addr(&server)).await.unwrap();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 1024];
    let n = conn.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let started = Instant::now();
    assert!(until_closed(&mut conn, Duration::from_secs(4)).await.is_some(), "an idle connection stayed open");
    assert!(started.elapsed() < Duration::from_secs(4), "closed by the 1 s idle timeout, not the 5 s header timeout");
}

#[tokio::test]
async fn an_address_over_its_share_loses_its_longest_waiting_connection_not_its_new_request() {
    let server = TestServer::start_with(&["--max-connections-per-address", "20"]).await;
    let flooder: IpAddr = "127.0.0.2".parse().unwrap();
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(connect_from(&server, flooder).await.unwrap());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The same address's real request is served: its oldest silent connection made room.
    let mut real = connect_from(&server, flooder).await.unwrap();
    real.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.unwrap();
    let answer = until_closed(&mut real, Duration::from_secs(3)).await.expect("answered");
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
    let oldest = until_closed(&mut held[0], Duration::from_secs(2)).await;
    assert_eq!(oldest.as_deref(), Some(&b""[..]), "the oldest waiting connection was closed");
    assert!(
        super::helpers::eventually(Duration::from_secs(3), async || server
            .logs()
            .contains("an address reached its share of connections: closing its longest-waiting ones"))
        .await,
        "the limit is logged"
    );
}

#[tokio::test]
async fn an_address_whose_connections_are_all_busy_is_refused_more_and_others_are_served() {
    let server = TestServer::start_with(&["--max-connections-per-address", "10", "--body-timeout", "10s"]).await;
    let flooder: IpAddr = "127.0.0.3".parse().unwrap();
    let mut busy = Vec::new();
    for _ in 0..10 {
        let mut conn = connect_from(&server, flooder).await.unwrap();
        conn.write_all(b"POST /api/auth/login HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{")
            .await
            .unwrap();
        busy.push(conn);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut extra = connect_from(&server, flooder).await.unwrap();
    let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let answer = until_closed(&mut extra, Duration::from_secs(3)).await.expect("the 11th connection is closed");
    assert!(answer.is_empty(), "refused without an answer: {}", String::from_utf8_lossy(&answer));
    assert!(healthy(&server).await, "another address is served");
    drop(busy);
    assert!(
        super::helpers::eventually(Duration::from_secs(3), async || {
            let mut again = connect_from(&server, flooder).await.unwrap();
            again.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.is_ok()
                && until_closed(&mut again, Duration::from_secs(2))
                    .await
                    .is_some_and(|a| a.starts_with(b"HTTP/1.1 200"))
        })
        .await,
        "closed connections give their share back"
    );
}

#[tokio::test]
async fn a_head_over_32_kib_gets_431_however_it_arrives() {
    let server = TestServer::start().await;
    for (size, expected) in [(30_000, "HTTP/1.1 200"), (33_000, "HTTP/1.1 431"), (40_000, "HTTP/1.1 431")] {
        let mut conn = TcpStream::connect(addr(&server)).await.unwrap();
        let head =
            format!("GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: {}\r\nconnection: close\r\n\r\n", "a".repeat(size));
        conn.write_all(head.as_bytes()).await.unwrap();
        let answer = until_closed(&mut conn, Duration::from_secs(5)).await.expect("answered and closed");
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with(expected), "a {size}-byte header line: {}", answer.lines().next().unwrap_or(""));
    }
}

/// Reads from `stream` until `needle` has arrived, for at most `within`.
async fn read_until(stream: &mut TcpStream, needle: &str, within: Duration) -> bool {
    let mut seen = Vec::new();
    let reading = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
            if String::from_utf8_lossy(&seen).contains(needle) {
                return true;
            }
        }
    };
    tokio::time::timeout(within, reading).await.unwrap_or(false)
}

#[tokio::test]
async fn feed_streams_are_busy_for_their_whole_life_and_never_pushed_out_as_idle() {
    let server = TestServer::start_with(&["--max-connections-per-address", "10"]).await;
    let subscriber: IpAddr = "127.0.0.4".parse().unwrap();
    let mut streams = Vec::new();
    for _ in 0..10 {
        let mut conn = connect_from(&server, subscriber).await.unwrap();
        conn.write_all(b"GET /api/auth/revocations HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n\r\n")
            .await
            .unwrap();
        assert!(read_until(&mut conn, "event: synced", Duration::from_secs(5)).await, "the feed opens");
        streams.push(conn);
    }
    // Newcomers from the same address find its share full of streams in flight: they are
    // refused, and no stream is closed to make room for them.
    for _ in 0..10 {
        let mut newcomer = connect_from(&server, subscriber).await.unwrap();
        let answer = until_closed(&mut newcomer, Duration::from_secs(3)).await;
        assert_eq!(answer.as_deref(), Some(&b""[..]), "a newcomer is refused without an answer");
    }
    let tokens = server.user(&unique_email()).await;
    let ended = server.send(reqwest::Method::POST, "/api/auth/logout", Some(&tokens.access), None, &[]).await;
    assert_eq!(ended.status, StatusCode::OK);
    for (i, stream) in streams.iter_mut().enumerate() {
        assert!(read_until(stream, "event: ended", Duration::from_secs(3)).await, "stream {i} was closed");
    }
}

#[tokio::test]
async fn thousands_of_slow_connections_from_the_clients_own_address_do_not_starve_it() {
    let count = flood_size();
    // Default limits: the flood comes from 127.0.0.1, like the client below.
    let server = TestServer::start().await;
    let mut slow = Vec::with_capacity(count);
    for _ in 0..count {
        let mut conn = TcpStream::connect(addr(&server)).await.unwrap();
        let _ = conn.write_all(b"POST /api/auth/login HTTP/1.1\r\nhost: x\r\n").await;
        slow.push(conn);
    }
    assert!(healthy(&server).await, "health while {count} slow connections came");
    let email = unique_email();
    server.register(&email).await;
    let login = server.post("/api/auth/login", json!({"email": email, "password": PASSWORD})).await;
    assert_eq!(login.status, 200, "{}", login.body);
    let open = open_connections(&server).await;
    assert!(open <= 130, "one address holds at most its share: {open}");
    if let Some(rss) = rss_kib(server.pid()) {
        eprintln!("server RSS after {count} slow connections from one address: {} MiB", rss / 1024);
    }
    drop(slow);
}

#[tokio::test]
async fn a_slow_flood_from_many_addresses_is_reaped_and_does_not_starve_other_clients() {
    let count = flood_size();
    // A third of the flood fits: the rest must push out the longest-waiting connections.
    let max = u64::try_from(count / 3).unwrap();
    let server = TestServer::start_with(&["--header-timeout", "5s", "--max-connections", &max.to_string()]).await;
    let mut slow = Vec::with_capacity(count);
    for i in 0..count {
        // 30 addresses with at most 100 connections each: under the per-address share (128),
        // over the total.
        let from = IpAddr::from([127, 0, 1, u8::try_from(i % 30).unwrap() + 1]);
        let mut conn = connect_from(&server, from).await.unwrap();
        let _ = conn.write_all(b"POST /api/auth/login HTTP/1.1\r\nhost: x\r\n").await;
        slow.push(conn);
    }
    let started = Instant::now();
    assert!(healthy(&server).await, "health while {count} slow connections are open");
    let email = unique_email();
    server.register(&email).await;
    let login = server.post("/api/auth/login", json!({"email": email, "password": PASSWORD})).await;
    assert_eq!(login.status, 200, "{}", login.body);
    let open = open_connections(&server).await;
    assert!((max / 2..=max + 2).contains(&open), "the slow connections fill the server, no more: {open} of {max}");
    if let Some(rss) = rss_kib(server.pid()) {
        eprintln!("server RSS with {open} slow connections open: {} MiB", rss / 1024);
    }
    // Each is closed by the header timeout.
    assert!(
        super::helpers::eventually(Duration::from_secs(15), async || open_connections(&server).await < 10).await,
        "slow connections are still open {:?} after a 5 s header timeout",
        started.elapsed()
    );
    drop(slow);
}

async fn open_connections(server: &TestServer) -> u64 {
    let text = http_client().get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("tessera_open_connections "))
        .and_then(|n| n.trim().parse().ok())
        .expect("tessera_open_connections in /metrics")
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
}

#[tokio::test]
async fn guessing_one_accounts_password_from_many_addresses_is_throttled_while_its_open_session_works() {
    let server = TestServer::start_with(&["--login-rate-limit", "30/min", "--login-failure-limit", "10/15min"]).await;
    let email = unique_email();
    let session = server.user(&email).await;

    let guesses = (2..12u8).map(|host| {
        let url = server.url("/api/auth/login");
        let email = email.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::builder().local_address(IpAddr::from([127, 0, 2, host])).build().unwrap();
            let mut statuses = Vec::new();
            for i in 0..30 {
                let body = json!({"email": email, "password": format!("guess number {i}")});
                let reply = read(client.post(&url).json(&body).send().await.unwrap()).await;
                if reply.status == 429 {
                    assert_eq!(reply.body["error"]["code"], "RATE_LIMITED");
                    assert!(reply.header("retry-after").is_some_and(|s| s.parse::<u64>().is_ok_and(|s| s >= 1)));
                }
                statuses.push(reply.status.as_u16());
            }
            statuses
        })
    });
    let mut statuses = Vec::new();
    for guess in guesses {
        statuses.extend(guess.await.unwrap());
    }
    let checked = statuses.iter().filter(|s| **s == 401).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(checked + limited, 300, "{statuses:?}");
    assert!(checked <= 11, "only the account's budget of guesses was checked, not {checked}");

    // The real user's open session is untouched.
    assert_eq!(server.me(&session.access).await.status, 200);
    let refreshed = server.refresh(&session.refresh).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    // Another account is not affected.
    let other = unique_email();
    server.register(&other).await;
    assert_eq!(server.post("/api/auth/login", json!({"email": other, "password": PASSWORD})).await.status, 200);
}

#[tokio::test]
async fn forwarded_client_addresses_count_only_from_trusted_proxies() {
    let login = async |server: &TestServer, forwarded_for: &str| {
        let body = json!({"email": "nobody@example.com", "password": "wrong password"});
        let reply = read(
            server
                .client
                .post(server.url("/api/auth/login"))
                .header("x-forwarded-for", forwarded_for)
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await;
        reply.status.as_u16()
    };

    // Behind a trusted proxy, each forwarded client has its own budget.
    let proxied = TestServer::start_with(&["--login-rate-limit", "2/min", "--trusted-proxies", "127.0.0.1"]).await;
    assert_eq!(login(&proxied, "203.0.113.1").await, 401);
    assert_eq!(login(&proxied, "203.0.113.1").await, 401);
    assert_eq!(login(&proxied, "203.0.113.1").await, 429);
    assert_eq!(login(&proxied, "203.0.113.2").await, 401, "another client behind the proxy");
    // The address a session shows is the forwarded one.
    let email = unique_email();
    proxied.register(&email).await;
    let body = json!({"email": email, "password": PASSWORD});
    let reply = read(
        proxied
            .client
            .post(proxied.url("/api/auth/login"))
            .header("forwarded", "for=198.51.100.7")
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let access = reply.data()["token"].as_str().unwrap().to_owned();
    let sessions = proxied.get("/api/auth/sessions", &access).await;
    assert_eq!(sessions.data()["sessions"][0]["ip"], "198.51.100.7");

    // Without trusted proxies the header is ignored: every claim shares the peer's budget.
    let direct = TestServer::start_with(&["--login-rate-limit", "2/min"]).await;
    assert_eq!(login(&direct, "203.0.113.1").await, 401);
    assert_eq!(login(&direct, "203.0.113.2").await, 401);
    assert_eq!(login(&direct, "203.0.113.3").await, 429, "a forged X-Forwarded-For bought nothing");
}

#[tokio::test]
async fn the_failed_login_budget_is_shared_by_instances_when_there_is_redis() {
    use super::helpers::{Backend, backend};
    let a = TestServer::start_with(&["--login-failure-limit", "6/15min"]).await;
    let b = a.sibling().await;
    let email = unique_email();
    a.register(&email).await;
    let mut checked = 0;
    for i in 0..24 {
        let server = if i % 2 == 0 { &a } else { &b };
        let reply = server.post("/api/auth/login", json!({"email": email, "password": "wrong password"})).await;
        match reply.status.as_u16() {
            401 => checked += 1,
            429 => {}
            other => panic!("{other}: {}", reply.body),
        }
    }
    match backend() {
        // One budget in Redis for the whole deployment.
        Backend::Redis | Backend::RedisCluster => assert_eq!(checked, 6),
        // Without Redis each instance counts for itself.
        Backend::Sqlite | Backend::Postgres => assert_eq!(checked, 12),
    }
}

#[tokio::test]
async fn a_low_open_file_limit_lowers_the_connection_cap_instead_of_running_out_of_files() {
    // 400 files leave room for 144 connections beside the server's own 256.
    let server = TestServer::start_with_file_limit(&["--max-connections-per-address", "1000"], 400).await;
    assert!(
        super::helpers::eventually(Duration::from_secs(2), async || server
            .logs()
            .lines()
            .any(|l| l.contains("the open-file limit leaves room for fewer connections") && l.contains("144")))
        .await,
        "the lowered cap is logged: {}",
        server.logs()
    );
    // More idle connections than the process has files for: the cap, not EMFILE, refuses them.
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(TcpStream::connect(addr(&server)).await.unwrap());
    }
    assert!(healthy(&server).await, "health with 300 idle connections against a 400-file limit");
    let open = open_connections(&server).await;
    assert!(open <= 145, "at most the lowered cap is open: {open}");
    drop(idle);
}
