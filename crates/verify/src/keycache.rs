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
/// A JWKS answer slower than this is given up on (the keys held are kept).
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot fetch the JWKS from {url}: {source}")]
    Http { url: String, source: reqwest::Error },
    #[error("the JWKS at {url} answered {status}")]
    Status { url: String, status: reqwest::StatusCode },
    #[error("the JWKS at {url} holds no ES256 key")]
    NoKeys { url: String },
    #[error("the JWKS at {url} did not answer within {FETCH_TIMEOUT:?}")]
    Timeout { url: String },
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
        tokio::time::timeout(FETCH_TIMEOUT, self.fetch_unbounded())
            .await
            .map_err(|_| FetchError::Timeout { url: self.url.clone() })?
    }

    async fn fetch_unbounded(&self) -> Result<Duration, FetchError> {
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
                    // Cleared however the task ends, so a later refetch is never blocked.
                    let _done = InFlight { cache: cache.clone(), _finished: finished };
                    if let Err(e) = cache.fetch().await {
                        tracing::warn!(error = %e, "JWKS refetch failed; keeping the keys held");
                    }
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

/// Marks the refetch finished when dropped: clears it, then wakes the waiters.
struct InFlight {
    cache: Arc<KeyCache>,
    _finished: watch::Sender<()>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.cache.refetch.lock().unwrap_or_else(|e| e.into_inner()).in_flight = None;
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
    use std::sync::atomic::AtomicBool;

    use axum::Router;
    use axum::routing::get;

    use super::*;
    use crate::jwk::Jwk;

    /// A JWKS endpoint on loopback that counts its requests and can be made to fail.
    struct FakeIssuer {
        url: String,
        hits: Arc<AtomicU64>,
        failing: Arc<AtomicBool>,
        kids: Arc<Mutex<Vec<String>>>,
    }

    /// A real P-256 point (the generator), so the key parses.
    fn jwk(kid: &str) -> Jwk {
        Jwk {
            kty: "EC".into(),
            crv: "P-256".into(),
            x: "axfR8uEsQkf4vOblY6RA8ncDfYEt6zOg9KE5RdiYwpY".into(),
            y: "T-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU".into(),
            kid: kid.into(),
            use_: "sig".into(),
            alg: "ES256".into(),
        }
    }

    async fn fake_issuer(kids: &[&str]) -> FakeIssuer {
        let hits = Arc::new(AtomicU64::new(0));
        let failing = Arc::new(AtomicBool::new(false));
        let kids = Arc::new(Mutex::new(kids.iter().map(|k| k.to_string()).collect::<Vec<_>>()));
        let (h, f, k) = (hits.clone(), failing.clone(), kids.clone());
        let app = Router::new().route(
            "/jwks",
            get(move || {
                let (h, f, k) = (h.clone(), f.clone(), k.clone());
                async move {
                    h.fetch_add(1, Ordering::SeqCst);
                    // Slow enough that a storm of callers overlaps one fetch.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if f.load(Ordering::SeqCst) {
                        return Err(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
                    }
                    let keys = k.lock().unwrap().iter().map(|kid| jwk(kid)).collect();
                    Ok(axum::Json(Jwks { keys }))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeIssuer { url, hits, failing, kids }
    }

    async fn cache_for(issuer: &FakeIssuer, min_refetch: Duration) -> Arc<KeyCache> {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let cache = Arc::new(KeyCache::new(issuer.url.clone(), reqwest::Client::new(), min_refetch));
        cache.fetch().await.unwrap();
        cache
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_storm_of_one_unknown_kid_makes_exactly_one_fetch() {
        let issuer = fake_issuer(&["old"]).await;
        let cache = cache_for(&issuer, Duration::from_secs(10)).await;
        issuer.kids.lock().unwrap().push("new".into());
        let storm: Vec<_> = (0..200)
            .map(|_| {
                let cache = cache.clone();
                tokio::spawn(async move {
                    cache.refetch_for_unknown_kid().await;
                    cache.current().contains("new")
                })
            })
            .collect();
        for caller in storm {
            assert!(caller.await.unwrap(), "every waiter sees the refetched key");
        }
        assert_eq!(issuer.hits.load(Ordering::SeqCst), 2, "the start-up fetch and one shared refetch");
    }

    #[tokio::test]
    async fn refetches_for_unknown_kids_are_rate_limited() {
        let issuer = fake_issuer(&["old"]).await;
        let cache = cache_for(&issuer, Duration::from_millis(500)).await;
        for _ in 0..20 {
            cache.refetch_for_unknown_kid().await;
        }
        assert_eq!(issuer.hits.load(Ordering::SeqCst), 2, "one refetch, the rest refused by the limit");
        tokio::time::sleep(Duration::from_millis(550)).await;
        cache.refetch_for_unknown_kid().await;
        assert_eq!(issuer.hits.load(Ordering::SeqCst), 3, "allowed again once the interval passed");
    }

    #[tokio::test]
    async fn a_failed_fetch_keeps_the_keys_held() {
        let issuer = fake_issuer(&["old"]).await;
        let cache = cache_for(&issuer, Duration::ZERO).await;
        issuer.failing.store(true, Ordering::SeqCst);
        assert!(cache.fetch().await.is_err());
        cache.refetch_for_unknown_kid().await;
        assert_eq!(cache.current().kids(), vec!["old"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_caller_that_gives_up_does_not_cancel_the_shared_fetch() {
        let issuer = fake_issuer(&["old"]).await;
        let cache = cache_for(&issuer, Duration::from_secs(10)).await;
        issuer.kids.lock().unwrap().push("new".into());
        // The caller hangs up long before the (100 ms) fetch answers.
        let _ = tokio::time::timeout(Duration::from_millis(10), cache.refetch_for_unknown_kid()).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(cache.current().contains("new"), "the fetch ran to the end in its own task");
    }

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
