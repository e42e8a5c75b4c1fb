//! Password hashing off the async threads, with bounded concurrency and
//! bounded memory.
//!
//! argon2id at its default parameters (OWASP's m=19456 KiB, t=2, p=1) takes
//! about 15 ms of one core and 19 MiB of work memory per hash. Running it on
//! a tokio worker would stall every other request on that worker, so each
//! hash goes to the blocking pool, and a semaphore keeps at most
//! `AUTH_HASH_CONCURRENCY` of them running at once.
//!
//! The work memory comes from a pool of buffers that are allocated once and
//! reused. Letting argon2 allocate 19 MiB per call from many blocking
//! threads makes the allocator keep a freed buffer per arena: a login burst
//! grew a debug auth-service to 600 MiB that way. With the pool, memory is
//! exactly `AUTH_HASH_CONCURRENCY` x 19 MiB at peak, which is also what a
//! memory limit has to leave room for.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{ARGON2ID_IDENT, Algorithm, Argon2, Block, Params, Version};
use cloudmart_http::metrics::InFlight;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::sync::Semaphore;
use tracing::Instrument;

/// A hash of a fixed password, verified against when the user is unknown so
/// that unknown and known names cost the same time.
const DECOY_PASSWORD: &str = "cloudmart-decoy-password";

/// Reusable argon2 work memory; never more buffers than permits.
#[derive(Default)]
struct Pool {
    free: Mutex<Vec<Vec<Block>>>,
}

impl Pool {
    fn take(&self, blocks: usize) -> Vec<Block> {
        let reused = self
            .free
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        let mut memory = reused.unwrap_or_default();
        if memory.len() < blocks {
            memory.resize(blocks, Block::new());
        }
        memory
    }

    fn give_back(&self, memory: Vec<Block>) {
        self.free
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(memory);
    }
}

/// Hashes and verifies passwords on the blocking pool.
#[derive(Clone)]
pub struct Hasher {
    concurrency: usize,
    permits: Arc<Semaphore>,
    pool: Arc<Pool>,
    inflight: Gauge,
    duration: Histogram,
    decoy: Arc<std::sync::OnceLock<String>>,
}

impl Hasher {
    /// A hasher running at most `concurrency` hashes at once.
    pub fn new(concurrency: usize, registry: &mut Registry) -> Self {
        let inflight = Gauge::default();
        let duration = Histogram::new([0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]);
        registry.register(
            "auth_hash_inflight",
            "Password hashes running now (each holds 19 MiB)",
            inflight.clone(),
        );
        registry.register(
            "auth_hash_duration_seconds",
            "Time to hash or verify one password, waiting included",
            duration.clone(),
        );
        Self {
            concurrency,
            permits: Arc::new(Semaphore::new(concurrency)),
            pool: Arc::new(Pool::default()),
            inflight,
            duration,
            decoy: Arc::new(std::sync::OnceLock::new()),
        }
    }

    /// Runs `work` on the blocking pool inside an "argon2 {what}" span that
    /// shows what each hash costs: its memory (19 MiB at the default
    /// parameters), how many hashes were running with it, and how long it
    /// waited for one of the `AUTH_HASH_CONCURRENCY` slots.
    async fn run<T, F>(&self, what: &'static str, work: F) -> Result<T, String>
    where
        T: Send + 'static,
        F: FnOnce(&Pool) -> Result<T, String> + Send + 'static,
    {
        let started = Instant::now();
        let span = tracing::info_span!(
            "argon2",
            otel.name = %format!("argon2 {what}"),
            auth.hash.concurrency = i64::try_from(self.concurrency).unwrap_or(i64::MAX),
            auth.hash.inflight = tracing::field::Empty,
            auth.hash.wait_ms = tracing::field::Empty,
            argon2.memory_kib = tracing::field::Empty,
            argon2.iterations = tracing::field::Empty,
            argon2.parallelism = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .instrument(span.clone())
            .await
            .map_err(|_| "the hashing pool is closed".to_owned())?;
        span.record(
            "auth.hash.wait_ms",
            i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX),
        );
        let pool = self.pool.clone();
        let inflight = InFlight::enter(&self.inflight);
        span.record("auth.hash.inflight", self.inflight.get());
        // The permit moves into the blocking task: if the request is dropped
        // (client gone, timeout), the hash still runs to the end and keeps
        // its permit, so the bound on concurrent hashes, and on their memory,
        // holds even under cancellation.
        let result = tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let result = work(&pool);
            if result.is_err() {
                span.record("otel.status_code", "ERROR");
            }
            drop(inflight);
            drop(permit);
            result
        })
        .await;
        self.duration.observe(started.elapsed().as_secs_f64());
        result.map_err(|e| format!("a hashing task failed: {e}"))?
    }

    /// The PHC string of `password` with a fresh salt.
    pub async fn hash(&self, password: String) -> Result<String, String> {
        self.run("hash", move |pool| hash_with(pool, &password))
            .await
    }

    /// Whether `password` matches `stored`; with no stored hash, verifies
    /// against a decoy and returns false.
    pub async fn verify(&self, password: String, stored: Option<String>) -> Result<bool, String> {
        let decoy = self.decoy.clone();
        self.run("verify", move |pool| {
            let (phc, real) = match stored {
                Some(s) => (s, true),
                None => (decoy_hash(pool, &decoy)?, false),
            };
            Ok(verify_with(pool, &password, &phc)? && real)
        })
        .await
    }
}

/// Puts the cost of a hash on the current ("argon2 ...") span.
fn record_params(params: &Params) {
    let span = tracing::Span::current();
    // i64: tracing-opentelemetry exports other integer types as strings.
    span.record("argon2.memory_kib", i64::from(params.m_cost()));
    span.record("argon2.iterations", i64::from(params.t_cost()));
    span.record("argon2.parallelism", i64::from(params.p_cost()));
}

fn argon2id(params: Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes with OWASP's parameters into a PHC string, using pooled memory.
fn hash_with(pool: &Pool, password: &str) -> Result<String, String> {
    let params = Params::default();
    record_params(&params);
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_buf = [0u8; 64];
    let salt_bytes = salt
        .as_salt()
        .decode_b64(&mut salt_buf)
        .map_err(|e| format!("salt: {e}"))?;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    let mut memory = pool.take(params.block_count());
    let result = argon2id(params.clone()).hash_password_into_with_memory(
        password.as_bytes(),
        salt_bytes,
        &mut out,
        &mut memory[..params.block_count()],
    );
    pool.give_back(memory);
    result.map_err(|e| format!("hashing failed: {e}"))?;
    let phc = PasswordHash {
        algorithm: ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| format!("params: {e}"))?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| format!("output: {e}"))?),
    };
    Ok(phc.to_string())
}

/// Checks `password` against a stored argon2id PHC string, using pooled memory.
fn verify_with(pool: &Pool, password: &str, phc: &str) -> Result<bool, String> {
    let parsed = PasswordHash::new(phc).map_err(|e| format!("stored hash is unreadable: {e}"))?;
    if parsed.algorithm != ARGON2ID_IDENT {
        return Err(format!(
            "stored hash uses {}, not argon2id",
            parsed.algorithm
        ));
    }
    let params = Params::try_from(&parsed).map_err(|e| format!("stored hash parameters: {e}"))?;
    record_params(&params);
    let version = Version::try_from(parsed.version.unwrap_or(0x13))
        .map_err(|e| format!("stored hash version: {e}"))?;
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return Err("stored hash has no salt or output".to_owned());
    };
    let mut salt_buf = [0u8; 64];
    let salt_bytes = salt
        .decode_b64(&mut salt_buf)
        .map_err(|e| format!("salt: {e}"))?;
    let mut out = vec![0u8; expected.len()];
    let blocks = params.block_count();
    let mut memory = pool.take(blocks);
    let result = Argon2::new(Algorithm::Argon2id, version, params).hash_password_into_with_memory(
        password.as_bytes(),
        salt_bytes,
        &mut out,
        &mut memory[..blocks],
    );
    pool.give_back(memory);
    result.map_err(|e| format!("verifying failed: {e}"))?;
    // Output's equality is constant-time.
    Ok(Output::new(&out).map_err(|e| format!("output: {e}"))? == expected)
}

fn decoy_hash(pool: &Pool, cell: &std::sync::OnceLock<String>) -> Result<String, String> {
    if let Some(h) = cell.get() {
        return Ok(h.clone());
    }
    let h = hash_with(pool, DECOY_PASSWORD)?;
    Ok(cell.get_or_init(|| h).clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_use_owasp_parameters() {
        let mut registry = Registry::default();
        let h = Hasher::new(2, &mut registry);
        let phc = h.hash("correct horse".to_owned()).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(
            h.verify("correct horse".to_owned(), Some(phc.clone()))
                .await
                .unwrap()
        );
        assert!(!h.verify("wrong".to_owned(), Some(phc)).await.unwrap());
        assert!(
            !h.verify("cloudmart-decoy-password".to_owned(), None)
                .await
                .unwrap()
        );
    }
}
