//! Workshop fault 6, measured on the real binary: under a burst of logins
//! auth-service's resident memory peaks between 64 MiB and 110 MiB. A 64Mi
//! limit is therefore an OOM kill waiting for traffic, and 128Mi is enough.
//!
//! The peak comes from argon2id: each concurrent hash holds 19 MiB of work
//! memory, and `AUTH_HASH_CONCURRENCY` (default 4) of them run at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use cloudmart_testkit::ServiceProcess;

fn kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_login_burst_peaks_between_64_and_110_mib() {
    let (auth, port) = ServiceProcess::start_healthy(
        env!("CARGO_BIN_EXE_auth-service"),
        &[("LOGIN_MAX_PER_CLIENT", "0")],
    )
    .await;
    let idle = kib(auth.pid(), "VmRSS:");

    // Sixteen clients log in back to back for three seconds: more than
    // AUTH_HASH_CONCURRENCY at once, as the load generator's logins are when
    // auth is throttled by its CPU limit.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/auth/login");
    let workers: Vec<_> = (0..16)
        .map(|i| {
            let (stop, ok, client, url) = (stop.clone(), ok.clone(), client.clone(), url.clone());
            tokio::spawn(async move {
                let (user, password) = if i % 2 == 0 {
                    ("alice", "alice-secret")
                } else {
                    ("bob", "bob-secret")
                };
                while !stop.load(Ordering::Relaxed) {
                    let body = serde_json::json!({"username": user, "password": password});
                    if let Ok(r) = client.post(&url).json(&body).send().await
                        && r.status() == 200
                    {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }
    let peak_mib = kib(auth.pid(), "VmHWM:") as f64 / 1024.0;
    eprintln!(
        "auth-service: idle {:.1} MiB, peak {peak_mib:.1} MiB after {} logins",
        idle as f64 / 1024.0,
        ok.load(Ordering::Relaxed)
    );

    assert!(
        ok.load(Ordering::Relaxed) >= 16,
        "logins must succeed during the burst"
    );
    assert!(
        idle < 64 * 1024,
        "idle RSS {idle} KiB is already over 64 MiB"
    );
    assert!(
        peak_mib > 64.0,
        "peak {peak_mib:.1} MiB: a 64Mi limit would not be exceeded"
    );
    assert!(
        peak_mib < 110.0,
        "peak {peak_mib:.1} MiB: more than the 110 MiB budget under a 128Mi limit"
    );
}
