//! The router in process, without a socket (`oneshot`), for edge cases of the HTTP surface: what
//! a request that never reaches an operation is answered.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode, header};
use serde_json::Value;
use tessera_core::testing::memory::MemoryStore;
use tessera_server::config::{ServeArgs, Settings, StoreArgs};
use tessera_server::{Stores, app, build_state};
use tower::ServiceExt;

async fn router() -> (axum::Router, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let stores = StoreArgs { data_dir: Some(dir.path().to_owned()), ..StoreArgs::default() };
    let settings = Settings::resolve(ServeArgs { stores, ..ServeArgs::default() }).unwrap();
    let memory = Arc::new(MemoryStore::new());
    let db = Stores { users: memory.clone(), clients: memory.clone(), sessions: memory, limits: None };
    let state = build_state(&settings, SocketAddr::from(([127, 0, 0, 1], 8080)), db).await.unwrap();
    (app(state), dir)
}

async fn send(router: &axum::Router, request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Value) {
    let mut request = request;
    request.extensions_mut().insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 50_000))));
    let response = router.clone().oneshot(request).await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (status, headers, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn unknown_paths_and_methods_get_the_envelope() {
    let (router, _dir) = router().await;
    let (status, _, body) = send(&router, Request::get("/nowhere").body(Body::empty()).unwrap()).await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "NOT_FOUND"));
    let (status, _, body) = send(&router, Request::delete("/api/auth/login").body(Body::empty()).unwrap()).await;
    assert_eq!((status, code(&body)), (StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED"));
}

#[tokio::test]
async fn oauth_endpoints_answer_other_methods_in_rfc_6749_form() {
    let (router, _dir) = router().await;
    let (status, headers, body) = send(&router, Request::get("/oauth/token").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["error"], "invalid_request", "{body}");
    assert!(body.get("success").is_none(), "not the envelope");
    assert!(headers.get(header::CACHE_CONTROL).is_some());
}

#[tokio::test]
async fn a_refresh_without_any_token_is_missing_token_and_two_bearers_are_refused() {
    let (router, _dir) = router().await;
    let request = Request::post("/api/auth/refresh").body(Body::empty()).unwrap();
    let (status, headers, body) = send(&router, request).await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "MISSING_TOKEN"));
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    let request = Request::get("/api/auth/me")
        .header(header::AUTHORIZATION, "Bearer a")
        .header(header::AUTHORIZATION, "Bearer b")
        .body(Body::empty())
        .unwrap();
    let (status, _, body) = send(&router, request).await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "INVALID_REQUEST"));
}

#[tokio::test]
async fn conflicting_refresh_cookies_are_answered_and_cleared() {
    let (router, _dir) = router().await;
    let request = Request::post("/api/auth/refresh")
        .header(header::COOKIE, "__Secure-tessera_refresh=a; __Secure-tessera_refresh=b")
        .header("x-requested-with", "tessera")
        .header(header::HOST, "auth.example.com")
        .body(Body::empty())
        .unwrap();
    let (status, headers, body) = send(&router, request).await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "CONFLICTING_COOKIES"));
    assert!(headers.get_all(header::SET_COOKIE).iter().count() >= 12, "{headers:?}");
}

#[tokio::test]
async fn the_openapi_document_and_the_metrics_are_served() {
    let (router, _dir) = router().await;
    let (status, _, document) = send(&router, Request::get("/openapi.json").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(document["paths"]["/api/auth/refresh"]["post"].is_object());
    let response = router.clone().oneshot(Request::get("/metrics").body(Body::empty()).unwrap()).await.unwrap();
    assert!(response.headers()[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/plain"));
}
