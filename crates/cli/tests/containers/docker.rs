//! The Docker engine as the tests drive it: through its own command-line
//! tools (`docker`, `docker-compose`), the way a user or an instructor does,
//! so that what the tests see is what they would see.
//!
//! Everything a test starts is owned by a guard that removes it on drop
//! ([`Compose`], [`Container`], [`Network`]), so a failed assertion still
//! leaves the engine as it was: no container, network or volume behind,
//! images kept for the next run.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The repository root, where the Dockerfile and compose files are.
pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `program args`, returning its stdout (trimmed) on exit 0, and a
/// message with the command, its exit code and its stderr otherwise.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = output(program, args)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!(
            "`{program} {}` exited with {}: {}",
            args.join(" "),
            out.status
                .code()
                .map_or("a signal".to_owned(), |c| c.to_string()),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `program args` and returns whatever happened.
pub(crate) fn output(program: &str, args: &[&str]) -> Result<Output, String> {
    Command::new(program)
        .args(args)
        .current_dir(repo_root())
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))
}

/// `docker args`.
pub(crate) fn docker(args: &[&str]) -> Result<String, String> {
    run("docker", args)
}

/// Whether an engine answers, with the reason when it does not.
pub(crate) fn engine() -> Result<String, String> {
    docker(&["version", "--format", "{{.Server.Version}}"]).map_err(|e| {
        format!("no Docker engine answers ({e}); run: eval \"$(scripts/engine.sh up)\"")
    })
}

/// Fails with a clear message when an image the tests need is missing.
pub(crate) fn require_images(images: &[&str]) {
    let missing: Vec<&str> = images
        .iter()
        .copied()
        .filter(|i| docker(&["image", "inspect", "--format", "{{.Id}}", i]).is_err())
        .collect();
    assert!(
        missing.is_empty(),
        "images missing: {} (make test-containers builds them)",
        missing.join(", ")
    );
}

/// `docker inspect` of one container.
#[derive(Debug, Clone)]
pub(crate) struct Inspect(pub Value);

impl Inspect {
    /// Inspects `container` (a name or id).
    pub(crate) fn of(container: &str) -> Result<Self, String> {
        let text = docker(&["inspect", container])?;
        let all: Value = serde_json::from_str(&text).map_err(|e| format!("docker inspect: {e}"))?;
        all.get(0)
            .cloned()
            .map(Inspect)
            .ok_or_else(|| format!("docker inspect {container}: no such container"))
    }

    fn str_at(&self, pointer: &str) -> &str {
        self.0
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    fn i64_at(&self, pointer: &str) -> i64 {
        self.0.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
    }

    /// The full container id.
    pub(crate) fn id(&self) -> &str {
        self.str_at("/Id")
    }

    /// `running`, `exited`, `restarting`, ...
    pub(crate) fn status(&self) -> &str {
        self.str_at("/State/Status")
    }

    /// `starting`, `healthy`, `unhealthy`, or empty without a health check.
    pub(crate) fn health(&self) -> &str {
        self.str_at("/State/Health/Status")
    }

    /// The output of the last health checks, newest last.
    pub(crate) fn health_log(&self) -> Vec<String> {
        self.0
            .pointer("/State/Health/Log")
            .and_then(Value::as_array)
            .map(|log| {
                log.iter()
                    .map(|e| {
                        format!(
                            "exit {}: {}",
                            e["ExitCode"],
                            e["Output"].as_str().unwrap_or("").trim()
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The exit code of the last run.
    pub(crate) fn exit_code(&self) -> i64 {
        self.i64_at("/State/ExitCode")
    }

    /// Whether the kernel's OOM killer ended the last run.
    pub(crate) fn oom_killed(&self) -> bool {
        self.0.pointer("/State/OOMKilled").and_then(Value::as_bool) == Some(true)
    }

    /// How often the restart policy has restarted it.
    pub(crate) fn restart_count(&self) -> i64 {
        self.i64_at("/RestartCount")
    }

    /// How long the last run lasted, from the engine's own timestamps.
    pub(crate) fn last_run(&self) -> Option<Duration> {
        let started = parse_time(self.str_at("/State/StartedAt"))?;
        let finished = parse_time(self.str_at("/State/FinishedAt"))?;
        // A process that exits at once can be stamped as finished a little
        // before the engine stamps it as started (seen: 0.7 ms apart).
        Some(finished.saturating_sub(started))
    }

    /// Whether the root filesystem is mounted read-only.
    pub(crate) fn read_only(&self) -> bool {
        self.0
            .pointer("/HostConfig/ReadonlyRootfs")
            .and_then(Value::as_bool)
            == Some(true)
    }

    /// The memory limit in bytes, 0 for none.
    pub(crate) fn memory_limit(&self) -> i64 {
        self.i64_at("/HostConfig/Memory")
    }

    /// The container's address on its first (or only) network.
    pub(crate) fn ip(&self) -> Option<Ipv4Addr> {
        self.0
            .pointer("/NetworkSettings/Networks")
            .and_then(Value::as_object)?
            .values()
            .filter_map(|n| n["IPAddress"].as_str()?.parse().ok())
            .next()
    }
}

/// Seconds since the epoch of an RFC 3339 time as Docker writes it
/// (`2026-12-02T05:01:02.123456789Z`), as a duration; enough to subtract.
fn parse_time(s: &str) -> Option<Duration> {
    let (date, rest) = s.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let time = rest.trim_end_matches('Z');
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (h, min, sec) = (t.next()??, t.next()??, t.next()??);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + min * 60 + sec;
    let nanos: u32 = format!("{frac:0<9}")[..9].parse().ok()?;
    (secs > 0).then(|| Duration::new(secs as u64, nanos))
}

/// Where the engine keeps a container's memory accounting, when it runs on
/// this machine: cgroup v1 or v2, with the cgroupfs or systemd driver.
fn cgroup_memory_dir(id: &str) -> Option<(PathBuf, bool)> {
    let v1 = [
        format!("/sys/fs/cgroup/memory/docker/{id}"),
        format!("/sys/fs/cgroup/memory/system.slice/docker-{id}.scope"),
    ];
    let v2 = [
        format!("/sys/fs/cgroup/docker/{id}"),
        format!("/sys/fs/cgroup/system.slice/docker-{id}.scope"),
    ];
    v1.iter()
        .map(|p| (PathBuf::from(p), true))
        .chain(v2.iter().map(|p| (PathBuf::from(p), false)))
        .find(|(p, _)| p.is_dir())
}

/// The highest memory use the kernel recorded for the container's cgroup,
/// in bytes: what a memory limit is compared with. `None` when the engine
/// runs elsewhere (Docker Desktop) or the kernel keeps no peak.
pub(crate) fn memory_peak(container: &str) -> Option<u64> {
    let id = Inspect::of(container).ok()?.id().to_owned();
    let (dir, v1) = cgroup_memory_dir(&id)?;
    let file = if v1 {
        "memory.max_usage_in_bytes"
    } else {
        "memory.peak"
    };
    std::fs::read_to_string(dir.join(file))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Starts the peak over (cgroup v1 only); false where that is not possible.
pub(crate) fn reset_memory_peak(container: &str) -> bool {
    let Some(id) = Inspect::of(container).ok().map(|i| i.id().to_owned()) else {
        return false;
    };
    match cgroup_memory_dir(&id) {
        Some((dir, true)) => std::fs::write(dir.join("memory.max_usage_in_bytes"), "0").is_ok(),
        _ => false,
    }
}

/// Mebibytes, for reports.
pub(crate) fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Polls `check` every 250 ms until it gives `Some`, or `None` after
/// `deadline`: for engine state, which is read through the CLI.
pub(crate) fn poll<T>(deadline: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A container the test started; removed (with its anonymous volumes) on drop.
#[derive(Debug)]
pub(crate) struct Container {
    /// Its name.
    pub(crate) name: String,
}

impl Container {
    /// `docker run -d --name <name> <args>`.
    pub(crate) fn run(name: &str, args: &[&str]) -> Result<Self, String> {
        let _ = docker(&["rm", "-f", "-v", name]);
        let mut all = vec!["run", "-d", "--name", name];
        all.extend_from_slice(args);
        docker(&all)?;
        Ok(Self {
            name: name.to_owned(),
        })
    }

    /// Its current `docker inspect`.
    pub(crate) fn inspect(&self) -> Inspect {
        Inspect::of(&self.name).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Its address on its network.
    pub(crate) fn ip(&self) -> Ipv4Addr {
        self.inspect()
            .ip()
            .unwrap_or_else(|| panic!("{} has no address", self.name))
    }

    /// stdout and stderr so far, interleaved as Docker stored them.
    pub(crate) fn logs(&self) -> String {
        output("docker", &["logs", &self.name])
            .map(|o| {
                let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
                s.push_str(&String::from_utf8_lossy(&o.stderr));
                s
            })
            .unwrap_or_default()
    }

    /// Waits until the health check reports `healthy` (or `unhealthy`, or
    /// the container stops), and returns the last status seen.
    pub(crate) fn wait_health(&self, want: &str, deadline: Duration) -> String {
        let mut last = String::new();
        poll(deadline, || {
            let i = Inspect::of(&self.name).ok()?;
            last = format!("{} / {}", i.status(), i.health());
            (i.health() == want || i.status() == "exited").then_some(())
        });
        last
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", "-v", &self.name]);
    }
}

/// A user-defined network: containers on it find each other by name, as on
/// a compose network. Removed on drop (after the containers on it).
#[derive(Debug)]
pub(crate) struct Network {
    /// Its name.
    pub(crate) name: String,
}

impl Network {
    /// Creates `name`, replacing one left over from an aborted run.
    pub(crate) fn create(name: &str) -> Result<Self, String> {
        let _ = docker(&["network", "rm", name]);
        docker(&["network", "create", name])?;
        Ok(Self {
            name: name.to_owned(),
        })
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = docker(&["network", "rm", &self.name]);
    }
}

/// One compose project from `docker-compose.yml` plus overrides, brought
/// down with its volumes on drop.
#[derive(Debug)]
pub(crate) struct Compose {
    /// `-p`: also the prefix of its containers, network and volumes.
    pub(crate) project: String,
    files: Vec<String>,
}

impl Compose {
    /// The project `project` over the repository's compose files `files`.
    pub(crate) fn new(project: &str, files: &[&str]) -> Self {
        Self {
            project: project.to_owned(),
            files: files.iter().map(|f| (*f).to_owned()).collect(),
        }
    }

    /// `docker-compose -p <project> -f ... <args>`.
    pub(crate) fn run(&self, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["-p", self.project.as_str()];
        for f in &self.files {
            all.push("-f");
            all.push(f);
        }
        all.extend_from_slice(args);
        run("docker-compose", &all)
    }

    /// The container of `service`.
    pub(crate) fn container(&self, service: &str) -> String {
        let id = self
            .run(&["ps", "-q", service])
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!id.is_empty(), "compose service {service} has no container");
        id.lines().next().unwrap_or_default().to_owned()
    }

    /// Its current `docker inspect`.
    pub(crate) fn inspect(&self, service: &str) -> Inspect {
        Inspect::of(&self.container(service)).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The address of `service`'s container on the project's network, which
    /// this machine reaches directly when the engine runs here.
    pub(crate) fn ip(&self, service: &str) -> Ipv4Addr {
        self.inspect(service)
            .ip()
            .unwrap_or_else(|| panic!("{service} has no address"))
    }

    /// The project's containers by service, as the engine sees them now.
    fn states(&self) -> Vec<(String, Inspect)> {
        let label = format!("label=com.docker.compose.project={}", self.project);
        let ids = docker(&["ps", "-a", "-q", "--filter", &label]).unwrap_or_default();
        let ids: Vec<&str> = ids.lines().collect();
        if ids.is_empty() {
            return Vec::new();
        }
        let mut args = vec!["inspect"];
        args.extend(&ids);
        let all: Value = docker(&args)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        all.as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                let service = c["Config"]["Labels"]["com.docker.compose.service"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                (service, Inspect(c.clone()))
            })
            .collect()
    }

    /// Runs `up_args` (an `up -d ...`) and, while it runs and after, polls
    /// the containers until every one of `services` is `healthy` by its own
    /// health check. Returns when each first was, counted from the start
    /// of `up`. Fails as soon as one exits or turns `unhealthy`, with its
    /// last log lines.
    pub(crate) fn up_healthy(
        &self,
        up_args: &[&str],
        services: &[&str],
        deadline: Duration,
    ) -> Result<Vec<(String, Duration)>, String> {
        let start = Instant::now();
        std::thread::scope(|scope| {
            let up = scope.spawn(|| self.run(up_args));
            let mut healthy: Vec<(String, Duration)> = Vec::new();
            loop {
                for (service, i) in self.states() {
                    if !services.contains(&service.as_str())
                        || healthy.iter().any(|(h, _)| *h == service)
                    {
                        continue;
                    }
                    match (i.status(), i.health()) {
                        (_, "healthy") => healthy.push((service, start.elapsed())),
                        (_, "unhealthy") | ("exited", _) | ("dead", _) => {
                            let logs = output("docker", &["logs", "--tail", "5", i.id()])
                                .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                                .unwrap_or_default();
                            return Err(format!(
                                "{service} is {} / {} (exit {}); health: {:?}; last log lines:\n{logs}",
                                i.status(),
                                i.health(),
                                i.exit_code(),
                                i.health_log()
                            ));
                        }
                        _ => {}
                    }
                }
                if up.is_finished() && healthy.len() == services.len() {
                    break;
                }
                if start.elapsed() > deadline {
                    let waiting: Vec<&&str> = services
                        .iter()
                        .filter(|s| !healthy.iter().any(|(h, _)| h == **s))
                        .collect();
                    return Err(format!(
                        "not healthy within {deadline:?}: {waiting:?} (healthy: {healthy:?})"
                    ));
                }
                std::thread::sleep(Duration::from_millis(300));
            }
            up.join().map_err(|_| "compose up panicked".to_owned())??;
            healthy.sort_by_key(|(_, at)| *at);
            Ok(healthy)
        })
    }

    /// `down -v`: containers, network and volumes go; images stay.
    pub(crate) fn down(&self) -> Result<String, String> {
        self.run(&[
            "--profile",
            "load",
            "down",
            "-v",
            "--remove-orphans",
            "-t",
            "5",
        ])
    }

    /// What of the project is still there: containers, networks, volumes.
    pub(crate) fn leftovers(&self) -> Vec<String> {
        let label = format!("label=com.docker.compose.project={}", self.project);
        let mut left = Vec::new();
        for (what, args) in [
            ("container", vec!["ps", "-a", "-q", "--filter", &label]),
            ("network", vec!["network", "ls", "-q", "--filter", &label]),
            ("volume", vec!["volume", "ls", "-q", "--filter", &label]),
        ] {
            if let Ok(out) = docker(&args) {
                left.extend(out.lines().map(|l| format!("{what} {l}")));
            }
        }
        left
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        if let Err(e) = self.down() {
            eprintln!("compose down failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_times_subtract() {
        let a = parse_time("2026-12-02T05:01:02.5Z").unwrap();
        let b = parse_time("2026-12-02T05:01:04.25Z").unwrap();
        assert_eq!(b - a, Duration::from_millis(1750));
        let c = parse_time("2026-12-03T00:00:00.000000001Z").unwrap();
        assert_eq!(
            c - parse_time("2026-12-02T23:59:59Z").unwrap(),
            Duration::new(1, 1)
        );
        // The epoch of a container that never ran.
        assert_eq!(parse_time("0001-01-01T00:00:00Z"), None);
    }
}
