//! Background loops a service runs beside its HTTP server.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Resolves once `stop` says so (or its sender is gone).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Background loops a service runs beside its HTTP server (the broker
/// connections, the relay), stopped together with it.
///
/// [`Workers::shutdown`] signals every loop and waits a bounded time, so a
/// consumer can finish the message in hand and close its connection;
/// dropping the value aborts whatever is left, so nothing outlives the
/// service (several services share one process in `cloudmart up`).
pub struct Workers {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Default for Workers {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Workers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Workers")
            .field("tasks", &self.tasks.len())
            .finish()
    }
}

impl Workers {
    /// No loops yet.
    pub fn new() -> Self {
        Self {
            stop: watch::channel(false).0,
            tasks: Vec::new(),
        }
    }

    /// A receiver that turns `true` when the service stops; pass it to
    /// [`stopped`], [`connect_with_retry`] and [`until_lost`].
    pub fn stop_signal(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Runs `task` until it returns or the service stops.
    pub fn spawn<F>(&mut self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.push(tokio::spawn(task));
    }

    /// Signals every loop to stop and waits up to `deadline` for them.
    pub async fn shutdown(mut self, deadline: Duration) {
        let _ = self.stop.send(true);
        let end = tokio::time::Instant::now() + deadline;
        for task in std::mem::take(&mut self.tasks) {
            let abort = task.abort_handle();
            if tokio::time::timeout_at(end, task).await.is_err() {
                tracing::warn!("a background task did not stop in time; aborting it");
                abort.abort();
            }
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for task in &self.tasks {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn workers_stop_when_the_service_does() {
        let mut workers = Workers::new();
        let mut stop = workers.stop_signal();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        workers.spawn(async move {
            stopped(&mut stop).await;
            let _ = done_tx.send(());
        });
        workers.shutdown(Duration::from_secs(1)).await;
        assert!(done_rx.await.is_ok());
    }
}
