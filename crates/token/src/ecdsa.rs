//! One spelling per signature: ECDSA signatures `(r, s)` and `(r, n − s)` both verify, so a token
//! could be re-spelled without the key. tessera signs only with the low `s` (`s ≤ n/2`, as
//! Bitcoin's BIP 62 and many JOSE libraries do) and verifiers accept only that, so a token has
//! exactly one valid spelling and anything keyed on its text (caches, logs, deny-lists) is safe.

/// The order `n` of P-256, big-endian.
const N: [u8; 32] = [
    0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xBC, 0xE6, 0xFA,
    0xAD, 0xA7, 0x17, 0x9E, 0x84, 0xF3, 0xB9, 0xCA, 0xC2, 0xFC, 0x63, 0x25, 0x51,
];
/// `n / 2`, rounded down.
const HALF_N: [u8; 32] = [
    0x7F, 0xFF, 0xFF, 0xFF, 0x80, 0x00, 0x00, 0x00, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xDE, 0x73, 0x7D,
    0x56, 0xD3, 0x8B, 0xCF, 0x42, 0x79, 0xDC, 0xE5, 0x61, 0x7E, 0x31, 0x92, 0xA8,
];

/// Whether a JWS ES256 signature (`r ‖ s`, 64 bytes) has the low `s`.
pub fn is_low_s(signature: &[u8]) -> bool {
    signature.len() == 64 && signature[32..] <= HALF_N[..]
}

/// Rewrites a JWS ES256 signature to its low-`s` form (`s` becomes `n − s` when above `n/2`).
pub fn normalize_s(signature: &mut [u8]) {
    if signature.len() == 64 && !is_low_s(signature) {
        mirror_s(signature);
    }
}

/// The other spelling of the same signature: `r ‖ (n − s)`.
pub fn mirror_s(signature: &mut [u8]) {
    if signature.len() != 64 {
        return;
    }
    let s = &mut signature[32..];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut d = i16::from(N[i]) - i16::from(s[i]) - borrow;
        borrow = i16::from(d < 0);
        if d < 0 {
            d += 256;
        }
        s[i] = u8::try_from(d).unwrap_or(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_high_s_is_mirrored_below_half_n() {
        let mut sig = [0u8; 64];
        sig[32..].copy_from_slice(&N);
        sig[63] -= 1; // s = n − 1
        assert!(!is_low_s(&sig));
        normalize_s(&mut sig);
        let mut one = [0u8; 32];
        one[31] = 1;
        assert_eq!(sig[32..], one, "n − (n − 1) = 1");
        assert!(is_low_s(&sig));
        let mut half = [0u8; 64];
        half[32..].copy_from_slice(&HALF_N);
        assert!(is_low_s(&half), "n/2 itself is low");
        half[63] += 1;
        assert!(!is_low_s(&half));
    }
}
