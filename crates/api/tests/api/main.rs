//! Integration tests for api-service that run the real binary.

mod process;
