//! The revocation feed (`GET /api/auth/revocations`) as a subscriber sees it.

use std::time::{Duration, Instant};

use reqwest::Method;

use crate::helpers::*;

/// A subscriber reading the raw event stream.
struct Feed {
    response: reqwest::Response,
    text: String,
}

impl Feed {
    async fn open(server: &TestServer, last_event_id: Option<&str>) -> Self {
        let mut request = http_client().get(server.url("/api/auth/revocations"));
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
        Self { response, text: String::new() }
    }

    /// Reads until the stream holds `needle`, or panics after five seconds.
    async fn until(&mut self, needle: &str) -> &str {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.text.contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = tokio::time::timeout(left, self.response.chunk()).await;
            match chunk {
                Ok(Ok(Some(bytes))) => self.text.push_str(&String::from_utf8_lossy(&bytes)),
                other => panic!("no `{needle}` in the feed ({other:?}): {}", self.text),
            }
        }
        &self.text
    }
}

fn sid(access: &str) -> String {
    jwt_parts(access).1["sid"].as_str().unwrap().to_owned()
}

/// The `id:` of the `ended` event of `sid` in `text`.
fn event_id(text: &str, sid: &str) -> String {
    let event = text.split("\n\n").find(|e| e.contains(sid)).expect("the event");
    event.lines().find_map(|l| l.strip_prefix("id: ")).expect("an id").to_owned()
}

#[tokio::test]
async fn the_feed_opens_with_recent_ends_pushes_new_ones_and_resumes_from_a_cursor() {
    let server = TestServer::start().await;
    let email = unique_email();
    let first = server.user(&email).await;
    let second = server.login(&email).await;
    let third = server.login(&email).await;
    server.send(Method::POST, "/api/auth/logout", Some(&first.access), None, &[]).await.data();
    // Past the instance's next read of its store's feed (every 250 ms).
    tokio::time::sleep(Duration::from_millis(600)).await;

    let mut feed = Feed::open(&server, None).await;
    let opening = feed.until("event: synced").await.to_owned();
    assert!(opening.contains(&sid(&first.access)), "the window's ends come first: {opening}");
    assert!(!opening.contains(&sid(&second.access)));
    let first_id = event_id(&opening, &sid(&first.access));

    server.send(Method::POST, "/api/auth/logout", Some(&second.access), None, &[]).await.data();
    let pushed = feed.until(&sid(&second.access)).await.to_owned();
    let ended = pushed.split("\n\n").find(|e| e.contains(&sid(&second.access))).unwrap();
    assert!(ended.contains("event: ended") && ended.contains("\"ended_at\":"), "{ended}");
    assert!(!ended.contains(&email), "nothing about the user but the session: {ended}");
    drop(feed);

    // Reuse detection feeds it too; a subscriber resuming after the first end gets the rest.
    let rotated = tokens_of(&server.refresh(&third.refresh).await);
    server.refresh(&third.refresh).await.assert_error(401, "INVALID_TOKEN");
    let mut resumed = Feed::open(&server, Some(&first_id)).await;
    let text = resumed.until(&sid(&rotated.access)).await.to_owned();
    assert!(text.contains(&sid(&second.access)));
    assert!(!text.contains(&sid(&first.access)), "nothing at or before the cursor: {text}");
}

#[tokio::test]
async fn a_bad_cursor_is_refused_in_the_envelope() {
    let server = TestServer::start().await;
    let reply = server.send(Method::GET, "/api/auth/revocations?after=yesterday", None, None, &[]).await;
    reply.assert_error(400, "INVALID_REQUEST");
    let reply = server.send(Method::GET, "/api/auth/revocations?since=1", None, None, &[]).await;
    reply.assert_error(400, "INVALID_REQUEST");
}

#[tokio::test]
async fn a_cursor_from_another_store_starts_over_from_the_window() {
    let server = TestServer::start().await;
    let tokens = server.user(&unique_email()).await;
    server.send(Method::POST, "/api/auth/logout", Some(&tokens.access), None, &[]).await.data();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut feed = Feed::open(&server, Some("999999999999999-0")).await;
    assert!(feed.until("event: synced").await.contains(&sid(&tokens.access)));
}

#[tokio::test]
async fn an_open_feed_does_not_hold_up_shutdown() {
    let mut server = TestServer::start().await;
    let mut feed = Feed::open(&server, None).await;
    feed.until("event: synced").await;
    signal_term(server.pid());
    let pid = server.pid();
    let exit = tokio::task::spawn_blocking(move || server.wait_exit());
    match tokio::time::timeout(Duration::from_secs(5), exit).await {
        Ok(status) => {
            let status = status.unwrap();
            assert!(status.success(), "{status:?}");
        }
        Err(_) => {
            signal_kill(pid);
            panic!("the server was still running 5 s after SIGTERM, held by the feed");
        }
    }
}
