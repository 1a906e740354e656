//! The OpenAPI 3.1 document of the whole HTTP API, served at `/openapi.json`.
//!
//! Every route of the API is registered through [`routes`] with the `#[utoipa::path]`
//! annotation of its handler, so a route cannot exist without its entry in the document; the
//! end-to-end suite checks that every status a route answers is one its entry lists.

use axum::response::Response;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};
use utoipa_axum::routes;

use crate::state::AppState;
use crate::{metrics, routes as r};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "tessera",
        description = "Self-hosted authentication: short-lived ES256 access tokens, refresh tokens rotated on every use, sessions that end everywhere at once."
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "auth", description = "tessera's own API: every answer is an envelope"),
        (name = "accounts", description = "Guests, upgrading a guest in place, password change and account deletion"),
        (name = "sessions", description = "The caller's sessions"),
        (name = "tokens", description = "What resource servers need: the keys and the revocation feed"),
        (name = "oauth", description = "OAuth 2.0 (RFC 8414, 6749, 7009, 7662): RFC 6749 errors, never the envelope"),
        (name = "operations", description = "Health and metrics"),
    )
)]
struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut bearer = Http::new(HttpAuthScheme::Bearer);
        bearer.bearer_format = Some("JWT".into());
        components.add_security_scheme("bearer", SecurityScheme::Http(bearer));
        components.add_security_scheme("client", SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)));
    }
}

/// An OAuth endpoint: other methods get an RFC 6749 error, not the envelope.
fn oauth(route: UtoipaMethodRouter<AppState>) -> UtoipaMethodRouter<AppState> {
    let (schemas, paths, method_router) = route;
    (schemas, paths, method_router.fallback(r::oauth::method_not_allowed))
}

/// The API's routes, each with its document entry. `auth_layer` wraps the `/api/auth` routes.
pub fn routes(auth_layer: fn(Response) -> std::future::Ready<Response>) -> OpenApiRouter<AppState> {
    let auth = OpenApiRouter::new()
        .routes(routes!(r::auth::register))
        .routes(routes!(r::auth::login))
        .routes(routes!(r::auth::refresh))
        .routes(routes!(r::auth::logout))
        .routes(routes!(r::auth::logout_all))
        .routes(routes!(r::auth::me))
        .routes(routes!(r::account::settings))
        .routes(routes!(r::account::anonymous))
        .routes(routes!(r::account::upgrade))
        .routes(routes!(r::account::change_password))
        .routes(routes!(r::account::delete_account))
        .routes(routes!(r::sessions::list))
        .routes(routes!(r::sessions::revoke))
        .routes(routes!(r::revocations::stream))
        .layer(axum::middleware::map_response(auth_layer));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest("/api/auth", auth)
        .routes(routes!(r::meta::jwks))
        .routes(routes!(r::oauth::metadata))
        .routes(oauth(routes!(r::oauth::token)))
        .routes(oauth(routes!(r::oauth::revoke)))
        .routes(oauth(routes!(r::oauth::introspect)))
        .routes(routes!(r::meta::healthz))
        .routes(routes!(r::meta::readyz))
        .routes(routes!(metrics::render))
}
