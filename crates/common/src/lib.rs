//! Building blocks shared by every CloudMart service.
//!
//! | module | what it gives a service |
//! |---|---|
//! | [`amqp`] | RabbitMQ connect-with-backoff, topology, trace and attempt headers |
//! | [`config`] | typed env config that reports every problem in one line |
//! | [`telemetry`] | log lines with trace ids (JSON, or text on a terminal), W3C propagation, optional OTLP export |
//! | [`retry`] | validated exponential backoff with full jitter |
//! | [`client`] | downstream calls with timeouts, retries and plain-word errors |
//! | [`health`] | `/health`, `/ready`, `/metrics` |
//! | [`metrics`] | Prometheus registry with RED and process metrics |
//! | [`chaos`] | fault injection middleware |
//! | [`error`] | the one JSON error body |
//! | [`model`] | the order as it travels between services |
//! | `redis` | a lazily opened, fail-fast Redis connection (feature `redis`) |
//! | [`server`] | the shared middleware stack, bind and graceful drain |
//! | [`run`] | the `main` of every service binary |

pub mod amqp;
pub mod chaos;
pub mod client;
pub mod config;
pub mod error;
pub mod health;
pub mod metrics;
pub mod model;
#[cfg(feature = "redis")]
pub mod redis;
pub mod retry;
pub mod run;
pub mod server;
pub mod telemetry;
