//! `scripts/engine.sh` on bad ground: each case gets one clear line, a
//! non-zero exit, and leaves nothing half-started. These run in a plain
//! `cargo test` and never start a daemon that stays up.
//!
//! Where a Docker daemon already answers without this script (a laptop with
//! Docker Desktop), `up` rightly does nothing, so these cases cannot be
//! reached; they print SKIPPED there.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::docker::{output, repo_root};

/// A fresh state directory for one case, removed on drop.
struct EngineDir(PathBuf);

impl EngineDir {
    fn new(case: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "cloudmart-engine-test-{case}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temp dir");
        Self(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for EngineDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether a daemon answers without help, which makes `up` a no-op.
fn machine_has_its_own_daemon(test: &str) -> bool {
    let answers = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .env_remove("DOCKER_HOST")
        .output()
        .is_ok_and(|o| o.status.success());
    if answers {
        eprintln!(
            "SKIPPED: {test}: a Docker daemon already answers here, so engine.sh up does nothing"
        );
    }
    answers
}

fn is_root() -> bool {
    output("id", &["-u"]).is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `scripts/engine.sh up` with state in `dir`, through `wrapper` (e.g.
/// `setpriv ...`) when given.
fn engine_up(dir: &Path, wrapper: &[&str], env: &[(&str, &str)]) -> Output {
    let script = repo_root().join("scripts/engine.sh");
    let script = script.to_str().expect("a UTF-8 path");
    let (program, args): (&str, Vec<&str>) = match wrapper.split_first() {
        Some((p, rest)) => (p, rest.iter().copied().chain([script, "up"]).collect()),
        None => (script, vec!["up"]),
    };
    Command::new(program)
        .args(args)
        .env_remove("DOCKER_HOST")
        .env("CLOUDMART_ENGINE_DIR", dir)
        .envs(env.iter().copied())
        .output()
        .expect("engine.sh runs")
}

fn assert_one_line_failure(out: &Output, expected: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "exit code; stderr: {stderr}");
    assert!(
        out.stdout.is_empty(),
        "nothing to eval on failure: {:?}",
        out.stdout
    );
    let first = stderr.lines().next().unwrap_or_default().to_owned();
    assert!(first.starts_with("scripts/engine.sh: "), "{stderr}");
    assert!(first.contains(expected), "{stderr}");
    first
}

/// No dockerd runs on `dir`.
fn no_daemon_on(dir: &Path) {
    let pattern = format!("dockerd.*{}", dir.display());
    let found = output("pgrep", &["-f", &pattern]).expect("pgrep");
    assert!(
        !found.status.success(),
        "a dockerd on {} was left running",
        dir.display()
    );
}

#[test]
fn engine_refuses_a_socket_path_taken_by_a_file() {
    let test = "engine_refuses_a_socket_path_taken_by_a_file";
    if machine_has_its_own_daemon(test) || !is_root() {
        return;
    }
    let dir = EngineDir::new("file");
    let sock = dir.path().join("taken.sock");
    std::fs::write(&sock, "not a socket").expect("a file");

    let out = engine_up(
        dir.path(),
        &[],
        &[("CLOUDMART_ENGINE_SOCK", sock.to_str().unwrap())],
    );

    assert_one_line_failure(&out, "is taken by a file that is not a socket");
    assert_eq!(
        std::fs::read_to_string(&sock).unwrap(),
        "not a socket",
        "the file is left as it was"
    );
    no_daemon_on(dir.path());
}

#[test]
fn engine_refuses_a_socket_path_someone_listens_on() {
    let test = "engine_refuses_a_socket_path_someone_listens_on";
    if machine_has_its_own_daemon(test) || !is_root() {
        return;
    }
    let dir = EngineDir::new("listening");
    let sock = dir.path().join("busy.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).expect("a listening socket");

    let out = engine_up(
        dir.path(),
        &[],
        &[("CLOUDMART_ENGINE_SOCK", sock.to_str().unwrap())],
    );

    assert_one_line_failure(&out, "another process listens on it");
    assert!(sock.exists(), "the other process's socket is left alone");
    no_daemon_on(dir.path());
}

#[test]
fn engine_needs_root_to_start_a_daemon() {
    let test = "engine_needs_root_to_start_a_daemon";
    if machine_has_its_own_daemon(test) {
        return;
    }
    let dir = EngineDir::new("user");
    // As root, drop to nobody for this one run.
    let wrapper: &[&str] = if is_root() {
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ]
    } else {
        &[]
    };

    let out = engine_up(dir.path(), wrapper, &[]);

    assert_one_line_failure(&out, "starting one needs root");
}

#[test]
fn engine_only_installs_on_debian() {
    let test = "engine_only_installs_on_debian";
    if machine_has_its_own_daemon(test) || !is_root() {
        return;
    }
    let dir = EngineDir::new("os");
    // A mount namespace of its own in which /etc/debian_version is not a
    // Debian marker file; the machine's own is untouched.
    let script = repo_root().join("scripts/engine.sh");
    let out = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            "mount --bind /dev/null /etc/debian_version && exec \"$0\" up",
        ])
        .arg(&script)
        .env_remove("DOCKER_HOST")
        .env("CLOUDMART_ENGINE_DIR", dir.path())
        .output()
        .expect("unshare runs");

    assert_one_line_failure(&out, "can only install one on Debian");
    no_daemon_on(dir.path());
}

#[test]
fn engine_shows_the_log_of_a_daemon_that_fails_to_start() {
    let test = "engine_shows_the_log_of_a_daemon_that_fails_to_start";
    if machine_has_its_own_daemon(test) || !is_root() {
        return;
    }
    let dir = EngineDir::new("fails");

    let out = engine_up(
        dir.path(),
        &[],
        &[("CLOUDMART_DOCKERD_FLAGS", "--no-such-flag")],
    );

    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("dockerd did not start; the last lines of"),
        "{stderr}"
    );
    assert!(
        stderr.contains("no-such-flag"),
        "the log names the cause: {stderr}"
    );
    let run = dir.path().join("run");
    assert!(!run.join("dockerd.pid").exists(), "no pid file left");
    assert!(!run.join("docker.sock").exists(), "no socket left");
    no_daemon_on(dir.path());
}
