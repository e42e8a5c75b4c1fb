//! [`Setting`]: one declared variable, its contract and its parse rule.
//!
//! The declaration is the only place a variable's name, default, allowed
//! values and meaning are written. [`crate::EnvReader::get`] parses with it,
//! the README tables and doctor's checks list it, and the declared default
//! is parsed by the same rule as a value from the environment, so a default
//! cannot disagree with what the code accepts.

use std::str::FromStr;
use std::time::Duration;

use crate::EnvVar;

/// A variable a service reads, and how its text becomes a `T`.
///
/// Declare it as a `const` next to the code that uses it:
///
/// ```
/// use cloudmart_config::{EnvVar, Setting};
///
/// pub const RELAY_BATCH: Setting<usize> = Setting::<usize>::whole(
///     EnvVar::with_default("RELAY_BATCH", "200", "a whole number from 1 to 1000", "Orders per pass"),
///     1,
///     1000,
/// );
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Setting<T: 'static> {
    /// The contract: name, default, allowed values, meaning, secrecy.
    pub var: EnvVar,
    rule: Rule<T>,
}

/// How a value is checked and converted.
#[derive(Debug, Clone, Copy)]
enum Rule<T: 'static> {
    /// A whole number within `min..=max`. `parse` reads the text as the
    /// target type and also gives its value as `u64` for the range check,
    /// so a number too large for the type is "not a whole number".
    Whole {
        min: u64,
        max: u64,
        parse: fn(&str) -> Option<(u64, T)>,
    },
    /// A finite number within `min..=max` (NaN is rejected).
    Number {
        min: f64,
        max: f64,
        into: fn(f64) -> T,
    },
    /// Anything else: a function that converts the text or says why not
    /// (an empty reason adds nothing to the message).
    With(fn(&str) -> Result<T, String>),
}

impl<T> Setting<T> {
    /// A value checked and converted by `parse`, which returns why a value
    /// is refused.
    pub const fn with(var: EnvVar, parse: fn(&str) -> Result<T, String>) -> Self {
        Self {
            var,
            rule: Rule::With(parse),
        }
    }

    /// Parses `value` by this setting's rule: the value, or why it is refused.
    pub fn parse(&self, value: &str) -> Result<T, String> {
        match self.rule {
            Rule::Whole { min, max, parse } => match parse(value) {
                Some((n, v)) if n >= min && n <= max => Ok(v),
                Some(_) => Err(format!("out of range {min}..={max}")),
                None => Err("not a whole number".to_owned()),
            },
            Rule::Number { min, max, into } => match value.parse::<f64>() {
                Ok(n) if n.is_finite() && n >= min && n <= max => Ok(into(n)),
                Ok(_) => Err(format!("out of range {min}..={max}")),
                Err(_) => Err("not a number".to_owned()),
            },
            Rule::With(parse) => parse(value),
        }
    }

    /// The declared default, parsed; `None` when there is none.
    pub fn default_value(&self) -> Option<Result<T, String>> {
        self.var.default.map(|d| self.parse(d))
    }
}

impl<T: FromStr> Setting<T> {
    /// A value parsed with `T`'s `FromStr`, such as `true`/`false` or an IP
    /// address; a refusal names no reason beyond what is expected.
    pub const fn parsed(var: EnvVar) -> Self {
        Self::with(var, |v| v.parse::<T>().map_err(|_| String::new()))
    }
}

impl Setting<String> {
    /// Any text (surrounding blanks are trimmed; empty counts as unset).
    pub const fn text(var: EnvVar) -> Self {
        Self::with(var, |v| Ok(v.to_owned()))
    }

    /// A base URL with an `http://` or `https://` scheme and a host. The
    /// trailing slash is removed so paths can be appended.
    pub const fn url(var: EnvVar) -> Self {
        Self::with(var, |v| {
            validate_base_url(v).map(|u| u.trim_end_matches('/').to_owned())
        })
    }
}

impl Setting<Duration> {
    /// A duration given in milliseconds, within `min..=max`.
    pub const fn millis(var: EnvVar, min: u64, max: u64) -> Self {
        Self::whole_with(var, min, max, |v| {
            v.parse::<u64>().ok().map(|n| (n, Duration::from_millis(n)))
        })
    }

    /// A duration given in seconds, within `min..=max`.
    pub const fn secs(var: EnvVar, min: u64, max: u64) -> Self {
        Self::whole_with(var, min, max, |v| {
            v.parse::<u64>().ok().map(|n| (n, Duration::from_secs(n)))
        })
    }
}

impl Setting<f64> {
    /// A number within `min..=max`.
    pub const fn number(var: EnvVar, min: f64, max: f64) -> Self {
        Self {
            var,
            rule: Rule::Number {
                min,
                max,
                into: |n| n,
            },
        }
    }
}

impl<T> Setting<T> {
    const fn whole_with(
        var: EnvVar,
        min: u64,
        max: u64,
        parse: fn(&str) -> Option<(u64, T)>,
    ) -> Self {
        Self {
            var,
            rule: Rule::Whole { min, max, parse },
        }
    }
}

/// `whole` for each unsigned type a setting uses.
macro_rules! whole {
    ($($t:ty),*) => {$(
        impl Setting<$t> {
            /// A whole number within `min..=max`.
            pub const fn whole(var: EnvVar, min: $t, max: $t) -> Self {
                Self::whole_with(var, min as u64, max as u64, |v| {
                    v.parse::<$t>().ok().map(|n| (n as u64, n))
                })
            }
        }
    )*};
}
whole!(u16, u32, u64, usize);

/// Checks that `value` looks like `http(s)://host[:port][/path]`.
pub(crate) fn validate_base_url(value: &str) -> Result<&str, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    const BATCH: Setting<usize> =
        Setting::<usize>::whole(EnvVar::with_default("B", "200", "1 to 1000", "b"), 1, 1000);
    const PORT: Setting<u16> =
        Setting::<u16>::whole(EnvVar::with_default("P", "80", "a port", "p"), 0, u16::MAX);
    const WAIT: Setting<Duration> =
        Setting::millis(EnvVar::with_default("W", "250", "ms", "w"), 10, 1000);
    const RATE: Setting<f64> =
        Setting::number(EnvVar::with_default("R", "0", "0 to 1", "r"), 0.0, 1.0);
    const ON: Setting<bool> =
        Setting::parsed(EnvVar::with_default("O", "true", "true or false", "o"));

    #[test]
    fn rules_name_the_reason() {
        assert_eq!(BATCH.parse("7"), Ok(7));
        assert_eq!(BATCH.parse("0"), Err("out of range 1..=1000".to_owned()));
        assert_eq!(BATCH.parse("-1"), Err("not a whole number".to_owned()));
        // Too large for a u16 is not a u16 at all.
        assert_eq!(PORT.parse("70000"), Err("not a whole number".to_owned()));
        assert_eq!(WAIT.parse("20"), Ok(Duration::from_millis(20)));
        assert_eq!(WAIT.parse("5"), Err("out of range 10..=1000".to_owned()));
        assert_eq!(RATE.parse("NaN"), Err("out of range 0..=1".to_owned()));
        assert_eq!(RATE.parse("x"), Err("not a number".to_owned()));
        assert_eq!(ON.parse("yes"), Err(String::new()));
    }

    #[test]
    fn defaults_parse_under_their_own_rule() {
        assert_eq!(BATCH.default_value(), Some(Ok(200)));
        assert_eq!(WAIT.default_value(), Some(Ok(Duration::from_millis(250))));
        assert_eq!(ON.default_value(), Some(Ok(true)));
    }

    #[test]
    fn url_validation_names_the_reason() {
        assert!(validate_base_url("http://database-service:8080").is_ok());
        assert!(validate_base_url("https://a/b").is_ok());
        assert!(validate_base_url("ftp://a").is_err());
        assert!(validate_base_url("http://:80").is_err());
        assert!(validate_base_url("http://a:99999").is_err());
    }
}
