//! What every fuzz target shares: the bridge's real router in a dry run (no GitLab, no AWS:
//! secrets from memory), each tool's own way of signing a body, and the invariants every answer
//! must hold.
#![allow(dead_code)]

use axum::Router;
use axum::body::Body;
use base64::Engine;
use gitlab_deploy_bridge::{app, config::Config, routes::Routes, secrets::StaticSecrets};
use hmac::{Hmac, Mac};
use secrecy::SecretString;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use tower::ServiceExt;

pub const GENERIC: &str = "fuzz-generic";
pub const ARGOCD: &str = "fuzz-argocd";
pub const HEROKU: &str = "fuzz-heroku";
pub const FLUX: &str = "fuzz-flux";
pub const VERCEL: &str = "fuzz-vercel";
pub const NETLIFY: &str = "fuzz-netlify";
pub const ROUTE_CI: &str = "fuzz-route-ci";

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
            let config = Config { dry_run: true, routes, gitlab_url: "http://127.0.0.1:9".into(), ..Config::default() };
            let mut secrets: HashMap<String, SecretString> = [
                ("gitlab_token", "glpat-fuzz"),
                ("generic_webhook_secret", GENERIC),
                ("argocd_webhook_secret", ARGOCD),
                ("heroku_webhook_secret", HEROKU),
                ("flux_webhook_secret", FLUX),
                ("vercel_webhook_secret", VERCEL),
                ("netlify_webhook_secret", NETLIFY),
                ("route_ci_secret", ROUTE_CI),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), SecretString::from(v.to_string())))
            .collect();
            secrets.insert("route_shop_secret".into(), SecretString::from(VERCEL.to_string()));
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

fn hmac_sha256(secret: &str, body: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key");
    m.update(body);
    m.finalize().into_bytes().to_vec()
}

/// The headers each tool would send with `body`, signed with the bridge's secret for it.
pub fn signed_headers(source: &str, body: &[u8]) -> Vec<(&'static str, String)> {
    match source {
        "generic" => vec![("authorization", format!("Bearer {GENERIC}"))],
        "argocd" => vec![("authorization", format!("Bearer {ARGOCD}"))],
        "heroku" => vec![(
            "heroku-webhook-hmac-sha256",
            base64::engine::general_purpose::STANDARD.encode(hmac_sha256(HEROKU, body)),
        )],
        "flux" => vec![("x-signature", format!("sha256={}", hex::encode(hmac_sha256(FLUX, body))))],
        "vercel" => {
            let mut m = Hmac::<sha1::Sha1>::new_from_slice(VERCEL.as_bytes()).expect("any key");
            m.update(body);
            vec![("x-vercel-signature", hex::encode(m.finalize().into_bytes()))]
        }
        "netlify" => {
            let claims = serde_json::json!({"iss": "netlify", "sha256": hex::encode(Sha256::digest(body))});
            let jws = jsonwebtoken::encode(
                &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
                &claims,
                &jsonwebtoken::EncodingKey::from_secret(NETLIFY.as_bytes()),
            )
            .expect("a JWS");
            vec![("x-webhook-signature", jws)]
        }
        other => panic!("no signing for source {other}: add it here"),
    }
}

/// The secret the bridge holds for `source`.
pub fn secret_of(source: &str) -> SecretString {
    let v = match source {
        "generic" => GENERIC,
        "argocd" => ARGOCD,
        "heroku" => HEROKU,
        "flux" => FLUX,
        "vercel" => VERCEL,
        "netlify" => NETLIFY,
        other => panic!("no secret for source {other}: add it here"),
    };
    SecretString::from(v.to_string())
}
