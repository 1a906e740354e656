//! The harness for the resource server of the lesson: the real `tessera-todos` binary on a
//! random loopback port, trusting a [`TestServer`].

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::helpers::*;

/// `tessera-todos`, built beside `tessera` by `cargo test --workspace` (or `cargo build`).
fn binary() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_tessera")).with_file_name("tessera-todos");
    assert!(path.exists(), "{} is missing: build it with `cargo build -p tessera-todos`", path.display());
    path
}

pub struct TodoServer {
    pub base: String,
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Drop for TodoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

impl TodoServer {
    /// A todo API trusting `issuer`'s tokens.
    pub async fn start(issuer: &TestServer, extra: &[&str]) -> Self {
        Self::start_raw(&["--issuer", &issuer.base], extra).await
    }

    pub async fn start_raw(issuer: &[&str], extra: &[&str]) -> Self {
        let mut child = Command::new(binary())
            .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(issuer)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tessera-todos");
        let (logs, addr) = follow_logs(child.stdout.take().expect("stdout"), Duration::from_secs(30)).await;
        let Some(addr) = addr else {
            let _ = child.kill();
            panic!("tessera-todos did not start ({issuer:?} {extra:?})")
        };
        Self { base: format!("http://{addr}"), child, logs }
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    pub async fn send(&self, method: Method, path: &str, bearer: Option<&str>, body: Option<Value>) -> Reply {
        let mut request = http_client().request(method, format!("{}{path}", self.base));
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        read(request.send().await.expect("request to tessera-todos")).await
    }

    pub async fn todos(&self, bearer: &str) -> Reply {
        self.send(Method::GET, "/todos", Some(bearer), None).await
    }

    pub async fn add(&self, bearer: &str, title: &str) -> Reply {
        self.send(Method::POST, "/todos", Some(bearer), Some(json!({ "title": title }))).await
    }

    pub async fn metric(&self, name: &str) -> f64 {
        let reply = self.send(Method::GET, "/metrics", None, None).await;
        let text = reply.body.as_str().unwrap_or_default().to_owned();
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no metric {name} in {text}"))
    }

    fn ws_url(&self) -> String {
        format!("{}/todos/ws", self.base.replace("http://", "ws://"))
    }

    /// Opens the socket with `Authorization: Bearer`.
    pub async fn socket(&self, bearer: &str) -> Result<Socket, tungstenite::Error> {
        let mut request = self.ws_url().into_client_request().unwrap();
        request.headers_mut().insert("authorization", HeaderValue::from_str(&format!("Bearer {bearer}")).unwrap());
        let (socket, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(socket)
    }

    /// Opens the socket the way a browser can: the token as a subprotocol. Returns the socket
    /// and the protocol the server selected.
    pub async fn browser_socket(&self, bearer: &str) -> Result<(Socket, Option<String>), tungstenite::Error> {
        let mut request = self.ws_url().into_client_request().unwrap();
        let protocols = format!("tessera, tessera.bearer.{bearer}");
        request.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_str(&protocols).unwrap());
        let (socket, response) = tokio_tungstenite::connect_async(request).await?;
        let selected =
            response.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok()).map(str::to_owned);
        Ok((socket, selected))
    }
}

/// How a socket ended: `(code, reason)` of its close frame; `None` if it was still open.
pub struct SocketEnd {
    pub close: Option<(u16, String)>,
}

pub async fn next_json(socket: &mut Socket) -> Value {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => return serde_json::from_str(&text).unwrap(),
            Ok(Some(Ok(_))) => continue,
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

/// Reads (and drops messages) until the server closes the socket or `within` passes.
pub async fn until_closed(socket: &mut Socket, within: Duration) -> SocketEnd {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Err(_) => return SocketEnd { close: None },
            Ok(Some(Ok(Message::Close(frame)))) => {
                let close = frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                return SocketEnd { close: Some(close.unwrap_or((1005, String::new()))) };
            }
            Ok(Some(Ok(_))) => {}
            Ok(other) => panic!("the socket broke without a close frame: {other:?}"),
        }
    }
}

pub async fn send_token(socket: &mut Socket, token: &str) {
    let renewal = json!({"type": "token", "token": token}).to_string();
    socket.send(Message::Text(renewal.into())).await.expect("send the renewed token");
}
