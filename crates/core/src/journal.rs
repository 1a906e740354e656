//! tessera's side of the revocation feed: the ends the store's feed holds within the retention
//! window, in position order, shared by every subscriber of this instance.
//!
//! One background loop per instance reads the store's feed from the journal's head and appends
//! what it finds; subscribers hold nothing but a position into the journal and wait on
//! [`EndedJournal::subscribe`] for its head to move. So memory grows with the number of ends in
//! the window, not with the number of subscribers, and the store is read once per instance, not
//! once per subscriber.

use std::collections::VecDeque;
use std::sync::RwLock;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use crate::clock::Timestamp;
use crate::revocation::{EndedSession, FeedPosition};

#[derive(Debug)]
pub struct EndedJournal {
    entries: RwLock<VecDeque<EndedSession>>,
    head: watch::Sender<Option<FeedPosition>>,
    /// When the store's feed was last read successfully (ms); `i64::MIN`: never.
    synced_at: AtomicI64,
    retention: Duration,
}

impl EndedJournal {
    pub fn new(retention: Duration) -> Self {
        Self {
            entries: RwLock::default(),
            head: watch::channel(None).0,
            synced_at: AtomicI64::new(i64::MIN),
            retention,
        }
    }

    /// How long an end is kept: the longest an access token of its session can live after it.
    pub fn retention(&self) -> Duration {
        self.retention
    }

    /// The last position read from the store.
    pub fn head(&self) -> Option<FeedPosition> {
        *self.head.borrow()
    }

    /// Notified whenever the head moves.
    pub fn subscribe(&self) -> watch::Receiver<Option<FeedPosition>> {
        self.head.subscribe()
    }

    /// Appends entries read from the store after the head (older or repeated ones are skipped).
    pub fn append(&self, batch: &[EndedSession]) {
        let Some(last) = batch.last() else { return };
        {
            let head = self.head();
            let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
            entries.extend(batch.iter().filter(|e| head.is_none_or(|h| e.position > h)));
        }
        self.head.send_if_modified(|head| {
            let moved = head.is_none_or(|h| last.position > h);
            if moved {
                *head = Some(last.position);
            }
            moved
        });
    }

    /// Records a successful read of the store's feed and forgets ends older than the window.
    pub fn synced(&self, now: Timestamp) {
        self.synced_at.store(now.as_millis(), Ordering::Release);
        let horizon = now.saturating_sub(self.retention);
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        while entries.front().is_some_and(|e| e.ended_at < horizon) {
            entries.pop_front();
        }
    }

    /// When the store's feed was last read; `None` before the first read.
    pub fn synced_at(&self) -> Option<Timestamp> {
        let ms = self.synced_at.load(Ordering::Acquire);
        (ms != i64::MIN).then(|| Timestamp::from_millis(ms))
    }

    /// Up to `limit` entries after `after` (all kept entries when `None`), oldest first.
    pub fn after(&self, after: Option<FeedPosition>, limit: usize) -> Vec<EndedSession> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        let start = after.map_or(0, |p| entries.partition_point(|e| e.position <= p));
        entries.range(start..).take(limit).copied().collect()
    }

    pub fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::SessionId;

    fn entry(major: u64, ended_ms: i64) -> EndedSession {
        EndedSession {
            position: FeedPosition::new(major, 0),
            session_id: SessionId::generate(),
            ended_at: Timestamp::from_millis(ended_ms),
        }
    }

    #[test]
    fn readers_resume_after_their_position_and_old_ends_are_forgotten() {
        let journal = EndedJournal::new(Duration::from_secs(60));
        let (a, b, c) = (entry(1, 1_000), entry(2, 2_000), entry(5, 70_000));
        journal.append(&[a, b]);
        journal.append(&[b, c]);
        assert_eq!(journal.head(), Some(FeedPosition::new(5, 0)));
        assert_eq!(journal.after(None, 10), vec![a, b, c]);
        assert_eq!(journal.after(Some(FeedPosition::new(1, 0)), 10), vec![b, c]);
        assert_eq!(journal.after(Some(FeedPosition::new(3, 0)), 10), vec![c]);
        assert_eq!(journal.after(None, 2), vec![a, b]);
        journal.synced(Timestamp::from_millis(61_500));
        assert_eq!(journal.after(None, 10), vec![b, c], "a ended more than a minute ago");
        assert!(journal.synced_at().is_some());
    }
}
