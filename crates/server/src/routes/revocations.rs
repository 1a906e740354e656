//! `GET /api/auth/revocations`: the revocation feed, as server-sent events (the format is
//! documented in `tessera_verify::revocation`).
//!
//! Public, like the JWKS: it names sessions that ended and when, nothing about their users, and
//! a session id is no credential. Each subscriber holds only a position into the instance's
//! journal of recent ends, so a thousand subscribers cost a thousand positions, not a thousand
//! copies, and the store is read once per instance however many listen.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tessera_core::revocation::{EndedEvent, FeedPosition, HEARTBEAT, SyncedEvent};
use tokio::sync::watch;

use crate::error::AppError;
use crate::state::AppState;

/// How many ends one event batch takes from the journal.
const BATCH: usize = 256;
/// The journal counts as current while its last read of the store is this recent.
const FRESH: Duration = Duration::from_secs(5);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedQuery {
    after: Option<String>,
}

#[utoipa::path(get, path = "/revocations", tag = "tokens",
    params(
        ("after" = Option<String>, Query, description = "Resume after this event id (or send `Last-Event-ID`)"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id"),
    ),
    responses(
        (status = 200, description = "Server-sent events: `ended` (id, `{sid, ended_at}`), `synced`, `heartbeat`", content_type = "text/event-stream", body = String),
        (status = 400, description = "`INVALID_REQUEST`: not a feed position", body = tessera_proto::ErrorEnvelope)
    ))]
pub async fn stream(
    State(state): State<AppState>,
    query: Result<Query<FeedQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let Ok(Query(query)) = query else {
        return AppError::invalid_request("The only query parameter is `after`, a feed position").into_response();
    };
    let cursor = headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(str::to_owned).or(query.after);
    let cursor = match cursor.filter(|c| !c.is_empty()).map(|c| c.parse::<FeedPosition>()).transpose() {
        Ok(cursor) => cursor,
        Err(_) => {
            return AppError::invalid_request("`after` (or Last-Event-ID) is not a feed position").into_response();
        }
    };
    let subscriber = Subscriber {
        changes: state.auth().journal().subscribe(),
        shutdown: state.shutting_down(),
        heartbeat: tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT),
        state,
        cursor,
        pending: VecDeque::new(),
        synced_sent: false,
    };
    let events = futures_util::stream::unfold(subscriber, |mut s| async move {
        let event = s.next().await?;
        Some((Ok::<_, Infallible>(event), s))
    });
    let mut response = Sse::new(events).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Proxies such as nginx must pass events on as they come.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

struct Subscriber {
    state: AppState,
    cursor: Option<FeedPosition>,
    pending: VecDeque<Event>,
    synced_sent: bool,
    changes: watch::Receiver<Option<FeedPosition>>,
    shutdown: watch::Receiver<bool>,
    heartbeat: tokio::time::Interval,
}

impl Subscriber {
    /// The next event, or `None` when the server stops.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if *self.shutdown.borrow() {
                return None;
            }
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            let journal = self.state.auth().journal();
            let synced = journal.synced_at().is_some();
            // A cursor beyond the journal's head from a store that was reset or replaced: start
            // over from the window rather than wait for positions that will never come.
            if synced && self.cursor.is_some_and(|c| journal.head().is_none_or(|h| c > h)) {
                self.cursor = None;
            }
            let batch = journal.after(self.cursor, BATCH);
            if let Some(last) = batch.last() {
                self.cursor = Some(last.position);
                self.pending.extend(batch.iter().map(|e| {
                    let data = EndedEvent { sid: e.session_id.to_string(), ended_at: e.ended_at.as_millis() };
                    json_event("ended", &data).id(e.position.to_string())
                }));
                continue;
            }
            // `synced` and heartbeats mean "tessera's view of its store is current": said only
            // while the journal read the store recently, never because it once did. A store
            // that cannot be read silences the feed, and its subscribers' silence bounds apply.
            let fresh = journal.synced_at().is_some_and(|at| self.state.now().since(at) <= FRESH);
            if fresh && !self.synced_sent {
                self.synced_sent = true;
                let data = SyncedEvent { retention_secs: journal.retention().as_secs() };
                let event = json_event("synced", &data);
                return Some(match self.cursor {
                    Some(c) => event.id(c.to_string()),
                    None => event,
                });
            }
            tokio::select! {
                _ = self.changes.changed() => {}
                _ = self.shutdown.changed() => {}
                _ = self.heartbeat.tick() => {
                    // Not fresh yet: look again (and say `synced` once it is).
                    if fresh && self.synced_sent {
                        return Some(Event::default().event("heartbeat").data("{}"));
                    }
                }
            }
        }
    }
}

fn json_event(name: &str, data: &impl serde::Serialize) -> Event {
    Event::default().event(name).data(serde_json::to_string(data).unwrap_or_default())
}
