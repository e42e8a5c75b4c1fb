//! The tests' OTLP/HTTP collector as a program. It decodes and counts every
//! span it is sent, keeping none, so its own cost stays small:
//!
//! - `make bench` starts it on a free port; it prints its endpoint on the
//!   first line of stdout.
//! - The compose stack on machines without registry access runs it as its
//!   `otel-collector` (`OTLP_SINK_ADDR=0.0.0.0:4318`), so the services'
//!   spans still have somewhere to go; `GET /stats` tells how many arrived.
//!
//! On SIGTERM or ctrl-c it prints how many export requests and spans it
//! received, so a benchmark can show that export really happened.

use std::process::ExitCode;

use cloudmart_testkit::otlp::Collector;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let addr = std::env::var("OTLP_SINK_ADDR").unwrap_or_else(|_| "127.0.0.1:0".to_owned());
    let collector = match Collector::start_counting_on(&addr).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("otlp-sink: cannot listen on OTLP_SINK_ADDR={addr}: {e}");
            return ExitCode::from(1);
        }
    };
    println!("{}", collector.endpoint());
    cloudmart_http::server::shutdown_signal().await;
    println!(
        "otlp-sink: {} export requests, {} spans",
        collector.requests(),
        collector.span_count()
    );
    ExitCode::SUCCESS
}
