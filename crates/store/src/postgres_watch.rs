//! The PostgreSQL store's [`FeedWatcher`]: every transaction that ends sessions sends a
//! `NOTIFY` on its schema's [`channel`] (delivered when it commits, and only then), and the watcher
//! `LISTEN`s on a connection of its own, held by a task of its own so that a wait that times
//! out never cuts a notification in half.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgListener, PgPool};
use tessera_core::revocation::FeedPosition;
use tessera_core::store::{FeedWatcher, StoreError, StoreResult};
use tokio::sync::watch;

/// The channel of the ends in `schema`: one per schema, as the tables are, so that deployments
/// sharing a database never wake each other (at most 63 bytes, PostgreSQL's longest name).
pub fn channel(schema: &str) -> String {
    let mut name = format!("tessera_ends.{schema}");
    let mut end = name.len().min(63);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name.truncate(end);
    name
}
/// How long the listening task waits before it connects again after a failure.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

pub struct PostgresWatcher {
    pool: PgPool,
    channel: Arc<str>,
    /// Counts the notifications (and the listener's reconnections, after which an end may
    /// have gone unheard); `None` until the first wait starts the task.
    heard: Option<(watch::Receiver<u64>, tokio::task::JoinHandle<()>)>,
}

impl PostgresWatcher {
    pub fn new(pool: PgPool, channel: Arc<str>) -> Self {
        Self { pool, channel, heard: None }
    }
}

impl Drop for PostgresWatcher {
    fn drop(&mut self) {
        if let Some((_, task)) = &self.heard {
            task.abort();
        }
    }
}

#[async_trait]
impl FeedWatcher for PostgresWatcher {
    /// Ignores `after`: a notification says only that the feed grew, and the caller reads it.
    async fn wait(&mut self, _after: Option<FeedPosition>, within: Duration) -> StoreResult<bool> {
        let (heard, _) = self.heard.get_or_insert_with(|| {
            let (tell, heard) = watch::channel(0);
            (heard, tokio::spawn(listen(self.pool.clone(), self.channel.clone(), tell)))
        });
        match tokio::time::timeout(within, heard.changed()).await {
            Ok(Ok(())) => Ok(true),
            Ok(Err(_)) => {
                self.heard = None;
                Err(StoreError::unavailable("the feed's listener stopped"))
            }
            Err(_) => Ok(false),
        }
    }
}

/// Listens on `channel` and counts what it hears into `tell`, until the watcher is gone.
/// Each (re)connection counts as heard too: an end that committed while nobody listened is
/// found by the caller's read of the feed.
async fn listen(pool: PgPool, channel: Arc<str>, tell: watch::Sender<u64>) {
    let heard = |tell: &watch::Sender<u64>| tell.send_modify(|n| *n = n.wrapping_add(1));
    while !tell.is_closed() {
        let mut listener = match connect(&pool, &channel).await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::debug!(error = %e, "the feed's listener cannot connect; trying again shortly");
                tokio::time::sleep(RECONNECT_AFTER).await;
                continue;
            }
        };
        heard(&tell);
        loop {
            match listener.try_recv().await {
                // A notification, or a lost connection the listener has just reopened.
                Ok(_) => heard(&tell),
                Err(e) => {
                    tracing::debug!(error = %e, "the feed's listener failed; connecting again shortly");
                    tokio::time::sleep(RECONNECT_AFTER).await;
                    break;
                }
            }
            if tell.is_closed() {
                return;
            }
        }
    }
}

async fn connect(pool: &PgPool, channel: &str) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(channel).await?;
    Ok(listener)
}
