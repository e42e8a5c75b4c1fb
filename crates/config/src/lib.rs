//! Typed configuration from environment variables, read once at startup.
//!
//! Every service declares the variables it reads as [`Setting`] constants:
//! name, default, parse rule and meaning, once. Reading a setting parses it
//! and records the declaration, so the README tables and doctor's manifest
//! checks are made from what the code actually reads ([`FromEnv::settings`]),
//! not from a list kept by hand.
//!
//! Reading never stops at the first problem: [`EnvReader`] collects every
//! missing or invalid variable and [`EnvReader::finish`] reports them all in
//! one line, so a trainee fixing a Deployment sees the whole list at once.

use std::collections::HashMap;
use std::fmt;

mod setting;

pub use setting::Setting;

/// Where configuration values come from.
///
/// Services read through this trait instead of `std::env` so tests can pass
/// a map and never call `set_var`, and so `cloudmart up` can hand each
/// in-process service its own view of the environment.
pub trait Env: Send + Sync {
    /// The value of `key`, or `None` when it is unset.
    fn var(&self, key: &str) -> Option<String>;
}

/// The real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }
}

impl Env for HashMap<String, String> {
    fn var(&self, key: &str) -> Option<String> {
        self.get(key).cloned()
    }
}

impl<E: Env + ?Sized> Env for &E {
    fn var(&self, key: &str) -> Option<String> {
        (**self).var(key)
    }
}

/// An environment with explicit overrides on top of a base.
///
/// `cloudmart up` uses it to give each service its port and downstream URLs
/// while passing the caller's own variables (for example `MONGODB_URI`) through.
pub struct Layered<'a> {
    overrides: HashMap<String, String>,
    base: &'a dyn Env,
}

impl<'a> Layered<'a> {
    /// Wraps `base`; values set with [`Layered::set`] win over it.
    pub fn new(base: &'a dyn Env) -> Self {
        Self {
            overrides: HashMap::new(),
            base,
        }
    }

    /// Sets `key` to `value`, hiding whatever the base holds.
    pub fn set(mut self, key: &str, value: impl Into<String>) -> Self {
        self.overrides.insert(key.to_owned(), value.into());
        self
    }
}

impl Env for Layered<'_> {
    fn var(&self, key: &str) -> Option<String> {
        self.overrides
            .get(key)
            .cloned()
            .or_else(|| self.base.var(key))
    }
}

/// One environment variable a service reads: its contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvVar {
    /// The variable's name, e.g. `DB_NAME`.
    pub name: &'static str,
    /// The value used when it is unset; `None` means the variable is required
    /// (or, for optional features, that the feature is off when it is unset).
    pub default: Option<&'static str>,
    /// Whether startup fails when it is unset.
    pub required: bool,
    /// What values are allowed, used in error messages.
    pub expected: &'static str,
    /// What it does, used in the README tables.
    pub meaning: &'static str,
    /// Whether the value is secret: it is never echoed in errors or logs.
    pub secret: bool,
}

impl EnvVar {
    /// A variable with a default value.
    pub const fn with_default(
        name: &'static str,
        default: &'static str,
        expected: &'static str,
        meaning: &'static str,
    ) -> Self {
        Self::declare(name, Some(default), false, expected, meaning)
    }

    /// A variable that must be set.
    pub const fn required(
        name: &'static str,
        expected: &'static str,
        meaning: &'static str,
    ) -> Self {
        Self::declare(name, None, true, expected, meaning)
    }

    /// A variable whose absence switches a feature off.
    pub const fn optional(
        name: &'static str,
        expected: &'static str,
        meaning: &'static str,
    ) -> Self {
        Self::declare(name, None, false, expected, meaning)
    }

    const fn declare(
        name: &'static str,
        default: Option<&'static str>,
        required: bool,
        expected: &'static str,
        meaning: &'static str,
    ) -> Self {
        Self {
            name,
            default,
            required,
            expected,
            meaning,
            secret: false,
        }
    }

    /// Marks the variable as secret.
    pub const fn secret(mut self) -> Self {
        self.secret = true;
        self
    }
}

/// All the configuration problems found at startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    problems: Vec<String>,
}

impl ConfigError {
    /// Each problem, one per variable.
    pub fn problems(&self) -> &[String] {
        &self.problems
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: {}", self.problems.join("; "))
    }
}

impl std::error::Error for ConfigError {}

/// Reads [`Setting`]s and collects problems.
///
/// Every read also records the setting's declaration, so reading an empty
/// environment lists what a configuration reads ([`FromEnv::settings`]).
pub struct EnvReader<'a> {
    env: &'a dyn Env,
    problems: Vec<String>,
    declared: Vec<EnvVar>,
}

impl<'a> EnvReader<'a> {
    /// Starts reading from `env`.
    pub fn new(env: &'a dyn Env) -> Self {
        Self {
            env,
            problems: Vec::new(),
            declared: Vec::new(),
        }
    }

    /// The value of a setting that has a default. An invalid value is
    /// recorded as a problem and the default stands in for it, so callers
    /// need no fallback of their own ([`EnvReader::finish`] fails anyway).
    ///
    /// # Panics
    ///
    /// When the setting declares no default, or one its own rule refuses:
    /// a mistake in the declaration, which each service's settings test
    /// finds by reading an empty environment.
    pub fn get<T>(&mut self, setting: &Setting<T>) -> T {
        if let Some(value) = self.value(setting) {
            return value;
        }
        match setting.default_value() {
            Some(Ok(default)) => default,
            Some(Err(why)) => panic!(
                "{}: the declared default is refused by its own rule: {why}",
                setting.var.name
            ),
            None => panic!(
                "{} declares no default; read it with required() or optional()",
                setting.var.name
            ),
        }
    }

    /// The value of a setting that must be set. Unset or invalid is a
    /// problem, and `T::default()` stands in until [`EnvReader::finish`].
    pub fn required<T: Default>(&mut self, setting: &Setting<T>) -> T {
        self.value(setting).unwrap_or_default()
    }

    /// The value of a setting whose absence switches a feature off: `None`
    /// when it is unset (or invalid, which is also a problem).
    pub fn optional<T>(&mut self, setting: &Setting<T>) -> Option<T> {
        self.value(setting)
    }

    /// Records a problem that is not about one value's syntax.
    pub fn problem(&mut self, problem: impl Into<String>) {
        self.problems.push(problem.into());
    }

    /// How many problems were found so far: lets a reader skip a check
    /// across values when one of them is already reported as invalid.
    pub fn problem_count(&self) -> usize {
        self.problems.len()
    }

    /// Finishes reading: every problem found, in one error.
    pub fn finish(self) -> Result<(), ConfigError> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError {
                problems: self.problems,
            })
        }
    }

    /// The parsed value from the environment; `None` when it is unset (a
    /// problem if required) or invalid (a problem).
    fn value<T>(&mut self, setting: &Setting<T>) -> Option<T> {
        let var = setting.var;
        self.declared.push(var);
        let Some(raw) = self.raw(&var) else {
            if var.required {
                self.problems.push(format!(
                    "{} is not set (expected {})",
                    var.name, var.expected
                ));
            }
            return None;
        };
        match setting.parse(&raw) {
            Ok(value) => Some(value),
            Err(why) => {
                self.invalid(&var, &raw, &why);
                None
            }
        }
    }

    /// The raw value, treating an empty string as unset.
    fn raw(&self, var: &EnvVar) -> Option<String> {
        self.env
            .var(var.name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    fn invalid(&mut self, var: &EnvVar, value: &str, why: &str) {
        let shown = if var.secret {
            "<redacted>".to_owned()
        } else {
            format!("{value:?}")
        };
        let why = if why.is_empty() {
            String::new()
        } else {
            format!(": {why}")
        };
        self.problems.push(format!(
            "{}={shown} is invalid{why} (expected {})",
            var.name, var.expected
        ));
    }
}

/// A configuration read from declared [`Setting`]s.
///
/// `read` must read every setting whatever the values of the others, so
/// that reading an empty environment visits every declaration: that visit
/// is the list the README tables and doctor's checks are made from.
pub trait FromEnv: Sized {
    /// Reads every setting, recording problems in `r` instead of stopping.
    fn read(r: &mut EnvReader<'_>) -> Self;

    /// Reads from `env`, reporting every problem at once.
    fn from_env(env: &dyn Env) -> Result<Self, ConfigError> {
        let mut r = EnvReader::new(env);
        let config = Self::read(&mut r);
        r.finish()?;
        Ok(config)
    }

    /// Every variable `read` reads, in the order it reads them.
    fn settings() -> Vec<EnvVar> {
        let empty = HashMap::new();
        let mut r = EnvReader::new(&empty);
        Self::read(&mut r);
        r.declared
    }
}

/// `PORT` with a per-service default.
pub const fn port(default: &'static str) -> Setting<u16> {
    Setting::<u16>::whole(
        EnvVar::with_default(
            "PORT",
            default,
            "a TCP port from 0 to 65535",
            "Port the HTTP server listens on (0 picks a free one)",
        ),
        0,
        u16::MAX,
    )
}

/// Renders variables as a Markdown table for the README.
pub fn markdown_table(vars: &[EnvVar]) -> String {
    let mut out = String::from("| Variable | Default | Meaning |\n|---|---|---|\n");
    for v in vars {
        let default = match (v.default, v.required) {
            (Some(d), _) => format!("`{d}`"),
            (None, true) => "required".to_owned(),
            (None, false) => "unset".to_owned(),
        };
        out.push_str(&format!("| `{}` | {default} | {} |\n", v.name, v.meaning));
    }
    out
}

/// An environment holding exactly `pairs`: what tests pass where a service
/// would read the process's own.
pub fn env_of(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAME: Setting<String> =
        Setting::text(EnvVar::required("DB_NAME", "a database name", "db"));
    const RATE: Setting<f64> = Setting::number(
        EnvVar::with_default("RATE", "0", "a number from 0 to 1", "rate"),
        0.0,
        1.0,
    );
    const URL: Setting<String> = Setting::url(EnvVar::with_default(
        "URL",
        "http://x:1",
        "an http URL",
        "url",
    ));
    const SECRET: Setting<String> = Setting::with(
        EnvVar::optional("SECRET", "32 or more bytes", "s").secret(),
        |_| Err("too short".to_owned()),
    );

    #[test]
    fn every_problem_is_reported_in_one_line() {
        let e = env_of(&[("RATE", "2"), ("URL", "database:8080")]);
        let mut r = EnvReader::new(&e);
        assert_eq!(r.required(&NAME), "");
        assert_eq!(r.get(&RATE), 0.0, "the default stands in");
        assert_eq!(r.get(&URL), "http://x:1");
        let err = r.finish().unwrap_err();
        let line = err.to_string();
        assert_eq!(err.problems().len(), 3);
        assert!(!line.contains('\n'));
        assert!(line.contains("DB_NAME is not set"), "{line}");
        assert!(line.contains("RATE=\"2\" is invalid"), "{line}");
        assert!(line.contains("URL=\"database:8080\""), "{line}");
    }

    #[test]
    fn defaults_apply_and_empty_counts_as_unset() {
        let e = env_of(&[("RATE", " "), ("DB_NAME", "cloudmart")]);
        let mut r = EnvReader::new(&e);
        assert_eq!(r.get(&RATE), 0.0);
        assert_eq!(r.required(&NAME), "cloudmart");
        assert_eq!(r.get(&URL), "http://x:1");
        assert_eq!(r.optional(&SECRET), None);
        r.finish().unwrap();
    }

    #[test]
    fn secret_values_are_never_echoed() {
        let e = env_of(&[("SECRET", "hunter2")]);
        let mut r = EnvReader::new(&e);
        assert_eq!(r.optional(&SECRET), None);
        let line = r.finish().unwrap_err().to_string();
        assert!(!line.contains("hunter2"), "{line}");
        assert!(
            line.contains("SECRET=<redacted> is invalid: too short"),
            "{line}"
        );
    }

    #[test]
    fn every_read_records_its_declaration_in_order() {
        struct Both;
        impl FromEnv for Both {
            fn read(r: &mut EnvReader<'_>) -> Self {
                r.get(&URL);
                r.optional(&SECRET);
                Both
            }
        }
        let names: Vec<_> = Both::settings().iter().map(|v| v.name).collect();
        assert_eq!(names, ["URL", "SECRET"]);
    }

    #[test]
    #[should_panic(expected = "DB_NAME declares no default")]
    fn reading_a_required_setting_as_defaulted_is_a_declaration_bug() {
        let empty = env_of(&[]);
        let mut r = EnvReader::new(&empty);
        r.get(&NAME);
    }

    #[test]
    fn layered_overrides_win() {
        let base = env_of(&[("A", "1"), ("B", "2")]);
        let layered = Layered::new(&base).set("A", "9");
        assert_eq!(layered.var("A").as_deref(), Some("9"));
        assert_eq!(layered.var("B").as_deref(), Some("2"));
        assert_eq!(layered.var("C"), None);
    }

    #[test]
    fn the_port_default_parses() {
        assert_eq!(port("3000").default_value(), Some(Ok(3000)));
    }
}
