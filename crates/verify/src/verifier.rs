//! The [`Verifier`]: everything a resource server needs to trust tessera's access tokens.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::caller::{Authenticated, VerifyError};
use crate::claims::DEFAULT_AUDIENCE;
use crate::clock::Timestamp;
use crate::feed::{self, FeedState};
use crate::ids::SessionId;
use crate::keycache::{FetchError, KeyCache};
use crate::revocation::FEED_PATH;
use crate::validate::{TokenError, Validator};

/// What to do when the revocation feed has been silent (tessera unreachable, or tessera's own
/// store unreachable) for longer than [`VerifierBuilder::max_feed_silence`].
///
/// Past that bound the verifier cannot know whether a session ended meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FeedLossPolicy {
    /// Refuse every token with `503 Service Unavailable` (and `Retry-After`) until the feed is
    /// back: a logged-out token is never accepted. The default.
    #[default]
    FailClosed,
    /// Keep accepting valid tokens of sessions not known to have ended, and say so: a warning
    /// in the log and [`VerifierStats::feed_stale`]. Trades the logout guarantee for
    /// availability while tessera is down; the access-token lifetime still bounds the damage.
    FailOpen,
}

/// How to build a [`Verifier`].
#[derive(Debug, Clone)]
pub struct VerifierBuilder {
    issuer: String,
    audience: String,
    jwks_url: Option<String>,
    feed_url: Option<String>,
    leeway: Duration,
    policy: FeedLossPolicy,
    max_feed_silence: Duration,
    min_jwks_refetch: Duration,
    startup_timeout: Duration,
    http: Option<reqwest::Client>,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Jwks(#[from] FetchError),
    #[error("the revocation feed at {0} did not sync within {1:?}")]
    FeedNotSynced(String, Duration),
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

impl VerifierBuilder {
    /// Expects tokens with exactly this `iss` (tessera's `--issuer`); the JWKS and the feed are
    /// found below it unless given.
    pub fn new(issuer: impl Into<String>) -> Self {
        let issuer: String = issuer.into();
        Self {
            issuer: issuer.trim_end_matches('/').to_owned(),
            audience: DEFAULT_AUDIENCE.to_owned(),
            jwks_url: None,
            feed_url: None,
            leeway: Duration::ZERO,
            policy: FeedLossPolicy::default(),
            max_feed_silence: Duration::from_secs(30),
            min_jwks_refetch: Duration::from_secs(10),
            startup_timeout: Duration::from_secs(10),
            http: None,
        }
    }

    /// The `aud` tokens must carry (default `tessera`).
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = audience.into();
        self
    }

    /// Where to reach tessera when it is not at the issuer URL (several instances behind one
    /// issuer, or a private address): the JWKS and the feed are found below this instead.
    pub fn tessera_url(mut self, url: impl Into<String>) -> Self {
        let base = url.into().trim_end_matches('/').to_owned();
        self.jwks_url = Some(format!("{base}/.well-known/jwks.json"));
        self.feed_url = Some(format!("{base}{FEED_PATH}"));
        self
    }

    /// Where the keys are (default `{issuer}/.well-known/jwks.json`).
    pub fn jwks_url(mut self, url: impl Into<String>) -> Self {
        self.jwks_url = Some(url.into());
        self
    }

    /// Where the revocation feed is (default `{issuer}/api/auth/revocations`).
    pub fn feed_url(mut self, url: impl Into<String>) -> Self {
        self.feed_url = Some(url.into());
        self
    }

    /// Tolerance for clocks that disagree, applied to `exp` (default 0).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// What happens when the feed is silent for longer than `max_feed_silence`.
    pub fn on_feed_loss(mut self, policy: FeedLossPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// How long the feed may be silent before [`FeedLossPolicy`] applies (default 30 s; the
    /// feed sends a heartbeat every 5 s).
    pub fn max_feed_silence(mut self, bound: Duration) -> Self {
        self.max_feed_silence = bound;
        self
    }

    /// The least time between two refetches of the JWKS for an unknown `kid` (default 10 s), so
    /// a flood of tokens with random `kid`s cannot be turned against tessera.
    pub fn min_jwks_refetch(mut self, interval: Duration) -> Self {
        self.min_jwks_refetch = interval;
        self
    }

    /// How long [`build`](Self::build) waits for the keys and the feed (default 10 s).
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// The HTTP client for the JWKS and the feed (it must have no overall request timeout, which
    /// would cut the feed's long-lived stream).
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// Fetches the keys, subscribes to the feed, and returns once both are ready (or fails after
    /// the startup timeout). Background tasks keep both fresh for as long as the verifier lives.
    pub async fn build(self) -> Result<Verifier, BuildError> {
        let http = match self.http {
            Some(client) => client,
            None => {
                let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
                reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).build()?
            }
        };
        let jwks_url = self.jwks_url.unwrap_or_else(|| format!("{}/.well-known/jwks.json", self.issuer));
        let feed_url = self.feed_url.unwrap_or_else(|| format!("{}{FEED_PATH}", self.issuer));
        let keys = Arc::new(KeyCache::new(jwks_url, http.clone(), self.min_jwks_refetch));
        let deadline = tokio::time::Instant::now() + self.startup_timeout;
        let max_age = loop {
            match keys.fetch().await {
                Ok(max_age) => break max_age,
                Err(e) if tokio::time::Instant::now() + Duration::from_millis(250) >= deadline => return Err(e.into()),
                Err(e) => {
                    tracing::info!(error = %e, "waiting for the JWKS");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        };
        let feed = Arc::new(FeedState::new());
        let inner = Arc::new(Inner {
            validator: Validator::new(self.issuer, self.audience, self.leeway),
            keys: keys.clone(),
            feed: feed.clone(),
            policy: self.policy,
            max_feed_silence: self.max_feed_silence,
            stale_reported: AtomicBool::new(false),
        });
        let tasks = vec![
            tokio::spawn(keys.keep_fresh(max_age)),
            tokio::spawn(feed::subscribe(feed.clone(), http, feed_url.clone())),
            tokio::spawn(watch_freshness(Arc::downgrade(&inner))),
        ];
        let verifier = Verifier { inner, _tasks: Arc::new(Tasks(tasks)) };
        let mut changes = feed.subscribe();
        let synced = tokio::time::timeout_at(deadline, async {
            while feed.silence().is_none() {
                if changes.changed().await.is_err() {
                    break;
                }
            }
        })
        .await;
        if synced.is_err() {
            return Err(BuildError::FeedNotSynced(feed_url, self.startup_timeout));
        }
        Ok(verifier)
    }
}

struct Inner {
    validator: Validator,
    keys: Arc<KeyCache>,
    feed: Arc<FeedState>,
    policy: FeedLossPolicy,
    max_feed_silence: Duration,
    stale_reported: AtomicBool,
}

/// Stops the background tasks when the last clone of a verifier is dropped.
struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Verifies tessera's access tokens; cheap to clone (one shared state).
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
    _tasks: Arc<Tasks>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("validator", &self.inner.validator)
            .field("policy", &self.inner.policy)
            .finish_non_exhaustive()
    }
}

/// A snapshot of a verifier's health, for metrics and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierStats {
    /// Whether the feed's stream is open right now.
    pub feed_connected: bool,
    /// How long the feed has been silent; `None` before its first sync.
    pub feed_silence: Option<Duration>,
    /// Whether the silence exceeds the bound (the [`FeedLossPolicy`] applies).
    pub feed_stale: bool,
    pub feed_reconnects: u64,
    pub ended_sessions: usize,
    pub keys: usize,
    pub jwks_fetches: u64,
}

impl Verifier {
    pub fn builder(issuer: impl Into<String>) -> VerifierBuilder {
        VerifierBuilder::new(issuer)
    }

    /// The caller behind an access token: valid signature, issuer, audience and lifetime, and a
    /// session that has not ended.
    pub async fn verify(&self, token: &str) -> Result<Authenticated, VerifyError> {
        let inner = &self.inner;
        let claims = match inner.validator.validate(token, &inner.keys.current(), Timestamp::now()) {
            Err(TokenError::UnknownKey(_)) => {
                // Boxed: the fetch's future is large, and every verification would carry its room.
                Box::pin(inner.keys.refetch_for_unknown_kid()).await;
                inner.validator.validate(token, &inner.keys.current(), Timestamp::now())
            }
            other => other,
        }
        .map_err(|e| match e {
            TokenError::Expired => VerifyError::Expired,
            _ => VerifyError::Invalid,
        })?;
        let (Some(user_id), Some(session_id)) = (claims.user_id(), claims.session_id()) else {
            return Err(VerifyError::Invalid);
        };
        self.check_session(session_id)?;
        Ok(Authenticated { user_id, session_id, claims })
    }

    /// Whether tokens of this session are still accepted: not ended, and (when failing closed)
    /// the feed is fresh enough to tell.
    pub fn check_session(&self, session_id: SessionId) -> Result<(), VerifyError> {
        if self.inner.feed.revoked.contains(session_id) {
            return Err(VerifyError::SessionEnded);
        }
        if self.inner.policy == FeedLossPolicy::FailClosed && self.feed_stale() {
            return Err(VerifyError::Unavailable);
        }
        Ok(())
    }

    /// Resolves when tokens of this session stop being accepted (it ended, or the feed went
    /// stale while failing closed), with the reason: what a long-lived connection such as a
    /// WebSocket waits on to close itself.
    pub async fn session_ended(&self, session_id: SessionId) -> VerifyError {
        let mut changes = self.inner.feed.subscribe();
        loop {
            if let Err(e) = self.check_session(session_id) {
                return e;
            }
            // Staleness grows without an event: look again at least every second.
            let _ = tokio::time::timeout(Duration::from_secs(1), changes.changed()).await;
        }
    }

    /// The axum layer that makes this verifier available to the [`Authenticated`] extractor.
    #[cfg(feature = "axum")]
    pub fn extension(&self) -> axum::Extension<Verifier> {
        axum::Extension(self.clone())
    }

    /// A tower layer that refuses requests without a valid token (RFC 6750) and hands the
    /// caller to the service as an [`Authenticated`] request extension.
    #[cfg(feature = "axum")]
    pub fn require(&self) -> crate::http::RequireAuthLayer {
        crate::http::RequireAuthLayer::new(self.clone())
    }

    pub fn stats(&self) -> VerifierStats {
        let feed = &self.inner.feed;
        let keys = self.inner.keys.current();
        VerifierStats {
            feed_connected: feed.is_connected(),
            feed_silence: feed.silence(),
            feed_stale: self.feed_stale(),
            feed_reconnects: feed.reconnects(),
            ended_sessions: feed.revoked.len(),
            keys: keys.len(),
            jwks_fetches: self.inner.keys.fetches(),
        }
    }

    fn feed_stale(&self) -> bool {
        self.inner.feed.silence().is_none_or(|s| s > self.inner.max_feed_silence)
    }
}

/// Logs when the feed goes stale and when it recovers, and wakes those waiting on sessions.
async fn watch_freshness(inner: std::sync::Weak<Inner>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let stale = inner.feed.silence().is_some_and(|s| s > inner.max_feed_silence);
        if stale != inner.stale_reported.swap(stale, Ordering::AcqRel) {
            inner.feed.notify();
            match (stale, inner.policy) {
                (true, FeedLossPolicy::FailClosed) => tracing::error!(
                    bound = ?inner.max_feed_silence,
                    "revocation feed silent past its bound: refusing tokens (503) until it is back"
                ),
                (true, FeedLossPolicy::FailOpen) => tracing::warn!(
                    bound = ?inner.max_feed_silence,
                    "revocation feed silent past its bound: still accepting tokens (fail-open); logouts may not be seen"
                ),
                (false, _) => tracing::info!("revocation feed fresh again"),
            }
        }
    }
}
