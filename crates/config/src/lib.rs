//! Typed configuration from environment variables, read once at startup.
//!
//! Every service describes the variables it reads as [`EnvVar`] constants.
//! The same constants drive parsing, the error messages, the README tables
//! and (later) the manifest checks, so the contract lives in one place.
//!
//! Reading never stops at the first problem: [`EnvReader`] collects every
//! missing or invalid variable and [`EnvReader::finish`] reports them all in
//! one line, so a trainee fixing a Deployment sees the whole list at once.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

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
        Self {
            name,
            default: Some(default),
            required: false,
            expected,
            meaning,
            secret: false,
        }
    }

    /// A variable that must be set.
    pub const fn required(
        name: &'static str,
        expected: &'static str,
        meaning: &'static str,
    ) -> Self {
        Self {
            name,
            default: None,
            required: true,
            expected,
            meaning,
            secret: false,
        }
    }

    /// A variable whose absence switches a feature off.
    pub const fn optional(
        name: &'static str,
        expected: &'static str,
        meaning: &'static str,
    ) -> Self {
        Self {
            name,
            default: None,
            required: false,
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

/// Reads variables against their [`EnvVar`] contracts and collects problems.
pub struct EnvReader<'a> {
    env: &'a dyn Env,
    problems: Vec<String>,
}

impl<'a> EnvReader<'a> {
    /// Starts reading from `env`.
    pub fn new(env: &'a dyn Env) -> Self {
        Self {
            env,
            problems: Vec::new(),
        }
    }

    /// The raw value, treating an empty string as unset.
    fn raw(&self, var: &EnvVar) -> Option<String> {
        self.env
            .var(var.name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    fn invalid(&mut self, var: &EnvVar, value: &str, why: Option<&str>) {
        let shown = if var.secret {
            "<redacted>".to_owned()
        } else {
            format!("{value:?}")
        };
        let why = why.map(|w| format!(": {w}")).unwrap_or_default();
        self.problems.push(format!(
            "{}={shown} is invalid{why} (expected {})",
            var.name, var.expected
        ));
    }

    /// Records a problem that is not about one value's syntax.
    pub fn problem(&mut self, problem: impl Into<String>) {
        self.problems.push(problem.into());
    }

    /// A string variable: its value, its default, or `None` when it is
    /// optional and unset. A required variable that is unset is a problem.
    pub fn string(&mut self, var: &EnvVar) -> Option<String> {
        match self.raw(var) {
            Some(v) => Some(v),
            None if var.required => {
                self.problems.push(format!(
                    "{} is not set (expected {})",
                    var.name, var.expected
                ));
                None
            }
            None => var.default.map(str::to_owned),
        }
    }

    /// A variable parsed with `parse`, which returns why a value is rejected.
    pub fn parse_with<T>(
        &mut self,
        var: &EnvVar,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        let from_env = self.raw(var);
        let value = match (&from_env, var.default) {
            (Some(v), _) => v.clone(),
            (None, Some(d)) => d.to_owned(),
            (None, None) => {
                if var.required {
                    self.problems.push(format!(
                        "{} is not set (expected {})",
                        var.name, var.expected
                    ));
                }
                return None;
            }
        };
        match parse(&value) {
            Ok(v) => Some(v),
            Err(why) => {
                let why = (!why.is_empty()).then_some(why);
                self.invalid(var, &value, why.as_deref());
                None
            }
        }
    }

    /// A variable parsed with `FromStr`.
    pub fn parse<T: FromStr>(&mut self, var: &EnvVar) -> Option<T> {
        self.parse_with(var, |v| v.parse::<T>().map_err(|_| String::new()))
    }

    /// An integer within `min..=max`.
    pub fn int_in<T>(&mut self, var: &EnvVar, min: T, max: T) -> Option<T>
    where
        T: FromStr + PartialOrd + Copy + fmt::Display,
    {
        self.parse_with(var, |v| match v.parse::<T>() {
            Ok(n) if n >= min && n <= max => Ok(n),
            Ok(_) => Err(format!("out of range {min}..={max}")),
            Err(_) => Err("not a whole number".to_owned()),
        })
    }

    /// A duration given in milliseconds, within `0..=max_ms`.
    pub fn millis(&mut self, var: &EnvVar, max_ms: u64) -> Option<Duration> {
        self.int_in(var, 0, max_ms).map(Duration::from_millis)
    }

    /// A float within `min..=max` (NaN is rejected).
    pub fn float_in(&mut self, var: &EnvVar, min: f64, max: f64) -> Option<f64> {
        self.parse_with(var, |v| match v.parse::<f64>() {
            Ok(n) if n.is_finite() && n >= min && n <= max => Ok(n),
            Ok(_) => Err(format!("out of range {min}..={max}")),
            Err(_) => Err("not a number".to_owned()),
        })
    }

    /// A base URL with an `http://` or `https://` scheme and a host.
    /// The trailing slash is removed so paths can be appended.
    pub fn url(&mut self, var: &EnvVar) -> Option<String> {
        self.parse_with(var, |v| {
            validate_base_url(v).map(|u| u.trim_end_matches('/').to_owned())
        })
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
}

/// Checks that `value` looks like `http(s)://host[:port][/path]`.
fn validate_base_url(value: &str) -> Result<&str, String> {
    let rest = value
        .strip_prefix("http://")
        .or_else(|| value.strip_prefix("https://"))
        .ok_or_else(|| "it must start with http:// or https://".to_owned())?;
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    };
    if host.is_empty() {
        return Err("it has no host".to_owned());
    }
    if let Some(port) = port
        && port.parse::<u16>().is_err()
    {
        return Err(format!("port {port:?} is not a number from 0 to 65535"));
    }
    Ok(value)
}

/// `PORT` with a per-service default.
pub const fn port_var(default: &'static str) -> EnvVar {
    EnvVar::with_default(
        "PORT",
        default,
        "a TCP port from 0 to 65535",
        "Port the HTTP server listens on (0 picks a free one)",
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

#[cfg(test)]
mod tests {
    use super::*;

    const NAME: EnvVar = EnvVar::required("DB_NAME", "a database name", "db");
    const RATE: EnvVar = EnvVar::with_default("RATE", "0", "a number from 0 to 1", "rate");
    const URL: EnvVar = EnvVar::with_default("URL", "http://x:1", "an http URL", "url");
    const SECRET: EnvVar = EnvVar::optional("SECRET", "32 or more bytes", "s").secret();

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn every_problem_is_reported_in_one_line() {
        let e = env(&[("RATE", "2"), ("URL", "database:8080")]);
        let mut r = EnvReader::new(&e);
        assert_eq!(r.string(&NAME), None);
        assert_eq!(r.float_in(&RATE, 0.0, 1.0), None);
        assert_eq!(r.url(&URL), None);
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
        let e = env(&[("RATE", " "), ("DB_NAME", "cloudmart")]);
        let mut r = EnvReader::new(&e);
        assert_eq!(r.float_in(&RATE, 0.0, 1.0), Some(0.0));
        assert_eq!(r.string(&NAME).as_deref(), Some("cloudmart"));
        assert_eq!(r.url(&URL).as_deref(), Some("http://x:1"));
        r.finish().unwrap();
    }

    #[test]
    fn secret_values_are_never_echoed() {
        let e = env(&[("SECRET", "hunter2")]);
        let mut r = EnvReader::new(&e);
        let _ = r.parse_with(&SECRET, |_| Err::<(), _>("too short".to_owned()));
        let line = r.finish().unwrap_err().to_string();
        assert!(!line.contains("hunter2"), "{line}");
        assert!(line.contains("<redacted>"), "{line}");
    }

    #[test]
    fn url_validation_names_the_reason() {
        assert!(validate_base_url("http://database-service:8080").is_ok());
        assert!(validate_base_url("https://a/b").is_ok());
        assert!(validate_base_url("ftp://a").is_err());
        assert!(validate_base_url("http://:80").is_err());
        assert!(validate_base_url("http://a:99999").is_err());
    }

    #[test]
    fn layered_overrides_win() {
        let base = env(&[("A", "1"), ("B", "2")]);
        let layered = Layered::new(&base).set("A", "9");
        assert_eq!(layered.var("A").as_deref(), Some("9"));
        assert_eq!(layered.var("B").as_deref(), Some("2"));
        assert_eq!(layered.var("C"), None);
    }
}
