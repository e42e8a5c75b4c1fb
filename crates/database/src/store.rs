//! Where orders live: the [`OrderStore`] trait and the embedded store.
//!
//! The embedded store keeps every order in memory and appends each write as
//! one JSON line to `DATA_DIR/<DB_NAME>.jsonl`, so data survives a restart
//! with no server to install. On start it replays the file; the last record
//! for an id wins, and a torn last line (a crash mid-write) is skipped with a
//! warning instead of refusing to start.

use std::collections::{BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use cloudmart_common::model::{NOTIFICATION_PENDING, NewOrder, Order, OrderPage, now_rfc3339};
use futures::future::BoxFuture;

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The backend cannot be reached; the message names it (e.g. MongoDB).
    Unavailable(String),
    /// Anything else; logged, never sent to clients.
    Internal(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unavailable(m) | Self::Internal(m) => f.write_str(m),
        }
    }
}

/// The result of an insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// A new order was stored.
    Created(Order),
    /// An order with the same idempotency key (or id) already existed.
    Existing(Order),
}

/// Storage for orders. Implementations must make insert idempotent by key.
pub trait OrderStore: Send + Sync {
    /// Stores `order` unless one with its idempotency key or id exists.
    fn insert(&self, order: NewOrder) -> BoxFuture<'_, Result<Inserted, StoreError>>;
    /// The order with this id.
    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Order>, StoreError>>;
    /// Up to `limit` orders, newest first, starting after `cursor` (an id).
    fn list<'a>(
        &'a self,
        limit: usize,
        cursor: Option<&'a str>,
    ) -> BoxFuture<'a, Result<OrderPage, StoreError>>;
    /// Sets the notification state of an order; `None` if there is no such order.
    fn set_notification<'a>(
        &'a self,
        id: &'a str,
        state: &'a str,
    ) -> BoxFuture<'a, Result<Option<Order>, StoreError>>;
    /// Orders whose notification is still `pending`, oldest first.
    fn pending_notifications(&self, limit: usize) -> BoxFuture<'_, Result<Vec<Order>, StoreError>>;
    /// Whether the backend answers.
    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>>;
    /// A short name for logs and readiness (`embedded`, `MongoDB`).
    fn backend(&self) -> &'static str;
}

struct Inner {
    by_id: HashMap<String, Order>,
    by_key: HashMap<String, String>,
    /// (created_at, id), so iterating backwards is newest first.
    by_time: BTreeSet<(String, String)>,
    file: File,
}

/// The no-setup store: memory plus an append-only JSON-lines file.
pub struct EmbeddedStore {
    inner: Mutex<Inner>,
    path: PathBuf,
}

impl EmbeddedStore {
    /// Opens (or creates) `dir/<db_name>.jsonl` and replays it.
    pub fn open(dir: &Path, db_name: &str) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let safe: String = db_name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = dir.join(format!("{safe}.jsonl"));
        let mut inner = Inner {
            by_id: HashMap::new(),
            by_key: HashMap::new(),
            by_time: BTreeSet::new(),
            file: OpenOptions::new()
                .create(true)
                .append(true)
                .read(true)
                .open(&path)?,
        };
        let reader = BufReader::new(File::open(&path)?);
        let mut skipped = 0usize;
        for line in reader.lines() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Order>(&line) {
                Ok(order) => inner.index(order),
                Err(_) => skipped += 1,
            }
        }
        if skipped > 0 {
            tracing::warn!(path = %path.display(), skipped, "skipped {skipped} unreadable line(s) in {}", path.display());
        }
        Ok(Self {
            inner: Mutex::new(inner),
            path,
        })
    }

    /// The file behind the store.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many orders are stored.
    pub fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-written
        // in a way later readers could not use, so recover from poisoning.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Inner {
    fn index(&mut self, order: Order) {
        if let Some(old) = self.by_id.get(&order.id) {
            self.by_time
                .remove(&(old.created_at.clone(), old.id.clone()));
        }
        self.by_key
            .insert(order.idempotency_key.clone(), order.id.clone());
        self.by_time
            .insert((order.created_at.clone(), order.id.clone()));
        self.by_id.insert(order.id.clone(), order);
    }

    fn append(&mut self, order: &Order) -> Result<(), StoreError> {
        let mut line =
            serde_json::to_vec(order).map_err(|e| StoreError::Internal(e.to_string()))?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .and_then(|()| self.file.flush())
            .map_err(|e| StoreError::Internal(format!("writing the data file failed: {e}")))
    }
}

impl OrderStore for EmbeddedStore {
    fn insert(&self, new: NewOrder) -> BoxFuture<'_, Result<Inserted, StoreError>> {
        Box::pin(async move {
            let mut inner = self.lock();
            let existing = inner
                .by_key
                .get(&new.idempotency_key)
                .or_else(|| inner.by_id.contains_key(&new.id).then_some(&new.id))
                .and_then(|id| inner.by_id.get(id))
                .cloned();
            if let Some(order) = existing {
                return Ok(Inserted::Existing(order));
            }
            let order = Order {
                id: new.id,
                customer: new.customer,
                items: new.items,
                status: "confirmed".to_owned(),
                notification: NOTIFICATION_PENDING.to_owned(),
                idempotency_key: new.idempotency_key,
                created_at: now_rfc3339(),
            };
            inner.append(&order)?;
            inner.index(order.clone());
            Ok(Inserted::Created(order))
        })
    }

    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Order>, StoreError>> {
        Box::pin(async move { Ok(self.lock().by_id.get(id).cloned()) })
    }

    fn list<'a>(
        &'a self,
        limit: usize,
        cursor: Option<&'a str>,
    ) -> BoxFuture<'a, Result<OrderPage, StoreError>> {
        Box::pin(async move {
            let inner = self.lock();
            let start = cursor
                .and_then(|c| inner.by_id.get(c))
                .map(|o| (o.created_at.clone(), o.id.clone()));
            let iter: Box<dyn Iterator<Item = &(String, String)>> = match &start {
                Some(s) => Box::new(inner.by_time.range(..s.clone()).rev()),
                None => Box::new(inner.by_time.iter().rev()),
            };
            let mut orders: Vec<Order> = iter
                .take(limit + 1)
                .filter_map(|(_, id)| inner.by_id.get(id).cloned())
                .collect();
            let next_cursor = if orders.len() > limit {
                orders.truncate(limit);
                orders.last().map(|o| o.id.clone())
            } else {
                None
            };
            Ok(OrderPage {
                orders,
                next_cursor,
            })
        })
    }

    fn set_notification<'a>(
        &'a self,
        id: &'a str,
        state: &'a str,
    ) -> BoxFuture<'a, Result<Option<Order>, StoreError>> {
        Box::pin(async move {
            let mut inner = self.lock();
            let Some(mut order) = inner.by_id.get(id).cloned() else {
                return Ok(None);
            };
            if order.notification != state {
                order.notification = state.to_owned();
                inner.append(&order)?;
                inner.index(order.clone());
            }
            Ok(Some(order))
        })
    }

    fn pending_notifications(&self, limit: usize) -> BoxFuture<'_, Result<Vec<Order>, StoreError>> {
        Box::pin(async move {
            let inner = self.lock();
            Ok(inner
                .by_time
                .iter()
                .filter_map(|(_, id)| inner.by_id.get(id))
                .filter(|o| o.notification == NOTIFICATION_PENDING)
                .take(limit)
                .cloned()
                .collect())
        })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    fn backend(&self) -> &'static str {
        "embedded"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudmart_common::model::OrderItem;

    fn new_order(id: &str, key: &str) -> NewOrder {
        NewOrder {
            id: id.to_owned(),
            customer: "guest".to_owned(),
            items: vec![OrderItem {
                item: "laptop".to_owned(),
                quantity: 1,
            }],
            idempotency_key: key.to_owned(),
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("cloudmart-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[tokio::test]
    async fn data_survives_a_reopen_and_a_torn_last_line() {
        let dir = temp_dir("reopen");
        {
            let store = EmbeddedStore::open(&dir, "db").unwrap();
            store.insert(new_order("a", "ka")).await.unwrap();
            store.insert(new_order("b", "kb")).await.unwrap();
            store.set_notification("a", "notified").await.unwrap();
        }
        let path = dir.join("db.jsonl");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"id\":\"c\",\"custo").unwrap();
        let store = EmbeddedStore::open(&dir, "db").unwrap();
        assert_eq!(store.len(), 2);
        assert_eq!(
            store.get("a").await.unwrap().unwrap().notification,
            "notified"
        );
        assert_eq!(store.pending_notifications(10).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn the_same_key_returns_the_first_order() {
        let store = EmbeddedStore::open(&temp_dir("idem"), "db").unwrap();
        let first = store.insert(new_order("a", "k")).await.unwrap();
        let second = store.insert(new_order("b", "k")).await.unwrap();
        let Inserted::Created(a) = first else {
            panic!("first insert must create")
        };
        assert_eq!(second, Inserted::Existing(a));
        assert_eq!(store.len(), 1);
    }

    #[tokio::test]
    async fn pages_are_newest_first_and_chain_by_cursor() {
        let store = EmbeddedStore::open(&temp_dir("pages"), "db").unwrap();
        for i in 0..5 {
            store
                .insert(new_order(&format!("o{i}"), &format!("k{i}")))
                .await
                .unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        let first = store.list(2, None).await.unwrap();
        let ids: Vec<_> = first.orders.iter().map(|o| o.id.as_str()).collect();
        assert_eq!(ids, ["o4", "o3"]);
        let second = store.list(2, first.next_cursor.as_deref()).await.unwrap();
        let ids: Vec<_> = second.orders.iter().map(|o| o.id.as_str()).collect();
        assert_eq!(ids, ["o2", "o1"]);
        let last = store.list(2, second.next_cursor.as_deref()).await.unwrap();
        assert_eq!(last.orders.len(), 1);
        assert_eq!(last.next_cursor, None);
    }
}
