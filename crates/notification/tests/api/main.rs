//! The real `notification-service` binary against the real RabbitMQ and
//! Redis: exactly one notification per order, even when the process is
//! killed after notifying and before its ack reaches the broker.

mod restart;
