//! auth-service's answer to `POST /auth/validate` is the
//! `cloudmart_model::Identity` that api-service reads it as.

use cloudmart_model::{Identity, ROLE_CUSTOMER};

use crate::helpers::{Backend, spawn_app};

#[tokio::test]
async fn the_validate_answer_reads_as_the_model_identity() {
    // Arrange
    let app = spawn_app(&Backend::Memory, &[]).await;
    let token = app.token("alice").await;

    // Act
    let alice: Identity = app.validate(&token).await.json().await.unwrap();
    let nobody: Identity = app
        .client
        .post(format!("{}/auth/validate", app.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    // Assert
    assert!(alice.valid && !alice.guest);
    assert_eq!(
        (alice.subject.as_str(), alice.role.as_str()),
        ("alice", ROLE_CUSTOMER)
    );
    assert!(alice.expires_at.is_some());
    assert_eq!(nobody, Identity::guest());
    app.stop().await;
}
