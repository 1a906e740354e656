//! Password hashing with argon2id on a pool of its own.
//!
//! A hash costs tens of milliseconds of CPU by design. Running it on the async workers would
//! let a flood of logins stall every other request, so hashing runs on dedicated threads, one
//! per core, at a lower scheduling priority (nice 10): they use whatever CPU is idle, and token
//! refresh and `/me` preempt them. The queue in front of the pool is bounded; when it is full
//! the caller is told to come back later rather than being queued without limit.
//!
//! Unknown emails are checked against a dummy hash made with the same parameters, so they cost
//! the same time as a wrong password.

use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::oneshot;

use crate::random;

/// argon2id cost parameters. The default is OWASP's first recommendation: 19 MiB, t=2, p=1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for HashParams {
    fn default() -> Self {
        Self { memory_kib: 19 * 1024, iterations: 2, parallelism: 1 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("too many password checks are waiting; try again shortly")]
    Busy,
    #[error("invalid argon2 parameters: {0}")]
    Params(String),
    #[error("password hashing failed")]
    Failed,
}

type Job = Box<dyn FnOnce() + Send>;

/// A handle on the hashing pool; clones share it.
#[derive(Clone)]
pub struct PasswordHasher {
    jobs: SyncSender<Job>,
    argon2: Arc<Argon2<'static>>,
    dummy_hash: Arc<str>,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher").finish_non_exhaustive()
    }
}

impl PasswordHasher {
    /// Starts `threads` hashing threads with room for `queue` waiting jobs.
    pub fn start(params: HashParams, threads: usize, queue: usize) -> Result<Self, HashError> {
        let params = Params::new(params.memory_kib, params.iterations, params.parallelism, None)
            .map_err(|e| HashError::Params(e.to_string()))?;
        let argon2 = Arc::new(Argon2::new(Algorithm::Argon2id, Version::V0x13, params));
        let (jobs, rx) = std::sync::mpsc::sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("tessera-hash-{i}"))
                .spawn(move || {
                    lower_priority();
                    loop {
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })
                .map_err(|_| HashError::Failed)?;
        }
        let dummy_hash = hash_with(&argon2, &random::bytes::<16>().map(|b| b % 26 + b'a'))?;
        Ok(Self { jobs, argon2, dummy_hash: dummy_hash.into() })
    }

    /// A PHC-format argon2id hash of `password` with a fresh random salt.
    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        let argon2 = self.argon2.clone();
        self.run(move || hash_with(&argon2, password.as_bytes())).await?
    }

    /// Whether `password` matches `hash`; with no hash (unknown user) it checks against the
    /// dummy hash and answers `false`, spending the same time.
    pub async fn verify(&self, password: String, hash: Option<String>) -> Result<bool, HashError> {
        let argon2 = self.argon2.clone();
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy_hash.to_string());
        let matches = self
            .run(move || {
                PasswordHash::new(&hash)
                    .is_ok_and(|parsed| argon2.verify_password(password.as_bytes(), &parsed).is_ok())
            })
            .await?;
        Ok(known && matches)
    }

    async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, HashError> {
        let (tx, rx) = oneshot::channel();
        let span = tracing::Span::current();
        let job: Job = Box::new(move || {
            let _entered = span.enter();
            let _ = tx.send(f());
        });
        match self.jobs.try_send(job) {
            Ok(()) => rx.await.map_err(|_| HashError::Failed),
            Err(TrySendError::Full(_)) => Err(HashError::Busy),
            Err(TrySendError::Disconnected(_)) => Err(HashError::Failed),
        }
    }
}

fn hash_with(argon2: &Argon2<'_>, password: &[u8]) -> Result<String, HashError> {
    let salt = SaltString::encode_b64(&random::bytes::<16>()).map_err(|_| HashError::Failed)?;
    argon2.hash_password(password, &salt).map(|h| h.to_string()).map_err(|_| HashError::Failed)
}

/// Lowers the calling thread's scheduling priority. On Linux the nice value is per thread.
#[allow(unsafe_code)]
fn lower_priority() {
    // SAFETY: setpriority has no memory-safety preconditions; `who = 0` is the calling thread.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) };
    if rc != 0 {
        tracing::debug!("could not lower the priority of a hashing thread");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> HashParams {
        HashParams { memory_kib: 1024, iterations: 1, parallelism: 1 }
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_nothing_else() {
        let hasher = PasswordHasher::start(cheap(), 1, 8).unwrap();
        let hash = hasher.hash("correct horse".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{hash}");
        assert!(hasher.verify("correct horse".into(), Some(hash.clone())).await.unwrap());
        assert!(!hasher.verify("correct horsf".into(), Some(hash)).await.unwrap());
    }

    #[tokio::test]
    async fn an_unknown_user_never_verifies() {
        let hasher = PasswordHasher::start(cheap(), 1, 8).unwrap();
        assert!(!hasher.verify(String::new(), None).await.unwrap());
        assert!(!hasher.verify("anything".into(), Some("not a hash".into())).await.unwrap());
    }

    #[test]
    fn default_parameters_are_owasps() {
        assert_eq!(HashParams::default(), HashParams { memory_kib: 19_456, iterations: 2, parallelism: 1 });
    }

    #[tokio::test]
    async fn a_full_queue_answers_busy_instead_of_waiting() {
        let hasher = PasswordHasher::start(HashParams::default(), 1, 1).unwrap();
        let mut attempts = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let hasher = hasher.clone();
            attempts.spawn(async move { hasher.verify("pw".into(), None).await });
        }
        let results = attempts.join_all().await;
        assert!(results.iter().any(|r| matches!(r, Err(HashError::Busy))));
        assert!(results.iter().any(|r| matches!(r, Ok(false))));
    }
}
