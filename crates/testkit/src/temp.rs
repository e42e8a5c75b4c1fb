//! Temporary directories that go away when the test ends, whether it passed
//! or panicked, so `cargo test` leaves nothing behind in the system temp
//! directory.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// A fresh, empty directory under [`std::env::temp_dir`], removed with
/// everything in it when dropped.
///
/// A failing assertion unwinds the test and drops the guard on its way
/// out, so the directory is removed then too. Only a killed test process
/// (SIGKILL, an abort) leaves it; the name says which test and process
/// made it: `cloudmart-<tag>-<pid>-<n>`.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `cloudmart-<tag>-<pid>-<n>`; panics naming the path if it
    /// cannot.
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("cloudmart-{tag}-{}-{n}", std::process::id()));
        // A leftover of an earlier, killed process with the same pid.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        Self { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory as text, for a variable such as `DATA_DIR`.
    pub fn to_env(&self) -> String {
        self.path.display().to_string()
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_directory_is_removed_on_drop_with_its_contents() {
        let dir = TempDir::new("temp-test");
        let path = dir.path().to_owned();
        std::fs::create_dir_all(path.join("nested")).unwrap();
        std::fs::write(path.join("nested/db.jsonl"), "{}\n").unwrap();

        drop(dir);

        assert!(!path.exists(), "{} is still there", path.display());
    }

    #[test]
    fn the_directory_is_removed_when_the_test_panics() {
        let mut made = None;

        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let dir = TempDir::new("temp-test");
            made = Some(dir.path().to_owned());
            std::fs::write(dir.path().join("data"), "x").unwrap();
            panic!("a failing assertion");
        }));

        assert!(outcome.is_err());
        let path = made.unwrap();
        assert!(!path.exists(), "{} is still there", path.display());
    }

    #[test]
    fn two_guards_never_share_a_directory() {
        let a = TempDir::new("temp-test");
        let b = TempDir::new("temp-test");

        assert_ne!(a.path(), b.path());
        assert!(a.path().is_dir() && b.path().is_dir());
        assert!(
            a.path()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("cloudmart-temp-test-")
        );
    }
}
