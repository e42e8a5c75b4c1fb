//! The shape every service binary shares, so `main.rs` stays a few lines:
//! load config (on error print one line and exit 1), start telemetry, build
//! the application, serve until SIGTERM or ctrl-c.
//!
//! `<binary> healthcheck` asks the local `/health` and exits 0 or 1, so
//! minimal container images can be health-checked without curl.

use std::future::Future;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use cloudmart_config::{ConfigError, Env, EnvReader, EnvVar, FromEnv, ProcessEnv, Setting};

mod settings;
mod workers;
pub use settings::check_settings;
pub use workers::{Workers, stopped};

/// A boxed startup error.
pub type StartupError = Box<dyn std::error::Error + Send + Sync>;

/// A CloudMart service: config, build, serve.
pub trait Service: Sized + Send + 'static {
    /// The binary and image name, e.g. `database-service`.
    const NAME: &'static str;
    /// The `PORT` setting, with this service's default.
    const PORT: Setting<u16>;
    /// Typed configuration, read from declared settings.
    type Config: FromEnv + Send + 'static;

    /// Every variable the process reads, for docs and manifest checks: what
    /// its config reads, found by reading it (not listed by hand), then
    /// telemetry's, which every service reads through this crate. A config
    /// reads `PORT` and its own settings first and the server's last, so
    /// the README tables list them in that order.
    fn env_vars() -> Vec<EnvVar> {
        let mut vars = Self::Config::settings();
        vars.extend(cloudmart_telemetry::TelemetryConfig::settings());
        vars
    }

    /// Reads the configuration, reporting every problem at once.
    fn config(env: &dyn Env) -> Result<Self::Config, ConfigError> {
        Self::Config::from_env(env)
    }

    /// Binds the listener, connects what must be connected at start-up and
    /// starts the background loops.
    fn build(config: Self::Config) -> impl Future<Output = Result<App, StartupError>> + Send;
}

/// How long background loops get to finish after the server has drained.
const WORKER_DRAIN: Duration = Duration::from_secs(5);

/// A built service: its bound server and its background loops (the
/// notification relay, the queue consumer), run and stopped together. Port 0
/// in the config gives a free port, which [`App::port`] reports.
pub struct App {
    server: cloudmart_http::server::Server,
    workers: crate::Workers,
}

impl App {
    /// A service that is only an HTTP server.
    pub fn new(server: cloudmart_http::server::Server) -> Self {
        Self::with_workers(server, crate::Workers::new())
    }

    /// A server plus background loops.
    pub fn with_workers(server: cloudmart_http::server::Server, workers: crate::Workers) -> Self {
        Self { server, workers }
    }

    /// The port actually bound.
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// Serves until `shutdown` resolves, drains in-flight requests, then
    /// gives the background loops a bounded time to finish.
    pub async fn run_until_stopped<F>(self, shutdown: F) -> std::io::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let result = self.server.run(shutdown).await;
        self.workers.shutdown(WORKER_DRAIN).await;
        result
    }
}

/// The whole `main` of a service binary.
pub async fn main<S: Service>() -> ExitCode {
    let env = ProcessEnv;
    if std::env::args().nth(1).as_deref() == Some("healthcheck") {
        return healthcheck(&env, &S::PORT);
    }
    let config = match S::config(&env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: {e}", S::NAME);
            return ExitCode::from(1);
        }
    };
    let _guard = match cloudmart_telemetry::init(S::NAME, &env) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("{}: {e}", S::NAME);
            return ExitCode::from(1);
        }
    };
    let app = match S::build(config).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!(error = %e, "{} failed to start: {e}", S::NAME);
            return ExitCode::from(1);
        }
    };
    tracing::info!(
        port = app.port(),
        version = env!("CARGO_PKG_VERSION"),
        "{} listening on port {}",
        S::NAME,
        app.port()
    );
    match app
        .run_until_stopped(cloudmart_http::server::shutdown_signal())
        .await
    {
        Ok(()) => {
            tracing::info!("{} stopped", S::NAME);
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "{} stopped with an error: {e}", S::NAME);
            ExitCode::from(1)
        }
    }
}

/// `GET /health` on the local port; exit 0 on a 200.
fn healthcheck(env: &dyn Env, port: &Setting<u16>) -> ExitCode {
    // The probe needs the real port, so 0 ("pick a free one") is refused.
    let port = Setting::<u16>::whole(port.var, 1, u16::MAX);
    let mut reader = EnvReader::new(env);
    let port = reader.get(&port);
    if let Err(e) = reader.finish() {
        eprintln!("healthcheck: {e}");
        return ExitCode::from(1);
    }
    match probe(port) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("healthcheck: {e}");
            ExitCode::from(1)
        }
    }
}

fn probe(port: u16) -> Result<(), String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let timeout = Duration::from_secs(2);
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("{addr}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut head = [0u8; 32];
    let n = stream.read(&mut head).map_err(|e| e.to_string())?;
    let line = String::from_utf8_lossy(&head[..n]);
    if line.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(format!(
            "unexpected answer from {addr}: {}",
            line.lines().next().unwrap_or_default()
        ))
    }
}
