//! Password hashing with argon2id on a pool of its own.
//!
//! A hash costs tens of milliseconds of CPU by design. Running it on the async workers would
//! let a flood of logins stall every other request, so hashing runs on dedicated threads, one
//! per core, at a lower scheduling priority (nice 10): they use whatever CPU is idle, and token
//! refresh and `/me` preempt them. The queue in front of the pool is bounded; when it is full
//! the caller is told to come back later rather than being queued without limit.
//!
//! Each hashing thread owns one argon2 working buffer and reuses it for every hash, so the pool's
//! memory is `threads × memory cost` (38 MiB with the defaults on two cores) however many logins
//! pass through it: allocating 19 MiB per hash lets the C allocator keep every freed buffer.
//!
//! Unknown emails are checked against a dummy hash made with the same parameters, so they cost
//! the same time as a wrong password.

use std::cell::RefCell;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
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

/// Stored hashes asking for more memory than this are refused rather than honoured.
const MAX_MEMORY_KIB: u32 = 1024 * 1024;
const OUTPUT_LEN: usize = 32;

thread_local! {
    /// The argon2 working memory of a hashing thread, reused by every hash it computes.
    static WORK: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// A handle on the hashing pool; clones share it.
#[derive(Clone)]
pub struct PasswordHasher {
    jobs: SyncSender<Job>,
    params: Params,
    dummy_hash: Arc<OnceLock<String>>,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher").finish_non_exhaustive()
    }
}

impl PasswordHasher {
    /// Starts `threads` hashing threads with room for `queue` waiting jobs.
    pub fn start(params: HashParams, threads: usize, queue: usize) -> Result<Self, HashError> {
        if params.memory_kib > MAX_MEMORY_KIB {
            return Err(HashError::Params(format!("memory cost above {MAX_MEMORY_KIB} KiB")));
        }
        let params = Params::new(params.memory_kib, params.iterations, params.parallelism, Some(OUTPUT_LEN))
            .map_err(|e| HashError::Params(e.to_string()))?;
        let (jobs, rx) = std::sync::mpsc::sync_channel::<Job>(queue.max(1));
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
        let hasher = Self { jobs, params, dummy_hash: Arc::default() };
        // Made on the pool ahead of the first login; a login that comes sooner waits for it.
        let (dummy, p) = (hasher.dummy_hash.clone(), hasher.params.clone());
        hasher.jobs.try_send(Box::new(move || _ = init_dummy(&dummy, &p))).map_err(|_| HashError::Failed)?;
        Ok(hasher)
    }

    /// A PHC-format argon2id hash of `password` with a fresh random salt.
    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        let params = self.params.clone();
        self.run(move || hash_phc(&params, password.as_bytes())).await?
    }

    /// Whether `password` matches `hash`; with no hash (unknown user) it checks against the
    /// dummy hash and answers `false`, spending the same time.
    pub async fn verify(&self, password: String, hash: Option<String>) -> Result<bool, HashError> {
        let known = hash.is_some();
        let (dummy, params) = (self.dummy_hash.clone(), self.params.clone());
        let matches = self
            .run(move || {
                let phc = hash.unwrap_or_else(|| init_dummy(&dummy, &params).to_owned());
                verify_phc(&phc, password.as_bytes())
            })
            .await?;
        Ok(known && matches)
    }

    async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, HashError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        match self.jobs.try_send(job) {
            Ok(()) => rx.await.map_err(|_| HashError::Failed),
            Err(TrySendError::Full(_)) => Err(HashError::Busy),
            Err(TrySendError::Disconnected(_)) => Err(HashError::Failed),
        }
    }
}

fn init_dummy<'a>(dummy: &'a OnceLock<String>, params: &Params) -> &'a str {
    dummy.get_or_init(|| {
        let password = random::bytes::<16>();
        hash_phc(params, &password).unwrap_or_default()
    })
}

/// argon2id of `password` under `salt` into `out`, in this thread's reusable working memory.
fn compute(
    argon2: &Argon2<'_>,
    block_count: usize,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> Result<(), HashError> {
    WORK.with_borrow_mut(|work| {
        if work.len() < block_count {
            work.resize(block_count, Block::new());
        }
        argon2
            .hash_password_into_with_memory(password, salt, out, &mut work[..block_count])
            .map_err(|_| HashError::Failed)
    })
}

fn hash_phc(params: &Params, password: &[u8]) -> Result<String, HashError> {
    let salt_bytes = random::bytes::<16>();
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|_| HashError::Failed)?;
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut out = [0u8; OUTPUT_LEN];
    compute(&argon2, params.block_count(), password, &salt_bytes, &mut out)?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(|_| HashError::Failed)?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|_| HashError::Failed)?),
    };
    Ok(phc.to_string())
}

/// Recomputes the stored hash's argon2 with its own parameters and compares in constant time.
fn verify_phc(phc: &str, password: &[u8]) -> bool {
    let check = || -> Option<bool> {
        let parsed = PasswordHash::new(phc).ok()?;
        let algorithm = Algorithm::try_from(parsed.algorithm).ok()?;
        let version = parsed.version.map_or(Ok(Version::V0x13), Version::try_from).ok()?;
        let params = Params::try_from(&parsed).ok()?;
        let expected = parsed.hash?;
        if params.m_cost() > MAX_MEMORY_KIB {
            return None;
        }
        let mut salt_buf = [0u8; 64];
        let salt = parsed.salt?.decode_b64(&mut salt_buf).ok()?;
        let mut out = vec![0u8; expected.len()];
        let argon2 = Argon2::new(algorithm, version, params.clone());
        compute(&argon2, params.block_count(), password, salt, &mut out).ok()?;
        Some(Output::new(&out).ok()? == expected)
    };
    check().unwrap_or(false)
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
    fn hashes_interoperate_with_the_argon2_crate() {
        use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
        let params = Params::new(1024, 1, 1, Some(OUTPUT_LEN)).unwrap();
        let ours = hash_phc(&params, b"interop").unwrap();
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
        argon2.verify_password(b"interop", &PasswordHash::new(&ours).unwrap()).expect("the crate accepts our hash");
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let theirs = argon2.hash_password(b"interop", &salt).unwrap();
        assert!(verify_phc(&theirs.to_string(), b"interop"));
        assert!(!verify_phc(&theirs.to_string(), b"interoq"));
    }

    #[test]
    fn default_parameters_are_owasps() {
        assert_eq!(HashParams::default(), HashParams { memory_kib: 19_456, iterations: 2, parallelism: 1 });
    }

    #[tokio::test]
    async fn a_full_queue_answers_busy_instead_of_waiting() {
        // Room for the warm-up job and one more.
        let hasher = PasswordHasher::start(HashParams::default(), 1, 2).unwrap();
        // Once this returns the warm-up is done and the pool idle.
        assert!(!hasher.verify("pw".into(), None).await.unwrap());
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
