//! Hot-path cost of one webhook inside the function, without network: signature checks,
//! parsing, and the whole router in dry-run (auth → parse → validate → plan).
//! Run with `cargo bench`; CI only builds it.

use criterion::{Criterion, criterion_group, criterion_main};
use gitlab_deploy_bridge::app;
use gitlab_deploy_bridge::config::Config;
use gitlab_deploy_bridge::secrets::StaticSecrets;
use gitlab_deploy_bridge::sources;
use std::hint::black_box;
use std::sync::Arc;
use tower::ServiceExt;

fn event(name: &str) -> String {
    std::fs::read_to_string(format!("{}/events/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn demo_secrets() -> StaticSecrets {
    let text = std::fs::read_to_string(format!("{}/events/demo.env", env!("CARGO_MANIFEST_DIR"))).unwrap();
    StaticSecrets::from_env_vars(text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())))
}

/// The raw headers and body of a function-URL event file.
fn request_parts(name: &str) -> (axum::http::HeaderMap, Vec<u8>) {
    let req = lambda_http::request::from_str(&event(name)).unwrap();
    let (parts, body) = req.into_parts();
    (parts.headers, body.to_vec())
}

fn signatures_and_parsing(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let secrets = rt.block_on(async {
        use gitlab_deploy_bridge::secrets::SecretProvider;
        demo_secrets().current().await.unwrap()
    });
    for (source, file) in [
        ("heroku", "heroku-build-pending.json"),
        ("flux", "flux-progressing.json"),
        ("vercel", "vercel-deployment-created.json"),
        ("netlify", "netlify-deploy-building.json"),
        ("argocd", "argocd-deployed.json"),
    ] {
        let src = sources::find(source).unwrap();
        let (headers, body) = request_parts(file);
        let secret = secrets.webhook_secret(source).unwrap();
        c.bench_function(&format!("verify+parse/{source}"), |b| {
            b.iter(|| {
                src.verify(black_box(&headers), black_box(&body), secret).unwrap();
                black_box(src.parse(&headers, &body).unwrap());
            })
        });
    }
}

fn router_dry_run(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let config = Config { dry_run: true, ..Config::default() };
    let router = app::build(config, Arc::new(demo_secrets())).unwrap();
    let text = event("generic-success.json");
    c.bench_function("router/dry-run/generic-success", |b| {
        b.iter(|| {
            let req = lambda_http::request::from_str(&text).unwrap();
            let resp = rt.block_on(router.clone().oneshot(req)).unwrap();
            assert_eq!(resp.status(), 200);
        })
    });
}

criterion_group!(benches, signatures_and_parsing, router_dry_run);
criterion_main!(benches);
