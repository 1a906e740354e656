//! The HTTP routes, one module per area. Handlers parse, call one `AuthService` operation and
//! map its result; the rules live in `tessera-core`.

pub mod account;
pub mod auth;
pub mod meta;
pub mod oauth;
pub mod revocations;
pub mod sessions;
pub mod web;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tessera_proto::Envelope;

/// `200 {"success": true, "data": …}`.
pub fn ok<T: Serialize>(data: T) -> Response {
    Json(Envelope::ok(data)).into_response()
}

/// `201 {"success": true, "data": …}`.
pub fn created<T: Serialize>(data: T) -> Response {
    (StatusCode::CREATED, Json(Envelope::ok(data))).into_response()
}
