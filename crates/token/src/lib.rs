//! tessera's tokens, without I/O: what tessera, its stores and every resource server share.
//!
//! - [`ids`]: the ids of users and sessions, one spelling each.
//! - [`clock`]: timestamps in milliseconds, and the [`Clock`](clock::Clock) everything asks.
//! - [`duration`]: `90s`, `15m`, `30d`.
//! - [`random`]: bytes from the OS's randomness.
//! - [`claims`]: the access-token claims, defined once for tessera and every verifier.
//! - [`jwk`]: JWK sets and the decoding keys built from them.
//! - [`ecdsa`]: the low-`s` rule, so that a token has one spelling.
//! - [`validate`]: the token check itself, run by tessera and by every verifier.
//! - [`revocation`]: the set of ended sessions, and the revocation feed's wire format.
//!
//! Its normal dependencies hold no HTTP stack and no async runtime (`docs/architecture.md`).

pub mod claims;
pub mod clock;
pub mod duration;
pub mod ecdsa;
pub mod ids;
pub mod jwk;
pub mod random;
pub mod revocation;
pub mod validate;

pub use claims::AccessClaims;
pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use ids::{SessionId, UserId};
