//! Cold-start anchor 2, `hello+sdk`: the `hello` anchor plus the AWS SDK as a typical function
//! uses it — init loads `aws_config` and builds a Secrets Manager client (on the SDK's default
//! HTTPS client); each invocation reads the secret `SECRET_ID` (`GetSecretValue`) and answers
//! 200 "hello", or 500 when the read fails. The bridge's cold start is compared with it (issue
//! 13: at most 1.2x its exec-to-first-answer time).
//!
//! Not run by hand: `bash scripts/coldstart` builds it (`--example anchor-hello-sdk`, with this
//! crate's release profile and lockfile) and starts it under a Lambda Runtime API stand-in,
//! with `AWS_ENDPOINT_URL` pointing at moto.

use aws_sdk_secretsmanager::Client;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use std::sync::Arc;

struct Secrets {
    client: Client,
    secret_id: String,
}

async fn hello(State(secrets): State<Arc<Secrets>>) -> (StatusCode, String) {
    match secrets.client.get_secret_value().secret_id(&secrets.secret_id).send().await {
        Ok(_) => (StatusCode::OK, "hello".into()),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("GetSecretValue: {}", aws_sdk_secretsmanager::error::DisplayErrorContext(e)),
        ),
    }
}

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    lambda_http::tracing::init_default_subscriber();
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let secrets = Secrets {
        client: Client::new(&config),
        secret_id: std::env::var("SECRET_ID").map_err(|_| "SECRET_ID is not set")?,
    };
    // The route the benchmark's webhook event is posted to, so that every case gets the same event.
    let app = Router::new().route("/hooks/{source}/{route}", post(hello)).with_state(Arc::new(secrets));
    lambda_http::run(app).await
}
