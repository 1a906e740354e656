//! WebSockets through the gateway. The handshake is checked like any request, passed to the
//! upstream, and once both sides have switched protocols the gateway relays messages between
//! them, frame by frame, watching the caller's session. It closes the socket — a close frame to
//! the client and one to the upstream, so the app sees a disconnect — when:
//!
//! - the session ends (logout, revocation, a replayed refresh token): `4001 session ended`,
//!   within a second (the revocation feed's delay);
//! - the access token expires: `4002 token expired` (the client reconnects with a fresh one);
//! - the feed has been silent too long and the gateway fails closed: `1013 try again later`;
//! - the gateway stops: `1001 going away`.
//!
//! Subprotocols: the offered `tessera.bearer.<jwt>` carries the token and never reaches the
//! upstream; the others are passed on. When the browser offered `tessera` and the upstream
//! selects none, the gateway answers `tessera`, as a browser needs one of its offers selected.
//! Extensions (compression) are not negotiated through the gateway: it must read every frame.
//! Each hop answers its own pings.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tessera_server::conn::ConnectionHold;
use tessera_verify::http::{WS_PROTOCOL, WS_TOKEN_PROTOCOL_PREFIX};
use tessera_verify::{Authenticated, VerifyError};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};

use crate::forward::{answer, prepare_headers, remove_hop_by_hop};
use crate::metrics::{Closed, Outcome};
use crate::{Gateway, error};

/// The close codes the gateway sends (README, "Protecting a service in any language").
pub const SESSION_ENDED: u16 = 4001;
pub const TOKEN_EXPIRED: u16 = 4002;

/// How much each side of a socket reads at once. tungstenite's default (128 KiB) is allocated
/// up front for each side (and zeroed, so resident), which idle sockets pay for: 10 000 of
/// them would hold 2.5 GiB. A larger message is still read whole, in more reads.
const READ_BUFFER: usize = 2048;

/// The relay's WebSocket settings on both sides: tungstenite's, but for the read buffer.
fn frames() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(READ_BUFFER)
}

/// How long a close handshake may take before the connection is dropped.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Whether the request asks for a WebSocket: `Upgrade: websocket` with `Connection: upgrade`.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    let upgrade = headers.get(header::UPGRADE).and_then(|v| v.to_str().ok());
    let connection = headers.get_all(header::CONNECTION).iter().filter_map(|v| v.to_str().ok());
    upgrade.is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
        && connection.flat_map(|v| v.split(',')).any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

pub async fn proxy(
    gateway: Arc<Gateway>,
    peer: SocketAddr,
    caller: Option<Authenticated>,
    mut request: Request,
) -> Response {
    let Some(uri) = gateway.settings.upstream.target(request.uri()) else {
        gateway.metrics.count(Outcome::BadRequest);
        return error(StatusCode::BAD_REQUEST, "invalid_request", "the request target cannot be forwarded");
    };
    let client_side = hyper::upgrade::on(&mut request);
    // The socket keeps its connection's place among the open connections (the caps) until it
    // closes, although the HTTP connection's task ends with the upgrade.
    let kept = request.extensions().get::<ConnectionHold>().map(ConnectionHold::keep);
    let (mut parts, _) = request.into_parts();
    let offered: Vec<String> = parts
        .headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect();
    let passed: Vec<&str> =
        offered.iter().map(String::as_str).filter(|p| !p.starts_with(WS_TOKEN_PROTOCOL_PREFIX)).collect();
    parts.headers.remove(header::SEC_WEBSOCKET_PROTOCOL);
    if let Ok(value) = HeaderValue::from_str(&passed.join(", "))
        && !passed.is_empty()
    {
        parts.headers.insert(header::SEC_WEBSOCKET_PROTOCOL, value);
    }
    parts.headers.remove(header::SEC_WEBSOCKET_EXTENSIONS);
    prepare_headers(&gateway, peer, caller.as_ref(), &mut parts.headers, true);
    parts.uri = uri;
    let handshake = gateway.upstream.send_upgrade(Request::from_parts(parts, Body::empty()));
    let sent = tokio::time::timeout(gateway.settings.upstream_timeout, handshake).await;
    let mut answer = match answer(&gateway, sent) {
        Ok(answer) => answer,
        Err(failure) => return failure,
    };
    gateway.metrics.count(Outcome::Forwarded);
    if answer.status() != StatusCode::SWITCHING_PROTOCOLS {
        // The upstream refused the socket: its answer is the client's.
        remove_hop_by_hop(answer.headers_mut(), false);
        return answer.map(Body::new);
    }
    let upstream_side = hyper::upgrade::on(&mut answer);
    let (mut parts, _) = answer.into_parts();
    remove_hop_by_hop(&mut parts.headers, true);
    parts.headers.remove(header::SEC_WEBSOCKET_EXTENSIONS);
    if !parts.headers.contains_key(header::SEC_WEBSOCKET_PROTOCOL) && offered.iter().any(|p| p == WS_PROTOCOL) {
        parts.headers.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(WS_PROTOCOL));
    }
    // Counted from here, so that a stopping gateway waits for it to close.
    let open = gateway.metrics.open_socket();
    tokio::spawn(async move {
        relay(gateway, caller, client_side, upstream_side).await;
        drop((kept, open));
    });
    Response::from_parts(parts, Body::empty())
}

/// Relays messages both ways until a side closes or the gateway closes both.
async fn relay(gateway: Arc<Gateway>, caller: Option<Authenticated>, client: OnUpgrade, upstream: OnUpgrade) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(both) => both,
        Err(e) => {
            tracing::debug!(error = %e, "a proxied WebSocket did not switch protocols");
            return;
        }
    };
    let client = WebSocketStream::from_raw_socket(TokioIo::new(client), Role::Server, Some(frames())).await;
    let upstream = WebSocketStream::from_raw_socket(TokioIo::new(upstream), Role::Client, Some(frames())).await;
    let (mut to_client, mut from_client) = client.split();
    let (mut to_upstream, mut from_upstream) = upstream.split();
    let ended = async {
        match &caller {
            Some(caller) => gateway.verifier.session_ended(caller.session_id).await,
            None => std::future::pending().await,
        }
    };
    let expiry = async {
        match &caller {
            Some(caller) => tokio::time::sleep(until_expiry(caller)).await,
            None => std::future::pending().await,
        }
    };
    let mut stopping = gateway.stopping.clone();
    let stopped = async move {
        let _ = stopping.wait_for(|stop| *stop).await;
    };
    tokio::pin!(ended, expiry, stopped);
    let why = loop {
        tokio::select! {
            message = from_client.next() => {
                if let Some(why) = pass_on(message, &mut to_upstream, &mut to_client, Closed::Client, Closed::Upstream).await {
                    break why;
                }
            }
            message = from_upstream.next() => {
                if let Some(why) = pass_on(message, &mut to_client, &mut to_upstream, Closed::Upstream, Closed::Client).await {
                    break why;
                }
            }
            e = &mut ended => break if e == VerifyError::Unavailable { Closed::FeedLost } else { Closed::SessionEnded },
            () = &mut expiry => break Closed::TokenExpired,
            () = &mut stopped => break Closed::Shutdown,
        }
    };
    let close = match why {
        Closed::SessionEnded => Some((CloseCode::Library(SESSION_ENDED), "session ended")),
        Closed::TokenExpired => Some((CloseCode::Library(TOKEN_EXPIRED), "token expired")),
        Closed::FeedLost => Some((CloseCode::Again, "sessions cannot be checked right now")),
        Closed::Shutdown => Some((CloseCode::Away, "the gateway is stopping")),
        Closed::Client | Closed::Upstream => None,
    };
    if let Some((code, reason)) = close {
        let frame = || Message::Close(Some(CloseFrame { code, reason: reason.into() }));
        let _ = tokio::join!(to_client.send(frame()), to_upstream.send(frame()));
    }
    gateway.metrics.count_closed(why);
    // The other sides' close frames, briefly, so that both close handshakes complete.
    let drain = async {
        tokio::join!(async { while let Some(Ok(_)) = from_client.next().await {} }, async {
            while let Some(Ok(_)) = from_upstream.next().await {}
        })
    };
    let _ = tokio::time::timeout(CLOSE_WAIT, drain).await;
}

type Side = SplitSink<WebSocketStream<TokioIo<Upgraded>>, Message>;

/// Passes a message read from side `from` on to the other side (`to`); with the side that closed
/// when the relay ends there. Each hop answers its own pings.
async fn pass_on(
    message: Option<Result<Message, tungstenite::Error>>,
    to: &mut Side,
    back: &mut Side,
    from: Closed,
    other: Closed,
) -> Option<Closed> {
    match message {
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => None,
        Some(Ok(Message::Close(frame))) => {
            let _ = to.send(Message::Close(frame)).await;
            Some(from)
        }
        Some(Ok(message)) => {
            if to.send(message).await.is_ok() {
                return None;
            }
            let _ = back.send(Message::Close(None)).await;
            Some(other)
        }
        Some(Err(_)) | None => {
            let _ = to.send(Message::Close(None)).await;
            Some(from)
        }
    }
}

/// Time left until the caller's access token expires.
fn until_expiry(caller: &Authenticated) -> Duration {
    let now = tessera_verify::Timestamp::now().as_millis();
    let at = caller.expires_at().saturating_mul(1000);
    Duration::from_millis(u64::try_from(at.saturating_sub(now)).unwrap_or(0))
}
