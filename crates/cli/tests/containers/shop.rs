//! Talking to the running shop from outside, as a customer and as an
//! operator: orders through the gateway, MongoDB read with a MongoDB client,
//! RabbitMQ's queues through its management API, and the services' own
//! counters.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mongodb::bson::{Document, doc};
use serde_json::{Value, json};

/// One order's outcome at the gateway.
#[derive(Debug, Clone)]
pub(crate) struct Placed {
    /// The HTTP status.
    pub(crate) status: u16,
    /// The order id, when it was created.
    pub(crate) id: Option<String>,
    /// Who placed it.
    pub(crate) customer: String,
}

/// A customer of the shop behind `base` (the gateway's URL).
#[derive(Debug, Clone)]
pub(crate) struct Shop {
    /// e.g. `http://127.0.0.1:8080`.
    pub(crate) base: String,
    /// One pooled client for every request.
    pub(crate) client: reqwest::Client,
}

impl Shop {
    /// The shop at `base`.
    pub(crate) fn new(base: &str) -> Self {
        Self {
            base: base.to_owned(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("a client"),
        }
    }

    /// Logs a demo user in and returns the token.
    pub(crate) async fn login(&self, user: &str, password: &str) -> String {
        let res = self
            .client
            .post(format!("{}/api/auth/login", self.base))
            .json(&json!({"username": user, "password": password}))
            .send()
            .await
            .expect("the gateway answers a login");
        let status = res.status();
        let body: Value = res.json().await.unwrap_or_default();
        assert_eq!(status, 200, "login of {user}: {body}");
        body["token"]
            .as_str()
            .expect("a token in the login answer")
            .to_owned()
    }

    /// `POST /api/orders`, as `customer` when `token` is given, else as guest.
    pub(crate) async fn order(&self, token: Option<(&str, &str)>) -> Placed {
        let mut req = self
            .client
            .post(format!("{}/api/orders", self.base))
            .header("idempotency-key", uuid::Uuid::new_v4().to_string())
            .json(&json!({"items": [{"item": "laptop", "quantity": 1}]}));
        let customer = match token {
            Some((user, t)) => {
                req = req.bearer_auth(t);
                user.to_owned()
            }
            None => "guest".to_owned(),
        };
        match req.send().await {
            Ok(res) => {
                let status = res.status().as_u16();
                let body: Value = res.json().await.unwrap_or_default();
                Placed {
                    status,
                    id: body["id"].as_str().map(str::to_owned),
                    customer,
                }
            }
            Err(_) => Placed {
                status: 0,
                id: None,
                customer,
            },
        }
    }
}

/// Guest orders sent at a steady rate, whatever the answers, until stopped;
/// each request is its own task, so a slow answer does not slow the rate.
pub(crate) struct SteadyLoad {
    placed: Arc<Mutex<Vec<Placed>>>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl SteadyLoad {
    /// Starts `per_sec` guest orders a second against `shop`.
    pub(crate) fn start(shop: &Shop, per_sec: u32) -> Self {
        let placed = Arc::new(Mutex::new(Vec::new()));
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let shop = shop.clone();
        let sink = placed.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1) / per_sec);
            let mut requests = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let (shop, sink) = (shop.clone(), sink.clone());
                        requests.spawn(async move {
                            let p = shop.order(None).await;
                            sink.lock().expect("not poisoned").push(p);
                        });
                    }
                    _ = stopped.changed() => break,
                }
            }
            while requests.join_next().await.is_some() {}
        });
        Self { placed, stop, task }
    }

    /// Stops sending, waits for the answers in flight, and returns them all.
    pub(crate) async fn stop(self) -> Vec<Placed> {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        self.placed.lock().expect("not poisoned").clone()
    }
}

/// How many answers had each status, e.g. `{201: 398, 502: 2}`.
pub(crate) fn by_status(placed: &[Placed]) -> BTreeMap<u16, usize> {
    let mut m = BTreeMap::new();
    for p in placed {
        *m.entry(p.status).or_insert(0) += 1;
    }
    m
}

/// The ids of the orders answered 201.
pub(crate) fn created(placed: &[Placed]) -> Vec<String> {
    placed
        .iter()
        .filter(|p| p.status == 201)
        .filter_map(|p| p.id.clone())
        .collect()
}

/// The `orders` collection of the stack's MongoDB, read directly.
pub(crate) struct Orders {
    collection: mongodb::Collection<Document>,
}

impl Orders {
    /// Connects to the MongoDB at `host` (`ip:port`), database `db`.
    pub(crate) async fn connect(host: &str, db: &str) -> Self {
        let client = mongodb::Client::with_uri_str(format!(
            "mongodb://{host}/?directConnection=true&serverSelectionTimeoutMS=5000"
        ))
        .await
        .expect("a MongoDB client");
        Self {
            collection: client.database(db).collection("orders"),
        }
    }

    /// How many orders are stored.
    pub(crate) async fn count(&self) -> u64 {
        self.collection
            .count_documents(doc! {})
            .await
            .expect("MongoDB counts")
    }

    /// The stored orders among `ids`, by id: (customer, notification state).
    pub(crate) async fn find(&self, ids: &[String]) -> BTreeMap<String, (String, String)> {
        let mut out = BTreeMap::new();
        for chunk in ids.chunks(200) {
            let mut cursor = self
                .collection
                .find(doc! {"_id": {"$in": chunk.to_vec()}})
                .await
                .expect("MongoDB finds");
            while cursor.advance().await.expect("MongoDB reads") {
                let d = cursor.deserialize_current().expect("a document");
                let get = |k: &str| d.get_str(k).unwrap_or_default().to_owned();
                out.insert(get("_id"), (get("customer"), get("notification")));
            }
        }
        out
    }

    /// Waits until every order in `ids` is stored with notification state
    /// `state`; returns how long that took, or what was still missing.
    pub(crate) async fn wait_all(
        &self,
        ids: &[String],
        state: &str,
        deadline: Duration,
    ) -> Result<Duration, String> {
        let start = Instant::now();
        loop {
            let found = self.find(ids).await;
            let missing = ids.iter().filter(|i| !found.contains_key(*i)).count();
            let other = found.values().filter(|(_, s)| s != state).count();
            if missing == 0 && other == 0 {
                return Ok(start.elapsed());
            }
            if start.elapsed() > deadline {
                return Err(format!(
                    "after {deadline:?}: {missing} of {} orders not stored, {other} stored but not {state}",
                    ids.len()
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// RabbitMQ's management API.
pub(crate) struct Rabbit {
    base: String,
    client: reqwest::Client,
}

/// One queue's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueDepth {
    /// Ready to be delivered.
    pub(crate) ready: u64,
    /// Delivered, not yet acknowledged.
    pub(crate) unacked: u64,
    /// Consumers attached.
    pub(crate) consumers: u64,
}

impl Rabbit {
    /// The management API at `base` (e.g. `http://127.0.0.1:15672`).
    pub(crate) fn new(base: &str) -> Self {
        Self {
            base: base.to_owned(),
            client: reqwest::Client::new(),
        }
    }

    /// The counts of `queue` in vhost `/`, or `None` while it cannot be read.
    pub(crate) async fn queue(&self, queue: &str) -> Option<QueueDepth> {
        let v: Value = self
            .client
            .get(format!("{}/api/queues/%2F/{queue}", self.base))
            .basic_auth("guest", Some("guest"))
            .send()
            .await
            .ok()?
            .error_for_status()
            .ok()?
            .json()
            .await
            .ok()?;
        Some(QueueDepth {
            ready: v["messages_ready"].as_u64()?,
            unacked: v["messages_unacknowledged"].as_u64()?,
            consumers: v["consumers"].as_u64().unwrap_or(0),
        })
    }
}

/// notification-service's own account of what it delivered
/// (`GET /notifications`): sent, duplicates skipped, recent order ids.
pub(crate) async fn notifications(
    client: &reqwest::Client,
    base: &str,
) -> Option<(u64, u64, Vec<String>)> {
    let v: Value = client
        .get(format!("{base}/notifications"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let recent = v["recent"]
        .as_array()?
        .iter()
        .filter_map(|n| n["order_id"].as_str().map(str::to_owned))
        .collect();
    Some((v["sent"].as_u64()?, v["duplicates"].as_u64()?, recent))
}
