//! Verify tessera's access tokens in any Rust service (a *resource server*), and learn of ended
//! sessions within a second, without a round trip to tessera per request.
//!
//! tessera signs short-lived ES256 access tokens; any service can check them against the key set
//! tessera publishes at `{issuer}/.well-known/jwks.json`. A signature alone cannot tell that the
//! user logged out, that the session was revoked, or that its refresh token was stolen and
//! replayed, so tessera also publishes a **revocation feed** (server-sent events at
//! `{issuer}/api/auth/revocations`) of the sessions that ended. A [`Verifier`] keeps both fresh in
//! the background and checks every token against them with a hash lookup.
//!
//! ```no_run
//! use axum::{Router, routing::get, Json};
//! use tessera_verify::{Authenticated, Verifier};
//!
//! async fn whoami(user: Authenticated) -> Json<serde_json::Value> {
//!     Json(serde_json::json!({ "user": user.user_id.to_string(), "email": user.email() }))
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // Fetches the JWKS, subscribes to the revocation feed and waits until it is in sync.
//! let verifier = Verifier::builder("https://auth.example.com").audience("tessera").build().await?;
//! let app: Router = Router::new().route("/whoami", get(whoami)).layer(verifier.extension());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await?;
//! # Ok(())
//! # }
//! ```
//!
//! What is checked, strictly by default: the algorithm is ES256 and nothing else (no `none`, no
//! HMAC keyed with the public key), the signature under the key named by `kid`, `iss`, `aud`,
//! `exp` to the millisecond (leeway 0 unless configured), and that the session (`sid`) has not
//! ended. Tokens that passed once are remembered in a bounded cache keyed by the SHA-256 of the
//! whole token, so a repeat costs a hash, not an ECDSA verification; `exp` and the session are
//! checked on every request.
//!
//! Modules:
//! - [`verifier`]: the [`Verifier`] a service builds: key cache, feed subscriber, policy.
//! - `http` (feature `axum`, on by default): the axum extractor [`Authenticated`], the tower
//!   layer, RFC 6750 errors. Without it the crate checks tokens and follows the feed with no
//!   axum, tower or WebSocket code.
//! - re-exported from `tessera-token` (which has no HTTP stack, for services that only check
//!   tokens): [`claims`], [`jwk`], [`validate`], [`revocation`], [`ids`], [`clock`],
//!   [`duration`], [`ecdsa`], [`random`].

mod caller;
#[cfg(feature = "axum")]
pub mod http;
pub mod verifier;

pub use tessera_token::{claims, clock, duration, ecdsa, ids, jwk, random, revocation, validate};

mod feed;
mod keycache;

pub use caller::{Authenticated, VerifyError};
pub use claims::AccessClaims;
pub use clock::Timestamp;
#[cfg(feature = "axum")]
pub use http::RequireAuthLayer;
pub use ids::{SessionId, UserId};
pub use verifier::{FeedLossPolicy, Verifier, VerifierBuilder};
