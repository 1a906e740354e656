//! The subscriber of tessera's revocation feed (see [`crate::revocation`] for the format).
//!
//! One task per verifier holds a streaming `GET` open, applies each `ended` event to the
//! revocation set, and remembers the last event id. When the stream breaks (tessera restarted, a
//! proxy timed out, the network dropped) or stays silent for three heartbeats, it reconnects
//! with backoff and resumes from that id, so an end published while it was away is still
//! delivered: a missed message cannot leave a session alive.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT, CONTENT_TYPE};
use tokio::sync::watch;

use crate::clock::Timestamp;
use crate::revocation::{EndedEvent, HEARTBEAT, RevokedSessions, SyncedEvent};

/// Until tessera says otherwise (in `synced`), how long an ended session is remembered.
const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 3600);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait between reconnects: while tessera is down the verifier tries about once a
/// second, so a logout reaches it within about a second of tessera answering again.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Longest line accepted from the feed; a longer one means it is not tessera talking.
const MAX_LINE: usize = 16 * 1024;

pub(crate) struct FeedState {
    pub(crate) revoked: RevokedSessions,
    base: Instant,
    /// Milliseconds after `base` when the feed last said it is current; 0: never.
    last_heard: AtomicU64,
    synced: AtomicBool,
    connected: AtomicBool,
    reconnects: AtomicU64,
    cursor: Mutex<Option<String>>,
    /// Bumped whenever a session ends or freshness changes, for those who wait on a session.
    changes: watch::Sender<u64>,
}

impl FeedState {
    pub(crate) fn new() -> Self {
        Self {
            revoked: RevokedSessions::new(DEFAULT_RETENTION),
            base: Instant::now(),
            last_heard: AtomicU64::new(0),
            synced: AtomicBool::new(false),
            connected: AtomicBool::new(false),
            reconnects: AtomicU64::new(0),
            cursor: Mutex::new(None),
            changes: watch::channel(0).0,
        }
    }

    /// How long since the feed last said it is current (`synced`, `heartbeat`); `None` before it
    /// was ever in sync.
    pub(crate) fn silence(&self) -> Option<Duration> {
        if !self.synced.load(Ordering::Acquire) {
            return None;
        }
        let heard = Duration::from_millis(self.last_heard.load(Ordering::Acquire));
        Some(self.base.elapsed().saturating_sub(heard))
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    pub(crate) fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub(crate) fn notify(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn heard(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX).max(1);
        self.last_heard.store(ms, Ordering::Release);
    }
}

/// Runs the subscription forever.
pub(crate) async fn subscribe(state: Arc<FeedState>, http: reqwest::Client, url: String) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match stream_once(&state, &http, &url).await {
            Ok(()) => tracing::info!("revocation feed closed by the server; reconnecting"),
            Err(e) => tracing::warn!(error = %e, "revocation feed interrupted; reconnecting"),
        }
        let was_connected = state.connected.swap(false, Ordering::AcqRel);
        state.notify();
        if was_connected {
            backoff = Duration::from_millis(100);
        }
        tokio::time::sleep(jittered(backoff)).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
        state.reconnects.fetch_add(1, Ordering::Relaxed);
    }
}

/// Between half of `backoff` and all of it, at random: verifiers that lost tessera together do
/// not all come back in the same instant.
fn jittered(backoff: Duration) -> Duration {
    let [byte] = crate::random::bytes::<1>();
    backoff / 2 + backoff.mul_f64(f64::from(byte) / 510.0)
}

#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error("{0}")]
    Http(#[from] reqwest::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the feed answered {0}")]
    Status(reqwest::StatusCode),
    #[error("the answer is not an event stream")]
    NotEventStream,
    #[error("a line longer than {MAX_LINE} bytes")]
    LineTooLong,
}

async fn stream_once(state: &FeedState, http: &reqwest::Client, url: &str) -> Result<(), StreamError> {
    let mut request = http.get(url).header(ACCEPT, "text/event-stream");
    let cursor = state.cursor.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if let Some(cursor) = &cursor {
        request = request.header("last-event-id", cursor);
    }
    let mut response = tokio::time::timeout(CONNECT_TIMEOUT, request.send())
        .await
        .map_err(|_| StreamError::Timeout(CONNECT_TIMEOUT))??;
    if !response.status().is_success() {
        return Err(StreamError::Status(response.status()));
    }
    let is_stream = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if !is_stream {
        return Err(StreamError::NotEventStream);
    }
    state.connected.store(true, Ordering::Release);
    let silence_limit = HEARTBEAT * 3;
    let mut parser = Parser::default();
    loop {
        let chunk = tokio::time::timeout(silence_limit, response.chunk())
            .await
            .map_err(|_| StreamError::Timeout(silence_limit))??;
        let Some(chunk) = chunk else { return Ok(()) };
        for event in parser.feed(&chunk)? {
            apply(state, event);
        }
    }
}

fn apply(state: &FeedState, event: Event) {
    // Only `synced` and `heartbeat` say that tessera's view of its store is current; an `ended`
    // event may come from a journal that has not read the store for a while, and a stream that
    // merely stays open says nothing. So only they reset the silence clock.
    if matches!(event.name.as_str(), "synced" | "heartbeat") {
        state.heard();
    }
    match event.name.as_str() {
        "ended" => match serde_json::from_str::<EndedEvent>(&event.data) {
            Ok(ended) => match ended.sid.parse() {
                Ok(sid) => {
                    state.revoked.insert(sid, Timestamp::from_millis(ended.ended_at));
                    state.notify();
                }
                Err(_) => tracing::warn!("revocation feed: an ended event without a valid session id"),
            },
            Err(e) => tracing::warn!(error = %e, "revocation feed: unreadable ended event"),
        },
        "synced" => {
            if let Ok(synced) = serde_json::from_str::<SyncedEvent>(&event.data) {
                state.revoked.set_retention(Duration::from_secs(synced.retention_secs));
            }
            state.revoked.prune(Timestamp::now());
            if !state.synced.swap(true, Ordering::AcqRel) {
                tracing::info!(ended_sessions = state.revoked.len(), "revocation feed in sync");
            }
            state.notify();
        }
        _ => {}
    }
    if let Some(id) = event.id {
        *state.cursor.lock().unwrap_or_else(|e| e.into_inner()) = Some(id);
    }
}

/// One server-sent event.
#[derive(Debug, Default, PartialEq, Eq)]
struct Event {
    name: String,
    data: String,
    id: Option<String>,
}

/// An incremental parser of the `text/event-stream` format (the subset tessera sends).
#[derive(Default)]
struct Parser {
    line: Vec<u8>,
    event: Event,
}

impl Parser {
    fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Event>, StreamError> {
        let mut out = Vec::new();
        for &b in bytes {
            if b != b'\n' {
                if self.line.len() >= MAX_LINE {
                    return Err(StreamError::LineTooLong);
                }
                self.line.push(b);
                continue;
            }
            if self.line.last() == Some(&b'\r') {
                self.line.pop();
            }
            let line = String::from_utf8_lossy(&self.line).into_owned();
            self.line.clear();
            if line.is_empty() {
                let event = std::mem::take(&mut self.event);
                if !event.name.is_empty() || !event.data.is_empty() {
                    out.push(event);
                }
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((&line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => self.event.name = value.to_owned(),
                "data" => {
                    if !self.event.data.is_empty() {
                        self.event.data.push('\n');
                    }
                    self.event.data.push_str(value);
                }
                "id" => self.event.id = Some(value.to_owned()),
                _ => {} // comments (`: …`), `retry`, unknown fields
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_parsed_across_chunk_boundaries() {
        let mut p = Parser::default();
        let text = "retry: 1000\n\n: comment\nid: 3-0\r\nevent: ended\ndata: {\"sid\":\"x\",\n";
        assert!(p.feed(text.as_bytes()).unwrap().is_empty());
        let events = p.feed(b"data: \"ended_at\":1}\n\nevent: heartbeat\ndata: {}\n\n").unwrap();
        assert_eq!(
            events,
            vec![
                Event { name: "ended".into(), data: "{\"sid\":\"x\",\n\"ended_at\":1}".into(), id: Some("3-0".into()) },
                Event { name: "heartbeat".into(), data: "{}".into(), id: None },
            ]
        );
    }

    #[test]
    fn reconnects_wait_half_to_all_of_the_backoff() {
        for _ in 0..200 {
            let wait = jittered(MAX_BACKOFF);
            assert!(wait >= MAX_BACKOFF / 2 && wait <= MAX_BACKOFF, "{wait:?}");
        }
    }

    #[test]
    fn an_endless_line_is_refused() {
        let mut p = Parser::default();
        assert!(matches!(p.feed(&vec![b'a'; MAX_LINE + 1]), Err(StreamError::LineTooLong)));
    }
}
