//! Runs the generator against small in-process servers whose delays and
//! statuses are known, and checks the report against them.
//!
//! Each server decides by its own request counter, so what it does is
//! deterministic whatever the timing. Every run is bounded by
//! [`helpers::run_with_deadline`], so a hung run fails instead of hanging.

mod helpers;
mod latency;
mod limits;
mod stall;
mod statuses;
