//! The in-memory view of ended sessions that every access-token check consults.
//!
//! Access tokens are stateless, so ending a session cannot recall the ones already handed out;
//! instead every request checks the token's `sid` against this set, a hash lookup rather than a
//! store round trip. The set is fed directly when this instance ends a session, and by a periodic
//! catch-up from the store's `ended_since` feed for sessions ended elsewhere. An entry can be
//! dropped once every access token of its session has expired: `retention` after it ended.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use crate::clock::Timestamp;
use crate::ids::SessionId;

#[derive(Debug)]
pub struct RevokedSessions {
    ended: RwLock<HashMap<SessionId, Timestamp>>,
    retention: Duration,
}

impl RevokedSessions {
    pub fn new(retention: Duration) -> Self {
        Self { ended: RwLock::default(), retention }
    }

    pub fn retention(&self) -> Duration {
        self.retention
    }

    pub fn contains(&self, id: SessionId) -> bool {
        self.ended.read().unwrap_or_else(|e| e.into_inner()).contains_key(&id)
    }

    pub fn insert(&self, id: SessionId, ended_at: Timestamp) {
        self.extend([(id, ended_at)]);
    }

    pub fn extend(&self, ended: impl IntoIterator<Item = (SessionId, Timestamp)>) {
        let mut map = self.ended.write().unwrap_or_else(|e| e.into_inner());
        for (id, at) in ended {
            map.entry(id).or_insert(at);
        }
    }

    /// Forgets sessions whose access tokens have all expired by `now`.
    pub fn prune(&self, now: Timestamp) {
        let horizon = now.saturating_sub(self.retention);
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
}
