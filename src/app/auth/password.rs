//! Password hashing with argon2id (the crate's defaults: 19 MiB, 2 passes). Hashing costs tens of
//! milliseconds and 19 MiB on purpose, so it runs on its own threads, one per core: a burst of
//! sign-ins queues instead of multiplying memory, and sign-ins that cannot start within
//! [`QUEUE_PATIENCE`] are turned away (429) rather than piling up.

use std::cell::RefCell;
use std::sync::mpsc;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use subtle::ConstantTimeEq;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a sign-in waits for a hashing slot before it is refused as busy.
pub const QUEUE_PATIENCE: Duration = Duration::from_secs(2);

type Job = Box<dyn FnOnce() + Send>;

/// The hashing threads and one slot per thread. Dedicated threads, not the blocking pool: that
/// may run each hash on another thread, and the allocator keeps a hash's 19 MiB in each
/// thread's arena afterwards, so memory would grow with the number of threads ever used.
struct Hashers {
    jobs: Mutex<mpsc::Sender<Job>>,
    slots: Arc<Semaphore>,
}

static HASHERS: LazyLock<Hashers> = LazyLock::new(|| {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (tx, rx) = mpsc::channel::<Job>();
    let rx = Arc::new(Mutex::new(rx));
    for n in 0..threads {
        let rx = rx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("argon2-{n}"))
            .spawn(move || hash_thread(&rx));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start a password hashing thread");
        }
    }
    Hashers {
        jobs: Mutex::new(tx),
        slots: Arc::new(Semaphore::new(threads)),
    }
});

fn hash_thread(jobs: &Mutex<mpsc::Receiver<Job>>) {
    loop {
        let next = jobs.lock().unwrap_or_else(|e| e.into_inner()).recv();
        match next {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

/// Runs `f` on a hashing thread once `permit` is held; `None` if no thread could take it.
async fn on_hasher<T: Send + 'static>(
    permit: OwnedSemaphorePermit,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let _permit = permit;
        let _ = tx.send(f());
    });
    let sent = HASHERS
        .jobs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send(job);
    sent.ok()?;
    rx.await.ok()
}

/// Every hashing slot stayed taken for [`QUEUE_PATIENCE`].
#[derive(Debug, thiserror::Error)]
#[error("password checks are busy")]
pub struct Busy;

#[derive(Debug, thiserror::Error)]
#[error("cannot hash the password: {0}")]
pub struct HashError(String);

/// A PHC-format argon2id hash with a fresh random salt.
pub fn hash(password: &str) -> Result<String, HashError> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
        .map_err(|e| HashError(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError(e.to_string()))
}

/// Verified against when the email is unknown, so both failures cost the same. Any well-formed
/// hash with the default parameters does; nothing hashes to its output.
pub const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// Hashes needing more working memory than this (1 GiB) are refused as malformed rather than
/// allocated.
const MAX_BLOCKS: usize = 1 << 20;

thread_local! {
    /// This thread's argon2 working memory, kept between checks. Allocated per check, the
    /// allocator would keep up to three checks' worth in each thread's arena as its trim
    /// threshold grows; one buffer per hashing thread bounds it at 19 MiB a thread.
    static MEMORY: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// True when `password` matches `hash`; a malformed hash never matches.
pub fn verify(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .ok()
        .and_then(|h| matches(password, &h))
        .unwrap_or(false)
}

fn matches(password: &str, h: &PasswordHash) -> Option<bool> {
    let algorithm = Algorithm::try_from(h.algorithm).ok()?;
    let version = match h.version {
        Some(v) => Version::try_from(v).ok()?,
        None => Version::default(),
    };
    let params = Params::try_from(h).ok()?;
    let blocks = params.block_count();
    if blocks > MAX_BLOCKS {
        return None;
    }
    let expected = h.hash?;
    let mut salt = [0u8; 64];
    let salt = h.salt?.decode_b64(&mut salt).ok()?;
    let mut out = vec![0u8; expected.len()];
    let argon = Argon2::new(algorithm, version, params);
    MEMORY
        .with_borrow_mut(|memory| {
            if memory.len() < blocks {
                memory.resize(blocks, Block::default());
            }
            argon.hash_password_into_with_memory(
                password.as_bytes(),
                salt,
                &mut out,
                &mut memory[..blocks],
            )
        })
        .ok()?;
    Some(expected.as_bytes().ct_eq(&out).into())
}

async fn slot() -> Result<OwnedSemaphorePermit, HashError> {
    HASHERS
        .slots
        .clone()
        .acquire_owned()
        .await
        .map_err(|e| HashError(e.to_string()))
}

/// Runs `hash` on a hashing thread (waiting as long as it takes: only signed-in users set
/// passwords).
pub async fn hash_blocking(password: String) -> Result<String, HashError> {
    let permit = slot().await?;
    on_hasher(permit, move || hash(&password))
        .await
        .unwrap_or_else(|| Err(HashError("no hashing thread is running".to_owned())))
}

/// Runs `verify` on a hashing thread, or answers [`Busy`] when no slot frees up within
/// [`QUEUE_PATIENCE`].
pub async fn verify_blocking(password: String, hash: String) -> Result<bool, Busy> {
    let permit = tokio::time::timeout(QUEUE_PATIENCE, slot())
        .await
        .map_err(|_| Busy)?
        .map_err(|_| Busy)?;
    on_hasher(permit, move || verify(&password, &hash))
        .await
        .ok_or(Busy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_are_salted() {
        let a = hash("correct horse").unwrap();
        let b = hash("correct horse").unwrap();
        assert!(a.starts_with("$argon2id$"));
        assert_ne!(a, b);
        assert!(verify("correct horse", &a));
        assert!(!verify("wrong horse", &a));
        assert!(!verify("correct horse", "not a hash"));
        assert!(!verify("anything", DUMMY_HASH));
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
    }
}
