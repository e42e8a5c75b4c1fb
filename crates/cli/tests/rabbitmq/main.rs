//! RabbitMQ tests: the whole stack in this process, in AMQP mode, against
//! the real broker from `AMQP_URL` behind a proxy the tests can cut. Each
//! test has its own exchange and queues, and deletes them at the end.
//! Without a broker each test prints one SKIPPED line (and fails under
//! `CI=true`). Every span is exported to an in-test OTLP collector, which
//! the `traces` tests read.

mod cut;
mod dead_letter;
mod helpers;
mod relay_drain;
mod trace;
mod traces;
