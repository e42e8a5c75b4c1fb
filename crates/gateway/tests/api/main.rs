//! Integration tests for the gateway, run in-process on port 0 in front of
//! stand-in upstreams: real HTTP on every hop, no mocks.

mod failures;
mod forwarding;
mod helpers;
mod limits;
mod request_id;
