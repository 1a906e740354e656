//! The issuer's verification keys, fetched from its JWKS and kept fresh.
//!
//! Readers take the current [`KeyRing`] with a pointer clone under a lock that is never held
//! across I/O. The key set is refetched when its `Cache-Control: max-age` runs out, and once, at
//! most every `min_refetch`, when a token names a `kid` the ring lacks (tessera publishes a new
//! key before it signs with it, so that only happens to a verifier whose copy is old, or to a
//! forged token). That refetch is single-flight: every request waiting on it shares one fetch,
//! which runs in its own task so a client hanging up cannot cancel it halfway. A failed fetch
//! keeps the keys already held.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use reqwest::header::{CACHE_CONTROL, HeaderMap};
use tokio::sync::watch;

use crate::jwk::{Jwks, KeyRing};

/// Bounds on how long a fetched key set is used before it is fetched again.
const MIN_MAX_AGE: Duration = Duration::from_secs(10);
const MAX_MAX_AGE: Duration = Duration::from_secs(3600);
/// Used when the JWKS answer says nothing about caching.
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot fetch the JWKS from {url}: {source}")]
    Http { url: String, source: reqwest::Error },
    #[error("the JWKS at {url} answered {status}")]
    Status { url: String, status: reqwest::StatusCode },
    #[error("the JWKS at {url} holds no ES256 key")]
    NoKeys { url: String },
}

pub(crate) struct KeyCache {
    url: String,
    http: reqwest::Client,
    ring: RwLock<Arc<KeyRing>>,
    refetch: Mutex<Refetch>,
    min_refetch: Duration,
    fetches: AtomicU64,
}

#[derive(Default)]
struct Refetch {
    /// Present while a fetch runs; resolves (its sender drops) when it is done.
    in_flight: Option<watch::Receiver<()>>,
    last_started: Option<Instant>,
}

impl KeyCache {
    pub(crate) fn new(url: String, http: reqwest::Client, min_refetch: Duration) -> Self {
        Self { url, http, ring: RwLock::default(), refetch: Mutex::default(), min_refetch, fetches: AtomicU64::new(0) }
    }

    pub(crate) fn current(&self) -> Arc<KeyRing> {
        self.ring.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many times the JWKS was requested.
    pub(crate) fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// Fetches the key set now and swaps it in; returns how long it may be cached.
    pub(crate) async fn fetch(&self) -> Result<Duration, FetchError> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let url = self.url.clone();
        let response =
            self.http.get(&url).send().await.map_err(|source| FetchError::Http { url: url.clone(), source })?;
        if !response.status().is_success() {
            return Err(FetchError::Status { url, status: response.status() });
        }
        let max_age = max_age(response.headers());
        let set: Jwks = response.json().await.map_err(|source| FetchError::Http { url: url.clone(), source })?;
        let ring = KeyRing::from_jwks(&set);
        if ring.is_empty() {
            return Err(FetchError::NoKeys { url });
        }
        tracing::debug!(kids = ?ring.kids(), "JWKS fetched");
        *self.ring.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ring);
        Ok(max_age)
    }

    /// A refetch because a token named an unknown `kid`: joins the one in flight, starts one if
    /// the last started at least `min_refetch` ago, or does nothing.
    pub(crate) async fn refetch_for_unknown_kid(self: &Arc<Self>) {
        let mut done = {
            let mut state = self.refetch.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(done) = &state.in_flight {
                done.clone()
            } else if state.last_started.is_some_and(|at| at.elapsed() < self.min_refetch) {
                return;
            } else {
                let (finished, done) = watch::channel(());
                state.in_flight = Some(done.clone());
                state.last_started = Some(Instant::now());
                let cache = self.clone();
                tokio::spawn(async move {
                    if let Err(e) = cache.fetch().await {
                        tracing::warn!(error = %e, "JWKS refetch failed; keeping the keys held");
                    }
                    cache.refetch.lock().unwrap_or_else(|e| e.into_inner()).in_flight = None;
                    drop(finished);
                });
                done
            }
        };
        // Resolves with an error when the fetch task drops its sender: it is done.
        let _ = done.changed().await;
    }

    /// Keeps the key set fresh: refetches when its max-age runs out, sooner after a failure.
    pub(crate) async fn keep_fresh(self: Arc<Self>, mut max_age: Duration) {
        let mut retry = Duration::from_secs(1);
        loop {
            tokio::time::sleep(max_age).await;
            match self.fetch().await {
                Ok(age) => {
                    max_age = age;
                    retry = Duration::from_secs(1);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "JWKS refresh failed; keeping the keys held");
                    max_age = retry;
                    retry = (retry * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}

/// `max-age` of a `Cache-Control` header, within sane bounds.
fn max_age(headers: &HeaderMap) -> Duration {
    let value = headers.get(CACHE_CONTROL).and_then(|v| v.to_str().ok()).unwrap_or("");
    let directives = value.split(',').map(str::trim);
    if directives.clone().any(|d| d.eq_ignore_ascii_case("no-store") || d.eq_ignore_ascii_case("no-cache")) {
        return MIN_MAX_AGE;
    }
    directives
        .filter_map(|d| d.split_once('='))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("max-age"))
        .and_then(|(_, secs)| secs.trim().trim_matches('"').parse::<u64>().ok())
        .map_or(DEFAULT_MAX_AGE, |secs| Duration::from_secs(secs).clamp(MIN_MAX_AGE, MAX_MAX_AGE))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(cache_control: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CACHE_CONTROL, cache_control.parse().unwrap());
        h
    }

    #[test]
    fn max_age_is_read_and_bounded() {
        assert_eq!(max_age(&headers("public, max-age=300")), Duration::from_secs(300));
        assert_eq!(max_age(&headers("max-age=1")), MIN_MAX_AGE);
        assert_eq!(max_age(&headers("max-age=999999")), MAX_MAX_AGE);
        assert_eq!(max_age(&headers("no-store")), MIN_MAX_AGE);
        assert_eq!(max_age(&HeaderMap::new()), DEFAULT_MAX_AGE);
        assert_eq!(max_age(&headers("max-age=abc")), DEFAULT_MAX_AGE);
    }
}
