//! A server that stops answering for a second must show up as a second of
//! latency on every request that came due meanwhile, with no sample
//! missing: the coordinated-omission check.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::helpers::{Reply, run_with_deadline, show, spawn_server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_second_stall_shows_as_latency_not_as_missing_samples() {
    // Arrange: answers at once, except that request 100 (about 1 s into a
    // 100/s run) starts a 1 s stall: it and every request arriving before
    // the stall ends wait until then.
    let stall = Duration::from_secs(1);
    let stall_until: Mutex<Option<Instant>> = Mutex::new(None);
    let server = spawn_server(move |n| {
        let now = Instant::now();
        let mut until = stall_until.lock().unwrap();
        if n == 100 {
            *until = Some(now + stall);
        }
        let wait = until.map_or(Duration::ZERO, |u| u.saturating_duration_since(now));
        Reply::created_after(u64::try_from(wait.as_millis()).unwrap())
    })
    .await;
    let config = server.config(100.0, Duration::from_secs(3));

    // Act
    let report = run_with_deadline(&config).await;
    show("stall", &report);

    // Assert: all 300 scheduled requests are samples, all answered.
    assert_eq!(report.scheduled, 300);
    assert_eq!(report.latency_ms.count, 300);
    assert_eq!(report.statuses.get("201"), Some(&300));
    assert_eq!(report.dropped, 0);
    // The first stalled request waited the whole second.
    let l = report.latency_ms;
    assert!(l.max >= 999.0 && l.max <= 1_100.0, "max {} ms", l.max);
    // About 100 requests came due during the stall, waiting from ~1000 ms
    // down to ~0 ms. So the top 1% (3 samples) are all close to 1 s, and
    // the top 10% (30 samples) are all above ~700 ms. A closed-loop client
    // would have sent one request during the stall and shown a p90 of a
    // few ms.
    assert!(l.p99 >= 900.0, "p99 {} ms", l.p99);
    assert!(l.p90 >= 500.0, "p90 {} ms", l.p90);
    assert!(
        l.p50 < 50.0,
        "p50 {} ms: most requests were not stalled",
        l.p50
    );
}
