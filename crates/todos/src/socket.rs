//! `GET /todos/ws`: the caller's todos, live.
//!
//! The handshake needs a valid access token: `Authorization: Bearer …`, or from a browser the
//! subprotocols `["tessera", "tessera.bearer." + token]` (the server selects `tessera`). The
//! server sends `{"type": "todos", "todos": [...]}` first, then `{"type": "todo_added", "todo":
//! {...}}` for each new todo of the caller.
//!
//! A socket lives no longer than what authorised it. The server closes it
//! - with `4001 session ended` within a second of its session ending (logout, revocation, reuse
//!   of a refresh token), learnt from tessera's revocation feed;
//! - with `4002 token expired` when its access token expires, unless the client renewed it
//!   first by sending `{"type": "token", "token": "<a fresh access token>"}` (answered with
//!   `{"type": "token_accepted", "expires_at": <exp>}`);
//! - with `4003 invalid token` when a renewal is not a valid token of the same user;
//! - with `1013 try again later` when sessions cannot be checked (the verifier fails closed).

use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;
use tessera_verify::http::WS_PROTOCOL;
use tessera_verify::{Authenticated, Timestamp, VerifyError};

use crate::App;

pub const SESSION_ENDED: u16 = 4001;
pub const TOKEN_EXPIRED: u16 = 4002;
pub const INVALID_TOKEN: u16 = 4003;
pub const TRY_AGAIN_LATER: u16 = 1013;

pub async fn upgrade(State(app): State<App>, caller: Authenticated, ws: WebSocketUpgrade) -> Response {
    ws.protocols([WS_PROTOCOL]).max_message_size(64 * 1024).on_upgrade(move |socket| serve(app, caller, socket))
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientMessage {
    Token { token: String },
}

async fn serve(app: App, mut caller: Authenticated, mut socket: WebSocket) {
    let mut added = app.todos.subscribe();
    let hello = json!({"type": "todos", "todos": app.todos.of(caller.user_id)});
    if socket.send(Message::Text(hello.to_string().into())).await.is_err() {
        return;
    }
    let close = loop {
        let expires_in = Duration::from_millis(
            u64::try_from(caller.expires_at().saturating_mul(1000) - Timestamp::now().as_millis()).unwrap_or(0),
        );
        tokio::select! {
            reason = app.verifier.session_ended(caller.session_id) => {
                break match reason {
                    VerifyError::Unavailable => (TRY_AGAIN_LATER, "sessions cannot be checked right now"),
                    _ => (SESSION_ENDED, "session ended"),
                };
            }
            () = tokio::time::sleep(expires_in) => break (TOKEN_EXPIRED, "token expired"),
            todo = added.recv() => match todo {
                Ok((owner, todo)) if owner == caller.user_id => {
                    let event = json!({"type": "todo_added", "todo": todo});
                    if socket.send(Message::Text(event.to_string().into())).await.is_err() {
                        return;
                    }
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
            message = socket.recv() => match message {
                Some(Ok(Message::Text(text))) => match renew(&app, &caller, &text).await {
                    Ok(renewed) => {
                        caller = renewed;
                        let ack = json!({"type": "token_accepted", "expires_at": caller.expires_at()});
                        if socket.send(Message::Text(ack.to_string().into())).await.is_err() {
                            return;
                        }
                    }
                    Err(VerifyError::Unavailable) => break (TRY_AGAIN_LATER, "sessions cannot be checked right now"),
                    Err(_) => break (INVALID_TOKEN, "invalid token"),
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    };
    let (code, reason) = close;
    let frame = CloseFrame { code, reason: Utf8Bytes::from_static(reason) };
    let _ = socket.send(Message::Close(Some(frame))).await;
    // Give the client a moment to answer the close, then drop the connection either way.
    let _ =
        tokio::time::timeout(Duration::from_secs(2), async { while let Some(Ok(_)) = socket.recv().await {} }).await;
}

/// A renewal: a valid token of the same user (its session may be a newer one, after a login).
async fn renew(app: &App, caller: &Authenticated, text: &str) -> Result<Authenticated, VerifyError> {
    let ClientMessage::Token { token } = serde_json::from_str(text).map_err(|_| VerifyError::Invalid)?;
    let renewed = app.verifier.verify(&token).await?;
    if renewed.user_id != caller.user_id {
        return Err(VerifyError::Invalid);
    }
    Ok(renewed)
}
