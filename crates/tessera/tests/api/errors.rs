//! Every row of the error table of README, "API (v1)", and malformed input of every kind.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

#[tokio::test]
async fn malformed_json_is_invalid_request() {
    let server = TestServer::start().await;
    let empty =
        server.send(Method::POST, "/api/auth/register", None, None, &[("content-type", "application/json")]).await;
    empty.assert_error(400, "INVALID_REQUEST");
    for body in ["{", "not json", "[]", "null", "{\"email\": \"a@b.co\", \"password\": \"12345678\"} trailing", "\u{0}"]
    {
        let resp = server
            .client
            .post(server.url("/api/auth/register"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        read(resp).await.assert_error(400, "INVALID_REQUEST");
    }
    let bad_utf8 = server
        .client
        .post(server.url("/api/auth/login"))
        .header("content-type", "application/json")
        .body(vec![b'{', 0xff, 0xfe, b'}'])
        .send()
        .await
        .unwrap();
    read(bad_utf8).await.assert_error(400, "INVALID_REQUEST");
    let deep = "[".repeat(10_000);
    let resp = server
        .client
        .post(server.url("/api/auth/login"))
        .header("content-type", "application/json")
        .body(deep)
        .send()
        .await
        .unwrap();
    read(resp).await.assert_error(400, "INVALID_REQUEST");
}

#[tokio::test]
async fn wrong_types_unknown_and_missing_fields_are_named() {
    let server = TestServer::start().await;
    let cases = [
        (json!({"email": 5, "password": PASSWORD}), "email"),
        (json!({"email": "a@example.com"}), "password"),
        (json!({"email": "a@example.com", "password": PASSWORD, "admin": true}), "admin"),
        (json!({"email": "a@example.com", "password": PASSWORD, "refresh_transport": "pigeon"}), "refresh_transport"),
    ];
    for (body, field) in cases {
        let reply = server.post("/api/auth/login", body).await;
        reply.assert_error(400, "INVALID_REQUEST");
        let message = reply.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{message} should name {field}");
    }
    server.post("/api/auth/refresh", json!({"refresh_token": 1})).await.assert_error(400, "INVALID_REQUEST");
}

#[tokio::test]
async fn refresh_without_a_token_is_missing_token() {
    let server = TestServer::start().await;
    server.post("/api/auth/refresh", json!({})).await.assert_error(400, "MISSING_TOKEN");
    let empty = server.client.post(server.url("/api/auth/refresh")).send().await.unwrap();
    read(empty).await.assert_error(400, "MISSING_TOKEN");
}

#[tokio::test]
async fn registration_rejects_bad_emails_and_weak_passwords_saying_why() {
    let server = TestServer::start().await;
    for email in ["", "no-at-sign", "a@b", "two@@example.com", "sp ace@example.com"] {
        let reply = server.post("/api/auth/register", json!({"email": email, "password": PASSWORD})).await;
        reply.assert_error(400, "INVALID_EMAIL");
    }
    let short = server.post("/api/auth/register", json!({"email": "a@example.com", "password": "1234567"})).await;
    short.assert_error(400, "WEAK_PASSWORD");
    assert!(short.body["error"]["message"].as_str().unwrap().contains("at least 8"));
    let long = server.post("/api/auth/register", json!({"email": "a@example.com", "password": "x".repeat(1025)})).await;
    long.assert_error(400, "WEAK_PASSWORD");
    assert!(long.body["error"]["message"].as_str().unwrap().contains("at most 1024"));
}

#[tokio::test]
async fn a_taken_email_is_refused_case_insensitively_and_trimmed() {
    let server = TestServer::start().await;
    server.register("Grace@Example.com").await;
    let again = server.post("/api/auth/register", json!({"email": "  grace@EXAMPLE.com ", "password": PASSWORD})).await;
    again.assert_error(409, "EMAIL_TAKEN");
    // And login matches the same way.
    server.login(" GRACE@example.COM").await;
}

#[tokio::test]
async fn wrong_password_and_unknown_email_get_the_same_answer_in_about_the_same_time() {
    // The default argon2 cost, so that a skipped hash would show.
    let server = TestServer::start_with(&["--argon2-memory-kib", "19456", "--argon2-iterations", "2"]).await;
    server.register("known@example.com").await;
    let attempt = async |email: &str| {
        let started = Instant::now();
        let reply = server.post("/api/auth/login", json!({"email": email, "password": "wrong password"})).await;
        (started.elapsed(), reply)
    };
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for _ in 0..9 {
        let (t, wrong) = attempt("known@example.com").await;
        known.push(t);
        let (u, missing) = attempt("nobody@example.com").await;
        unknown.push(u);
        wrong.assert_error(401, "INVALID_CREDENTIALS");
        missing.assert_error(401, "INVALID_CREDENTIALS");
        assert_eq!(wrong.body, missing.body);
        assert!(wrong.header("www-authenticate").is_some());
    }
    // The fastest of each: a loaded machine only ever adds time, so the minimum is the cost of
    // the work itself, and a skipped hash would show as a minimum far below the other.
    let (k, u) = (known.iter().min().unwrap().as_secs_f64(), unknown.iter().min().unwrap().as_secs_f64());
    assert!(u > k * 0.5 && u < k * 2.0, "fastest wrong-password {k:.4}s vs unknown-email {u:.4}s");
}

#[tokio::test]
async fn an_unknown_or_forged_refresh_token_is_invalid_token() {
    let server = TestServer::start().await;
    let tokens = server.user(&unique_email()).await;
    let mut forged = tokens.refresh.clone().into_bytes();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    for token in [String::from_utf8(forged).unwrap(), "x".into(), tokens.access.clone(), "A".repeat(76)] {
        let reply = server.refresh(&token).await;
        reply.assert_error(401, "INVALID_TOKEN");
        assert_eq!(reply.body["error"]["message"], "Invalid or expired refresh token");
    }
    // The forged token did not hurt the real session.
    server.refresh(&tokens.refresh).await.data();
}

#[tokio::test]
async fn bad_access_tokens_are_unauthorized_with_a_bearer_challenge() {
    let server = TestServer::start().await;
    let tokens = server.user(&unique_email()).await;
    let mut bad_signature = tokens.access.clone();
    bad_signature.replace_range(bad_signature.len() - 4.., "AAAA");
    let cases: Vec<Vec<(&str, String)>> = vec![
        vec![],
        vec![("authorization", "Bearer".into())],
        vec![("authorization", "Bearer ".into())],
        vec![("authorization", format!("Basic {}", tokens.access))],
        vec![("authorization", "Bearer not.a.jwt".into())],
        vec![("authorization", format!("Bearer {bad_signature}"))],
        vec![("authorization", format!("Bearer {}", "A".repeat(8000)))],
    ];
    for headers in cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let reply = server.send(Method::GET, "/api/auth/me", None, None, &headers).await;
        reply.assert_error(401, "UNAUTHORIZED");
        assert_eq!(reply.body["error"]["message"], "Invalid or expired token");
        assert!(reply.header("www-authenticate").is_some_and(|v| v.starts_with("Bearer")), "{headers:?}");
    }
    // A lower-case scheme is still a bearer token (RFC 6750 schemes are case-insensitive).
    let lower = format!("bearer {}", tokens.access);
    server.send(Method::GET, "/api/auth/me", None, None, &[("authorization", &lower)]).await.data();
}

#[tokio::test]
async fn unknown_paths_and_methods_answer_in_the_envelope() {
    let server = TestServer::start().await;
    server.send(Method::GET, "/api/auth/nothing-here", None, None, &[]).await.assert_error(404, "NOT_FOUND");
    server.send(Method::GET, "/nothing", None, None, &[]).await.assert_error(404, "NOT_FOUND");
    server.send(Method::GET, "/api/auth/login", None, None, &[]).await.assert_error(405, "METHOD_NOT_ALLOWED");
    server.send(Method::PUT, "/api/auth/me", None, None, &[]).await.assert_error(405, "METHOD_NOT_ALLOWED");
}

#[tokio::test]
async fn a_body_over_16_kib_is_payload_too_large() {
    let server = TestServer::start().await;
    let big = json!({"email": "a@example.com", "password": "x".repeat(17 * 1024)});
    server.post("/api/auth/register", big).await.assert_error(413, "PAYLOAD_TOO_LARGE");
    // Without a Content-Length (chunked), the limit holds as well.
    let mut stream = tokio::net::TcpStream::connect(server.base.trim_start_matches("http://")).await.unwrap();
    let head = "POST /api/auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..20 {
        let chunk = format!("400\r\n{}\r\n", " ".repeat(1024));
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            break; // The server may answer and close before reading everything.
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("PAYLOAD_TOO_LARGE"), "{response}");
}

#[tokio::test]
async fn a_body_that_is_not_json_is_unsupported_media_type() {
    let server = TestServer::start().await;
    for content_type in
        [None, Some("text/plain"), Some("application/x-www-form-urlencoded"), Some("multipart/form-data")]
    {
        let mut req = server
            .client
            .post(server.url("/api/auth/login"))
            .body(r#"{"email":"a@example.com","password":"12345678"}"#);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        read(req.send().await.unwrap()).await.assert_error(415, "UNSUPPORTED_MEDIA_TYPE");
    }
    let with_charset =
        server.client.post(server.url("/api/auth/register")).header("content-type", "application/json; charset=utf-8");
    let reply = read(
        with_charset.body(json!({"email": unique_email(), "password": PASSWORD}).to_string()).send().await.unwrap(),
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
}

#[tokio::test]
async fn too_many_login_attempts_are_rate_limited_with_retry_after() {
    let server = TestServer::start_with(&["--login-rate-limit", "3/min"]).await;
    for _ in 0..3 {
        let reply =
            server.post("/api/auth/login", json!({"email": "x@example.com", "password": "wrong password"})).await;
        reply.assert_error(401, "INVALID_CREDENTIALS");
    }
    let limited = server.post("/api/auth/login", json!({"email": "x@example.com", "password": "wrong password"})).await;
    limited.assert_error(429, "RATE_LIMITED");
    let retry: u64 = limited.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((1..=20).contains(&retry), "{retry}");
}

/// A server with one signed-in session, and a connection of our own to its SQLite file (these
/// tests reach behind the server's back; on other backends they say so and return `None`).
async fn server_with_a_session_and_its_database(test: &str) -> Option<(TestServer, Tokens, sqlx::SqliteConnection)> {
    if !sqlite_only(test) {
        return None;
    }
    let server = TestServer::start().await;
    let tokens = server.user(&unique_email()).await;
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(server.data_dir.path().join("tessera.db"));
    let conn = <sqlx::SqliteConnection as sqlx::Connection>::connect_with(&options).await.unwrap();
    Some((server, tokens, conn))
}

#[tokio::test]
async fn a_locked_database_is_unavailable_then_recovers_by_itself() {
    let Some((server, tokens, mut conn)) =
        server_with_a_session_and_its_database("a_locked_database_is_unavailable_then_recovers_by_itself").await
    else {
        return;
    };
    // Another process holds the SQLite write lock past the server's busy timeout.
    sqlx::query("BEGIN EXCLUSIVE").execute(&mut conn).await.unwrap();

    let reply = server.refresh(&tokens.refresh).await;
    reply.assert_error(503, "UNAVAILABLE");
    assert!(!reply.body.to_string().contains("database"), "no internals: {}", reply.body);
    // Reads and token checks still work meanwhile.
    server.me(&tokens.access).await.data();

    sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
    server.refresh(&tokens.refresh).await.data();
}

#[tokio::test]
async fn an_internal_error_hides_its_cause_and_carries_the_logged_request_id() {
    let Some((server, tokens, mut conn)) =
        server_with_a_session_and_its_database("an_internal_error_hides_its_cause_and_carries_the_logged_request_id")
            .await
    else {
        return;
    };
    // Corrupt the stored session behind the server's back.
    sqlx::query("UPDATE sessions SET id = X'00'").execute(&mut conn).await.unwrap();

    let reply = server.get("/api/auth/sessions", &tokens.access).await;
    reply.assert_error(500, "INTERNAL");
    assert_eq!(reply.body["error"]["message"], "Internal server error");
    let request_id = reply.body["error"]["request_id"].as_str().expect("request id").to_owned();
    assert_eq!(reply.header("x-request-id"), Some(request_id.as_str()));
    assert!(
        eventually(Duration::from_secs(2), async || server
            .logs()
            .lines()
            .any(|l| l.contains(&request_id) && l.contains("internal error")))
        .await,
        "the cause is logged under {request_id}"
    );
}

#[tokio::test]
async fn no_malformed_input_reaches_a_server_error() {
    let server = TestServer::start().await;
    let tokens = server.user(&unique_email()).await;
    let paths = [
        "/api/auth/register",
        "/api/auth/login",
        "/api/auth/refresh",
        "/api/auth/logout",
        "/api/auth/logout-all",
        "/api/auth/me",
        "/api/auth/verify",
        "/api/auth/sessions",
        "/api/auth/sessions/../../etc",
        "/api/auth/sessions/%00",
        "/.well-known/jwks.json",
    ];
    let bodies = [
        "",
        "{}",
        "[]",
        "\"\"",
        "{\"refresh_token\":null}",
        "{\"refresh_token\":\"\"}",
        "{\"email\":{},\"password\":[]}",
        "{\"refresh_token\":\"%00\\u0000\"}",
        "🦀",
        "{\"a\":1e999999}",
    ];
    let auths = [
        None,
        Some("Bearer garbage".to_owned()),
        Some(format!("Bearer {}", tokens.access)),
        Some("Bearer \u{7f}".to_owned()),
    ];
    for path in paths {
        for method in [Method::GET, Method::POST, Method::DELETE, Method::PATCH] {
            for body in bodies {
                for auth in &auths {
                    let mut req = server
                        .client
                        .request(method.clone(), server.url(path))
                        .header("content-type", "application/json")
                        .body(body);
                    if let Some(Ok(value)) = auth.as_deref().map(reqwest::header::HeaderValue::from_str) {
                        req = req.header("authorization", value);
                    }
                    let reply = read(req.send().await.unwrap()).await;
                    assert!(reply.status.as_u16() < 500, "{method} {path} {body:?}: {} {}", reply.status, reply.body);
                    if path.starts_with("/api/auth") && !reply.status.is_success() {
                        assert_eq!(reply.body["success"], false, "{method} {path}: {}", reply.body);
                    }
                }
            }
        }
    }
    assert!(server.logs().lines().all(|l| !l.contains("\"level\":\"ERROR\"")), "no internal errors");
}
