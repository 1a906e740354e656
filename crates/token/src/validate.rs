//! The check of an access token, shared by tessera itself and every verifier (`tessera-verify`).
//!
//! [`Validator::validate`] pins ES256, finds the key by `kid`, verifies the signature, and
//! checks `iss`, `aud` and `exp` against the caller's clock (`now`, in milliseconds: a token is
//! dead from the millisecond its `exp` second begins, plus the configured leeway), and refuses a
//! token whose `iat` or `nbf` lies in the future (beyond the leeway). Whether the
//! session has ended is not checked here: that takes the revocation set, which the caller holds.
//!
//! One ES256 verification costs tens of microseconds, so tokens that passed once are remembered
//! in a bounded cache keyed by the SHA-256 of the whole token (never by a part of it, which would
//! let a forged payload ride on a good signature); a hit still checks `exp`.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, Validation};

use crate::claims::AccessClaims;
use crate::clock::Timestamp;
use crate::jwk::KeyRing;

/// Longer than any token tessera mints; longer input is rejected before hashing or parsing.
pub const MAX_TOKEN_BYTES: usize = 4096;
const CACHE_CAPACITY: usize = 16_384;

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is malformed")]
    Malformed,
    /// Signed with a key this verifier does not know (yet): worth one refetch of the JWKS.
    #[error("the token was signed by an unknown key")]
    UnknownKey(String),
    #[error("the token's signature or claims are invalid")]
    Invalid,
    #[error("the token has expired")]
    Expired,
}

/// Checks tokens of one issuer and audience.
pub struct Validator {
    issuer: String,
    audience: String,
    leeway: Duration,
    validation: Validation,
    verified: quick_cache::sync::Cache<[u8; 32], Arc<AccessClaims>>,
}

impl std::fmt::Debug for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validator")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway", &self.leeway)
            .finish_non_exhaustive()
    }
}

impl Validator {
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>, leeway: Duration) -> Self {
        let (issuer, audience) = (issuer.into(), audience.into());
        let mut validation = Validation::new(Algorithm::ES256);
        validation.algorithms = vec![Algorithm::ES256];
        validation.set_issuer(&[&issuer]);
        validation.set_audience(&[&audience]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        // Time is checked below against the caller's clock, to the millisecond.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        Self { issuer, audience, leeway, validation, verified: quick_cache::sync::Cache::new(CACHE_CAPACITY) }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// The claims of `token` if it is valid at `now` under one of `keys`.
    pub fn validate(&self, token: &str, keys: &KeyRing, now: Timestamp) -> Result<Arc<AccessClaims>, TokenError> {
        if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed);
        }
        let cache_key: [u8; 32] =
            digest::digest(&digest::SHA256, token.as_bytes()).as_ref().try_into().map_err(|_| TokenError::Malformed)?;
        let claims = match self.verified.get(&cache_key) {
            Some(claims) => claims,
            None => {
                let claims = Arc::new(self.verify_signature(token, keys)?);
                self.verified.insert(cache_key, claims.clone());
                claims
            }
        };
        self.check_time(&claims, now)?;
        Ok(claims)
    }

    fn verify_signature(&self, token: &str, keys: &KeyRing) -> Result<AccessClaims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        // One spelling per token: the high-`s` twin of a valid signature is refused.
        let signature = token.rsplit('.').next().unwrap_or_default();
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| TokenError::Malformed)?;
        if !crate::ecdsa::is_low_s(&signature) {
            return Err(TokenError::Invalid);
        }
        if header.alg != Algorithm::ES256 {
            return Err(TokenError::Invalid);
        }
        // Critical extensions must be understood or the token refused (RFC 7515 §4.1.11);
        // tessera uses none. And only what tessera issues, `typ: JWT`: a JWT of another type
        // is another kind of token, never an access token (RFC 8725 §3.11).
        if header.crit.is_some() || !header.typ.as_deref().is_some_and(|t| t.eq_ignore_ascii_case("JWT")) {
            return Err(TokenError::Invalid);
        }
        let kid = header.kid.ok_or(TokenError::Invalid)?;
        let key = keys.get(&kid).ok_or(TokenError::UnknownKey(kid))?;
        let data =
            jsonwebtoken::decode::<AccessClaims>(token, key, &self.validation).map_err(|_| TokenError::Invalid)?;
        // One spelling per id: `sub` and `sid` as tessera writes them.
        if data.claims.user_id().is_none() || data.claims.session_id().is_none() {
            return Err(TokenError::Invalid);
        }
        Ok(data.claims)
    }

    fn check_time(&self, claims: &AccessClaims, now: Timestamp) -> Result<(), TokenError> {
        let leeway = i64::try_from(self.leeway.as_millis()).unwrap_or(i64::MAX);
        let now = now.as_millis();
        if now >= claims.exp.saturating_mul(1000).saturating_add(leeway) {
            return Err(TokenError::Expired);
        }
        // Issued (or valid from) in the future: a clock gone wrong or a forgery; not yet valid.
        let not_before = claims.nbf.unwrap_or(i64::MIN).max(claims.iat);
        if not_before.saturating_mul(1000) > now.saturating_add(leeway) {
            return Err(TokenError::Invalid);
        }
        Ok(())
    }
}
