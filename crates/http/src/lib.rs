//! The HTTP side every CloudMart service shares.
//!
//! | module | what it gives a service |
//! |---|---|
//! | [`server`] | the middleware stack, bind and graceful drain |
//! | [`client`] | downstream calls with timeouts, retries and plain-word errors |
//! | [`error`] | the one JSON error body and its codes |
//! | [`health`] | `/health`, `/ready`, `/metrics` |
//! | [`metrics`] | the Prometheus registry with RED and process metrics |
//! | [`chaos`] | fault injection middleware |

pub mod chaos;
pub mod client;
pub mod error;
pub mod health;
pub mod metrics;
pub mod server;
