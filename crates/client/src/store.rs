//! Where a client keeps its token pair: in memory (programs) or in a file (the CLI).
//!
//! The file store writes `tokens.json` with mode 0600 atomically (a temporary file in the same
//! directory, fsync, rename), and serialises refreshes across processes with an advisory lock on
//! a sibling `tokens.json.lock` (not on `tokens.json` itself, which each save replaces).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A signed-in session as a client keeps it (and as `tokens.json` holds it).
///
/// An account has an email, a username, or both; a guest has neither. `email` is always present
/// in the file (tools read it), and is the empty string for an account without one: it never
/// holds a username. `username` and `is_anonymous` came later and default to `None` and `false`,
/// so files written before them still load.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenSet {
    /// The server that issued the tokens.
    pub server: String,
    /// The account's email; empty when it has none (a username-only account or a guest).
    pub email: String,
    /// The account's username, when it has one.
    #[serde(default)]
    pub username: Option<String>,
    /// A guest session (anonymous sign-in), until it is upgraded.
    #[serde(default)]
    pub is_anonymous: bool,
    pub access_token: String,
    pub refresh_token: String,
    /// When the access token expires, in seconds since the Unix epoch.
    pub expires_at: u64,
    /// The access token's lifetime in seconds, as the server gave it.
    pub expires_in: u64,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSet")
            .field("server", &self.server)
            .field("email", &self.email)
            .field("username", &self.username)
            .field("is_anonymous", &self.is_anonymous)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl TokenSet {
    /// Who this is, for people: the email, else the username, else `guest`.
    pub fn display_name(&self) -> &str {
        match (&self.email, &self.username) {
            (email, _) if !email.is_empty() => email,
            (_, Some(username)) if !username.is_empty() => username,
            _ => "guest",
        }
    }

    /// When to refresh: 5 minutes before expiry, or at 80 % of the lifetime when that comes
    /// later (short lifetimes), so a 15-minute token is refreshed after 12 minutes.
    pub fn refresh_at(&self) -> u64 {
        let margin = (self.expires_in / 5).min(300);
        self.expires_at.saturating_sub(margin)
    }

    pub fn needs_refresh(&self, now: u64) -> bool {
        now >= self.refresh_at()
    }

    /// Time left on the access token at `now`.
    pub fn time_left(&self, now: u64) -> Duration {
        Duration::from_secs(self.expires_at.saturating_sub(now))
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot use the token file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the token file {path} is damaged ({reason}); run 'tessera logout' or delete it, then log in again")]
    Corrupt { path: PathBuf, reason: String },
}

/// Holds the cross-process refresh lock until dropped.
pub struct StoreLock(#[allow(dead_code)] Option<File>);

/// Storage for one token pair.
pub trait TokenStore: Send + Sync + 'static {
    fn load(&self) -> Result<Option<TokenSet>, StoreError>;
    fn save(&self, tokens: &TokenSet) -> Result<(), StoreError>;
    fn clear(&self) -> Result<(), StoreError>;
    /// Blocks until this caller holds the store's refresh lock (a no-op where only one process
    /// can see the store). The client re-reads the tokens after taking it.
    fn lock(&self) -> Result<StoreLock, StoreError>;
}

/// Tokens in memory, for programs that log in themselves.
#[derive(Debug, Default)]
pub struct MemoryStore(Mutex<Option<TokenSet>>);

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(tokens: TokenSet) -> Self {
        Self(Mutex::new(Some(tokens)))
    }
}

impl TokenStore for MemoryStore {
    fn load(&self) -> Result<Option<TokenSet>, StoreError> {
        Ok(self.0.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }

    fn save(&self, tokens: &TokenSet) -> Result<(), StoreError> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(tokens.clone());
        Ok(())
    }

    fn clear(&self) -> Result<(), StoreError> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
        Ok(())
    }

    fn lock(&self) -> Result<StoreLock, StoreError> {
        Ok(StoreLock(None))
    }
}

/// `tokens.json` on disk, shared by every process of the user.
#[derive(Debug, Clone)]
pub struct FileStore {
    path: PathBuf,
}

impl FileStore {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// `$XDG_CONFIG_HOME/tessera/tokens.json`, else `~/.config/tessera/tokens.json`.
    pub fn default_path() -> Option<PathBuf> {
        let config = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".config")))?;
        Some(config.join("tessera").join("tokens.json"))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, source: std::io::Error) -> StoreError {
        StoreError::Io { path: self.path.clone(), source }
    }

    fn dir(&self) -> Result<&Path, StoreError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| self.io(e))?;
        Ok(dir)
    }
}

impl TokenStore for FileStore {
    fn load(&self) -> Result<Option<TokenSet>, StoreError> {
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io(e)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Corrupt { path: self.path.clone(), reason: e.to_string() })
    }

    fn save(&self, tokens: &TokenSet) -> Result<(), StoreError> {
        let dir = self.dir()?;
        let tmp = dir.join(format!(".tokens.json.{}.tmp", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut file = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
            serde_json::to_writer_pretty(&mut file, tokens)?;
            file.write_all(b"\n")?;
            file.sync_all()?;
            fs::rename(&tmp, &self.path)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            self.io(e)
        })
    }

    fn clear(&self) -> Result<(), StoreError> {
        match fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io(e)),
        }
    }

    fn lock(&self) -> Result<StoreLock, StoreError> {
        let dir = self.dir()?;
        let name =
            self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "tokens.json".into());
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(dir.join(format!("{name}.lock")))
            .map_err(|e| self.io(e))?;
        file.lock().map_err(|e| self.io(e))?;
        Ok(StoreLock(Some(file)))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn tokens() -> TokenSet {
        TokenSet {
            server: "http://127.0.0.1:8080".into(),
            email: "ada@example.com".into(),
            username: None,
            is_anonymous: false,
            access_token: "a".into(),
            refresh_token: "r".into(),
            expires_at: 1_000_900,
            expires_in: 900,
        }
    }

    #[test]
    fn refresh_comes_at_80_percent_or_5_minutes_before_expiry() {
        let fifteen_minutes = tokens();
        assert_eq!(fifteen_minutes.refresh_at(), 1_000_900 - 180);
        let hour = TokenSet { expires_at: 1_003_600, expires_in: 3600, ..tokens() };
        assert_eq!(hour.refresh_at(), 1_003_600 - 300);
        let three_seconds = TokenSet { expires_at: 1_000_003, expires_in: 3, ..tokens() };
        assert_eq!(three_seconds.refresh_at(), 1_000_003);
        assert!(!hour.needs_refresh(1_003_299) && hour.needs_refresh(1_003_300));
    }

    #[test]
    fn the_file_is_private_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path().join("tessera").join("tokens.json"));
        assert_eq!(store.load().unwrap(), None);
        store.save(&tokens()).unwrap();
        assert_eq!(store.load().unwrap(), Some(tokens()));
        assert_eq!(fs::metadata(store.path()).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(dir.path().join("tessera")).unwrap().permissions().mode() & 0o777, 0o700);
        store.clear().unwrap();
        store.clear().unwrap();
        assert_eq!(store.load().unwrap(), None);
    }

    #[test]
    fn files_written_before_usernames_and_guests_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path().join("tokens.json"));
        let old = r#"{"server": "http://127.0.0.1:8080", "email": "ada@example.com", "access_token": "a",
            "refresh_token": "r", "expires_at": 1000900, "expires_in": 900}"#;
        fs::write(store.path(), old).unwrap();
        assert_eq!(store.load().unwrap(), Some(tokens()));
    }

    #[test]
    fn the_display_name_is_the_email_else_the_username_else_guest() {
        assert_eq!(tokens().display_name(), "ada@example.com");
        let named = TokenSet { email: String::new(), username: Some("ada".into()), ..tokens() };
        assert_eq!(named.display_name(), "ada");
        let both = TokenSet { username: Some("ada".into()), ..tokens() };
        assert_eq!(both.display_name(), "ada@example.com");
        let guest = TokenSet { email: String::new(), is_anonymous: true, ..tokens() };
        assert_eq!(guest.display_name(), "guest");
        let json = serde_json::to_value(&named).unwrap();
        assert_eq!((json["email"].as_str(), json["username"].as_str()), (Some(""), Some("ada")), "{json}");
    }

    #[test]
    fn a_damaged_file_is_reported_not_panicked_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path().join("tokens.json"));
        for junk in ["", "{", "{\"server\": 1}", "null"] {
            fs::write(store.path(), junk).unwrap();
            let err = store.load().unwrap_err();
            assert!(err.to_string().contains("damaged"), "{err}");
        }
    }

    #[test]
    fn the_lock_is_exclusive_across_handles() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path().join("tokens.json"));
        let held = store.lock().unwrap();
        let other = File::open(dir.path().join("tokens.json.lock")).unwrap();
        assert!(other.try_lock().is_err(), "a second holder must wait");
        drop(held);
        assert!(other.try_lock().is_ok());
    }
}
