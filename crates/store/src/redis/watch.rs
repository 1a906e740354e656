//! The Redis store's [`FeedWatcher`]: `XREAD BLOCK` on the feed's stream from the reader's
//! position, which Redis answers as soon as an entry lands after it, on a connection of the
//! watcher's own (a blocking read holds up every command queued behind it on its connection, so
//! it never shares the store's).

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::streams::StreamReadReply;
use tessera_core::revocation::FeedPosition;
use tessera_core::store::{FeedWatcher, StoreError, StoreResult};

use super::{COMMAND_TIMEOUT, classify};

/// Where a watcher opens its connection: the store's server, or its Cluster (whose client
/// routes `XREAD` to the node of the stream's slot).
#[derive(Clone)]
pub(super) enum WatchSource {
    Server(redis::Client),
    Cluster(ClusterClient),
}

impl WatchSource {
    /// A Cluster client like the store's, but with room for a blocking read in its answers.
    pub(super) fn cluster(nodes: &[String]) -> StoreResult<Self> {
        let client = ClusterClient::builder(nodes.to_vec())
            .connection_timeout(COMMAND_TIMEOUT)
            .response_timeout(LONGEST_WAIT + COMMAND_TIMEOUT)
            .retries(1)
            .build()
            .map_err(StoreError::other)?;
        Ok(Self::Cluster(client))
    }
}

/// The longest one `XREAD BLOCK` waits; a longer `within` waits this long.
const LONGEST_WAIT: Duration = Duration::from_secs(60);

enum WatchConn {
    Server(MultiplexedConnection),
    Cluster(ClusterConnection),
}

pub(super) struct RedisWatcher {
    source: WatchSource,
    feed_key: String,
    /// Opened on first use; dropped after a failure or a timeout (an answer may still be on
    /// its way), and opened again by the next wait.
    conn: Option<WatchConn>,
}

impl RedisWatcher {
    pub(super) fn new(source: WatchSource, feed_key: String) -> Self {
        Self { source, feed_key, conn: None }
    }

    async fn connect(&self) -> StoreResult<WatchConn> {
        Ok(match &self.source {
            WatchSource::Server(client) => {
                let config = redis::AsyncConnectionConfig::new().set_connection_timeout(COMMAND_TIMEOUT);
                WatchConn::Server(client.get_multiplexed_async_connection_with_config(&config).await.map_err(classify)?)
            }
            WatchSource::Cluster(client) => WatchConn::Cluster(client.get_async_connection().await.map_err(classify)?),
        })
    }
}

#[async_trait]
impl FeedWatcher for RedisWatcher {
    async fn wait(&mut self, after: Option<FeedPosition>, within: Duration) -> StoreResult<bool> {
        let within = within.clamp(Duration::from_millis(1), LONGEST_WAIT);
        let mut conn = match self.conn.take() {
            Some(conn) => conn,
            None => self.connect().await?,
        };
        let mut read = redis::cmd("XREAD");
        read.arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(u64::try_from(within.as_millis()).unwrap_or(u64::MAX))
            .arg("STREAMS")
            .arg(&self.feed_key)
            .arg(after.unwrap_or_default().to_string());
        let answer = async {
            match &mut conn {
                WatchConn::Server(c) => read.query_async::<Option<StreamReadReply>>(c).await,
                WatchConn::Cluster(c) => read.query_async::<Option<StreamReadReply>>(c).await,
            }
        };
        let reply = tokio::time::timeout(within + COMMAND_TIMEOUT, answer)
            .await
            .map_err(|_| StoreError::unavailable("the feed watcher's read timed out"))?
            .map_err(classify)?;
        self.conn = Some(conn);
        Ok(reply.is_some_and(|r| r.keys.iter().any(|k| !k.ids.is_empty())))
    }
}
