//! Maintenance: the store's feed of ended sessions read into this instance's view and journal,
//! the ends the store did not confirm retried, and the purge of dead sessions and old guests.

use std::time::Duration;

use super::{AuthService, UnfinishedEnd};
use crate::clock::{Clock, Timestamp};
use crate::store::{FeedWatcher, StoreError};

/// How long a watcher of pushed ends waits at most before it asks again (a blocking read on
/// the store's side; the periodic catch-up goes on meanwhile).
const WATCH_FOR: Duration = Duration::from_secs(10);
/// How long to wait after a watcher or a catch-up it woke failed, before watching again.
const WATCH_RETRY: Duration = Duration::from_secs(1);

/// How often dead sessions and old guests are purged.
const PURGE_EVERY: Duration = Duration::from_secs(3600);
/// Guests deleted per purge at most, so one purge stays short however many there are.
const GUESTS_PER_PURGE: usize = 10_000;

/// The background work of one instance, as one [`tick`](Self::tick) that the server calls
/// often (every quarter second, and at once when this instance ended a session): it retries
/// the ends the store did not confirm, reads the store's feed into the revocation view and the
/// journal, and, once an hour, purges dead sessions and guests older than the retention.
#[derive(Debug)]
pub struct Maintenance {
    guest_retention: Duration,
    next_purge: Option<Timestamp>,
    /// Whether the last catch-up failed (so that a failure is logged when it starts and ends,
    /// not at every tick).
    catch_up_failing: bool,
}

/// What one tick did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tick {
    /// Ends read from the store's feed that were new here; `None`: the read failed.
    pub ended: Option<usize>,
    /// Ends still waiting for the store to confirm them.
    pub unfinished: usize,
    /// Whether the purge ran.
    pub purged: bool,
}

impl Maintenance {
    pub fn new(guest_retention: Duration) -> Self {
        Self { guest_retention, next_purge: None, catch_up_failing: false }
    }

    pub async fn tick(&mut self, auth: &AuthService, now: Timestamp) -> Tick {
        let unfinished = auth.retry_unfinished_ends().await;
        let ended = match auth.catch_up_revocations(now).await {
            Ok(n) => {
                if std::mem::take(&mut self.catch_up_failing) {
                    tracing::info!("revocation catch-up works again");
                }
                Some(n)
            }
            Err(e) => {
                if !std::mem::replace(&mut self.catch_up_failing, true) {
                    tracing::warn!(
                        error = crate::error_chain(&e),
                        "revocation catch-up failed; the feed's heartbeats stop until it works"
                    );
                }
                None
            }
        };
        let purged = self.next_purge.is_none_or(|at| now >= at);
        if purged {
            self.next_purge = Some(now.saturating_add(PURGE_EVERY));
            purge(auth, now, self.guest_retention).await;
        }
        Tick { ended, unfinished, purged }
    }
}

/// Deletes dead sessions, then guests older than `guest_retention` without a live session.
async fn purge(auth: &AuthService, now: Timestamp, guest_retention: Duration) {
    match auth.purge_sessions(now).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(purged = n, "purged dead sessions"),
        Err(e) => tracing::warn!(error = crate::error_chain(&e), "session purge failed"),
    }
    match auth.purge_guests(now.saturating_sub(guest_retention), now, GUESTS_PER_PURGE).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(purged = n, "purged guest accounts without a live session"),
        Err(e) => tracing::warn!(error = crate::error_chain(&e), "guest purge failed"),
    }
}

impl AuthService {
    /// The session store's watcher of new ends, where the store pushes them
    /// ([`SessionStore::feed_watcher`](crate::store::SessionStore::feed_watcher)).
    pub fn feed_watcher(&self) -> Option<Box<dyn FeedWatcher>> {
        self.sessions.feed_watcher()
    }

    /// Catches up with the feed whenever `watcher` says it grew past the journal's head, so
    /// that ends made on other instances reach this one (its revocation view, its feed's
    /// subscribers) as they commit, not at the next periodic catch-up. Runs until the task is
    /// dropped; failures are only logged at debug level, since the periodic catch-up, which
    /// reports its own, still finds every end.
    pub async fn follow_pushed_ends(&self, mut watcher: Box<dyn FeedWatcher>, clock: &dyn Clock) {
        loop {
            let woken = watcher.wait(self.journal.head(), WATCH_FOR).await;
            let failed = match woken {
                Ok(false) => None,
                Ok(true) => self.catch_up_revocations(clock.now()).await.err(),
                Err(e) => Some(e),
            };
            if let Some(e) = failed {
                tracing::debug!(error = crate::error_chain(&e), "pushed ends: watching again shortly");
                tokio::time::sleep(WATCH_RETRY).await;
            }
        }
    }

    /// Reads the store's feed of ended sessions (every instance's) from the journal's head into
    /// the journal and the revocation view, and forgets ends whose tokens have all expired.
    /// Returns how many ends were new.
    pub async fn catch_up_revocations(&self, now: Timestamp) -> Result<usize, StoreError> {
        const PAGE: usize = 1000;
        // One catch-up at a time (the periodic one and the pushed one): each appends what it
        // read after the head it started from.
        let _one_at_a_time = self.catching_up.lock().await;
        let mut read = 0;
        loop {
            let batch = self.sessions.ended_after(self.journal.head(), PAGE).await?;
            read += batch.len();
            self.revoked.extend(batch.iter().map(|e| (e.session_id, e.ended_at)));
            self.journal.append(&batch);
            if batch.len() < PAGE {
                break;
            }
        }
        self.journal.synced(now);
        self.revoked.prune(now);
        Ok(read)
    }

    /// Deletes sessions nobody can use any more (kept a day for the record).
    pub async fn purge_sessions(&self, now: Timestamp) -> Result<u64, StoreError> {
        let day = Duration::from_secs(86_400);
        let horizon = now.saturating_sub(day);
        let retention = self.revoked.retention();
        self.sessions.purge(horizon, horizon.saturating_sub(retention), now.saturating_sub(retention)).await
    }

    /// Whether both stores answer.
    pub async fn ready(&self) -> Result<(), StoreError> {
        self.users.ping().await?;
        self.sessions.ping().await
    }

    /// Retries the ends the store did not confirm; returns how many are still waiting.
    pub async fn retry_unfinished_ends(&self) -> usize {
        let waiting = std::mem::take(&mut *self.unfinished.lock().unwrap_or_else(|e| e.into_inner()));
        if waiting.is_empty() {
            return 0;
        }
        let tried = waiting.len();
        let mut failed = Vec::new();
        for end in waiting {
            let done = match end {
                UnfinishedEnd::Session(id, at) => self.sessions.end_session(id, at).await.map(|_| ()),
                UnfinishedEnd::User(user_id, at) => self.sessions.end_user_sessions(user_id, at).await.map(|ended| {
                    self.revoked.extend(ended.iter().map(|id| (*id, at)));
                }),
            };
            if done.is_err() {
                failed.push(end);
            }
        }
        let finished_some = failed.len() < tried;
        let mut unfinished = self.unfinished.lock().unwrap_or_else(|e| e.into_inner());
        failed.append(&mut unfinished);
        *unfinished = failed;
        if finished_some {
            self.ended_here.notify_one();
        }
        unfinished.len()
    }
}
