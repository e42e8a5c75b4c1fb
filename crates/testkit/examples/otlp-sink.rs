//! The tests' OTLP/HTTP collector as a program, for `make bench`: it prints
//! its endpoint on the first line of stdout, decodes and counts every span
//! it is sent (keeping none, so its own cost stays small), and on SIGTERM
//! or ctrl-c prints how many export requests and spans it received, so the
//! benchmark can show that export really happened.

use cloudmart_testkit::otlp::Collector;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let collector = Collector::start_counting().await;
    println!("{}", collector.endpoint());
    cloudmart_common::server::shutdown_signal().await;
    println!(
        "otlp-sink: {} export requests, {} spans",
        collector.requests(),
        collector.span_count()
    );
}
