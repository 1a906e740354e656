//! What a check of a request gives: the verified caller, or why it was refused. The axum
//! glue (`http`, feature `axum`) renders these; they need no HTTP stack themselves.

use std::sync::Arc;

use crate::claims::AccessClaims;
use crate::ids::{SessionId, UserId};

/// The verified caller of a request: a valid access token of a session that has not ended.
///
/// As an extractor it needs the [`Verifier`] as a request extension
/// (`.layer(verifier.extension())`), or runs behind [`Verifier::require`]. As
/// `Option<Authenticated>` it is `None` when the request carries no token at all, and still
/// refuses a token that is invalid: a bad token never silently becomes an anonymous caller.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub user_id: UserId,
    pub session_id: SessionId,
    pub claims: Arc<AccessClaims>,
}

impl Authenticated {
    pub fn email(&self) -> Option<&str> {
        self.claims.email.as_deref()
    }

    pub fn is_anonymous(&self) -> bool {
        self.claims.is_anonymous
    }

    /// When the access token expires (seconds since the Unix epoch).
    pub fn expires_at(&self) -> i64 {
        self.claims.exp
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("no access token was sent")]
    Missing,
    #[error("the request carries more than one access token")]
    Ambiguous,
    #[error("the access token is invalid")]
    Invalid,
    #[error("the access token has expired")]
    Expired,
    #[error("the session of the access token has ended")]
    SessionEnded,
    #[error("sessions cannot be checked right now (the revocation feed is unreachable)")]
    Unavailable,
    #[error("the service is misconfigured: no tessera Verifier was installed")]
    NoVerifier,
}
