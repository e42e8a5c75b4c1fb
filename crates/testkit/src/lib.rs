//! Test support shared by CloudMart's integration tests.
//!
//! - [`free_port`] and [`closed_port`] for wiring services together;
//! - [`wait_until`] to wait on a condition with a deadline instead of sleeping;
//! - [`metric`] to read one metric from a service's `/metrics`;
//! - [`ServiceProcess`] to run a real service binary, capture its output,
//!   signal it and reap it;
//! - [`logs::logs`] to capture every JSON log line the services write;
//! - [`proxy::TcpProxy`] to cut and restore a connection to a real server;
//! - [`servers::require`] to find a real server or skip (fail under CI);
//! - [`otlp::Collector`] to receive the spans the services export;
//! - [`TempDir`] for a data directory that is removed when the test ends,
//!   failed or not.

pub mod logs;
pub mod otlp;
pub mod proxy;
pub mod servers;
mod temp;

pub use temp::TempDir;

use std::io::Read;
use std::net::TcpListener;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The sum of every sample of metric `name` on `base_url`'s `/metrics`
/// whose labels include all of `labels`; `None` if the page cannot be read
/// or has no such sample. A counter's name is given with `_total`.
pub async fn metric(
    client: &reqwest::Client,
    base_url: &str,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    let text = client
        .get(format!("{base_url}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let has_labels = wanted.iter().all(|w| label_text.split(',').any(|l| l == w));
            (metric == name && has_labels).then(|| value.parse::<f64>().ok())?
        })
        .reduce(|a, b| a + b)
}

/// A port that was free a moment ago (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// A port nothing listens on, for "unreachable" cases.
pub fn closed_port() -> u16 {
    free_port()
}

/// Polls `check` every 20 ms until it returns `Some`, or `None` once
/// `deadline` has passed.
pub async fn wait_until<T, F, Fut>(deadline: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A running service binary whose stdout and stderr are captured.
pub struct ServiceProcess {
    child: Child,
    output: Arc<Mutex<String>>,
    pumps: Vec<thread::JoinHandle<()>>,
}

impl ServiceProcess {
    /// Starts `binary` with exactly `env` (the parent's environment is cleared
    /// except `PATH`), so a variable missing here is missing in the process.
    pub fn start(binary: &str, env: &[(&str, &str)]) -> std::io::Result<Self> {
        let mut cmd = Command::new(binary);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn()?;
        let output = Arc::new(Mutex::new(String::new()));
        let mut pumps = Vec::new();
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let out = output.clone();
            pumps.push(thread::spawn(move || pump(stream, &out)));
        }
        Ok(Self {
            child,
            output,
            pumps,
        })
    }

    /// Starts `binary` on a free port with `env` and waits until its
    /// `/health` answers; panics with the process's output if it never does.
    pub async fn start_healthy(binary: &str, env: &[(&str, &str)]) -> (Self, u16) {
        let port = free_port();
        let port_text = port.to_string();
        let mut vars = env.to_vec();
        vars.push(("PORT", &port_text));
        let mut process = Self::start(binary, &vars).unwrap_or_else(|e| panic!("{binary}: {e}"));
        if !process.wait_healthy(port, Duration::from_secs(10)).await {
            panic!(
                "{binary} never became healthy on {port}; output:\n{}",
                process.output()
            );
        }
        (process, port)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything printed so far.
    pub fn output(&self) -> String {
        self.output.lock().map(|o| o.clone()).unwrap_or_default()
    }

    /// Sends a signal by name (`TERM`, `INT`, `KILL`) with `kill(1)`.
    pub fn signal(&self, name: &str) -> std::io::Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(std::io::Error::other(format!("kill -{name} failed")))
        }
    }

    /// Waits up to `deadline` for the process to exit. Once it has, its
    /// output is complete: the readers are joined before this returns.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + deadline;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                for pump in self.pumps.drain(..) {
                    let _ = pump.join();
                }
                return Some(status);
            }
            if Instant::now() >= end {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until `GET http://127.0.0.1:{port}/health` answers 200.
    pub async fn wait_healthy(&mut self, port: u16, deadline: Duration) -> bool {
        let client = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{port}/health");
        wait_until(deadline, || {
            let client = client.clone();
            let url = url.clone();
            async move {
                match client
                    .get(&url)
                    .timeout(Duration::from_millis(500))
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => Some(()),
                    _ => None,
                }
            }
        })
        .await
        .is_some()
    }

    /// TCP ports this process listens on (from `/proc`).
    pub fn listening_ports(&self) -> Vec<u16> {
        listening_ports(self.pid())
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pump(mut stream: Box<dyn Read + Send>, out: &Mutex<String>) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        if let Ok(mut o) = out.lock() {
            o.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
}

/// TCP ports `pid` listens on: its socket inodes matched against the
/// LISTEN rows of `/proc/net/tcp` and `/proc/net/tcp6`.
pub fn listening_ports(pid: u32) -> Vec<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter_map(|p| {
                    let s = p.to_string_lossy().into_owned();
                    s.strip_prefix("socket:[")
                        .and_then(|r| r.strip_suffix(']'))
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default();
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for row in text.lines().skip(1) {
            let cols: Vec<&str> = row.split_whitespace().collect();
            // Columns: sl local_address rem_address st ... inode (index 9).
            if cols.len() > 9
                && cols[3] == "0A"
                && inodes.iter().any(|i| i == cols[9])
                && let Some(port) = cols[1]
                    .rsplit(':')
                    .next()
                    .and_then(|hex| u16::from_str_radix(hex, 16).ok())
            {
                ports.push(port);
            }
        }
    }
    ports.sort_unstable();
    ports.dedup();
    ports
}
