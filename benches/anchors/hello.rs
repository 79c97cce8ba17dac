//! Cold-start anchor 1, `hello`: the smallest typical Rust Lambda a function URL serves — the
//! lambda_http + axum hello-world, one route answering 200 "hello". The bridge's cold start is
//! compared with it (issue 13: at most 4x its exec-to-first-answer time).
//!
//! Not run by hand: `bash scripts/coldstart` builds it (`--example anchor-hello`, with this
//! crate's release profile and lockfile) and starts it under a Lambda Runtime API stand-in.

use axum::Router;
use axum::routing::post;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    lambda_http::tracing::init_default_subscriber();
    // The route the benchmark's webhook event is posted to, so that every case gets the same event.
    let app = Router::new().route("/hooks/{source}/{route}", post(|| async { "hello" }));
    lambda_http::run(app).await
}
