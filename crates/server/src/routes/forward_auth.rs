//! Forward-auth for the proxies people already run: nginx's `auth_request`, Traefik's
//! `ForwardAuth` and Caddy's `forward_auth` ask `GET /api/auth/verify` about each request and
//! copy the caller's `X-Tessera-*` headers onto it (README, "Protecting a service in any
//! language"). The check is local: the token's signature and lifetime, and the session not
//! ended here or in the feed; no store is read. These proxies ask once per HTTP request, so a
//! WebSocket is checked only at its upgrade: sockets that must close at logout need
//! `tessera gateway`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tessera_proto::{Envelope, VerifyResponse};
use tessera_verify::http::identity;

use crate::extract::AuthUser;

#[utoipa::path(get, path = "/verify", tag = "auth", security(("bearer" = [])),
    responses((status = 200, description = "The access token is valid and its session live: the caller, also in the `X-Tessera-User-Id`, `-Session-Id`, `-Email`, `-Username` and `-Anonymous` headers. `HEAD` answers the same without the body", body = Envelope<VerifyResponse>)))]
pub async fn verify(AuthUser(caller): AuthUser) -> Response {
    let body = VerifyResponse { user_id: caller.user_id.to_string(), session_id: caller.session_id.to_string() };
    let mut response = (StatusCode::OK, axum::Json(Envelope::ok(body))).into_response();
    identity::insert(response.headers_mut(), &caller.claims);
    response
}
