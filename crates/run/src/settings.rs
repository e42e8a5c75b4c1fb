//! The settings check every service runs in its tests: the variables its
//! configuration asks the environment for are exactly the ones it declares.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use cloudmart_config::{Env, FromEnv};
use cloudmart_telemetry::TelemetryConfig;

use crate::Service;

/// An environment that remembers every key asked of it.
struct Asked {
    values: HashMap<String, String>,
    keys: Mutex<Vec<String>>,
}

impl Env for Asked {
    fn var(&self, key: &str) -> Option<String> {
        self.keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(key.to_owned());
        self.values.get(key).cloned()
    }
}

impl Asked {
    /// Runs `S`'s config read and telemetry's on `values`: the keys asked,
    /// and the problems.
    fn read<S: Service>(values: HashMap<String, String>) -> (Vec<String>, Vec<String>) {
        let env = Self {
            values,
            keys: Mutex::new(Vec::new()),
        };
        let mut problems = match S::config(&env) {
            Ok(_) => Vec::new(),
            Err(e) => e.problems().to_vec(),
        };
        if let Err(e) = TelemetryConfig::from_env(&env) {
            problems.extend_from_slice(e.problems());
        }
        let keys = env
            .keys
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (keys, problems)
    }
}

/// Checks `S`'s settings contract; every service calls it from a test.
///
/// # Panics
///
/// When `S`'s configuration asks for a variable it does not declare, when
/// a variable is declared twice, or when reading an empty environment
/// reports anything but the required variables as unset (a declared
/// default its own rule refuses).
pub fn check_settings<S: Service>() {
    let declared = S::env_vars();
    let mut seen = HashSet::new();
    for var in &declared {
        assert!(
            seen.insert(var.name),
            "{}: {} is declared twice",
            S::NAME,
            var.name
        );
    }

    let (asked_unset, problems) = Asked::read::<S>(HashMap::new());
    let required: Vec<String> = declared
        .iter()
        .filter(|v| v.required)
        .map(|v| format!("{} is not set (expected {})", v.name, v.expected))
        .collect();
    assert_eq!(
        problems,
        required,
        "{}: with nothing set, only the required variables may be reported",
        S::NAME
    );

    // Every variable set, so a read that only happens when another
    // variable is set is asked too.
    let every = declared
        .iter()
        .map(|v| (v.name.to_owned(), v.default.unwrap_or("x").to_owned()))
        .collect();
    let (asked_set, _) = Asked::read::<S>(every);
    for key in asked_unset.iter().chain(&asked_set) {
        assert!(
            seen.contains(key.as_str()),
            "{}: its configuration reads {key} but does not declare it",
            S::NAME
        );
    }
}

#[cfg(test)]
mod tests {
    use cloudmart_config::{EnvReader, EnvVar, Setting};

    use super::*;
    use crate::{App, StartupError};

    const PORT: Setting<u16> = cloudmart_config::port("8080");
    const LIMIT: Setting<u32> = Setting::<u32>::whole(
        EnvVar::with_default("LIMIT", "10", "1 to 100", "a limit"),
        1,
        100,
    );

    /// A config that reads `PORT` and `LIMIT` through the reader.
    struct Limits;

    impl FromEnv for Limits {
        fn read(r: &mut EnvReader<'_>) -> Self {
            r.get(&PORT);
            r.get(&LIMIT);
            Limits
        }
    }

    struct Honest;
    struct Cheat;

    impl Service for Honest {
        const NAME: &'static str = "honest";
        const PORT: Setting<u16> = PORT;
        type Config = Limits;

        async fn build(_: Limits) -> Result<App, StartupError> {
            Err("not built in this test".into())
        }
    }

    impl Service for Cheat {
        const NAME: &'static str = "cheat";
        const PORT: Setting<u16> = PORT;
        type Config = Limits;

        fn config(env: &dyn Env) -> Result<Limits, cloudmart_config::ConfigError> {
            let _ = env.var("SNEAKY");
            Limits::from_env(env)
        }

        async fn build(_: Limits) -> Result<App, StartupError> {
            Err("not built in this test".into())
        }
    }

    #[test]
    fn a_service_that_reads_only_what_it_declares_passes() {
        check_settings::<Honest>();
        let names: Vec<_> = Honest::env_vars().iter().map(|v| v.name).collect();
        assert_eq!(&names[..2], ["PORT", "LIMIT"]);
        assert!(names.contains(&"RUST_LOG"), "{names:?}");
    }

    #[test]
    #[should_panic(expected = "cheat: its configuration reads SNEAKY but does not declare it")]
    fn an_undeclared_read_fails_the_check() {
        check_settings::<Cheat>();
    }
}
