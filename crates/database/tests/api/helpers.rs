//! Runs database-service in this process with a given environment.

use std::collections::HashMap;

use cloudmart_database::Application;
use cloudmart_run::Service;
use tokio::sync::oneshot;

/// A database-service running in-process.
pub(crate) struct TestDb {
    pub(crate) url: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Starts database-service on a free port with `vars` as its whole environment.
pub(crate) async fn spawn_db(vars: &[(&str, &str)]) -> TestDb {
    let mut env: HashMap<String, String> = HashMap::from([
        ("PORT".to_owned(), "0".to_owned()),
        ("HOST".to_owned(), "127.0.0.1".to_owned()),
    ]);
    for (k, v) in vars {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    let config = Application::config(&env).expect("valid config");
    let app = Application::build(config)
        .await
        .expect("database-service starts");
    let url = format!("http://127.0.0.1:{}", app.port());
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until_stopped(async {
        let _ = rx.await;
    }));
    TestDb {
        url,
        stop: Some(tx),
        task,
    }
}

impl TestDb {
    /// Stops the service and waits for it.
    pub(crate) async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = self.task.await;
    }
}
