//! All six services in one process: what `cloudmart up` and the end-to-end
//! tests run.
//!
//! Services start in dependency order (database, notification, order, auth,
//! api, gateway), each with its own view of the environment: the caller's
//! variables, then this stack's ports and the URLs of the services already
//! started. Port 0 gives every service a free port, which the tests use.

use std::io;

use cloudmart_config::{ConfigError, Env, Layered};
use cloudmart_run::Service;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The six services' names, in the order an order meets them.
pub const SERVICE_NAMES: [&str; 6] = [
    cloudmart_gateway::NAME,
    cloudmart_api::NAME,
    cloudmart_auth::NAME,
    cloudmart_order::NAME,
    cloudmart_database::NAME,
    cloudmart_notification::NAME,
];

/// `DB_NAME` when the caller sets none: the embedded store's file is
/// `data/cloudmart-db.jsonl`.
pub const DEFAULT_DB_NAME: &str = "cloudmart-db";

/// Ports for each service; 0 picks a free one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    pub gateway: u16,
    pub api: u16,
    pub auth: u16,
    pub order: u16,
    pub database: u16,
    pub notification: u16,
}

impl Ports {
    /// The fixed, documented ports of `cloudmart up`.
    pub const LOCAL: Self = Self {
        gateway: 8080,
        api: 3001,
        auth: 3002,
        order: 3003,
        database: 3004,
        notification: 3005,
    };

    /// Free ports everywhere, for tests.
    pub const ANY: Self = Self {
        gateway: 0,
        api: 0,
        auth: 0,
        order: 0,
        database: 0,
        notification: 0,
    };
}

/// Why the stack did not start.
#[derive(Debug)]
pub enum StackError {
    /// A service's configuration is invalid.
    Config(&'static str, ConfigError),
    /// A service failed to bind or connect.
    Start(&'static str, String),
}

impl std::fmt::Display for StackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Config(name, e) => write!(f, "{name}: {e}"),
            Self::Start(name, e) => write!(f, "{name} failed to start: {e}"),
        }
    }
}

impl std::error::Error for StackError {}

/// One running service.
#[derive(Debug, Clone)]
pub struct Running {
    /// Its name.
    pub name: &'static str,
    /// The port it bound.
    pub port: u16,
}

impl Running {
    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// The six services, running.
pub struct Stack {
    /// In start order: database, notification, order, auth, api, gateway.
    pub services: Vec<Running>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<io::Result<()>>>,
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

async fn start<S: Service>(
    env: &dyn Env,
    stop: &watch::Sender<bool>,
    tasks: &mut Vec<JoinHandle<io::Result<()>>>,
) -> Result<Running, StackError> {
    let config = S::config(env).map_err(|e| StackError::Config(S::NAME, e))?;
    let app = S::build(config)
        .await
        .map_err(|e| StackError::Start(S::NAME, e.to_string()))?;
    let port = app.port();
    tasks.push(tokio::spawn(
        app.run_until_stopped(stopped(stop.subscribe())),
    ));
    Ok(Running {
        name: S::NAME,
        port,
    })
}

impl Stack {
    /// Starts all six services on `ports`, on 127.0.0.1, on top of `base`.
    ///
    /// `DB_NAME` defaults to [`DEFAULT_DB_NAME`] here (the binary requires it).
    pub async fn start(ports: Ports, base: &dyn Env) -> Result<Self, StackError> {
        let (stop, _) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut services = Vec::new();
        let url = |r: &Running| r.url();
        let local = |port: u16| {
            Layered::new(base)
                .set("HOST", "127.0.0.1")
                .set("PORT", port.to_string())
        };

        let db_name = base
            .var("DB_NAME")
            .unwrap_or_else(|| DEFAULT_DB_NAME.to_owned());
        let database = start::<cloudmart_database::Application>(
            &local(ports.database).set("DB_NAME", db_name),
            &stop,
            &mut tasks,
        )
        .await?;
        let notification = start::<cloudmart_notification::Application>(
            &local(ports.notification),
            &stop,
            &mut tasks,
        )
        .await?;
        let order = start::<cloudmart_order::Application>(
            &local(ports.order)
                .set("DATABASE_URL", url(&database))
                .set("NOTIFICATION_URL", url(&notification)),
            &stop,
            &mut tasks,
        )
        .await?;
        let auth =
            start::<cloudmart_auth::Application>(&local(ports.auth), &stop, &mut tasks).await?;
        let api = start::<cloudmart_api::Application>(
            &local(ports.api)
                .set("AUTH_SERVICE_URL", url(&auth))
                .set("ORDER_SERVICE_URL", url(&order)),
            &stop,
            &mut tasks,
        )
        .await?;
        let gateway = start::<cloudmart_gateway::Application>(
            &local(ports.gateway)
                .set("API_SERVICE_URL", url(&api))
                .set("AUTH_SERVICE_URL", url(&auth)),
            &stop,
            &mut tasks,
        )
        .await?;
        services.extend([database, notification, order, auth, api, gateway]);
        Ok(Self {
            services,
            stop,
            tasks,
        })
    }

    /// The service called `name`.
    pub fn service(&self, name: &str) -> Option<&Running> {
        self.services.iter().find(|s| s.name == name)
    }

    /// The gateway's base URL.
    pub fn gateway_url(&self) -> String {
        self.service(cloudmart_gateway::NAME)
            .map(Running::url)
            .unwrap_or_default()
    }

    /// Signals every service to stop and waits for each to drain.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "a service stopped with an error: {e}"),
                Err(e) => tracing::error!(error = %e, "a service task failed: {e}"),
            }
        }
    }
}

/// One service running alone, for tests that wire it to something unusual
/// (a closed port, a proxy that drops traffic).
pub struct Single {
    /// What is running.
    pub running: Running,
    stop: watch::Sender<bool>,
    task: JoinHandle<io::Result<()>>,
}

impl Single {
    /// Starts `S` with exactly `env` (plus `HOST=127.0.0.1`).
    pub async fn start<S: Service>(env: &dyn Env) -> Result<Self, StackError> {
        let (stop, _) = watch::channel(false);
        let mut tasks = Vec::new();
        let env = Layered::new(env).set("HOST", "127.0.0.1");
        let running = start::<S>(&env, &stop, &mut tasks).await?;
        let task = tasks
            .pop()
            .ok_or_else(|| StackError::Start(S::NAME, "no task".to_owned()))?;
        Ok(Self {
            running,
            stop,
            task,
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        self.running.url()
    }

    /// Stops the service and waits for it to drain.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}
