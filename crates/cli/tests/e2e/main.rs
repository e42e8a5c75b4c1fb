//! End-to-end tests: all six services in this process, on free ports,
//! driven through the gateway the way a user would.

mod auth;
mod bad_input;
mod dashboard;
mod helpers;
mod metrics;
mod orders;
mod tracing_hops;
