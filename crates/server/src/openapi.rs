//! The OpenAPI 3.1 document of the whole HTTP API, served at `/openapi.json`: its frame here;
//! every route's entry comes from the `#[utoipa::path]` annotation of its handler, registered
//! with the route itself in [`crate::routes::router`], so a route cannot exist without its entry
//! in the document. The failures routes share are written once here ([`Shared`]). The end-to-end
//! suite checks that every status a route answers is one its entry lists, and that every code
//! the document lists is one the route can be made to answer.

use std::collections::btree_map::Entry;

use utoipa::openapi::path::Paths;
use utoipa::openapi::response::{ResponseBuilder, Responses};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "tessera",
        description = "Self-hosted authentication: short-lived ES256 access tokens, refresh tokens rotated on every use, sessions that end everywhere at once."
    ),
    modifiers(&SecuritySchemes),
    components(schemas(tessera_proto::ErrorEnvelope, crate::routes::oauth::OAuthErrorBody)),
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

/// Failures several routes share, each documented here once. A route names the ones it can give
/// where it is registered (`documented` in [`crate::routes`]); its handler's annotation lists
/// only its own. Each row is `(status, description)`, and a description starts with the codes
/// it covers in backticks (the end-to-end suite produces every code the document lists).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shared {
    /// A JSON body ([`crate::extract::ApiJson`], [`crate::extract::OptionalJson`]).
    JsonBody,
    /// An access token ([`crate::extract::AuthUser`]).
    Bearer,
    /// A refresh token in the body or the refresh cookie
    /// ([`crate::cookies::CookiePolicy::presented_token`]).
    RefreshToken,
    /// A call to the store.
    Store,
    /// An OAuth endpoint's form body and method ([`crate::routes::oauth::FormParams`]).
    OAuthForm,
    /// An OAuth endpoint's call to the store.
    OAuthStore,
}

impl Shared {
    fn rows(self) -> &'static [(u16, &'static str)] {
        match self {
            Self::JsonBody => &[
                (400, "`INVALID_REQUEST`: the body is not a JSON object of the expected fields"),
                (408, "`REQUEST_TIMEOUT`: the body did not arrive within the body timeout"),
                (413, "`PAYLOAD_TOO_LARGE`"),
                (415, "`UNSUPPORTED_MEDIA_TYPE`"),
            ],
            Self::Bearer => &[
                (400, "`INVALID_REQUEST`: several `Authorization` headers"),
                (401, "`UNAUTHORIZED`: no access token, or an invalid, expired or ended one"),
            ],
            Self::RefreshToken => &[
                (400, "`MISSING_TOKEN`: neither `refresh_token` nor the refresh cookie"),
                (400, "`CONFLICTING_COOKIES`: several refresh cookies, all cleared"),
                (
                    403,
                    "`CSRF_REJECTED`: the cookie came without `X-Requested-With: tessera` or from an origin not allowed",
                ),
            ],
            Self::Store => &[(500, "`INTERNAL`"), (503, "`UNAVAILABLE`: the store cannot be reached")],
            Self::OAuthForm => &[
                (400, "`invalid_request`: not a form, a parameter missing or repeated"),
                (405, "`invalid_request`: not `POST`"),
                (408, "`invalid_request`: the body did not arrive within the body timeout"),
                (413, "`invalid_request`: the body is over the limit"),
            ],
            Self::OAuthStore => &[(500, "`server_error`"), (503, "`temporarily_unavailable`")],
        }
    }

    fn schema(self) -> &'static str {
        match self {
            Self::OAuthForm | Self::OAuthStore => "OAuthErrorBody",
            _ => "ErrorEnvelope",
        }
    }
}

/// Adds the rows of `shared` to every operation of `paths`: a status the handler documents
/// already gets the shared description appended, any other status a new response.
pub fn add_shared(paths: &mut Paths, shared: &[Shared]) {
    for item in paths.paths.values_mut() {
        let operations = [&mut item.get, &mut item.post, &mut item.put, &mut item.patch, &mut item.delete];
        for operation in operations.into_iter().flatten() {
            for &kind in shared {
                for &(status, description) in kind.rows() {
                    add_response(&mut operation.responses, status, description, kind.schema());
                }
            }
        }
    }
}

fn add_response(responses: &mut Responses, status: u16, description: &str, schema: &str) {
    match responses.responses.entry(status.to_string()) {
        Entry::Occupied(mut entry) => {
            if let RefOr::T(response) = entry.get_mut() {
                response.description = format!("{}; {description}", response.description);
            }
        }
        Entry::Vacant(entry) => {
            let content = Content::new(Some(Ref::from_schema_name(schema)));
            entry.insert(RefOr::T(
                ResponseBuilder::new().description(description).content("application/json", content).build(),
            ));
        }
    }
}
