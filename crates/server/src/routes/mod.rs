//! The HTTP routes, one module per area, and [`router`], which builds every one of them.
//! Handlers parse, call one `AuthService` operation and map its result; the rules live in
//! `tessera-core`.

pub mod account;
pub mod auth;
pub mod forward_auth;
pub mod meta;
pub mod oauth;
pub mod revocations;
pub mod sessions;
pub mod web;

use std::sync::Arc;

use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tessera_proto::{Envelope, ErrorCode};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};
use utoipa_axum::routes;

use crate::error::AppError;
use crate::openapi::Shared::{self, Bearer, JsonBody, OAuthForm, OAuthStore, RefreshToken, Store};
use crate::state::AppState;

/// Every route of the server: the API (each with its OpenAPI entry), `/openapi.json`, the web
/// page's files, and envelopes for unknown paths and methods.
pub fn router() -> Router<AppState> {
    let (api, document) = api().split_for_parts();
    let document = Arc::new(document.to_pretty_json().unwrap_or_default());
    api.route("/openapi.json", get(move || meta::openapi(document.clone())))
        .route("/", get(web::index))
        .route("/app.js", get(web::script))
        .route("/tessera.js", get(web::library))
        .route("/tessera-frame.html", get(web::frame))
        .route("/tessera-frame.js", get(web::frame_script))
        .route("/app.css", get(web::style))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

/// A route whose document entry gets the failures it shares with others ([`Shared`]).
fn documented(route: UtoipaMethodRouter<AppState>, shared: &[Shared]) -> UtoipaMethodRouter<AppState> {
    let (schemas, mut paths, method_router) = route;
    crate::openapi::add_shared(&mut paths, shared);
    (schemas, paths, method_router)
}

/// An OAuth endpoint: other methods get an RFC 6749 error, not the envelope.
fn oauth_endpoint(route: UtoipaMethodRouter<AppState>) -> UtoipaMethodRouter<AppState> {
    let (schemas, paths, method_router) = documented(route, &[OAuthForm, OAuthStore]);
    (schemas, paths, method_router.fallback(oauth::method_not_allowed))
}

/// The API's routes, each with its document entry and the shared failures it can give.
fn api() -> OpenApiRouter<AppState> {
    let auth = OpenApiRouter::new()
        .routes(documented(routes!(auth::register), &[JsonBody, Store]))
        .routes(documented(routes!(auth::login), &[JsonBody, Store]))
        .routes(documented(routes!(auth::refresh), &[JsonBody, RefreshToken, Store]))
        .routes(documented(routes!(auth::logout), &[Bearer, JsonBody, Store]))
        .routes(documented(routes!(auth::logout_all), &[Bearer, Store]))
        .routes(documented(routes!(auth::me), &[Bearer, Store]))
        .routes(documented(routes!(forward_auth::verify), &[Bearer]))
        .routes(routes!(account::settings))
        .routes(documented(routes!(account::anonymous), &[JsonBody, Store]))
        .routes(documented(routes!(account::upgrade), &[Bearer, JsonBody, RefreshToken, Store]))
        .routes(documented(routes!(account::change_password), &[Bearer, JsonBody, Store]))
        .routes(documented(routes!(account::delete_account), &[Bearer, JsonBody, Store]))
        .routes(documented(routes!(sessions::list), &[Bearer, Store]))
        .routes(documented(routes!(sessions::revoke), &[Bearer, Store]))
        .routes(routes!(revocations::stream))
        .layer(axum::middleware::map_response(never_cache));
    OpenApiRouter::with_openapi(crate::openapi::document())
        .nest("/api/auth", auth)
        .routes(routes!(meta::jwks))
        .routes(routes!(oauth::metadata))
        .routes(oauth_endpoint(routes!(oauth::token)))
        .routes(oauth_endpoint(routes!(oauth::revoke)))
        .routes(oauth_endpoint(routes!(oauth::introspect)))
        .routes(routes!(meta::healthz))
        .routes(routes!(meta::readyz))
        .routes(routes!(meta::metrics))
}

/// Token responses must not be stored by any cache (RFC 6749 §5.1); nor should anything else
/// of the auth API.
fn never_cache(mut response: Response) -> std::future::Ready<Response> {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    std::future::ready(response)
}

async fn not_found(method: Method, uri: Uri) -> AppError {
    AppError::new(ErrorCode::NotFound, format!("No route for {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> AppError {
    AppError::new(ErrorCode::MethodNotAllowed, format!("{method} is not allowed on {}", uri.path()))
}

/// `200 {"success": true, "data": …}`.
pub fn ok<T: Serialize>(data: T) -> Response {
    Json(Envelope::ok(data)).into_response()
}

/// `201 {"success": true, "data": …}`.
pub fn created<T: Serialize>(data: T) -> Response {
    (StatusCode::CREATED, Json(Envelope::ok(data))).into_response()
}
