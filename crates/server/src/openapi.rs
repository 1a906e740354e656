//! The OpenAPI 3.1 document of the whole HTTP API, served at `/openapi.json`: its frame here;
//! every route's entry comes from the `#[utoipa::path]` annotation of its handler, registered
//! with the route itself in [`crate::routes::router`], so a route cannot exist without its entry
//! in the document. The end-to-end suite checks that every status a route answers is one its
//! entry lists.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

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

/// The document's frame (title, tags, security schemes); [`crate::routes::router`] adds every
/// route's entry as it registers the route.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
