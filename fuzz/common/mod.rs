//! What every fuzz target shares: the bridge's real router in a dry run (no GitLab, no AWS:
//! secrets from memory), each tool's own way of signing a body, and the invariants every answer
//! must hold.
#![allow(dead_code)]

use axum::Router;
use axum::body::Body;
use gitlab_deploy_bridge::sources::{self, Source};
use gitlab_deploy_bridge::{app, config::Config, routes::Routes, secrets::StaticSecrets};
use secrecy::SecretString;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use tower::ServiceExt;

/// The secret of route `ci` (a `generic` route).
pub const ROUTE_CI: &str = "fuzz-route-ci";

/// The secret the bridge holds for `source`'s unbound hook: `fuzz-<source>`.
pub fn secret_of(source: &dyn Source) -> String {
    format!("fuzz-{}", source.name())
}

/// One runtime for the process (libFuzzer calls the target on one thread, over and over).
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime"))
}

/// The real router, in a dry run, with every source's secret and two routes.
pub fn router() -> Router {
    static ROUTER: OnceLock<Router> = OnceLock::new();
    ROUTER
        .get_or_init(|| {
            let routes = Routes::parse(
                r#"{"ci": {"source": "generic", "projects": ["group/*", "42"], "environments": ["production", "preview/*"], "tier": "production"},
                    "shop": {"source": "vercel", "projects": ["7"]}}"#,
            )
            .expect("routes");
            let config = Config { dry_run: true, routes, ..Config::default() };
            let mut secrets: HashMap<String, SecretString> = sources::ALL
                .iter()
                .map(|s| (sources::webhook_secret_key(s.name()), SecretString::from(secret_of(*s))))
                .collect();
            secrets.insert("gitlab_token".into(), SecretString::from("glpat-fuzz".to_string()));
            secrets.insert("route_ci_secret".into(), SecretString::from(ROUTE_CI.to_string()));
            let vercel = sources::find("vercel").expect("vercel");
            secrets.insert("route_shop_secret".into(), SecretString::from(secret_of(vercel)));
            app::build(config, Arc::new(StaticSecrets::new(secrets))).expect("router")
        })
        .clone()
}

/// Sends `req` through the router; returns the status and the answer, which must be JSON.
pub fn send(req: http::Request<Body>) -> (u16, Value) {
    let router = router();
    runtime().block_on(async {
        let resp = router.oneshot(req).await.expect("the router's service never fails");
        let status = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.expect("answer body");
        let answer: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("answer {status} is not JSON ({e}): {:?}", String::from_utf8_lossy(&bytes)));
        (status, answer)
    })
}

/// The invariants of every answer of a dry run: no 5xx (nothing can fail: no GitLab, secrets in
/// memory), and every planned GitLab call under `/api/v4/projects/<one segment>` — the token
/// never reaches another endpoint.
pub fn check(status: u16, answer: &Value) {
    static CHECKED: OnceLock<()> = OnceLock::new();
    CHECKED.get_or_init(check_the_checker);
    assert!(status < 500, "a dry run answered {status}: {answer}");
    if let Some(calls) = answer.get("gitlab_calls").and_then(Value::as_array) {
        for call in calls {
            let path = call["path"].as_str().expect("a call has a path");
            assert!(stays_in_one_project(path), "a planned call leaves its project: {path}");
        }
    }
}

/// The invariant itself refuses what would leave a project (checked once per process: a checker
/// that accepted everything would make every run pass).
fn check_the_checker() {
    assert!(
        stays_in_one_project("/api/v4/projects/42/deployments?environment=x")
            && stays_in_one_project("/api/v4/projects/group%2Fapp")
    );
    for bad in [
        "/api/v4/deployments",
        "/api/v4/projects/",
        "/api/v4/projects/../users",
        "/api/v4/projects/%2e%2E/x",
        "/api/v4/projects/1/../../users",
        "/api/v4/projects/1/%2E%2E",
    ] {
        assert!(!stays_in_one_project(bad), "the invariant accepts {bad}");
    }
}

/// `/api/v4/projects/<segment>` followed by nothing, `/...` or `?...`, where the segment is
/// neither empty nor `.`/`..` (encoded or not) and contains no `/`.
pub fn stays_in_one_project(path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/api/v4/projects/") else { return false };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let segment = &rest[..end];
    let decoded = segment.replace("%2E", ".").replace("%2e", ".");
    let dot = decoded == "." || decoded == "..";
    let in_path = rest[end..].split('?').next().unwrap_or("");
    let dot_below = in_path.split('/').any(|s| {
        let s = s.replace("%2E", ".").replace("%2e", ".");
        s == "." || s == ".."
    });
    !segment.is_empty() && !dot && !dot_below && !segment.contains('/') && !segment.contains('#')
}

/// The headers `source` would send with `body`, signed with the bridge's secret for it (the
/// tool's own signer, [`Source::sign`]).
pub fn signed_headers(source: &dyn Source, body: &[u8]) -> Vec<(&'static str, String)> {
    source.sign(body, &secret_of(source))
}
