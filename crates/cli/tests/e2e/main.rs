//! End-to-end tests: all six services in this process, on free ports,
//! driven through the gateway the way a user would.

mod auth;
mod bad_input;
mod dashboard;
mod fuzz;
mod helpers;
mod metrics;
mod mongo_down;
mod orders;
mod privacy;
mod tracing_hops;
