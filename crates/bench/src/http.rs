//! A minimal HTTP/1.1 client: one keep-alive hyper connection, requests sent one after another.
//! Far cheaper per request than a pooled client, so the load generator leaves the CPU to the
//! server it measures.

use std::net::SocketAddr;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::BoxError;

/// A response, read to the end.
pub struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Reply {
    /// A short description for error reports: status and the start of the body.
    pub fn describe(&self) -> String {
        let body = String::from_utf8_lossy(&self.body);
        let body: String = body.chars().take(200).collect();
        format!("{} {body}", self.status)
    }
}

pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    host: HeaderValue,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Result<Self, BoxError> {
        let stream = TcpStream::connect(addr).await.map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        // A broken connection shows up as an error of the next request.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Self { sender, host: HeaderValue::from_str(&addr.to_string())? })
    }

    pub async fn get(&mut self, path: &str, bearer: &HeaderValue) -> Result<Reply, BoxError> {
        let request = Request::builder()
            .method(Method::GET)
            .uri(path)
            .header(HOST, self.host.clone())
            .header(AUTHORIZATION, bearer.clone())
            .body(Full::new(Bytes::new()))?;
        self.send(request).await
    }

    pub async fn post_json(&mut self, path: &str, body: Bytes) -> Result<Reply, BoxError> {
        self.post(path, body, None).await
    }

    /// A JSON `POST` with an access token.
    pub async fn post_json_as(&mut self, path: &str, body: Bytes, bearer: &HeaderValue) -> Result<Reply, BoxError> {
        self.post(path, body, Some(bearer)).await
    }

    /// A form-encoded `POST` with an `Authorization` header (OAuth endpoints).
    pub async fn post_form(&mut self, path: &str, body: Bytes, authorization: &HeaderValue) -> Result<Reply, BoxError> {
        let request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(HOST, self.host.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"))
            .header(AUTHORIZATION, authorization.clone())
            .body(Full::new(body))?;
        self.send(request).await
    }

    async fn post(&mut self, path: &str, body: Bytes, bearer: Option<&HeaderValue>) -> Result<Reply, BoxError> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(HOST, self.host.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(bearer) = bearer {
            request = request.header(AUTHORIZATION, bearer.clone());
        }
        self.send(request.body(Full::new(body))?).await
    }

    async fn send(&mut self, request: Request<Full<Bytes>>) -> Result<Reply, BoxError> {
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Reply { status, body })
    }
}
