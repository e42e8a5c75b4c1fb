//! The MongoDB store: [`MongoStore`], used when `MONGODB_URI` is set.
//!
//! The driver connects lazily, so database-service starts (and answers
//! liveness) while MongoDB is still down, and readiness turns green by itself
//! once it is back: that is the behaviour the workshop's Kubernetes exercises
//! rely on. Indexes are created at connect time when MongoDB answers, and
//! otherwise by a background task with backoff; every insert also makes sure
//! they exist first, because the unique `idempotency_key` index is what makes
//! insert idempotent under concurrency.
//!
//! Every driver error goes through one function, `classify` (in `errors.rs`):
//! "cannot reach MongoDB" becomes [`StoreError::Unavailable`] (503 with
//! `Retry-After`), the rest [`StoreError::Internal`].
//!
//! The documents only use what behaves the same on real MongoDB and on the
//! nx-27017 stand-in the tests run against (`scripts/mongo-test-server.sh`):
//! state is a string, every field is written at insert, and queries use
//! equality and ranges only (no `$ne`, which misses documents lacking the
//! field there). The order id is also the `_id`, because nx-27017 silently
//! ignores an index on a field named `id`; `_id` is unique everywhere.

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use cloudmart_config::{EnvReader, EnvVar, Setting};
use cloudmart_model::{NewOrder, NotificationState, Order, OrderItem, now_rfc3339};
use cloudmart_retry::{Attempt, Backoff, Jitter, retry};
use futures::TryStreamExt;
use futures::future::BoxFuture;
use mongodb::bson::{Document, doc};
use mongodb::options::{ClientOptions, IndexOptions, ReturnDocument, ServerAddress};
use mongodb::{Client, Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;
use tokio::task::AbortHandle;
use tracing::Instrument;

use crate::breaker::{Admit, Breaker};
use crate::store::{Inserted, OrderStore, StoreError};

mod errors;

use errors::{classify, is_duplicate_key, record_error};

pub const MONGODB_URI: Setting<String> = Setting::text(
    EnvVar::optional(
        "MONGODB_URI",
        "a mongodb:// or mongodb+srv:// connection string",
        "MongoDB connection string; unset means the embedded store",
    )
    // It may hold a password.
    .secret(),
);
pub const MONGO_MAX_POOL_SIZE: Setting<u32> = Setting::<u32>::whole(
    EnvVar::with_default(
        "MONGO_MAX_POOL_SIZE",
        "10",
        "a whole number from 1 to 1000",
        "Most connections open to MongoDB at once; further operations wait for one",
    ),
    1,
    1000,
);
pub const MONGO_CONNECT_TIMEOUT_MS: Setting<Duration> = Setting::millis(
    EnvVar::with_default(
        "MONGO_CONNECT_TIMEOUT_MS",
        "2000",
        "milliseconds from 1 to 60000",
        "How long opening one connection to MongoDB may take",
    ),
    1,
    60_000,
);
/// `MONGO_SERVER_SELECTION_TIMEOUT_MS`. Under a second by default, so a
/// caller learns MongoDB is gone within one.
pub const MONGO_SERVER_SELECTION_TIMEOUT_MS: Setting<Duration> = Setting::millis(
    EnvVar::with_default(
        "MONGO_SERVER_SELECTION_TIMEOUT_MS",
        "800",
        "milliseconds from 1 to 60000",
        "How long an operation waits for a reachable MongoDB before failing with 503",
    ),
    1,
    60_000,
);

/// The collection orders live in.
const COLLECTION: &str = "orders";
/// Commands that act on the whole database, not on [`COLLECTION`].
const DATABASE_COMMANDS: [&str; 2] = ["ping", "dropDatabase"];
/// Extra time an operation gets on top of server selection and connecting.
const OPERATION_GRACE: Duration = Duration::from_secs(5);
/// Unreachable failures in a row that make the store fail fast; three, so
/// one dropped connection does not, but a down server is found at once.
const BREAKER_FAILURES: u32 = 3;
/// How long the store fails fast before one operation tries MongoDB again.
/// Readiness is checked about this often, so recovery is noticed quickly.
const BREAKER_COOL_DOWN: Duration = Duration::from_secs(1);

/// Pool and timeout settings; the timeouts decide how fast a request fails
/// with 503 while MongoDB is down instead of hanging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MongoOptions {
    /// Most connections open at once.
    pub max_pool_size: u32,
    /// How long opening one connection may take.
    pub connect_timeout: Duration,
    /// How long an operation waits for a reachable server.
    pub server_selection_timeout: Duration,
}

impl Default for MongoOptions {
    /// The declared defaults of the `MONGO_*` variables.
    fn default() -> Self {
        let unset = std::collections::HashMap::new();
        Self::from_env(&mut EnvReader::new(&unset))
    }
}

impl MongoOptions {
    /// Reads `MONGO_*`, recording invalid values in `reader` so they are
    /// reported together with every other configuration problem.
    pub fn from_env(reader: &mut EnvReader<'_>) -> Self {
        Self {
            max_pool_size: reader.get(&MONGO_MAX_POOL_SIZE),
            connect_timeout: reader.get(&MONGO_CONNECT_TIMEOUT_MS),
            server_selection_timeout: reader.get(&MONGO_SERVER_SELECTION_TIMEOUT_MS),
        }
    }
}

/// An order as stored: every field is written at insert, and the order id
/// doubles as `_id` so the primary key enforces its uniqueness.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct OrderDoc {
    #[serde(rename = "_id")]
    key: String,
    id: String,
    customer: String,
    items: Vec<OrderItem>,
    status: String,
    /// Serialised as its lowercase name, the string filters match on.
    notification: NotificationState,
    idempotency_key: String,
    created_at: String,
}

impl From<Order> for OrderDoc {
    fn from(o: Order) -> Self {
        Self {
            key: o.id.clone(),
            id: o.id,
            customer: o.customer,
            items: o.items,
            status: o.status,
            notification: o.notification,
            idempotency_key: o.idempotency_key,
            created_at: o.created_at,
        }
    }
}

impl From<OrderDoc> for Order {
    fn from(d: OrderDoc) -> Self {
        Self {
            id: d.id,
            customer: d.customer,
            items: d.items,
            status: d.status,
            notification: d.notification,
            idempotency_key: d.idempotency_key,
            created_at: d.created_at,
        }
    }
}

/// What the store and its background index task share.
struct Shared {
    db: Database,
    orders: Collection<OrderDoc>,
    /// `db.namespace`, `server.address` and `server.port` of every span.
    namespace: String,
    address: String,
    port: Option<u16>,
    /// Set once the indexes exist; until then every insert tries to create them.
    indexes: OnceCell<()>,
    /// Upper bound for one operation, so a hung server cannot hang a request.
    op_timeout: Duration,
    /// Fails operations at once while MongoDB is known to be unreachable.
    breaker: Breaker,
}

/// Orders in a MongoDB collection; see the module docs.
pub struct MongoStore {
    shared: Arc<Shared>,
    /// The background index task, stopped with the store.
    index_task: Option<AbortHandle>,
}

impl Drop for MongoStore {
    fn drop(&mut self) {
        if let Some(task) = &self.index_task {
            task.abort();
        }
    }
}

impl MongoStore {
    /// Builds the client and creates the indexes if MongoDB answers.
    ///
    /// Only a malformed URI, or a server that answers but rejects the
    /// indexes, is an error: an unreachable server is logged and the
    /// indexes are created in the background once it is back.
    pub async fn connect(
        uri: &str,
        db_name: &str,
        opts: MongoOptions,
    ) -> Result<MongoStore, StoreError> {
        let mut options = ClientOptions::parse(uri).await.map_err(|e| {
            StoreError::Internal(format!(
                "MONGODB_URI is not a valid MongoDB connection string: {}",
                e.kind
            ))
        })?;
        options.max_pool_size = Some(opts.max_pool_size);
        options.connect_timeout = Some(opts.connect_timeout);
        options.server_selection_timeout = Some(opts.server_selection_timeout);
        if options.app_name.is_none() {
            options.app_name = Some(crate::NAME.to_owned());
        }
        let (address, port) = match options.hosts.first() {
            Some(ServerAddress::Tcp { host, port }) => (host.clone(), Some(port.unwrap_or(27017))),
            Some(other) => (other.to_string(), None),
            None => (String::new(), None),
        };
        let client = Client::with_options(options).map_err(|e| {
            StoreError::Internal(format!("cannot create the MongoDB client: {}", e.kind))
        })?;
        let db = client.database(db_name);
        let shared = Arc::new(Shared {
            orders: db.collection(COLLECTION),
            namespace: db_name.to_owned(),
            address,
            port,
            db,
            indexes: OnceCell::new(),
            op_timeout: opts.server_selection_timeout + opts.connect_timeout + OPERATION_GRACE,
            breaker: Breaker::new(BREAKER_FAILURES, BREAKER_COOL_DOWN),
        });
        let mut store = MongoStore {
            shared,
            index_task: None,
        };
        match store.shared.ensure_indexes().await {
            Ok(()) => tracing::info!(db = db_name, "MongoDB indexes are in place"),
            Err(StoreError::Unavailable(why)) => {
                tracing::warn!(
                    db = db_name,
                    error = %why,
                    "{why}; starting anyway and creating the indexes once MongoDB answers"
                );
                store.index_task = Some(spawn_index_retry(store.shared.clone()));
            }
            Err(e) => return Err(e),
        }
        Ok(store)
    }

    /// Stores `new` stamped with `created_at`; tests pass fixed times.
    async fn insert_at(&self, new: NewOrder, created_at: String) -> Result<Inserted, StoreError> {
        // Without the unique index two racing inserts could both succeed.
        self.shared.ensure_indexes().await?;
        let doc = OrderDoc::from(new.into_order(created_at));
        let s = &self.shared;
        let span = s.span("insert");
        let inserted = s
            .attempt(s.orders.insert_one(&doc))
            .instrument(span.clone())
            .await?;
        if let Err(e) = &inserted {
            // A duplicate key is an idempotent replay, not a failure.
            record_error(&span, e, !is_duplicate_key(e));
        }
        match inserted {
            Ok(_) => Ok(Inserted::Created(doc.into())),
            Err(e) if is_duplicate_key(&e) => self.existing(&doc).await.map(Inserted::Existing),
            Err(e) => Err(classify("insert", &e)),
        }
    }

    /// The stored order that made the insert of `doc` a duplicate.
    async fn existing(&self, doc: &OrderDoc) -> Result<Order, StoreError> {
        let s = &self.shared;
        let by_key = doc! { "idempotency_key": &doc.idempotency_key };
        let by_id = doc! { "_id": &doc.key };
        // The winner of a race is committed before our insert can see it as
        // a duplicate, so one look-up finds it; the retry is a safety margin.
        for _ in 0..3 {
            for filter in [&by_key, &by_id] {
                if let Some(found) = s.run("find", s.orders.find_one(filter.clone())).await? {
                    return Ok(found.into());
                }
            }
        }
        Err(StoreError::Internal(format!(
            "MongoDB reported a duplicate of order {} (key {}) but neither is found",
            doc.id, doc.idempotency_key
        )))
    }

    /// Drops this store's database; tests clean up with it.
    #[cfg(test)]
    async fn drop_database(&self) -> Result<(), StoreError> {
        let s = &self.shared;
        s.run("dropDatabase", s.db.drop()).await
    }

    /// How many orders are stored.
    #[cfg(test)]
    async fn count(&self) -> Result<u64, StoreError> {
        let s = &self.shared;
        s.run("count", s.orders.count_documents(doc! {})).await
    }
}

impl Shared {
    /// Runs one driver operation, inside its client span, with the
    /// operation timeout and `classify`. `what` is the MongoDB command name.
    async fn run<T>(
        &self,
        what: &str,
        op: impl IntoFuture<Output = mongodb::error::Result<T>>,
    ) -> Result<T, StoreError> {
        let span = self.span(what);
        self.attempt(op)
            .instrument(span.clone())
            .await?
            .map_err(|e| {
                record_error(&span, &e, true);
                classify(what, &e)
            })
    }

    /// Runs one driver operation with the operation timeout, through the
    /// breaker: refused at once (503) while it is open, and its outcome
    /// recorded. The driver's own result is returned for the caller to read.
    async fn attempt<T>(
        &self,
        op: impl IntoFuture<Output = mongodb::error::Result<T>>,
    ) -> Result<mongodb::error::Result<T>, StoreError> {
        if let Admit::No { cause, retry_in } = self.breaker.admit() {
            tracing::Span::current().record("error.type", "circuit_open");
            return Err(StoreError::Unavailable(format!(
                "{cause}; failing fast, next try in {} ms",
                retry_in.as_millis()
            )));
        }
        let result = timed(self.op_timeout, op).await;
        match &result {
            Err(e) => match classify("", e) {
                StoreError::Unavailable(cause) => self.breaker.failed(&cause),
                _ => self.breaker.succeeded(),
            },
            Ok(_) => self.breaker.succeeded(),
        }
        Ok(result)
    }

    /// A client span for the command `operation`, following the
    /// OpenTelemetry database semantic conventions: "{operation} {collection}"
    /// (the database for commands on the whole database).
    fn span(&self, operation: &str) -> tracing::Span {
        let collection = (!DATABASE_COMMANDS.contains(&operation)).then_some(COLLECTION);
        let target = collection.unwrap_or(self.namespace.as_str());
        tracing::info_span!(
            "mongodb",
            otel.name = %format!("{operation} {target}"),
            otel.kind = "client",
            db.system.name = "mongodb",
            db.operation.name = operation,
            db.collection.name = collection,
            db.namespace = %self.namespace,
            server.address = %self.address,
            server.port = self.port.map(i64::from),
            db.response.status_code = tracing::field::Empty,
            error.type = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        )
    }

    /// Creates the indexes unless that already happened (it is idempotent
    /// on the server too, so racing callers are harmless).
    async fn ensure_indexes(&self) -> Result<(), StoreError> {
        self.indexes
            .get_or_try_init(|| async {
                self.run("createIndexes", self.orders.create_indexes(index_models()))
                    .await
                    .map(drop)
            })
            .await
            .map(drop)
    }
}

/// The indexes of the `orders` collection, named so they are easy to find in
/// `db.orders.getIndexes()`. `id_unique` duplicates what `_id` already
/// guarantees, which keeps the contract visible on the field people query.
fn index_models() -> Vec<IndexModel> {
    let index = |keys: Document, name: &str, unique: bool| {
        IndexModel::builder()
            .keys(keys)
            .options(
                IndexOptions::builder()
                    .name(name.to_owned())
                    .unique(unique.then_some(true))
                    .build(),
            )
            .build()
    };
    vec![
        index(doc! { "id": 1 }, "id_unique", true),
        index(
            doc! { "idempotency_key": 1 },
            "idempotency_key_unique",
            true,
        ),
        // Listing sorts by created_at, newest first; the pending scan walks
        // it backwards. Not compound with `_id`: on nx-27017 an index that
        // names `_id` makes every later insert fail ("JSON path error").
        index(doc! { "created_at": -1 }, "created_at_desc", false),
        // A customer's own listing.
        index(
            doc! { "customer": 1, "created_at": -1 },
            "customer_created_at",
            false,
        ),
    ]
}

/// Keeps trying to create the indexes until MongoDB answers, with backoff.
fn spawn_index_retry(shared: Arc<Shared>) -> AbortHandle {
    tokio::spawn(async move {
        let policy = Backoff::try_new(
            Duration::from_millis(500),
            Duration::from_secs(30),
            100,
            Jitter::Full,
        )
        .unwrap_or_default();
        loop {
            // The attempt at connect just failed: wait before the first retry.
            tokio::time::sleep(policy.cap(1)).await;
            let outcome = retry(&policy, "creating the MongoDB indexes", |_| async {
                match shared.ensure_indexes().await {
                    Ok(()) => Attempt::Success(()),
                    Err(e @ StoreError::Unavailable(_)) => Attempt::Retryable {
                        error: e,
                        retry_after: None,
                    },
                    Err(e) => Attempt::Fatal(e),
                }
            })
            .await;
            match outcome {
                Ok(()) => {
                    tracing::info!("MongoDB is back; indexes are in place");
                    return;
                }
                // Out of attempts but MongoDB may still come back: go on.
                Err(StoreError::Unavailable(_)) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "MongoDB rejected the indexes: {e}");
                    return;
                }
            }
        }
    })
    .abort_handle()
}

/// Runs `op` with a deadline; running out of time counts as a network timeout.
async fn timed<T>(
    limit: Duration,
    op: impl IntoFuture<Output = mongodb::error::Result<T>>,
) -> mongodb::error::Result<T> {
    tokio::time::timeout(limit, op.into_future())
        .await
        .unwrap_or_else(|_| Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into()))
}

impl OrderStore for MongoStore {
    fn insert(&self, order: NewOrder) -> BoxFuture<'_, Result<Inserted, StoreError>> {
        Box::pin(self.insert_at(order, now_rfc3339()))
    }

    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Order>, StoreError>> {
        Box::pin(async move {
            let s = &self.shared;
            let found = s.run("find", s.orders.find_one(doc! { "_id": id })).await?;
            Ok(found.map(Order::from))
        })
    }

    fn list<'a>(
        &'a self,
        limit: usize,
        cursor: Option<&'a str>,
        customer: Option<&'a str>,
    ) -> BoxFuture<'a, Result<cloudmart_model::OrderPage, StoreError>> {
        Box::pin(async move {
            let s = &self.shared;
            let after = match cursor {
                Some(c) => {
                    let found = s.run("find", s.orders.find_one(doc! { "_id": c })).await?;
                    match found {
                        Some(a) if customer.is_none_or(|who| a.customer == who) => Some(a),
                        _ => return Err(StoreError::UnknownCursor(c.to_owned())),
                    }
                }
                None => None,
            };
            // Strictly after the cursor order in (created_at, _id) descending
            // order, and only the customer's orders when one is given.
            let mut filter = match &after {
                Some(a) => doc! { "$or": [
                    { "created_at": { "$lt": &a.created_at } },
                    { "created_at": &a.created_at, "_id": { "$lt": &a.key } },
                ] },
                None => doc! {},
            };
            if let Some(who) = customer {
                filter.insert("customer", who);
            }
            let take = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
            let mut orders: Vec<Order> = s
                .run("find", async {
                    s.orders
                        .find(filter)
                        .sort(doc! { "created_at": -1, "_id": -1 })
                        .limit(take)
                        .await?
                        .try_collect::<Vec<_>>()
                        .await
                })
                .await?
                .into_iter()
                .map(Order::from)
                .collect();
            let next_cursor = if orders.len() > limit {
                orders.truncate(limit);
                orders.last().map(|o| o.id.clone())
            } else {
                None
            };
            Ok(cloudmart_model::OrderPage {
                orders,
                next_cursor,
            })
        })
    }

    fn set_notification<'a>(
        &'a self,
        id: &'a str,
        state: NotificationState,
    ) -> BoxFuture<'a, Result<Option<Order>, StoreError>> {
        Box::pin(async move {
            let s = &self.shared;
            let updated = s
                .run(
                    "findAndModify",
                    s.orders
                        .find_one_and_update(
                            doc! { "_id": id },
                            doc! { "$set": { "notification": state.as_str() } },
                        )
                        .return_document(ReturnDocument::After),
                )
                .await?;
            Ok(updated.map(Order::from))
        })
    }

    fn pending_notifications(&self, limit: usize) -> BoxFuture<'_, Result<Vec<Order>, StoreError>> {
        Box::pin(async move {
            if limit == 0 {
                // A zero limit means "no limit" to MongoDB.
                return Ok(Vec::new());
            }
            let s = &self.shared;
            let take = i64::try_from(limit).unwrap_or(i64::MAX);
            let docs = s
                .run("find", async {
                    s.orders
                        .find(doc! { "notification": NotificationState::Pending.as_str() })
                        .sort(doc! { "created_at": 1, "_id": 1 })
                        .limit(take)
                        .await?
                        .try_collect::<Vec<_>>()
                        .await
                })
                .await?;
            Ok(docs.into_iter().map(Order::from).collect())
        })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let s = &self.shared;
            s.run("ping", s.db.run_command(doc! { "ping": 1 })).await?;
            // Ready means able to take writes safely, which needs the indexes.
            s.ensure_indexes().await
        })
    }

    fn backend(&self) -> &'static str {
        "MongoDB"
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::io::Write;

    use super::*;

    /// The server to test against, or `None` (after saying so) to skip.
    fn test_uri(test: &str) -> Option<String> {
        if let Some(uri) = std::env::var("MONGODB_URI").ok().filter(|u| !u.is_empty()) {
            return Some(uri);
        }
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test}: MONGODB_URI is not set; in CI run \
             `eval \"$(scripts/mongo-test-server.sh /tmp/mongo.pid)\"; export MONGODB_URI` first"
        );
        // Written to the real stderr, past the test harness's capture, so
        // the skip shows up in a normal `cargo test` run.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: {test}: set MONGODB_URI (scripts/mongo-test-server.sh starts a local one)"
        );
        None
    }

    /// A database name no other test or run uses.
    fn unique_db(test: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        // MongoDB allows 63 bytes, so keep a recognisable prefix of the name.
        let tag: String = test.trim_start_matches("mongo_").chars().take(24).collect();
        format!(
            "cm_{tag}_{}_{:x}",
            std::process::id(),
            nanos & 0xff_ffff_ffff
        )
    }

    async fn store_for(test: &str) -> Option<MongoStore> {
        let uri = test_uri(test)?;
        let opts = MongoOptions {
            server_selection_timeout: Duration::from_secs(5),
            ..MongoOptions::default()
        };
        Some(
            MongoStore::connect(&uri, &unique_db(test), opts)
                .await
                .expect("connect to MONGODB_URI"),
        )
    }

    fn new_order(id: &str, key: &str) -> NewOrder {
        NewOrder {
            id: id.to_owned(),
            customer: "guest".to_owned(),
            items: vec![OrderItem {
                item: "laptop".to_owned(),
                quantity: 2,
            }],
            idempotency_key: key.to_owned(),
        }
    }

    fn ids(orders: &[Order]) -> Vec<&str> {
        orders.iter().map(|o| o.id.as_str()).collect()
    }

    #[tokio::test]
    async fn mongo_insert_get_and_idempotent_replay() {
        let Some(store) = store_for("mongo_insert_get_and_idempotent_replay").await else {
            return;
        };

        let first = store.insert(new_order("o1", "k1")).await.unwrap();
        let again = store.insert(new_order("o2", "k1")).await.unwrap();
        let same_id = store.insert(new_order("o1", "k-other")).await.unwrap();

        let Inserted::Created(created) = first else {
            panic!("the first insert must create, got {first:?}")
        };
        assert_eq!(created.status, "confirmed");
        assert_eq!(created.notification, NotificationState::Pending);
        assert_eq!(created.items[0].quantity, 2);
        assert_eq!(again, Inserted::Existing(created.clone()));
        assert_eq!(same_id, Inserted::Existing(created.clone()));
        assert_eq!(store.get("o1").await.unwrap(), Some(created));
        assert_eq!(store.get("o2").await.unwrap(), None);
        assert_eq!(store.count().await.unwrap(), 1);
        store.drop_database().await.unwrap();
    }

    /// Races ten inserts with one idempotency key; `id_of(i)` is the id of
    /// the i-th. Exactly one must create, and all must return that order.
    async fn race_ten_inserts(test: &str, id_of: impl Fn(usize) -> String) {
        let Some(store) = store_for(test).await else {
            return;
        };
        let store = Arc::new(store);

        let tasks: Vec<_> = (0..10)
            .map(|i| {
                let store = store.clone();
                let new = new_order(&id_of(i), "race-key");
                tokio::spawn(async move { store.insert(new).await })
            })
            .collect();
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap().unwrap());
        }

        let created: Vec<&Order> = results
            .iter()
            .filter_map(|r| match r {
                Inserted::Created(o) => Some(o),
                Inserted::Existing(_) => None,
            })
            .collect();
        assert_eq!(created.len(), 1, "{results:?}");
        for r in &results {
            let (Inserted::Created(o) | Inserted::Existing(o)) = r;
            assert_eq!(o, created[0]);
        }
        assert_eq!(store.count().await.unwrap(), 1);
        store.drop_database().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn mongo_ten_concurrent_identical_inserts_store_one_order() {
        race_ten_inserts(
            "mongo_ten_concurrent_identical_inserts_store_one_order",
            |_| "race".to_owned(),
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn mongo_ten_concurrent_inserts_with_one_key_and_new_ids_store_one_order() {
        // Only the unique idempotency_key index can stop these.
        race_ten_inserts(
            "mongo_ten_concurrent_inserts_with_one_key_and_new_ids_store_one_order",
            |i| format!("race-{i}"),
        )
        .await;
    }

    #[tokio::test]
    async fn mongo_list_pages_newest_first_across_three_pages() {
        let Some(store) = store_for("mongo_list_pages_newest_first_across_three_pages").await
        else {
            return;
        };
        // o0..o2 share a timestamp, so the id decides their order.
        let times = ["2026-01-01T00:00:00.000Z"; 3]
            .into_iter()
            .chain(["2026-01-01T00:00:01.000Z"; 2]);
        for (i, at) in times.enumerate() {
            let new = new_order(&format!("o{i}"), &format!("k{i}"));
            store.insert_at(new, at.to_owned()).await.unwrap();
        }

        let first = store.list(2, None, None).await.unwrap();
        let second = store
            .list(2, first.next_cursor.as_deref(), None)
            .await
            .unwrap();
        let last = store
            .list(2, second.next_cursor.as_deref(), None)
            .await
            .unwrap();

        assert_eq!(ids(&first.orders), ["o4", "o3"]);
        assert_eq!(first.next_cursor.as_deref(), Some("o3"));
        assert_eq!(ids(&second.orders), ["o2", "o1"]);
        assert_eq!(ids(&last.orders), ["o0"]);
        assert_eq!(last.next_cursor, None);
        let all = store.list(5, None, None).await.unwrap();
        assert_eq!(all.orders.len(), 5);
        assert_eq!(all.next_cursor, None);
        store.drop_database().await.unwrap();
    }

    #[tokio::test]
    async fn mongo_notification_state_and_pending_oldest_first() {
        let Some(store) = store_for("mongo_notification_state_and_pending_oldest_first").await
        else {
            return;
        };
        for i in 0..3 {
            let new = new_order(&format!("n{i}"), &format!("k{i}"));
            let at = format!("2026-01-01T00:00:0{i}.000Z");
            store.insert_at(new, at).await.unwrap();
        }

        let updated = store
            .set_notification("n0", NotificationState::Notified)
            .await
            .unwrap();
        let missing = store
            .set_notification("nope", NotificationState::Notified)
            .await
            .unwrap();
        let pending = store.pending_notifications(10).await.unwrap();
        let one = store.pending_notifications(1).await.unwrap();

        assert_eq!(updated.unwrap().notification.as_str(), "notified");
        assert_eq!(missing, None);
        assert_eq!(ids(&pending), ["n1", "n2"]);
        assert_eq!(ids(&one), ["n1"]);
        assert!(store.pending_notifications(0).await.unwrap().is_empty());
        assert_eq!(
            store
                .get("n0")
                .await
                .unwrap()
                .unwrap()
                .notification
                .as_str(),
            "notified"
        );
        // The document holds the state as the string it always held.
        let raw = store
            .shared
            .orders
            .clone_with_type::<Document>()
            .find_one(doc! { "_id": "n0" })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(raw.get_str("notification"), Ok("notified"));
        let back = store
            .set_notification("n0", NotificationState::Pending)
            .await
            .unwrap();
        assert_eq!(back.unwrap().notification, NotificationState::Pending);
        assert_eq!(
            ids(&store.pending_notifications(10).await.unwrap()),
            ["n0", "n1", "n2"]
        );
        store.drop_database().await.unwrap();
    }

    #[tokio::test]
    async fn mongo_ping_answers() {
        let Some(store) = store_for("mongo_ping_answers").await else {
            return;
        };

        store.ping().await.unwrap();

        assert_eq!(store.backend(), "MongoDB");
        store.drop_database().await.unwrap();
    }

    #[tokio::test]
    async fn mongo_closed_port_is_unavailable_and_names_mongodb() {
        // Needs no server: the point is that there is none.
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let opts = MongoOptions {
            max_pool_size: 2,
            connect_timeout: Duration::from_millis(200),
            server_selection_timeout: Duration::from_millis(300),
        };

        let store = MongoStore::connect(&format!("mongodb://127.0.0.1:{port}"), "cm_closed", opts)
            .await
            .expect("connecting must not need the server");
        let ping = store.ping().await;
        let get = store.get("x").await;
        let insert = store.insert(new_order("x", "k")).await;

        for result in [ping.map(drop), get.map(drop), insert.map(drop)] {
            match result {
                Err(StoreError::Unavailable(m)) => {
                    assert!(m.contains("MongoDB"), "{m}");
                    assert!(m.contains("connection refused"), "{m}");
                }
                other => panic!("expected Unavailable, got {other:?}"),
            }
        }
        assert!(store.index_task.is_some(), "index creation must be retried");
    }

    #[test]
    fn options_default_and_reject_out_of_range_values() {
        let empty: HashMap<String, String> = HashMap::new();
        let mut r = EnvReader::new(&empty);
        let documented = MongoOptions {
            max_pool_size: 10,
            connect_timeout: Duration::from_millis(2000),
            server_selection_timeout: Duration::from_millis(800),
        };
        assert_eq!(MongoOptions::from_env(&mut r), documented);
        assert_eq!(MongoOptions::default(), documented);
        assert!(r.finish().is_ok());

        let env: HashMap<String, String> = [
            ("MONGO_MAX_POOL_SIZE", "0"),
            ("MONGO_CONNECT_TIMEOUT_MS", "abc"),
            ("MONGO_SERVER_SELECTION_TIMEOUT_MS", "500"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let mut r = EnvReader::new(&env);
        let opts = MongoOptions::from_env(&mut r);
        assert_eq!(opts.server_selection_timeout, Duration::from_millis(500));
        let msg = r.finish().unwrap_err().to_string();
        assert!(msg.contains("MONGO_MAX_POOL_SIZE"), "{msg}");
        assert!(msg.contains("MONGO_CONNECT_TIMEOUT_MS"), "{msg}");
    }

    #[test]
    fn the_uri_is_secret_and_optional() {
        let uri = (
            MONGODB_URI.var.secret,
            MONGODB_URI.var.required,
            MONGODB_URI.var.default,
        );
        let names: Vec<_> = <crate::Config as cloudmart_config::FromEnv>::settings()
            .iter()
            .map(|v| v.name)
            .filter(|n| n.starts_with("MONGO"))
            .collect();

        // Secret because it may hold a password; unset means the embedded store.
        assert_eq!(uri, (true, false, None));
        assert_eq!(
            names,
            [
                "MONGODB_URI",
                "MONGO_MAX_POOL_SIZE",
                "MONGO_CONNECT_TIMEOUT_MS",
                "MONGO_SERVER_SELECTION_TIMEOUT_MS"
            ]
        );
    }
}
