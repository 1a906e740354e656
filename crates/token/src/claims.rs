//! The claims of a tessera access token: what tessera writes and every verifier reads.

use serde::{Deserialize, Serialize};

use crate::ids::{SessionId, UserId};

/// The audience tessera's tokens carry unless configured otherwise.
pub const DEFAULT_AUDIENCE: &str = "tessera";

/// The payload of an access token.
///
/// `email` is absent for accounts without one (guests); `is_anonymous` is `true` only for them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    /// The user id.
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_username: Option<String>,
    #[serde(default)]
    pub is_anonymous: bool,
    /// The session id: what logout, revocation and reuse detection end.
    pub sid: String,
    pub jti: String,
    pub iat: i64,
    pub exp: i64,
    /// Not minted by tessera; honoured when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
}

impl AccessClaims {
    pub fn user_id(&self) -> Option<UserId> {
        self.sub.parse().ok()
    }

    pub fn session_id(&self) -> Option<SessionId> {
        self.sid.parse().ok()
    }
}
