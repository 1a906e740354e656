//! Per-request context: a request id on every log line and on the response, a span, and the
//! logging of internal errors under that id (their cause never reaches the client).

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tessera_proto::{Envelope, ErrorBody, ErrorCode};
use tracing::Instrument;

use crate::error::InternalCause;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

pub async fn request_context(mut req: Request, next: Next) -> Response {
    let request_id = incoming_id(&req).unwrap_or_else(new_request_id);
    // One header value, shared by the request and the response (a clone is a reference count).
    let header = HeaderValue::try_from(&request_id).ok();
    if let Some(value) = &header {
        req.headers_mut().insert(REQUEST_ID_HEADER, value.clone());
    }
    let span =
        tracing::info_span!("request", request_id = %request_id, method = %req.method(), path = %req.uri().path());
    let mut response = next.run(req).instrument(span.clone()).await;
    if let Some(InternalCause(cause)) = response.extensions_mut().remove::<InternalCause>() {
        let _entered = span.enter();
        tracing::error!(error = format!("{cause:#}"), "internal error");
        let body = Envelope::<()>::err(ErrorBody {
            code: ErrorCode::Internal,
            message: "Internal server error".into(),
            request_id: Some(request_id.clone()),
        });
        response = (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(body)).into_response();
    }
    crate::metrics::count_response(response.status().as_u16());
    if let Some(value) = header {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
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
