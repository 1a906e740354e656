//! Access tokens: ES256 JWTs, issued against the key ring and verified through
//! [`tessera_token::validate`], the very code every resource server runs.
//!
//! Whether the token's session has ended is not this module's concern: the caller checks `sid`
//! against the revocation view on every request.

use std::sync::{Arc, RwLock};
use std::time::Duration;

pub use tessera_token::claims::AccessClaims;
use tessera_token::validate::Validator;

use crate::clock::Timestamp;
use crate::ids::{SessionId, UserId};
use crate::keys::{KeyRing, KeySet};
use crate::random;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AccessError {
    #[error("the token is malformed, forged, expired or not for this audience")]
    Invalid,
    #[error("no signing key is loaded")]
    NoKey,
    #[error("the token could not be signed")]
    Signing,
}

/// A token and the lifetime it was minted with.
#[derive(Clone)]
pub struct IssuedAccess {
    pub token: String,
    pub expires_in: Duration,
}

impl std::fmt::Debug for IssuedAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedAccess").field("expires_in", &self.expires_in).finish_non_exhaustive()
    }
}

/// Whose token to mint.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub user_id: UserId,
    pub email: Option<&'a str>,
    pub username: Option<&'a str>,
    pub is_anonymous: bool,
    pub session_id: SessionId,
}

/// The keys in force: what signs and what verifies, swapped together.
struct Keys {
    signing: Arc<KeySet>,
    verifying: Arc<KeyRing>,
}

/// Mints and verifies access tokens for one issuer and audience.
pub struct AccessTokens {
    keys: RwLock<Keys>,
    issuer: String,
    audience: String,
    ttl: Duration,
    validator: Validator,
}

impl AccessTokens {
    pub fn new(keys: KeySet, issuer: String, audience: String, ttl: Duration) -> Self {
        let validator = Validator::new(issuer.clone(), audience.clone(), Duration::ZERO);
        Self { keys: RwLock::new(Self::keys_of(keys)), issuer, audience, ttl, validator }
    }

    fn keys_of(set: KeySet) -> Keys {
        Keys { verifying: Arc::new(set.key_ring()), signing: Arc::new(set) }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The `iss` of every token minted here (the public URL of the deployment).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn keys(&self) -> Arc<KeySet> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).signing.clone()
    }

    /// Swaps in a reloaded key set (after `tessera keys rotate`, possibly by another instance).
    pub fn replace_keys(&self, keys: KeySet) {
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Self::keys_of(keys);
    }

    pub fn issue(&self, subject: Subject<'_>, now: Timestamp) -> Result<IssuedAccess, AccessError> {
        let keys = self.keys();
        let key = keys.signer(now).ok_or(AccessError::NoKey)?;
        let iat = now.as_secs();
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX);
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: subject.user_id.to_string(),
            email: subject.email.map(str::to_owned),
            preferred_username: subject.username.map(str::to_owned),
            is_anonymous: subject.is_anonymous,
            sid: subject.session_id.to_string(),
            jti: crate::encode_id(&random::bytes::<16>()),
            iat,
            exp: iat.saturating_add(ttl),
            nbf: None,
        };
        let payload = serde_json::to_vec(&claims).map_err(|_| AccessError::Signing)?;
        let token = key.sign_jwt(&payload).map_err(|_| AccessError::Signing)?;
        Ok(IssuedAccess { token, expires_in: self.ttl })
    }

    /// The claims of a token this server minted that has not expired at `now`.
    pub fn verify(&self, token: &str, now: Timestamp) -> Result<Arc<AccessClaims>, AccessError> {
        let ring = self.keys.read().unwrap_or_else(|e| e.into_inner()).verifying.clone();
        self.validator.validate(token, &ring, now).map_err(|_| AccessError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;
    use crate::keys::KeyDir;

    fn tokens_in(dir: &std::path::Path, ttl: Duration) -> AccessTokens {
        let keys = KeyDir::new(dir);
        keys.init(Timestamp::from_millis(0)).unwrap();
        AccessTokens::new(keys.load_keys().unwrap(), "https://auth.test".into(), "tessera".into(), ttl)
    }

    fn subject() -> Subject<'static> {
        Subject {
            user_id: UserId::generate(),
            email: Some("ada@example.com"),
            username: None,
            is_anonymous: false,
            session_id: SessionId::generate(),
        }
    }

    fn segments(token: &str) -> Vec<serde_json::Value> {
        token.split('.').take(2).map(|s| serde_json::from_slice(&URL_SAFE_NO_PAD.decode(s).unwrap()).unwrap()).collect()
    }

    #[test]
    fn issued_tokens_carry_every_claim_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = tokens_in(dir.path(), Duration::from_secs(900));
        let now = Timestamp::now();
        let s = subject();
        let issued = tokens.issue(s, now).unwrap();
        let parts = segments(&issued.token);
        assert_eq!(parts[0]["alg"], "ES256");
        assert_eq!(parts[0]["kid"], tokens.keys().signer(now).unwrap().kid.as_str());
        let claims = tokens.verify(&issued.token, now).unwrap();
        assert_eq!(claims.sub, s.user_id.to_string());
        assert_eq!(claims.sid, s.session_id.to_string());
        assert_eq!(claims.email.as_deref(), Some("ada@example.com"));
        assert_eq!((claims.iss.as_str(), claims.aud.as_str()), ("https://auth.test", "tessera"));
        assert_eq!(claims.exp - claims.iat, 900);
        assert_eq!(claims.jti.len(), 22);
    }

    #[test]
    fn an_expired_token_is_rejected_even_from_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = tokens_in(dir.path(), Duration::from_secs(60));
        let now = Timestamp::now();
        let issued = tokens.issue(subject(), now).unwrap();
        assert!(tokens.verify(&issued.token, now).is_ok());
        let later = now.saturating_add(Duration::from_secs(61));
        assert_eq!(tokens.verify(&issued.token, later), Err(AccessError::Invalid));
    }

    #[test]
    fn tokens_of_another_key_issuer_or_audience_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let other_dir = tempfile::tempdir().unwrap();
        let tokens = tokens_in(dir.path(), Duration::from_secs(60));
        let now = Timestamp::now();

        let foreign = tokens_in(other_dir.path(), Duration::from_secs(60)).issue(subject(), now).unwrap();
        assert_eq!(tokens.verify(&foreign.token, now), Err(AccessError::Invalid), "unknown kid");

        let keys = KeyDir::new(dir.path()).load_keys().unwrap();
        let other_iss = AccessTokens::new(keys, "https://evil.test".into(), "tessera".into(), Duration::from_secs(60));
        let token = other_iss.issue(subject(), now).unwrap().token;
        assert_eq!(tokens.verify(&token, now), Err(AccessError::Invalid), "issuer");

        let keys = KeyDir::new(dir.path()).load_keys().unwrap();
        let other_aud = AccessTokens::new(keys, "https://auth.test".into(), "billing".into(), Duration::from_secs(60));
        let token = other_aud.issue(subject(), now).unwrap().token;
        assert_eq!(tokens.verify(&token, now), Err(AccessError::Invalid), "audience");
    }

    #[test]
    fn alg_none_and_hmac_confusion_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = tokens_in(dir.path(), Duration::from_secs(60));
        let now = Timestamp::now();
        let good = tokens.issue(subject(), now).unwrap().token;
        let payload = good.split('.').nth(1).unwrap();
        let kid = tokens.keys().signer(now).unwrap().kid.clone();
        for alg in ["none", "HS256", "ES384", "RS256"] {
            let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","typ":"JWT","kid":"{kid}"}}"#));
            for sig in ["", "AAAA", good.split('.').nth(2).unwrap()] {
                let forged = format!("{header}.{payload}.{sig}");
                assert_eq!(tokens.verify(&forged, now), Err(AccessError::Invalid), "{alg} {sig}");
            }
        }
    }

    #[test]
    fn a_tampered_payload_is_rejected_even_after_the_original_was_cached() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = tokens_in(dir.path(), Duration::from_secs(60));
        let now = Timestamp::now();
        let good = tokens.issue(subject(), now).unwrap().token;
        tokens.verify(&good, now).unwrap();
        let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
        let mut claims = segments(&good)[1].clone();
        claims["sub"] = serde_json::json!(UserId::generate().to_string());
        parts[1] = URL_SAFE_NO_PAD.encode(claims.to_string());
        assert_eq!(tokens.verify(&parts.join("."), now), Err(AccessError::Invalid));
    }

    #[test]
    fn tokens_are_signed_with_the_low_s_and_their_high_s_twin_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = tokens_in(dir.path(), Duration::from_secs(60));
        let now = Timestamp::now();
        for _ in 0..32 {
            let token = tokens.issue(subject(), now).unwrap().token;
            let (signed, signature) = token.rsplit_once('.').unwrap();
            let signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
            assert!(tessera_token::ecdsa::is_low_s(&signature), "every token is spelled once");
            assert!(tokens.verify(&token, now).is_ok());
            // n − s: the same signature, spelled the other way.
            let mut twin = signature.clone();
            tessera_token::ecdsa::mirror_s(&mut twin);
            let twin = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(twin));
            assert_eq!(tokens.verify(&twin, now), Err(AccessError::Invalid));
        }
    }

    #[test]
    fn garbage_is_rejected_without_panicking() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = tokens_in(dir.path(), Duration::from_secs(60));
        let now = Timestamp::now();
        for text in ["", ".", "..", "a.b.c", "eyJ.eyJ.sig", &"A".repeat(10_000), "é.é.é"] {
            assert_eq!(tokens.verify(text, now), Err(AccessError::Invalid), "{text}");
        }
    }
}
