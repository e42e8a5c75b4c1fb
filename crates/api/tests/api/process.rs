//! The real `api-service` binary, as Kubernetes runs it.

use std::time::Duration;

use cloudmart_testkit::ServiceProcess;

/// With no `PORT`, api-service listens on 3000 and on nothing else. This is
/// the contract fault 4 breaks: a probe aimed at 8080 finds no listener.
#[tokio::test]
async fn listens_on_3000_only() {
    let mut api =
        ServiceProcess::start(env!("CARGO_BIN_EXE_api-service"), &[]).expect("the binary starts");

    let healthy = api.wait_healthy(3000, Duration::from_secs(10)).await;

    assert!(healthy, "no answer on 3000; output:\n{}", api.output());
    assert_eq!(
        api.listening_ports(),
        vec![3000],
        "output:\n{}",
        api.output()
    );
    let on_8080 = reqwest::Client::new()
        .get("http://127.0.0.1:8080/health")
        .timeout(Duration::from_secs(1))
        .send()
        .await;
    if let Ok(r) = on_8080 {
        // Something else may own 8080 on a developer machine; it must not be us.
        assert!(
            !api.listening_ports().contains(&8080),
            "api-service answered on 8080: {}",
            r.status()
        );
    }
}
