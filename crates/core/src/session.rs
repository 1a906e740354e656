//! Sessions (refresh-token families) and the rotation rule.
//!
//! A login opens a session at generation 0; each successful refresh moves it to the next
//! generation, and the refresh token of generation `g` is valid only while the session is at `g`.
//! The store performs the move atomically (compare-and-set on the generation). When that fails,
//! [`judge_stale`] decides, from the session as the store now has it, what the presented token is:
//! the grace case of README, "Tokens and sessions", a replay (theft: end the session), or simply dead.

use std::time::Duration;

use crate::clock::Timestamp;
use crate::ids::{SessionId, UserId};

/// A session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: SessionId,
    pub user_id: UserId,
    /// The generation of the one live refresh token.
    pub generation: u64,
    pub created_at: Timestamp,
    /// When the current generation was issued: the login or the latest rotation.
    pub last_used_at: Timestamp,
    /// When the live refresh token expires: renewed by each rotation, never past
    /// `absolute_expires_at`.
    pub expires_at: Timestamp,
    /// The end of the session's maximum lifetime.
    pub absolute_expires_at: Timestamp,
    pub ended_at: Option<Timestamp>,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
}

impl Session {
    /// Whether the session's refresh token can still be used at `now`.
    pub fn is_active(&self, now: Timestamp) -> bool {
        self.ended_at.is_none() && now < self.expires_at
    }
}

/// Expiry of a token minted at `now`: `ttl` later, capped by the session's absolute end.
pub fn idle_expiry(now: Timestamp, ttl: Duration, absolute: Timestamp) -> Timestamp {
    now.saturating_add(ttl).min(absolute)
}

/// What the store did with a rotation request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The session was at the presented generation and active; it is now at the next one.
    Rotated(Session),
    /// Nothing changed; this is the session as it is (`None`: no such session).
    Stale(Option<Session>),
}

/// What a refresh token that could not be rotated is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaleVerdict {
    /// Within the grace window, while its successor is unused: hand out that successor again.
    Grace { successor: u64 },
    /// An already-rotated token presented again: theft. End the session.
    Reused,
    /// Dead for an innocent reason: session ended or expired, or no such session.
    Dead,
}

/// Judges a presented generation against the session the store holds now.
pub fn judge_stale(session: Option<&Session>, presented: u64, now: Timestamp, grace: Duration) -> StaleVerdict {
    let Some(s) = session else {
        return StaleVerdict::Dead;
    };
    if !s.is_active(now) || presented >= s.generation {
        return StaleVerdict::Dead;
    }
    let successor_unused = s.generation == presented + 1;
    if successor_unused && !grace.is_zero() && now.since(s.last_used_at) <= grace {
        StaleVerdict::Grace { successor: s.generation }
    } else {
        StaleVerdict::Reused
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(10);

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    /// A session rotated to generation 5 at t = 1000 ms.
    fn session() -> Session {
        Session {
            id: SessionId::generate(),
            user_id: UserId::generate(),
            generation: 5,
            created_at: at(0),
            last_used_at: at(1000),
            expires_at: at(100_000),
            absolute_expires_at: at(1_000_000),
            ended_at: None,
            user_agent: None,
            ip: None,
        }
    }

    #[test]
    fn strict_default_treats_a_replay_in_the_same_millisecond_as_reuse() {
        assert_eq!(judge_stale(Some(&session()), 4, at(1000), Duration::ZERO), StaleVerdict::Reused);
    }

    #[test]
    fn within_grace_the_predecessor_gets_the_current_generation() {
        assert_eq!(judge_stale(Some(&session()), 4, at(1000 + 10_000), GRACE), StaleVerdict::Grace { successor: 5 });
    }

    #[test]
    fn after_grace_the_predecessor_is_reuse() {
        assert_eq!(judge_stale(Some(&session()), 4, at(1000 + 10_001), GRACE), StaleVerdict::Reused);
    }

    #[test]
    fn once_the_successor_was_used_grace_no_longer_applies() {
        assert_eq!(judge_stale(Some(&session()), 3, at(1001), GRACE), StaleVerdict::Reused);
    }

    #[test]
    fn ended_expired_or_missing_sessions_are_dead_not_reuse() {
        let mut ended = session();
        ended.ended_at = Some(at(1500));
        assert_eq!(judge_stale(Some(&ended), 4, at(2000), GRACE), StaleVerdict::Dead);
        assert_eq!(judge_stale(Some(&session()), 4, at(100_000), GRACE), StaleVerdict::Dead);
        assert_eq!(judge_stale(None, 4, at(2000), GRACE), StaleVerdict::Dead);
    }

    #[test]
    fn a_generation_from_the_future_is_dead() {
        assert_eq!(judge_stale(Some(&session()), 6, at(1001), GRACE), StaleVerdict::Dead);
    }

    #[test]
    fn idle_expiry_is_capped_by_the_absolute_lifetime() {
        assert_eq!(idle_expiry(at(0), Duration::from_secs(30), at(60_000)), at(30_000));
        assert_eq!(idle_expiry(at(50_000), Duration::from_secs(30), at(60_000)), at(60_000));
    }
}
