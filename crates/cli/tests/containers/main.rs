//! CloudMart in containers: the real images, the compose stack and the
//! incident's faults, driven through the Docker engine's own tools.
//!
//! The stack and fault tests need a Docker engine and the images, so they
//! are ignored by a plain `cargo test`; `make test-containers` (part of
//! `make test`) starts an engine where there is none, builds the images and
//! runs them with `--ignored`. Their output is the report: start-up times,
//! what each check saw, and the memory each container reached. The
//! `engine` tests need neither and always run.

mod docker;
mod engine;
mod faults;
mod shop;
mod stack;
