//! Where orders live: the [`OrderStore`] trait and the embedded store.
//!
//! The embedded store keeps every order in memory and appends each write as
//! one JSON line to `DATA_DIR/<DB_NAME>.jsonl`, so data survives a restart
//! with no server to install. On start it replays the file; the last record
//! for an id wins, and a torn last line (a crash mid-write) is skipped with a
//! warning instead of refusing to start.
//!
//! A write is acknowledged only once it is on disk: the line is appended
//! under the lock, then the caller waits for an `fdatasync` that covers it.
//! Writes that arrive while one sync runs share the next one (group
//! commit), so under load one sync acknowledges many orders. A write the
//! disk refuses (full, read-only) is cut off the file again and answered
//! 503, never 201. A failed sync cannot be trusted to be retried (the
//! kernel may have dropped the dirty pages), so after one the store refuses
//! every write, and readiness fails, until database-service restarts and
//! replays what really reached the disk.

use std::collections::{BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use cloudmart_model::{NewOrder, NotificationState, Order, OrderPage, now_rfc3339};
use futures::future::BoxFuture;

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The backend cannot be reached; the message names it (e.g. MongoDB).
    Unavailable(String),
    /// Anything else; logged, never sent to clients.
    Internal(String),
    /// A listing's cursor names no order of that listing.
    UnknownCursor(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unavailable(m) | Self::Internal(m) => f.write_str(m),
            Self::UnknownCursor(c) => write!(f, "cursor {c} names no order of this listing"),
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
    /// Up to `limit` orders, newest first, starting after `cursor` (an id),
    /// only `customer`'s when given. A cursor that is not an order of the
    /// same listing is [`StoreError::UnknownCursor`], never the first page.
    fn list<'a>(
        &'a self,
        limit: usize,
        cursor: Option<&'a str>,
        customer: Option<&'a str>,
    ) -> BoxFuture<'a, Result<OrderPage, StoreError>>;
    /// Sets the notification state of an order; `None` if there is no such order.
    fn set_notification<'a>(
        &'a self,
        id: &'a str,
        state: NotificationState,
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
    /// Bytes of whole lines in the file; a refused write is cut back to it.
    len: u64,
    /// Lines appended since start; a writer waits until `synced` reaches its.
    written: u64,
}

/// Group-commit state, apart from the data so a sync never holds the data lock.
#[derive(Debug, Default)]
struct SyncState {
    /// Every line up to this one is on disk.
    synced: u64,
    /// A sync is running; later writers wait for it, then share the next.
    running: bool,
    /// Why a sync failed; from then on the store refuses writes.
    failed: Option<String>,
    /// Syncs run so far; with concurrent writers, fewer than the writes.
    syncs: u64,
}

/// The no-setup store: memory plus an append-only JSON-lines file.
pub struct EmbeddedStore {
    inner: Mutex<Inner>,
    path: PathBuf,
    /// A second handle on the data file, for `fdatasync` outside the lock.
    sync_file: Arc<File>,
    sync: Mutex<SyncState>,
    synced: Notify,
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
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)?;
        let sync_file = Arc::new(file.try_clone()?);
        let mut inner = Inner {
            by_id: HashMap::new(),
            by_key: HashMap::new(),
            by_time: BTreeSet::new(),
            len: file.metadata()?.len(),
            file,
            written: 0,
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
        // A torn last line is left as it is: the next line appended after
        // it would otherwise be glued to it, so start on a fresh line.
        if inner.len > 0 && !ends_with_newline(&path)? {
            inner.file.write_all(b"\n")?;
            inner.len += 1;
        }
        Ok(Self {
            inner: Mutex::new(inner),
            path,
            sync_file,
            sync: Mutex::new(SyncState::default()),
            synced: Notify::new(),
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

    fn sync_state(&self) -> std::sync::MutexGuard<'_, SyncState> {
        self.sync
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Refuses writes after a failed sync.
    fn check_writable(&self) -> Result<(), StoreError> {
        match &self.sync_state().failed {
            Some(why) => Err(StoreError::Unavailable(format!(
                "the embedded store stopped taking writes after a failed sync ({why}); restart database-service"
            ))),
            None => Ok(()),
        }
    }

    /// Waits until line `line` is on disk: joins a running sync, or runs
    /// the next one for everyone written so far.
    async fn durable(&self, line: u64) -> Result<(), StoreError> {
        loop {
            let wait = {
                let mut st = self.sync_state();
                if let Some(why) = &st.failed {
                    return Err(StoreError::Unavailable(format!(
                        "the data file could not be synced to disk: {why}"
                    )));
                }
                if st.synced >= line {
                    return Ok(());
                }
                if st.running {
                    // Registered before the lock is released, so the wake-up
                    // of the running sync cannot be missed.
                    let mut wait = Box::pin(self.synced.notified());
                    wait.as_mut().enable();
                    Some(wait)
                } else {
                    st.running = true;
                    None
                }
            };
            if let Some(wait) = wait {
                wait.await;
                continue;
            }
            let upto = self.lock().written;
            let file = Arc::clone(&self.sync_file);
            let result = tokio::task::spawn_blocking(move || file.sync_data())
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
            {
                let mut st = self.sync_state();
                st.running = false;
                st.syncs += 1;
                match result {
                    Ok(()) => st.synced = st.synced.max(upto),
                    Err(why) => {
                        tracing::error!(path = %self.path.display(), error = %why, "syncing {} failed: {why}; refusing writes until restart", self.path.display());
                        st.failed = Some(why);
                    }
                }
            }
            self.synced.notify_waiters();
        }
    }
}

impl EmbeddedStore {
    /// The in-memory half of an insert: the result and the line to wait for.
    fn insert_unsynced(&self, new: NewOrder) -> Result<(Inserted, u64), StoreError> {
        let mut inner = self.lock();
        let existing = inner
            .by_key
            .get(&new.idempotency_key)
            .or_else(|| inner.by_id.contains_key(&new.id).then_some(&new.id))
            .and_then(|id| inner.by_id.get(id))
            .cloned();
        if let Some(order) = existing {
            return Ok((Inserted::Existing(order), inner.written));
        }
        self.check_writable()?;
        let order = new.into_order(now_rfc3339());
        let line = inner.append(&order)?;
        inner.index(order.clone());
        Ok((Inserted::Created(order), line))
    }

    /// The in-memory half of a notification update.
    fn set_notification_unsynced(
        &self,
        id: &str,
        state: NotificationState,
    ) -> Result<Option<(Order, u64)>, StoreError> {
        self.check_writable()?;
        let mut inner = self.lock();
        let Some(mut order) = inner.by_id.get(id).cloned() else {
            return Ok(None);
        };
        if order.notification == state {
            let line = inner.written;
            return Ok(Some((order, line)));
        }
        order.notification = state;
        let line = inner.append(&order)?;
        inner.index(order.clone());
        Ok(Some((order, line)))
    }
}

/// Whether the file at `path` is empty or ends with a line break.
fn ends_with_newline(path: &Path) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = File::open(path)?;
    if f.seek(SeekFrom::End(0))? == 0 {
        return Ok(true);
    }
    f.seek(SeekFrom::End(-1))?;
    let mut last = [0u8; 1];
    f.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
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

    /// Appends `order` as one line; the number to wait for with
    /// [`EmbeddedStore::durable`]. A refused write is cut off again, so the
    /// file never holds a half line that a later line would be glued to.
    fn append(&mut self, order: &Order) -> Result<u64, StoreError> {
        let mut line =
            serde_json::to_vec(order).map_err(|e| StoreError::Internal(e.to_string()))?;
        line.push(b'\n');
        if let Err(e) = self.file.write_all(&line) {
            let cut = self.file.set_len(self.len);
            return Err(StoreError::Unavailable(match cut {
                Ok(()) => format!("the embedded store cannot write its data file: {e}"),
                Err(c) => format!(
                    "the embedded store cannot write its data file: {e}; cutting the partial line off failed too: {c}"
                ),
            }));
        }
        self.len += line.len() as u64;
        self.written += 1;
        Ok(self.written)
    }
}

impl OrderStore for EmbeddedStore {
    fn insert(&self, new: NewOrder) -> BoxFuture<'_, Result<Inserted, StoreError>> {
        Box::pin(async move {
            let (inserted, line) = self.insert_unsynced(new)?;
            // Answered once the line (or, for an existing order, everything
            // written so far, which covers it) is on disk.
            self.durable(line).await?;
            Ok(inserted)
        })
    }

    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Order>, StoreError>> {
        Box::pin(async move { Ok(self.lock().by_id.get(id).cloned()) })
    }

    fn list<'a>(
        &'a self,
        limit: usize,
        cursor: Option<&'a str>,
        customer: Option<&'a str>,
    ) -> BoxFuture<'a, Result<OrderPage, StoreError>> {
        Box::pin(async move {
            let inner = self.lock();
            let mine = |o: &Order| customer.is_none_or(|c| o.customer == c);
            let start = match cursor {
                Some(c) => match inner.by_id.get(c) {
                    Some(o) if mine(o) => Some((o.created_at.clone(), o.id.clone())),
                    _ => return Err(StoreError::UnknownCursor(c.to_owned())),
                },
                None => None,
            };
            let iter: Box<dyn Iterator<Item = &(String, String)>> = match &start {
                Some(s) => Box::new(inner.by_time.range(..s.clone()).rev()),
                None => Box::new(inner.by_time.iter().rev()),
            };
            // A scan: the embedded store is for laptops and tests, where a
            // customer index would cost more memory than the scan costs time.
            let mut orders: Vec<Order> = iter
                .filter_map(|(_, id)| inner.by_id.get(id))
                .filter(|o| mine(o))
                .take(limit + 1)
                .cloned()
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
        state: NotificationState,
    ) -> BoxFuture<'a, Result<Option<Order>, StoreError>> {
        Box::pin(async move {
            let Some((order, line)) = self.set_notification_unsynced(id, state)? else {
                return Ok(None);
            };
            self.durable(line).await?;
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
                .filter(|o| o.notification == NotificationState::Pending)
                .take(limit)
                .cloned()
                .collect())
        })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { self.check_writable() })
    }

    fn backend(&self) -> &'static str {
        "embedded"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudmart_model::OrderItem;

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

    fn temp_dir(name: &str) -> cloudmart_testkit::TempDir {
        cloudmart_testkit::TempDir::new(&format!("store-{name}"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_are_answered_only_once_synced_and_concurrent_ones_share_syncs() {
        let dir = temp_dir("sync");
        let store = Arc::new(EmbeddedStore::open(dir.path(), "db").unwrap());
        store.insert(new_order("a", "ka")).await.unwrap();
        let after_one = {
            let st = store.sync_state();
            (st.synced, st.syncs)
        };
        assert_eq!(after_one, (1, 1), "the insert returned before its sync");

        let writers: Vec<_> = (0..64)
            .map(|i| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    store
                        .insert(new_order(&format!("o{i}"), &format!("k{i}")))
                        .await
                        .unwrap();
                    // Whoever returns finds its own line on disk.
                    let written = store.lock().by_id.len() as u64;
                    (store.sync_state().synced, written)
                })
            })
            .collect();
        for w in writers {
            let (synced, _) = w.await.unwrap();
            assert!(synced >= 2, "a write returned before any later sync");
        }
        let st = store.sync_state();
        assert_eq!(st.synced, 65);
        assert!(
            st.syncs < 65,
            "{} syncs for 65 writes: no group commit",
            st.syncs
        );
    }

    #[tokio::test]
    async fn data_survives_a_reopen_and_a_torn_last_line() {
        let tmp = temp_dir("reopen");
        let dir = tmp.path();
        {
            let store = EmbeddedStore::open(dir, "db").unwrap();
            store.insert(new_order("a", "ka")).await.unwrap();
            store.insert(new_order("b", "kb")).await.unwrap();
            store
                .set_notification("a", NotificationState::Notified)
                .await
                .unwrap();
        }
        let path = dir.join("db.jsonl");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"id\":\"c\",\"custo").unwrap();
        let store = EmbeddedStore::open(dir, "db").unwrap();
        assert_eq!(store.len(), 2);
        assert_eq!(
            store.get("a").await.unwrap().unwrap().notification.as_str(),
            "notified"
        );
        assert_eq!(store.pending_notifications(10).await.unwrap().len(), 1);
        // The file holds the state as the string it always held.
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(r#""notification":"notified""#), "{text}");

        // The first line written after the torn one stands on its own.
        store.insert(new_order("d", "kd")).await.unwrap();
        drop(store);
        let store = EmbeddedStore::open(dir, "db").unwrap();
        assert!(
            store.get("d").await.unwrap().is_some(),
            "d was glued to the torn line"
        );
    }

    #[tokio::test]
    async fn the_same_key_returns_the_first_order() {
        let dir = temp_dir("idem");
        let store = EmbeddedStore::open(dir.path(), "db").unwrap();
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
        let dir = temp_dir("pages");
        let store = EmbeddedStore::open(dir.path(), "db").unwrap();
        for i in 0..5 {
            store
                .insert(new_order(&format!("o{i}"), &format!("k{i}")))
                .await
                .unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        let first = store.list(2, None, None).await.unwrap();
        let ids: Vec<_> = first.orders.iter().map(|o| o.id.as_str()).collect();
        assert_eq!(ids, ["o4", "o3"]);
        let second = store
            .list(2, first.next_cursor.as_deref(), None)
            .await
            .unwrap();
        let ids: Vec<_> = second.orders.iter().map(|o| o.id.as_str()).collect();
        assert_eq!(ids, ["o2", "o1"]);
        let last = store
            .list(2, second.next_cursor.as_deref(), None)
            .await
            .unwrap();
        assert_eq!(last.orders.len(), 1);
        assert_eq!(last.next_cursor, None);
        assert_eq!(
            store.list(2, Some("nope"), None).await.unwrap_err(),
            StoreError::UnknownCursor("nope".to_owned())
        );
    }
}
