//! Integration tests for database-service: the real binary, and the
//! in-process service against a real MongoDB-protocol server.

mod durability;
mod helpers;
mod mongo_cut;
mod notification_state;
mod process;
