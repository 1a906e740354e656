//! Token buckets for the endpoints that check passwords: one per client address group
//! (`--login-rate-limit`) and one per account for failed logins (`--login-failure-limit`).
//!
//! A [`Throttle`] keeps its buckets in the shared [`LimitStore`] when there is one (Redis), so
//! that several instances count together; else, and whenever the shared store fails, in this
//! process's [`Limiter`].
//!
//! A bucket that has refilled carries no information, so it is dropped when room is needed.
//! When more than [`Limiter::max_tracked`] buckets hold state, the tenth with the most tokens
//! left (the least throttled) is dropped: memory stays bounded, and a flood of fresh keys
//! never resets everyone's budget at once — the buckets that matter (nearly empty ones) are
//! the last to go.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tessera_core::clock::Clock;
use tessera_core::store::LimitStore;

use crate::net::AddressGroup;

/// A limit of `count` events per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

/// A limit counted across instances when a shared store is given.
pub struct Throttle<K> {
    local: Limiter<K>,
    shared: Option<Arc<dyn LimitStore>>,
    /// Prefix of this throttle's keys in the shared store.
    namespace: &'static str,
    /// Whether the shared store failed last time (to log changes, not every failure).
    failing: AtomicBool,
    /// The time the shared store's buckets go by.
    clock: Arc<dyn Clock>,
}

/// How a key is named in the shared store.
pub trait SharedKey {
    fn shared_key(&self) -> String;
}

impl SharedKey for AddressGroup {
    fn shared_key(&self) -> String {
        match self {
            Self::V4(octets) => octets.iter().map(|b| format!("{b:02x}")).collect(),
            Self::V6(prefix) => prefix.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }
}

/// Accounts by the digest of their email key: the shared store never holds an address.
impl SharedKey for String {
    fn shared_key(&self) -> String {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, self.as_bytes());
        digest.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl<K: Hash + Eq + Clone + SharedKey> Throttle<K> {
    pub fn new(
        rate: Rate,
        shared: Option<Arc<dyn LimitStore>>,
        namespace: &'static str,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self { local: Limiter::new(rate), shared, namespace, failing: AtomicBool::new(false), clock }
    }

    /// Takes one attempt for `key`: `Ok` or `Err(seconds until the next attempt is allowed)`.
    pub async fn take(&self, key: &K) -> Result<(), u64> {
        if let Some(shared) = &self.shared {
            let rate = self.local.rate();
            match shared.take(&self.key(key), rate.count, rate.per, self.clock.now()).await {
                Ok(None) => return self.healthy(Ok(())),
                Ok(Some(wait)) => return self.healthy(Err(wait.as_secs_f64().ceil().max(1.0) as u64)),
                Err(e) => self.failed(&e),
            }
        }
        self.local.take(key, Instant::now())
    }

    /// Gives back an attempt that turned out not to count.
    pub async fn give_back(&self, key: &K) {
        if let Some(shared) = &self.shared {
            let rate = self.local.rate();
            match shared.give_back(&self.key(key), rate.count, rate.per, self.clock.now()).await {
                Ok(()) => return self.healthy(()),
                Err(e) => self.failed(&e),
            }
        }
        self.local.give_back(key, Instant::now());
    }

    fn key(&self, key: &K) -> String {
        format!("{}:{}", self.namespace, key.shared_key())
    }

    fn healthy<T>(&self, value: T) -> T {
        if self.failing.swap(false, Ordering::Relaxed) {
            tracing::info!(limit = self.namespace, "the shared rate-limit store works again");
        }
        value
    }

    fn failed(&self, error: &tessera_core::store::StoreError) {
        if !self.failing.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                limit = self.namespace,
                error = crate::telemetry::error_chain(error),
                "the shared rate-limit store failed; counting in this instance until it answers"
            );
        }
    }
}

impl<K> std::fmt::Debug for Throttle<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle").field("namespace", &self.namespace).field("shared", &self.shared.is_some()).finish()
    }
}

const DEFAULT_MAX_TRACKED: usize = 100_000;

#[derive(Debug)]
pub struct Limiter<K> {
    rate: Rate,
    max_tracked: usize,
    buckets: Mutex<HashMap<K, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    pub fn new(rate: Rate) -> Self {
        Self::bounded(rate, DEFAULT_MAX_TRACKED)
    }

    pub fn bounded(rate: Rate, max_tracked: usize) -> Self {
        Self { rate, max_tracked: max_tracked.max(10), buckets: Mutex::default() }
    }

    pub fn rate(&self) -> Rate {
        self.rate
    }

    fn capacity(&self) -> f64 {
        f64::from(self.rate.count)
    }

    fn per_sec(&self) -> f64 {
        self.capacity() / self.rate.per.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    fn refilled(&self, bucket: Bucket, now: Instant) -> f64 {
        (bucket.tokens + now.saturating_duration_since(bucket.updated).as_secs_f64() * self.per_sec())
            .min(self.capacity())
    }

    /// Takes one attempt for `key`: `Ok` or `Err(seconds until the next attempt is allowed)`.
    pub fn take(&self, key: &K, now: Instant) -> Result<(), u64> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= self.max_tracked && !buckets.contains_key(key) {
            self.make_room(&mut buckets, now);
        }
        let capacity = self.capacity();
        let bucket = buckets.entry(key.clone()).or_insert(Bucket { tokens: capacity, updated: now });
        let tokens = self.refilled(*bucket, now);
        *bucket = Bucket { tokens, updated: now };
        if tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = Duration::from_secs_f64((1.0 - tokens) / self.per_sec());
            Err(wait.as_secs_f64().ceil().max(1.0) as u64)
        }
    }

    /// Returns an attempt taken by [`take`](Self::take) that turned out not to count (a
    /// successful login).
    pub fn give_back(&self, key: &K, now: Instant) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(bucket) = buckets.get_mut(key) {
            let tokens = (self.refilled(*bucket, now) + 1.0).min(self.capacity());
            *bucket = Bucket { tokens, updated: now };
        }
    }

    /// Drops every refilled bucket, then, if that is not enough, the tenth with the most tokens.
    fn make_room(&self, buckets: &mut HashMap<K, Bucket>, now: Instant) {
        let capacity = self.capacity();
        buckets.retain(|_, b| self.refilled(*b, now) < capacity);
        let target = self.max_tracked - self.max_tracked / 10;
        if buckets.len() < target {
            return;
        }
        let mut levels: Vec<f64> = buckets.values().map(|b| self.refilled(*b, now)).collect();
        let excess = buckets.len() - target;
        let cut = levels.len() - excess;
        let (_, threshold, _) = levels.select_nth_unstable_by(cut, f64::total_cmp);
        let threshold = *threshold;
        let mut dropped = 0;
        buckets.retain(|_, b| {
            if dropped < excess && self.refilled(*b, now) >= threshold {
                dropped += 1;
                false
            } else {
                true
            }
        });
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.buckets.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(count: u32, secs: u64) -> Rate {
        Rate { count, per: Duration::from_secs(secs) }
    }

    #[test]
    fn a_burst_is_allowed_then_refilled_over_time() {
        let limiter = Limiter::new(rate(3, 60));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.take(&"a", t0), Ok(()));
        }
        assert_eq!(limiter.take(&"a", t0), Err(20));
        assert_eq!(limiter.take(&"b", t0), Ok(()), "other keys are not affected");
        assert_eq!(limiter.take(&"a", t0 + Duration::from_secs(20)), Ok(()));
    }

    #[test]
    fn an_attempt_given_back_does_not_count() {
        let limiter = Limiter::new(rate(2, 60));
        let t0 = Instant::now();
        for _ in 0..10 {
            limiter.take(&"a", t0).unwrap();
            limiter.give_back(&"a", t0);
        }
        assert_eq!(limiter.take(&"a", t0), Ok(()));
    }

    #[test]
    fn a_flood_of_fresh_keys_keeps_memory_bounded_and_never_frees_a_throttled_key() {
        let limiter = Limiter::bounded(rate(5, 600), 1000);
        let t0 = Instant::now();
        for _ in 0..5 {
            limiter.take(&u32::MAX, t0).unwrap();
        }
        assert!(limiter.take(&u32::MAX, t0).is_err());
        for key in 0..50_000u32 {
            let _ = limiter.take(&key, t0 + Duration::from_millis(u64::from(key % 100)));
            assert!(limiter.tracked() <= 1000);
        }
        assert!(limiter.take(&u32::MAX, t0 + Duration::from_secs(1)).is_err(), "the throttled key is still throttled");
    }
}
