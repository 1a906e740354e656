//! The gateway's WebSocket rows: how soon a logout closes a proxied socket, and what idle
//! sockets cost the gateway in memory.
//!
//! Every socket goes to the trivial upstream's [`SOCKET`] route through the gateway, with the
//! session's access token in `Authorization: Bearer`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use hyper::body::Bytes;
use hyper::header::{AUTHORIZATION, HeaderValue};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::BoxError;
use crate::api;
use crate::ceiling::SOCKET;
use crate::http::Conn;
use crate::report::Summary;

/// The close code of a socket whose session ended (the gateway's, README).
const SESSION_ENDED: u16 = 4001;
/// How long a socket may stay open after its logout before the sample counts as failed.
const GIVE_UP: Duration = Duration::from_secs(5);
/// Handshakes in flight at once while opening many sockets.
const OPENING_AT_ONCE: usize = 64;

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens a socket through the gateway at `gateway` as the bearer of `bearer`.
pub async fn open(gateway: SocketAddr, bearer: &HeaderValue) -> Result<Socket, BoxError> {
    let mut request = format!("ws://{gateway}{SOCKET}").into_client_request()?;
    request.headers_mut().insert(AUTHORIZATION, bearer.clone());
    let (socket, _) = tokio_tungstenite::connect_async(request).await?;
    Ok(socket)
}

/// Opens `count` sockets, spread evenly over `bearers`, a few handshakes at a time.
pub async fn open_many(gateway: SocketAddr, bearers: &[HeaderValue], count: usize) -> Result<Vec<Socket>, BoxError> {
    let opening = (0..count).map(|i| open(gateway, &bearers[i % bearers.len()]));
    futures_util::stream::iter(opening)
        .buffer_unordered(OPENING_AT_ONCE)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// Logs in `sessions` sessions and opens a socket for each, then logs them out one after
/// another; a sample is the time from a logout's answer to its socket's close frame (`4001`),
/// or zero when the frame came first.
pub async fn close_on_logout(
    tessera: SocketAddr,
    gateway: SocketAddr,
    login_body: &Bytes,
    sessions: usize,
) -> Result<Summary, BoxError> {
    let mut conn = Conn::open(tessera).await?;
    let mut open_sessions = Vec::with_capacity(sessions);
    for _ in 0..sessions {
        let bearer = api::bearer(&api::login(&mut conn, login_body.clone()).await?)?;
        let closed = watch_close(open(gateway, &bearer).await?);
        open_sessions.push((bearer, closed));
    }
    let (mut samples, mut errors, mut first_error) = (Vec::with_capacity(sessions), 0, None);
    for (bearer, closed) in open_sessions {
        api::logout(&mut conn, &bearer).await?;
        let logged_out = Instant::now();
        match tokio::time::timeout(GIVE_UP, closed).await {
            Ok(Ok((at, Some(SESSION_ENDED)))) => {
                let waited = at.saturating_duration_since(logged_out);
                samples.push(u32::try_from(waited.as_micros()).unwrap_or(u32::MAX));
            }
            outcome => {
                errors += 1;
                first_error.get_or_insert_with(|| match outcome {
                    Ok(Ok((_, code))) => format!("the socket closed with {code:?}, not {SESSION_ENDED}"),
                    Ok(Err(_)) => "the socket's reader stopped".to_owned(),
                    Err(_) => format!("the socket was still open {GIVE_UP:?} after the logout"),
                });
            }
        }
    }
    Ok(Summary::of_samples(samples, errors, first_error, 0.0))
}

/// When the socket closes, and with which code (`None`: closed without a close frame).
fn watch_close(mut socket: Socket) -> oneshot::Receiver<(Instant, Option<u16>)> {
    let (tell, closed) = oneshot::channel();
    tokio::spawn(async move {
        let code = loop {
            match socket.next().await {
                Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break None,
            }
        };
        let _ = tell.send((Instant::now(), code));
    });
    closed
}
