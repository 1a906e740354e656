//! tessera's domain: everything about tokens, sessions and accounts that holds whatever the
//! transport (HTTP) and whatever the store (SQLite, PostgreSQL, Redis).
//!
//! - [`refresh`]: opaque refresh tokens derived from `(session, generation)` under a MAC key.
//! - [`session`]: sessions and the rotation rule (strict by default, optional grace window).
//! - [`mod@audit`]: the audit events and the [`audit!`] macro that logs them.
//! - [`access`]: ES256 access tokens, verified with a bounded cache.
//! - [`keys`]: the signing-key ring on disk and the JWKS.
//! - [`password`]: argon2id on a bounded, low-priority thread pool.
//! - [`store`]: the traits every backend implements.
//! - [`journal`]: recent ends from the store's feed, for this instance's feed subscribers.
//! - [`revocation`]: the in-memory view of ended sessions and the feed that publishes them.
//! - `testing` (feature `testing`): in-memory and fault-injecting stores for tests.
//! - [`service`]: the operations of the API (register, login, refresh, logout, …).

pub mod access;
pub mod account;
pub mod audit;
pub mod clients;
pub mod journal;
pub mod keys;
pub mod password;
pub mod refresh;
pub mod service;
pub mod session;
pub mod store;
#[cfg(any(test, feature = "testing"))]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub mod testing;

pub use tessera_token::{SessionId, Timestamp, UserId};
pub use tessera_token::{clock, duration, ids, random, revocation};

/// An error with every cause behind it, outermost first: `store unavailable: pool timed out: …`.
/// What a log line needs; `Display` of a wrapper error alone often says only its own layer.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}

/// Short URL-safe text for random ids (`jti`).
pub(crate) fn encode_id(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
