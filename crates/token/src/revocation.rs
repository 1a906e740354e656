//! Ended sessions: the in-memory set every access-token check consults, and the wire format of
//! the revocation feed that fills it.
//!
//! Access tokens are stateless, so ending a session cannot recall the ones already handed out;
//! instead every request checks the token's `sid` against a [`RevokedSessions`] set, a hash
//! lookup rather than a round trip. tessera fills its own set directly and from its store;
//! resource servers fill theirs from the feed. An entry can be dropped once every access token of
//! its session has expired: `retention` after it ended.
//!
//! ## The feed
//!
//! `GET {issuer}/api/auth/revocations` answers `text/event-stream` (server-sent events):
//!
//! ```text
//! retry: 1000
//!
//! id: 17-0
//! event: ended
//! data: {"sid":"6f1c…","ended_at":1763894400123}
//!
//! id: 17-0
//! event: synced
//! data: {"retention_secs":960}
//!
//! event: heartbeat
//! data: {}
//! ```
//!
//! It opens with every session that ended within the retention window (or, given a cursor in
//! `Last-Event-ID` or `?after=`, with those after it), says `synced`, then streams each end as it
//! commits on any instance, and a `heartbeat` every few seconds while tessera's own view of its
//! store is current. Event ids are positions in the store's feed ([`FeedPosition`]), assigned in
//! commit order by the store, never by a clock, so a subscriber that reconnects to any instance
//! with its last id misses nothing and skew between instances' clocks cannot hide an end.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::RwLock;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::ids::SessionId;

/// Where the feed's path lies below the issuer.
pub const FEED_PATH: &str = "/api/auth/revocations";
/// How often the feed says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// A position in the store's feed of ended sessions: `major-minor`, ordered as a pair.
/// SQL stores count (`42-0`); Redis uses its stream ids (`1763894400123-0`). Opaque to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct FeedPosition {
    pub major: u64,
    pub minor: u64,
}

impl FeedPosition {
    pub const fn new(major: u64, minor: u64) -> Self {
        Self { major, minor }
    }
}

impl fmt::Display for FeedPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.major, self.minor)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a feed position (expected `N-M`)")]
pub struct BadPosition;

impl FromStr for FeedPosition {
    type Err = BadPosition;

    fn from_str(s: &str) -> Result<Self, BadPosition> {
        let (major, minor) = s.split_once('-').unwrap_or((s, "0"));
        let digits = |t: &str| if t.bytes().all(|b| b.is_ascii_digit()) { t.parse().ok() } else { None };
        Ok(Self { major: digits(major).ok_or(BadPosition)?, minor: digits(minor).ok_or(BadPosition)? })
    }
}

/// One entry of the feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndedSession {
    pub position: FeedPosition,
    pub session_id: SessionId,
    pub ended_at: Timestamp,
}

/// The `data` of an `ended` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndedEvent {
    pub sid: String,
    /// Milliseconds since the Unix epoch.
    pub ended_at: i64,
}

/// The `data` of a `synced` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncedEvent {
    /// How long an ended session matters: the longest access-token lifetime (plus a margin).
    pub retention_secs: u64,
}

/// The set of ended sessions whose access tokens may still be alive.
#[derive(Debug)]
pub struct RevokedSessions {
    ended: RwLock<HashMap<SessionId, Timestamp>>,
    retention: RwLock<Duration>,
}

impl RevokedSessions {
    pub fn new(retention: Duration) -> Self {
        Self { ended: RwLock::default(), retention: RwLock::new(retention) }
    }

    pub fn retention(&self) -> Duration {
        *self.retention.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_retention(&self, retention: Duration) {
        *self.retention.write().unwrap_or_else(|e| e.into_inner()) = retention;
    }

    pub fn contains(&self, id: SessionId) -> bool {
        self.ended.read().unwrap_or_else(|e| e.into_inner()).contains_key(&id)
    }

    pub fn insert(&self, id: SessionId, ended_at: Timestamp) {
        self.extend([(id, ended_at)]);
    }

    pub fn extend(&self, ended: impl IntoIterator<Item = (SessionId, Timestamp)>) {
        let mut map = self.ended.write().unwrap_or_else(|e| e.into_inner());
        // A session listed twice (a retried end) is remembered from its latest end: tokens
        // minted between the two could live that much longer.
        for (id, at) in ended {
            map.entry(id).and_modify(|kept| *kept = (*kept).max(at)).or_insert(at);
        }
    }

    /// Forgets sessions whose access tokens have all expired by `now`.
    pub fn prune(&self, now: Timestamp) {
        let horizon = now.saturating_sub(self.retention());
        self.ended.write().unwrap_or_else(|e| e.into_inner()).retain(|_, at| *at >= horizon);
    }

    pub fn len(&self) -> usize {
        self.ended.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ended_sessions_are_remembered_until_their_tokens_expired() {
        let revoked = RevokedSessions::new(Duration::from_secs(60));
        let (a, b) = (SessionId::generate(), SessionId::generate());
        revoked.insert(a, Timestamp::from_millis(0));
        revoked.insert(b, Timestamp::from_millis(30_000));
        assert!(revoked.contains(a) && revoked.contains(b));
        revoked.prune(Timestamp::from_millis(60_000));
        assert!(revoked.contains(a), "a token minted just before the end lives until +60s");
        revoked.prune(Timestamp::from_millis(60_001));
        assert!(!revoked.contains(a));
        assert!(revoked.contains(b));
    }

    #[test]
    fn a_session_listed_twice_is_remembered_from_its_latest_end() {
        let revoked = RevokedSessions::new(Duration::from_secs(60));
        let id = SessionId::generate();
        revoked.insert(id, Timestamp::from_millis(30_000));
        revoked.insert(id, Timestamp::from_millis(0));
        revoked.prune(Timestamp::from_millis(90_000));
        assert!(revoked.contains(id));
        revoked.prune(Timestamp::from_millis(90_001));
        assert!(!revoked.contains(id));
    }

    #[test]
    fn positions_order_as_pairs_and_round_trip_as_text() {
        let p: FeedPosition = "1763894400123-7".parse().unwrap();
        assert_eq!(p, FeedPosition::new(1_763_894_400_123, 7));
        assert_eq!(p.to_string(), "1763894400123-7");
        assert_eq!("42".parse::<FeedPosition>(), Ok(FeedPosition::new(42, 0)));
        assert!(FeedPosition::new(9, 5) < FeedPosition::new(10, 0));
        for bad in ["", "-", "a-1", "1-", "+1-0", "1-2-3", "99999999999999999999-0"] {
            assert_eq!(bad.parse::<FeedPosition>(), Err(BadPosition), "{bad}");
        }
    }
}
