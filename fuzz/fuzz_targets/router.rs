//! The whole router in a dry run: any method, path, headers and body — signed as a tool would
//! when asked, so that bodies reach parsing. Every answer is JSON, none is 5xx, and every planned
//! GitLab call stays in one project.
#![no_main]

#[path = "../common/mod.rs"]
mod common;

use axum::body::Body;
use gitlab_deploy_bridge::sources;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

const PREFIXES: &[&str] =
    &["/hooks/", "/hooks/generic/", "/routes/ci/api/v4/projects/", "/api/v4/projects/", "/", "/healthz"];
const METHODS: &[&str] = &["POST", "PUT", "GET", "DELETE", "PATCH"];

#[derive(Arbitrary, Debug)]
struct Input {
    method: u8,
    prefix: u8,
    path: String,
    headers: Vec<(String, String)>,
    sign_as: Option<u8>,
    body: Vec<u8>,
}

fuzz_target!(|input: Input| {
    let path = format!("{}{}", PREFIXES[usize::from(input.prefix) % PREFIXES.len()], input.path);
    let mut builder = http::Request::builder().method(METHODS[usize::from(input.method) % METHODS.len()]).uri(path);
    for (k, v) in input.headers.iter().take(16) {
        builder = builder.header(k.as_str(), v.as_str());
    }
    if let Some(i) = input.sign_as {
        let source = sources::ALL[usize::from(i) % sources::ALL.len()];
        for (k, v) in common::signed_headers(source, &input.body) {
            builder = builder.header(k, v);
        }
    }
    let Ok(req) = builder.body(Body::from(input.body)) else { return };
    let (status, answer) = common::send(req);
    common::check(status, &answer);
});
