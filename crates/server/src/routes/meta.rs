//! Health, readiness and the JWKS.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tessera_core::keys::JWKS_MAX_AGE;

use crate::state::AppState;

#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process is up: `{\"status\":\"ok\"}`", body = Object)))]
pub async fn healthz() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

/// Ready when both stores answer within two seconds.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Both stores answer: `{\"status\":\"ready\"}`", body = Object),
        (status = 503, description = "A store does not answer within 2 s", body = Object)
    ))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    match tokio::time::timeout(Duration::from_secs(2), state.auth().ready()).await {
        Ok(Ok(())) => Json(json!({"status": "ready"})).into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = crate::telemetry::error_chain(&e), "not ready: store does not answer");
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "unavailable"}))).into_response()
        }
        Err(_) => {
            tracing::warn!("not ready: store timed out");
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "unavailable"}))).into_response()
        }
    }
}

#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "tokens",
    responses((status = 200, description = "The ES256 keys that verify access tokens (RFC 7517), `Cache-Control: public, max-age=300`", body = Object)))]
pub async fn jwks(State(state): State<AppState>) -> Response {
    let tokens = state.auth().access_tokens();
    let set = tokens.keys().jwks(state.now(), state.auth().revoked().retention());
    let mut response = Json(set).into_response();
    let cache = format!("public, max-age={}", JWKS_MAX_AGE.as_secs());
    if let Ok(value) = HeaderValue::try_from(cache) {
        response.headers_mut().insert(header::CACHE_CONTROL, value);
    }
    response
}

/// `GET /openapi.json`: the document of the API (see [`crate::openapi`]).
pub async fn openapi(document: std::sync::Arc<String>) -> Response {
    let mut response = (*document).clone().into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let gauges = crate::metrics::Gauges {
        revoked_sessions: state.auth().revoked().len(),
        signing_keys: state.auth().access_tokens().keys().kids().len(),
    };
    let mut response = crate::metrics::exposition(gauges).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
    response
}
