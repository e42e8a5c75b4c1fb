//! The `cloudmart` operator CLI as a library: the in-process stack that
//! `cloudmart up` and the end-to-end tests share, the smoke check, and the
//! generated environment-variable docs.

pub mod docs;
pub mod smoke;
pub mod stack;
