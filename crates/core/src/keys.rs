//! Signing keys: ES256 (P-256) key pairs kept as files in a key directory, and the refresh-token
//! MAC key beside them.
//!
//! Layout of the key directory (mode 0700; every file mode 0600, written atomically):
//!
//! ```text
//! keys/refresh.key          32 random bytes: the HMAC key of refresh tokens
//! keys/es256-<kid>.json     {"kid", "created_at", "not_before", "pkcs8"}: one signing key each
//! ```
//!
//! A key's `kid` is its RFC 7638 JWK thumbprint. The signer is the newest key whose `not_before`
//! has passed. `tessera keys rotate` writes a key whose `not_before` lies in the future, so it is
//! published in the JWKS (whose responses may be cached for [`JWKS_MAX_AGE`]) before it signs
//! anything; the key it supersedes stays published until every token it signed has expired.
//! Several server instances pointed at one key directory therefore agree on the key set: each
//! reloads the directory periodically.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use aws_lc_rs::digest;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
pub use tessera_token::jwk::{Jwk, Jwks, KeyRing};

use crate::clock::Timestamp;
use crate::random;

/// How long verifiers may cache the JWKS; also how early a rotated-in key is published.
pub const JWKS_MAX_AGE: Duration = Duration::from_secs(300);

const REFRESH_KEY_FILE: &str = "refresh.key";
const SIGNING_KEY_PREFIX: &str = "es256-";

/// One ES256 key pair.
pub struct SigningKey {
    pub kid: String,
    pub created_at: Timestamp,
    /// From when this key signs new tokens.
    pub not_before: Timestamp,
    /// Parsed once: parsing a PKCS#8 key checks it with a scalar multiplication, which doubled
    /// the cost of every token when it was done per signature.
    pair: EcdsaKeyPair,
    /// The token header for this key, base64url-encoded.
    header: String,
    x: String,
    y: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("not_before", &self.not_before)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct KeyFile {
    kid: String,
    created_at: i64,
    not_before: i64,
    pkcs8: String,
}

impl SigningKey {
    fn generate(now: Timestamp, not_before: Timestamp) -> anyhow::Result<(Self, KeyFile)> {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .map_err(|_| anyhow::anyhow!("could not generate a P-256 key"))?;
        let mut file = KeyFile {
            kid: String::new(),
            created_at: now.as_millis(),
            not_before: not_before.as_millis(),
            pkcs8: STANDARD.encode(pkcs8.as_ref()),
        };
        let key = Self::from_file(&file)?;
        file.kid.clone_from(&key.kid);
        Ok((key, file))
    }

    fn from_file(file: &KeyFile) -> anyhow::Result<Self> {
        let der = STANDARD.decode(&file.pkcs8).context("key material is not base64")?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
            .map_err(|_| anyhow::anyhow!("key material is not a P-256 PKCS#8 key"))?;
        // Uncompressed point: 0x04 ‖ X ‖ Y.
        let point = pair.public_key().as_ref();
        if point.len() != 65 || point[0] != 4 {
            bail!("unexpected public key encoding");
        }
        let x = URL_SAFE_NO_PAD.encode(&point[1..33]);
        let y = URL_SAFE_NO_PAD.encode(&point[33..]);
        let kid = thumbprint(&x, &y);
        if !file.kid.is_empty() && file.kid != kid {
            bail!("kid {} does not match the key's thumbprint {kid}", file.kid);
        }
        let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"ES256","typ":"JWT","kid":"{kid}"}}"#));
        Ok(Self {
            kid,
            created_at: Timestamp::from_millis(file.created_at),
            not_before: Timestamp::from_millis(file.not_before),
            pair,
            header,
            x,
            y,
        })
    }

    /// A compact JWS of `payload` (its JSON) signed with ES256: `header.payload.signature`, the
    /// signature `r ‖ s` with the low `s`, the one spelling verifiers accept
    /// ([`tessera_token::ecdsa`]).
    pub(crate) fn sign_jwt(&self, payload: &[u8]) -> anyhow::Result<String> {
        let mut token = String::with_capacity(self.header.len() + payload.len() * 4 / 3 + 92);
        token.push_str(&self.header);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(payload, &mut token);
        let signature =
            self.pair.sign(&SystemRandom::new(), token.as_bytes()).map_err(|_| anyhow::anyhow!("signing failed"))?;
        let mut signature = signature.as_ref().to_vec();
        tessera_token::ecdsa::normalize_s(&mut signature);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&signature, &mut token);
        Ok(token)
    }
}

impl SigningKey {
    fn jwk(&self) -> Jwk {
        Jwk {
            kty: "EC".into(),
            crv: "P-256".into(),
            x: self.x.clone(),
            y: self.y.clone(),
            kid: self.kid.clone(),
            use_: "sig".into(),
            alg: "ES256".into(),
        }
    }
}

/// RFC 7638 thumbprint of a P-256 public key: base64url(SHA-256 of the canonical JWK).
fn thumbprint(x: &str, y: &str) -> String {
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, canonical.as_bytes()))
}

/// The keys a server knows, oldest first.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: Vec<Arc<SigningKey>>,
}

impl KeySet {
    fn new(mut keys: Vec<Arc<SigningKey>>) -> Self {
        keys.sort_by_key(|k| (k.not_before, k.created_at));
        Self { keys }
    }

    /// The key that signs at `now`: the newest one already in force. Before any key is in
    /// force (only possible right after a rotation with a clock gone backwards) the oldest key
    /// signs rather than nothing.
    pub fn signer(&self, now: Timestamp) -> Option<&Arc<SigningKey>> {
        self.keys.iter().rev().find(|k| k.not_before <= now).or_else(|| self.keys.first())
    }

    pub fn by_kid(&self, kid: &str) -> Option<&Arc<SigningKey>> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    pub fn kids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.kid.as_str()).collect()
    }

    /// Whether `key` may still have signed a token that is alive at `now`, or will sign one:
    /// everything but keys superseded more than `retention` ago.
    fn is_published(&self, key: &SigningKey, now: Timestamp, retention: Duration) -> bool {
        let superseded_at = self
            .keys
            .iter()
            .filter(|k| k.not_before > key.not_before && k.not_before <= now)
            .map(|k| k.not_before)
            .min();
        match superseded_at {
            None => true,
            Some(at) => at.saturating_add(retention) > now,
        }
    }

    /// The JWK set to publish at `now`, given the longest lifetime of an access token.
    pub fn jwks(&self, now: Timestamp, retention: Duration) -> Jwks {
        Jwks { keys: self.keys.iter().filter(|k| self.is_published(k, now, retention)).map(|k| k.jwk()).collect() }
    }

    /// The verification keys of every key loaded, published or not.
    pub fn key_ring(&self) -> KeyRing {
        KeyRing::from_jwks(&Jwks { keys: self.keys.iter().map(|k| k.jwk()).collect() })
    }
}

/// The key directory on disk.
#[derive(Debug, Clone)]
pub struct KeyDir {
    path: PathBuf,
}

impl KeyDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the directory, a first signing key and the refresh MAC key when missing.
    pub fn init(&self, now: Timestamp) -> anyhow::Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.path)
            .with_context(|| format!("cannot create key directory {}", self.path.display()))?;
        let refresh = self.path.join(REFRESH_KEY_FILE);
        if !refresh.exists() {
            write_private(&refresh, &random::bytes::<32>())?;
        }
        if self.signing_key_files()?.is_empty() {
            self.add_key(now, now)?;
        }
        Ok(())
    }

    /// Adds a new signing key that starts signing at `not_before`.
    pub fn add_key(&self, now: Timestamp, not_before: Timestamp) -> anyhow::Result<String> {
        let (key, file) = SigningKey::generate(now, not_before)?;
        let path = self.path.join(format!("{SIGNING_KEY_PREFIX}{}.json", key.kid));
        write_private(&path, &serde_json::to_vec_pretty(&file)?)?;
        Ok(key.kid)
    }

    /// Deletes the files of keys no longer published at `now`.
    pub fn prune(&self, now: Timestamp, retention: Duration) -> anyhow::Result<Vec<String>> {
        let set = self.load_keys()?;
        let mut removed = Vec::new();
        for key in &set.keys {
            if !set.is_published(key, now, retention) {
                fs::remove_file(self.path.join(format!("{SIGNING_KEY_PREFIX}{}.json", key.kid)))?;
                removed.push(key.kid.clone());
            }
        }
        Ok(removed)
    }

    pub fn refresh_secret(&self) -> anyhow::Result<Vec<u8>> {
        let path = self.path.join(REFRESH_KEY_FILE);
        let secret = read_private(&path)?;
        if secret.len() < 32 {
            bail!("{} is shorter than 32 bytes", path.display());
        }
        Ok(secret)
    }

    /// The names of the signing key files, sorted: cheap to compare for a reload.
    pub fn signing_key_files(&self) -> anyhow::Result<Vec<String>> {
        let mut names = Vec::new();
        let entries =
            fs::read_dir(&self.path).with_context(|| format!("cannot read key directory {}", self.path.display()))?;
        for entry in entries {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if name.starts_with(SIGNING_KEY_PREFIX) && name.ends_with(".json") {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    pub fn load_keys(&self) -> anyhow::Result<KeySet> {
        let mut keys = Vec::new();
        for name in self.signing_key_files()? {
            let path = self.path.join(&name);
            let file: KeyFile = serde_json::from_slice(&read_private(&path)?)
                .with_context(|| format!("{} is not a key file", path.display()))?;
            keys.push(Arc::new(
                SigningKey::from_file(&file).with_context(|| format!("{} holds no usable key", path.display()))?,
            ));
        }
        if keys.is_empty() {
            bail!("no signing key in {}", self.path.display());
        }
        Ok(KeySet::new(keys))
    }
}

/// Writes a secret file with mode 0600 atomically: a temporary file, fsync, then rename.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn read_private(path: &Path) -> anyhow::Result<Vec<u8>> {
    let meta = fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(path = %path.display(), "secret key file is readable by group or others; chmod 600 it");
    }
    fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_millis(secs * 1000)
    }

    #[test]
    fn init_creates_private_files_and_reload_gives_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyDir::new(dir.path().join("keys"));
        keys.init(at(0)).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(keys.path()), 0o700);
        for name in keys.signing_key_files().unwrap().iter().chain([&REFRESH_KEY_FILE.to_string()]) {
            assert_eq!(mode(&keys.path().join(name)), 0o600, "{name}");
        }
        let first = keys.load_keys().unwrap().signer(at(1)).unwrap().kid.clone();
        keys.init(at(5)).unwrap();
        assert_eq!(keys.load_keys().unwrap().kids(), vec![first.as_str()]);
        assert_eq!(keys.refresh_secret().unwrap().len(), 32);
    }

    #[test]
    fn a_rotated_in_key_is_published_before_it_signs_and_the_old_one_after() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyDir::new(dir.path());
        keys.init(at(0)).unwrap();
        let old = keys.load_keys().unwrap().kids()[0].to_owned();
        let new = keys.add_key(at(100), at(400)).unwrap();
        let set = keys.load_keys().unwrap();
        let published = |now| set.jwks(at(now), 15 * MIN).keys.into_iter().map(|k| k.kid).collect::<Vec<_>>();

        assert_eq!(set.signer(at(200)).unwrap().kid, old, "the new key waits for caches to expire");
        assert_eq!(published(200), vec![old.clone(), new.clone()]);
        assert_eq!(set.signer(at(400)).unwrap().kid, new);
        assert_eq!(published(400 + 15 * 60 - 1), vec![old.clone(), new.clone()], "old tokens still verify");
        assert_eq!(published(400 + 15 * 60), vec![new.clone()]);

        assert!(keys.prune(at(300), 15 * MIN).unwrap().is_empty());
        assert_eq!(keys.prune(at(400 + 15 * 60), 15 * MIN).unwrap(), vec![old]);
        assert_eq!(keys.load_keys().unwrap().kids(), vec![new.as_str()]);
    }
}
