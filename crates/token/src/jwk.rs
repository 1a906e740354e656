//! JWK sets (RFC 7517) and the keys a verifier builds from them.

use std::collections::HashMap;

use jsonwebtoken::DecodingKey;
use serde::{Deserialize, Serialize};

/// One entry of a JWK set. tessera publishes P-256 keys for ES256 only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    #[serde(default)]
    pub crv: String,
    #[serde(default)]
    pub x: String,
    #[serde(default)]
    pub y: String,
    #[serde(default)]
    pub kid: String,
    #[serde(rename = "use", default)]
    pub use_: String,
    #[serde(default)]
    pub alg: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// The verification keys of one issuer, by `kid`.
#[derive(Default)]
pub struct KeyRing {
    keys: HashMap<String, DecodingKey>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing").field("kids", &self.kids()).finish()
    }
}

impl KeyRing {
    /// The usable keys of a JWK set: EC P-256 keys for ES256 signatures that have a `kid`.
    /// Anything else (RSA, HMAC secrets, other curves, encryption keys) is ignored, so a key set
    /// cannot widen the algorithms a verifier accepts.
    pub fn from_jwks(set: &Jwks) -> Self {
        let keys = set
            .keys
            .iter()
            .filter(|k| k.kty == "EC" && k.crv == "P-256" && !k.kid.is_empty())
            .filter(|k| k.alg.is_empty() || k.alg == "ES256")
            .filter(|k| k.use_.is_empty() || k.use_ == "sig")
            .filter_map(|k| Some((k.kid.clone(), DecodingKey::from_ec_components(&k.x, &k.y).ok()?)))
            .collect();
        Self { keys }
    }

    pub fn get(&self, kid: &str) -> Option<&DecodingKey> {
        self.keys.get(kid)
    }

    pub fn contains(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }

    pub fn kids(&self) -> Vec<&str> {
        let mut kids: Vec<&str> = self.keys.keys().map(String::as_str).collect();
        kids.sort_unstable();
        kids
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}
