//! Per-request context, as one tower layer (axum's `from_fn` middlewares clone the inner service
//! and box a `Next` per request each; two of them cost a fifth of `/me`'s throughput):
//!
//! - CORS for the configured allowed origins ([`crate::cookies`] says which and why): a real
//!   preflight is answered here, and other answers to an allowed origin get its headers;
//! - a request id on every log line (through [`RequestFields`]) and on the response, and the
//!   logging of internal errors under that id (their cause never reaches the client).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::FailureCause;
use crate::telemetry::RequestFields;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The layer; `allowed_origins` are the origins CORS lets in.
#[derive(Clone)]
pub struct RequestContextLayer {
    allowed_origins: Arc<Vec<HeaderValue>>,
}

impl RequestContextLayer {
    pub fn new(allowed_origins: Vec<HeaderValue>) -> Self {
        Self { allowed_origins: Arc::new(allowed_origins) }
    }
}

impl<S> tower::Layer<S> for RequestContextLayer {
    type Service = RequestContext<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestContext { inner, allowed_origins: self.allowed_origins.clone() }
    }
}

#[derive(Clone)]
pub struct RequestContext<S> {
    inner: S,
    allowed_origins: Arc<Vec<HeaderValue>>,
}

impl<S> tower::Service<Request> for RequestContext<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let origin = req.headers().get(header::ORIGIN).filter(|o| self.allowed_origins.contains(o)).cloned();
        let preflight =
            req.method() == Method::OPTIONS && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        if let (Some(origin), true) = (&origin, preflight) {
            let mut response = StatusCode::NO_CONTENT.into_response();
            crate::cookies::cors_headers(response.headers_mut(), origin.clone(), true);
            return Box::pin(std::future::ready(Ok(response)));
        }
        let request_id = incoming_id(&req).unwrap_or_else(new_request_id);
        // One header value, shared by the request and the response (a clone is a reference count).
        let id_header = HeaderValue::try_from(&request_id).ok();
        if let Some(value) = &id_header {
            req.headers_mut().insert(REQUEST_ID_HEADER, value.clone());
        }
        let fields = RequestFields { request_id, method: req.method().clone(), uri: req.uri().clone() };
        let answer = self.inner.call(req);
        Box::pin(fields.scope(async move {
            let Ok(mut response) = answer.await;
            // The one place where failed answers are logged, whichever API rendered them.
            if let Some(FailureCause(cause)) = response.extensions_mut().remove::<FailureCause>() {
                if response.status() == StatusCode::INTERNAL_SERVER_ERROR {
                    tracing::error!(error = format!("{cause:#}"), "internal error");
                } else {
                    tracing::warn!(status = response.status().as_u16(), error = format!("{cause:#}"), "request failed");
                }
            }
            crate::metrics::count_response(response.status().as_u16());
            if let Some(value) = id_header {
                response.headers_mut().insert(REQUEST_ID_HEADER, value);
            }
            if let Some(origin) = origin {
                crate::cookies::cors_headers(response.headers_mut(), origin, false);
            }
            Ok(response)
        }))
    }
}

/// A client's own request id, if it is short and plain enough to put in a log line.
fn incoming_id(req: &Request) -> Option<String> {
    let id = req.headers().get(REQUEST_ID_HEADER)?.to_str().ok()?;
    let plain =
        !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    plain.then(|| id.to_owned())
}

/// A request id unique across restarts and instances without costing a random draw per
/// request: a random prefix drawn once per process, then a counter.
fn new_request_id() -> String {
    use std::sync::LazyLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static PREFIX: LazyLock<u64> = LazyLock::new(|| u64::from_le_bytes(tessera_core::random::bytes()));
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut id = String::with_capacity(32);
    for word in [*PREFIX, NEXT.fetch_add(1, Ordering::Relaxed)] {
        for shift in (0..16).rev() {
            id.push(char::from(b"0123456789abcdef"[((word >> (shift * 4)) & 0xf) as usize]));
        }
    }
    id
}
