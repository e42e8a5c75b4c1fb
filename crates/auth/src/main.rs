//! `auth-service`: see the library for what it does.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    cloudmart_run::main::<cloudmart_auth::Application>().await
}
