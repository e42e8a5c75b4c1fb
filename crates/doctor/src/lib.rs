//! `cloudmart doctor`: checks Kubernetes manifests, and live clusters,
//! against the contracts of the services they run.
//!
//! The rules are generic (a selector that selects nothing, a probe on a port
//! nobody listens on, a URL naming a Service that does not exist, a
//! container whose environment the service itself would reject). The
//! workshop's faults are data in the fault catalogue, matched to findings
//! afterwards, so new scenarios need no code.
//!
//! | module | what it holds |
//! |---|---|
//! | [`yaml`] | YAML trees that keep line numbers |
//! | [`model`] | workloads, containers and resolved environments |
//! | [`contracts`] | each service's env vars, config validation and measured memory |
//! | [`rules`] | the checks and their [`rules::Finding`]s |
//! | [`catalogue`] | the fault catalogue: hints, rules and manifest changes per fault |
//! | [`diff`] | field-level differences between two manifest sets |
//! | [`compose`] | the same contract checks for `docker-compose.yml` |
//! | [`cluster`] | the same rules on a live namespace, plus pod states, endpoints, restarts and a scoreboard per fault |

pub mod catalogue;
pub mod cluster;
pub mod compose;
pub mod contracts;
pub mod diff;
pub mod model;
pub mod rules;
pub mod yaml;
