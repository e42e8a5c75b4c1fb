//! What each CloudMart image expects, taken from the service crates
//! themselves: its environment variables (`Service::env_vars`), its own
//! config validation (`Service::config`), its default port, and the peak
//! memory measured for it under the load generator's traffic.

use std::collections::HashMap;

use cloudmart_config::{ConfigError, Env, EnvReader, EnvVar};
use cloudmart_run::Service;

/// One service's contract.
#[derive(Clone)]
pub struct Contract {
    /// Binary and image name.
    pub service: &'static str,
    /// Every variable it reads.
    pub env: Vec<EnvVar>,
    /// The port it listens on when `PORT` is unset.
    pub default_port: u16,
    validate: fn(&dyn Env) -> Result<(), ConfigError>,
}

impl std::fmt::Debug for Contract {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Contract")
            .field("service", &self.service)
            .finish()
    }
}

impl Contract {
    fn of<S: Service>() -> Self {
        let default_port = EnvReader::new(&NoEnv).get(&S::PORT);
        Self {
            service: S::NAME,
            env: S::env_vars(),
            default_port,
            validate: |env| S::config(env).map(|_| ()),
        }
    }

    /// Runs the service's own config parsing on `env`: exactly what the
    /// process would say at start-up.
    pub fn check(&self, env: &HashMap<String, String>) -> Result<(), ConfigError> {
        (self.validate)(env)
    }
}

struct NoEnv;

impl Env for NoEnv {
    fn var(&self, _: &str) -> Option<String> {
        None
    }
}

/// Every service's contract.
pub fn all() -> Vec<Contract> {
    vec![
        Contract::of::<cloudmart_gateway::Application>(),
        Contract::of::<cloudmart_api::Application>(),
        Contract::of::<cloudmart_auth::Application>(),
        Contract::of::<cloudmart_order::Application>(),
        Contract::of::<cloudmart_database::Application>(),
        Contract::of::<cloudmart_notification::Application>(),
    ]
}

/// The contract of the service an image runs, by image name.
pub fn for_image(name: &str) -> Option<Contract> {
    all().into_iter().find(|c| c.service == name)
}

/// Peak resident memory measured for each service under the load
/// generator's traffic (`make bench` and the fault-6 measurement; see
/// docs/instructor). A memory limit below it gets OOM-killed.
pub const MEASURED_PEAK_MIB: &[(&str, u64)] = &[
    ("gateway", 12),
    ("api-service", 12),
    ("auth-service", 90),
    ("order-service", 12),
    ("database-service", 14),
    ("notification-service", 10),
];

/// The measured peak of `service`, in bytes.
pub fn measured_peak_bytes(service: &str) -> Option<u64> {
    MEASURED_PEAK_MIB
        .iter()
        .find(|(s, _)| *s == service)
        .map(|(_, mib)| mib * 1024 * 1024)
}
