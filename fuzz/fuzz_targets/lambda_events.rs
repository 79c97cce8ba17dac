//! Raw Lambda function-URL events, as the Runtime API would hand them over: what parses as an
//! event is repaired (src/lambda.rs), converted by lambda_http without panicking, and answered by
//! the router with JSON, never 5xx, every planned GitLab call in one project.
#![no_main]

#[path = "../common/mod.rs"]
mod common;

use axum::body::Body;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(request) = gitlab_deploy_bridge::lambda::request_from_str(text) else { return };
    let (parts, body) = request.into_parts();
    let body: &[u8] = body.as_ref();
    let (status, answer) = common::send(http::Request::from_parts(parts, Body::from(body.to_vec())));
    common::check(status, &answer);
});
