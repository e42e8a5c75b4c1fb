//! Durable acknowledgements, with the real binary: SIGKILL during a steady
//! load, on the embedded store and on MongoDB, then a restart. Every order
//! answered 201 is there, and no order is stored twice. And a disk that
//! refuses writes gives 503s, never a 201.

use std::collections::HashSet;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use cloudmart_testkit::servers::require_mongodb;
use cloudmart_testkit::{ServiceProcess, TempDir, wait_until};
use serde_json::{Value, json};
use tokio::sync::Mutex;

const BIN: &str = env!("CARGO_BIN_EXE_database-service");
/// Clients sending orders at once during the load.
const CLIENTS: usize = 8;

fn order(tag: &str, n: usize) -> Value {
    json!({
        "id": format!("{tag}-{n}"),
        "customer": "guest",
        "items": [{"item": "laptop", "quantity": 1}],
        "idempotency_key": format!("{tag}-key-{n}"),
    })
}

/// What a load run saw.
#[derive(Default)]
struct Seen {
    /// Ids answered 201 or 200.
    acknowledged: Vec<String>,
    /// Requests sent and not answered when the process died.
    in_flight: usize,
}

/// Sends orders from [`CLIENTS`] loops until the service dies; kills it
/// with SIGKILL once `kill_after` orders were acknowledged.
async fn load_then_kill(process: &ServiceProcess, port: u16, tag: &str, kill_after: usize) -> Seen {
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/orders");
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let next = Arc::new(AtomicUsize::new(0));
    let sending = Arc::new(AtomicUsize::new(0));
    let dead = Arc::new(AtomicBool::new(false));
    let mut loops = Vec::new();
    for _ in 0..CLIENTS {
        let (client, url, tag) = (client.clone(), url.clone(), tag.to_owned());
        let (acknowledged, next, sending, dead) = (
            acknowledged.clone(),
            next.clone(),
            sending.clone(),
            dead.clone(),
        );
        loops.push(tokio::spawn(async move {
            while !dead.load(Ordering::SeqCst) {
                let n = next.fetch_add(1, Ordering::SeqCst);
                sending.fetch_add(1, Ordering::SeqCst);
                let answer = client
                    .post(&url)
                    .json(&order(&tag, n))
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                if let Ok(r) = answer
                    && r.status().is_success()
                {
                    acknowledged.lock().await.push(format!("{tag}-{n}"));
                }
                sending.fetch_sub(1, Ordering::SeqCst);
            }
        }));
    }
    let enough = wait_until(Duration::from_secs(20), || async {
        (acknowledged.lock().await.len() >= kill_after).then_some(())
    })
    .await;
    assert!(
        enough.is_some(),
        "the load never got going:\n{}",
        process.output()
    );
    let in_flight = sending.load(Ordering::SeqCst);
    process.signal("KILL").unwrap();
    dead.store(true, Ordering::SeqCst);
    for l in loops {
        let _ = l.await;
    }
    let acknowledged = acknowledged.lock().await.clone();
    Seen {
        acknowledged,
        in_flight,
    }
}

/// Every id in `acknowledged` answers 200.
async fn each_answers(port: u16, acknowledged: &[String]) {
    let client = reqwest::Client::new();
    for id in acknowledged {
        let r = client
            .get(format!("http://127.0.0.1:{port}/orders/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "acknowledged order {id} is gone");
    }
}

/// Every id in `acknowledged` answers 200, and the listing holds each id
/// and each idempotency key once.
async fn all_there_once(port: u16, acknowledged: &[String]) -> usize {
    each_answers(port, acknowledged).await;
    let client = reqwest::Client::new();
    let (mut ids, mut keys) = (HashSet::new(), HashSet::new());
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("http://127.0.0.1:{port}/orders?limit=100");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = client.get(url).send().await.unwrap().json().await.unwrap();
        for o in page["orders"].as_array().unwrap() {
            let id = o["id"].as_str().unwrap().to_owned();
            assert!(ids.insert(id.clone()), "order {id} is stored twice");
            let key = o["idempotency_key"].as_str().unwrap().to_owned();
            assert!(keys.insert(key.clone()), "key {key} is stored twice");
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    ids.len()
}

/// The ids and keys in a MongoDB collection, each checked to be there
/// once, read straight from the collection: the nx-27017 stand-in compares
/// RFC 3339 strings wrongly in filters, so its listing pages are unreliable
/// when many orders share a millisecond (real MongoDB's are not).
async fn all_in_mongodb_once(uri: &str, db: &str, acknowledged: &[String]) -> usize {
    use futures::TryStreamExt;
    let client = mongodb::Client::with_uri_str(uri).await.unwrap();
    let docs: Vec<mongodb::bson::Document> = client
        .database(db)
        .collection::<mongodb::bson::Document>("orders")
        .find(mongodb::bson::doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let (mut ids, mut keys) = (HashSet::new(), HashSet::new());
    for d in &docs {
        let id = d.get_str("id").unwrap().to_owned();
        assert!(ids.insert(id.clone()), "order {id} is stored twice");
        let key = d.get_str("idempotency_key").unwrap().to_owned();
        assert!(keys.insert(key.clone()), "key {key} is stored twice");
    }
    for id in acknowledged {
        assert!(ids.contains(id), "acknowledged order {id} is gone");
    }
    ids.len()
}

/// Two rounds of load and SIGKILL on the same data, then a check of both:
/// through the service, and straight in MongoDB when `mongo` names it.
async fn kill_twice_and_check(env: &[(&str, &str)], label: &str, mongo: Option<(&str, &str)>) {
    let mut acknowledged = Vec::new();
    for round in ["first", "second"] {
        let (mut db, port) = ServiceProcess::start_healthy(BIN, env).await;
        let seen = load_then_kill(&db, port, round, 300).await;
        db.wait_exit(Duration::from_secs(5))
            .expect("SIGKILL ends it");
        eprintln!(
            "{label}, {round} SIGKILL: {} orders acknowledged, {} in flight at the kill",
            seen.acknowledged.len(),
            seen.in_flight
        );
        acknowledged.extend(seen.acknowledged);
    }
    let (mut db, port) = ServiceProcess::start_healthy(BIN, env).await;
    let stored = match mongo {
        Some((uri, name)) => {
            each_answers(port, &acknowledged).await;
            all_in_mongodb_once(uri, name, &acknowledged).await
        }
        None => all_there_once(port, &acknowledged).await,
    };
    eprintln!(
        "{label}: after two SIGKILLs all {} acknowledged orders are there, {stored} stored, none twice",
        acknowledged.len()
    );
    db.signal("TERM").unwrap();
    db.wait_exit(Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_keeps_every_acknowledged_order_through_sigkill() {
    let dir = TempDir::new("db-kill");
    let data = dir.to_env();
    kill_twice_and_check(
        &[("DB_NAME", "kill"), ("DATA_DIR", data.as_str())],
        "embedded",
        None,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_store_keeps_every_acknowledged_order_through_sigkill() {
    let test = "mongodb_store_keeps_every_acknowledged_order_through_sigkill";
    let Some(uri) = require_mongodb(test) else {
        return;
    };
    let db_name = format!("kill_{}", std::process::id());
    kill_twice_and_check(
        &[("DB_NAME", db_name.as_str()), ("MONGODB_URI", uri.as_str())],
        "MongoDB",
        Some((uri.as_str(), db_name.as_str())),
    )
    .await;
    if let Ok(client) = mongodb::Client::with_uri_str(&uri).await {
        let _ = client.database(&db_name).drop().await;
    }
}

/// A small tmpfs mounted for one test, unmounted when dropped.
struct TinyDisk {
    dir: TempDir,
}

impl TinyDisk {
    /// `None` (after a SKIPPED line, or a panic under CI) when this
    /// machine will not mount one for us.
    fn mount(test: &str, size: &str) -> Option<Self> {
        let dir = TempDir::new("db-full");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if mounted {
            return Some(Self { dir });
        }
        let msg = format!("{test}: cannot mount a tmpfs here (needs root)");
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{msg}");
        }
        eprintln!("SKIPPED: {msg}");
        None
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[tokio::test]
async fn a_full_disk_answers_503_never_201_and_writes_resume_when_space_returns() {
    let test = "a_full_disk_answers_503_never_201_and_writes_resume_when_space_returns";
    let Some(disk) = TinyDisk::mount(test, "64k") else {
        return;
    };
    let data = disk.dir.to_env();
    let (mut db, port) =
        ServiceProcess::start_healthy(BIN, &[("DB_NAME", "full"), ("DATA_DIR", data.as_str())])
            .await;
    let client = reqwest::Client::new();
    let post = |n: usize| {
        client
            .post(format!("http://127.0.0.1:{port}/orders"))
            .json(&order("full", n))
            .send()
    };
    // Fill the disk up with something else.
    let filler = disk.dir.path().join("filler");
    let _ = std::fs::write(&filler, vec![b'x'; 64 * 1024]);

    let mut refused = None;
    let mut acknowledged = Vec::new();
    for n in 0..200 {
        let r = post(n).await.unwrap();
        match r.status().as_u16() {
            201 => acknowledged.push(format!("full-{n}")),
            503 => {
                let body: Value = r.json().await.unwrap();
                refused = Some((n, body));
                break;
            }
            other => panic!("order {n}: {other} {}", r.text().await.unwrap_or_default()),
        }
    }
    let (n, body) = refused.expect("a full disk must refuse a write");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("No space left"), "{message}");
    let missing = client
        .get(format!("http://127.0.0.1:{port}/orders/full-{n}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        missing.status(),
        404,
        "a refused order must not be readable"
    );

    std::fs::remove_file(&filler).unwrap();
    let again = post(n).await.unwrap();
    assert_eq!(again.status(), 201, "writes resume once there is room");
    acknowledged.push(format!("full-{n}"));
    db.signal("TERM").unwrap();
    db.wait_exit(Duration::from_secs(10)).expect("stops");

    // The file holds whole lines only: every acknowledged order replays.
    let (mut db, port) =
        ServiceProcess::start_healthy(BIN, &[("DB_NAME", "full"), ("DATA_DIR", data.as_str())])
            .await;
    let stored = all_there_once(port, &acknowledged).await;
    assert_eq!(stored, acknowledged.len(), "{}", db.output());
    db.signal("TERM").unwrap();
    db.wait_exit(Duration::from_secs(10));
}
