//! An open-loop, fixed-rate HTTP load generator for CloudMart: the engine
//! behind `cloudmart load`, `make bench` and the in-cluster load-generator
//! Deployment.
//!
//! Requests are due at fixed times from the start, whatever the server
//! does, and each one's latency counts from when it was due. A server that
//! stalls for a second therefore shows a second of latency on every
//! request that came due meanwhile, instead of one slow sample and a quiet
//! gap (coordinated omission).
//!
//! | module | what it holds |
//! |---|---|
//! | `config` | [`LoadConfig`] and the checks behind [`LoadError`] |
//! | `profile` | the traffic mixes ([`Profile`]) and the requests they send |
//! | `run` | the schedule, the request tasks and the progress line |
//! | `report` | HDR histograms and the [`Report`] they become |
//!
//! ```no_run
//! # async fn demo() -> Result<(), cloudmart_load::LoadError> {
//! use std::time::Duration;
//! use cloudmart_load::{LoadConfig, Profile};
//!
//! let config = LoadConfig {
//!     rate_per_sec: 100.0,
//!     duration: Duration::from_secs(30),
//!     profile: "mixed".parse::<Profile>()?,
//!     ..LoadConfig::new("http://localhost:8080")
//! };
//! let report = cloudmart_load::run(&config).await?;
//! print!("{}", report.render_text());
//! # Ok(())
//! # }
//! ```

mod config;
mod profile;
mod report;
mod run;

pub use config::{LoadConfig, LoadError, MAX_INFLIGHT_LIMIT, MAX_RATE_PER_SEC, MAX_TIMEOUT};
pub use profile::{Operation, Profile};
pub use report::{LatencySummary, OperationReport, Report};
pub use run::{run, run_until};
