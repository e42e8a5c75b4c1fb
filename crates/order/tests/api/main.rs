//! Integration tests for order-service that run the real binary.

mod process;
mod retry_storm;
