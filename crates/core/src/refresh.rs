//! Refresh tokens: opaque, URL-safe, derived from `(session id, generation)` under a server key.
//!
//! A refresh token is `base64url(version ‖ session id ‖ generation ‖ HMAC-SHA256(key, …))`:
//! 57 bytes, 76 characters, of which the 256-bit MAC is what nobody can guess without the key.
//! The store keeps only each session's current generation, so a copy of the database holds
//! nothing that works as a token, and a rotated token's successor can be *recomputed* (the
//! grace window of README, "Tokens and sessions" returns it byte for byte) instead of stored. The key lives beside the
//! signing keys, never in the database, so both must leak before anyone can mint a token.
//!
//! Reuse is decided by generation, not by clock: a token whose generation is behind its
//! session's has been rotated, however short ago.

use std::fmt;

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::ids::SessionId;

const VERSION: u8 = 1;
const BODY_LEN: usize = 1 + 16 + 8;
const TOKEN_LEN: usize = BODY_LEN + 32;
/// Length of the token's text form.
pub const ENCODED_LEN: usize = TOKEN_LEN.div_ceil(3) * 4 - (3 - TOKEN_LEN % 3) % 3;

/// A refresh token's text. `Debug` shows only the session it belongs to, never the token.
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshToken(String);

impl RefreshToken {
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefreshToken(…)")
    }
}

/// What a well-formed, authentic refresh token says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshClaims {
    pub session_id: SessionId,
    pub generation: u64,
}

/// Mints and checks refresh tokens under one server-held key.
#[derive(Clone)]
pub struct RefreshTokenCodec {
    key: hmac::Key,
}

impl fmt::Debug for RefreshTokenCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefreshTokenCodec(…)")
    }
}

impl RefreshTokenCodec {
    /// `secret` must be at least 32 bytes of key material.
    pub fn new(secret: &[u8]) -> Self {
        debug_assert!(secret.len() >= 32);
        Self { key: hmac::Key::new(hmac::HMAC_SHA256, secret) }
    }

    pub fn encode(&self, claims: RefreshClaims) -> RefreshToken {
        let body = body(claims);
        let tag = hmac::sign(&self.key, &body);
        let mut raw = [0u8; TOKEN_LEN];
        raw[..BODY_LEN].copy_from_slice(&body);
        raw[BODY_LEN..].copy_from_slice(tag.as_ref());
        RefreshToken(URL_SAFE_NO_PAD.encode(raw))
    }

    /// The claims of an authentic token; `None` for anything malformed or not minted under this
    /// key. The MAC is compared in constant time.
    pub fn decode(&self, text: &str) -> Option<RefreshClaims> {
        if text.len() != ENCODED_LEN {
            return None;
        }
        let mut raw = [0u8; TOKEN_LEN];
        let n = URL_SAFE_NO_PAD.decode_slice(text, &mut raw).ok()?;
        if n != TOKEN_LEN || raw[0] != VERSION {
            return None;
        }
        let (body, tag) = raw.split_at(BODY_LEN);
        hmac::verify(&self.key, body, tag).ok()?;
        let mut sid = [0u8; 16];
        sid.copy_from_slice(&body[1..17]);
        let mut generation = [0u8; 8];
        generation.copy_from_slice(&body[17..25]);
        // Stores count generations in signed 64-bit integers; nothing this server minted is beyond.
        let generation = u64::from_be_bytes(generation);
        if generation > i64::MAX as u64 {
            return None;
        }
        Some(RefreshClaims { session_id: SessionId::from_bytes(sid), generation })
    }
}

fn body(claims: RefreshClaims) -> [u8; BODY_LEN] {
    let mut body = [0u8; BODY_LEN];
    body[0] = VERSION;
    body[1..17].copy_from_slice(claims.session_id.as_bytes());
    body[17..25].copy_from_slice(&claims.generation.to_be_bytes());
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec() -> RefreshTokenCodec {
        RefreshTokenCodec::new(&[7u8; 32])
    }

    fn claims(generation: u64) -> RefreshClaims {
        RefreshClaims { session_id: SessionId::generate(), generation }
    }

    #[test]
    fn a_minted_token_decodes_to_its_claims() {
        let c = claims(42);
        let token = codec().encode(c);
        assert_eq!(token.expose().len(), ENCODED_LEN);
        assert_eq!(codec().decode(token.expose()), Some(c));
    }

    #[test]
    fn tokens_are_url_safe_and_not_jwts() {
        let token = codec().encode(claims(0));
        let text = token.expose();
        assert!(text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{text}");
        assert!(!text.contains('.'));
    }

    #[test]
    fn the_same_claims_always_give_the_same_token() {
        let c = claims(3);
        assert_eq!(codec().encode(c), codec().encode(c));
    }

    #[test]
    fn a_token_under_another_key_is_rejected() {
        let token = RefreshTokenCodec::new(&[8u8; 32]).encode(claims(1));
        assert_eq!(codec().decode(token.expose()), None);
    }

    #[test]
    fn any_flipped_character_is_rejected() {
        let token = codec().encode(claims(9)).into_string();
        for i in 0..token.len() {
            let mut bytes = token.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let forged = String::from_utf8(bytes).unwrap();
            assert_eq!(codec().decode(&forged), None, "position {i}");
        }
    }

    #[test]
    fn malformed_text_is_rejected_without_panicking() {
        for text in ["", "x", "not a token", &"A".repeat(ENCODED_LEN), &"é".repeat(ENCODED_LEN / 2), &"A".repeat(4096)]
        {
            assert_eq!(codec().decode(text), None);
        }
    }

    #[test]
    fn debug_output_hides_the_token() {
        let token = codec().encode(claims(1));
        assert!(!format!("{token:?}").contains(token.expose()));
    }
}
