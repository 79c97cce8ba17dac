//! Hot-path cost of one webhook inside the function, without network: signature checks,
//! parsing, the whole router in dry-run (auth → parse → validate → plan), and reading a page
//! of GitLab's deployments (straight into the lean struct, as the client does, against the
//! detour through `serde_json::Value` it took before issue 13).
//! Run with `cargo bench`; CI only builds it.

use criterion::{Criterion, criterion_group, criterion_main};
use gitlab_deploy_bridge::app;
use gitlab_deploy_bridge::config::Config;
use gitlab_deploy_bridge::secrets::StaticSecrets;
use gitlab_deploy_bridge::sources::{self, Request};
use std::hint::black_box;
use std::sync::Arc;
use tower::ServiceExt;

fn event(name: &str) -> String {
    std::fs::read_to_string(format!("{}/events/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn demo_secrets() -> StaticSecrets {
    let text = std::fs::read_to_string(format!("{}/events/demo.env", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let vars = text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string()));
    StaticSecrets::from_env_vars(vars, &[])
}

/// The raw headers and body of a function-URL event file.
fn request_parts(name: &str) -> (axum::http::HeaderMap, Vec<u8>) {
    let req = lambda_http::request::from_str(&event(name)).unwrap();
    let (parts, body) = req.into_parts();
    (parts.headers, body.to_vec())
}

/// Each tool's verification and its one read of the body, on its first sample event.
fn signatures_and_reading(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let secrets = rt.block_on(async {
        use gitlab_deploy_bridge::secrets::SecretProvider;
        demo_secrets().current().await.unwrap()
    });
    let settings = gitlab_deploy_bridge::sources::ToolSettings::default();
    let mut files: Vec<String> = std::fs::read_dir(format!("{}/events", env!("CARGO_MANIFEST_DIR")))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    files.sort();
    for src in sources::ALL {
        let Some(file) = files.iter().find(|f| f.starts_with(&format!("{}-", src.name()))) else { continue };
        let (headers, body) = request_parts(file);
        let secret = secrets.get(&sources::webhook_secret_key(src.name())).unwrap();
        c.bench_function(&format!("verify+read/{}", src.name()), |b| {
            b.iter(|| {
                let request = Request::new(black_box(&headers), black_box(&body));
                src.verify(&request, secret).unwrap();
                black_box(src.read(&request, settings.of(src.name())).unwrap());
            })
        });
    }
}

/// The rollout rules alone: one plan over a full window of deployments.
fn planning(c: &mut Criterion) {
    use gitlab_deploy_bridge::gitlab::Recent;
    use gitlab_deploy_bridge::lifecycle::plan::{Attempt, plan};
    use gitlab_deploy_bridge::model::{Deployment, Status};
    let items: Vec<Deployment> =
        (1..=20).rev().map(|i| serde_json::from_value(listed_deployment(i)).unwrap()).collect();
    let recent = Recent { items, more: true };
    let sha = format!("{:040x}", 99);
    let ev = Attempt { sha: &sha, status: Status::Success, occurred_at: None, ordered: false };
    c.bench_function("plan/an end over 20 deployments", |b| {
        b.iter(|| {
            black_box(plan(
                black_box(&ev),
                &recent,
                None,
                std::time::Duration::from_secs(30),
                std::time::Instant::now(),
            ))
        })
    });
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

/// One deployment as GitLab lists it: a CI-made one carries its job, pipeline, commit and user.
fn listed_deployment(id: u64) -> serde_json::Value {
    let user = serde_json::json!({"id": 1, "username": "deployer", "name": "Deploy Bot", "state": "active",
        "avatar_url": "https://gitlab.example.com/uploads/-/system/user/avatar/1/avatar.png", "web_url": "https://gitlab.example.com/deployer"});
    let sha = format!("{id:040x}");
    serde_json::json!({
        "id": id, "iid": id, "ref": "main", "sha": sha, "status": "success",
        "created_at": "2026-10-02T11:00:00.000Z", "updated_at": "2026-10-02T11:04:00.000Z", "finished_at": "2026-10-02T11:04:00.000Z",
        "user": user,
        "environment": {"id": 9, "name": "production", "slug": "production", "external_url": "https://shop.example.com",
            "created_at": "2026-01-01T00:00:00.000Z", "updated_at": "2026-10-02T11:04:00.000Z", "tier": "production", "state": "available"},
        "deployable": {
            "id": id * 10, "status": "success", "stage": "deploy", "name": "deploy:production", "ref": "main", "tag": false,
            "coverage": null, "allow_failure": false, "created_at": "2026-10-02T10:58:00.000Z", "started_at": "2026-10-02T11:00:00.000Z",
            "finished_at": "2026-10-02T11:04:00.000Z", "duration": 240.5, "queued_duration": 1.2, "user": user,
            "commit": {"id": sha, "short_id": &sha[..8], "created_at": "2026-10-02T10:50:00.000Z", "parent_ids": [format!("{:040x}", id + 1)],
                "title": "Make checkout faster", "message": "Make checkout faster\n\nCloses #42", "author_name": "Dev", "author_email": "dev@example.com",
                "authored_date": "2026-10-02T10:50:00.000Z", "committer_name": "Dev", "committer_email": "dev@example.com",
                "committed_date": "2026-10-02T10:50:00.000Z", "web_url": format!("https://gitlab.example.com/shop/-/commit/{sha}")},
            "pipeline": {"id": id * 100, "iid": id, "project_id": 42, "sha": sha, "ref": "main", "status": "success", "source": "push",
                "created_at": "2026-10-02T10:58:00.000Z", "updated_at": "2026-10-02T11:04:00.000Z",
                "web_url": format!("https://gitlab.example.com/shop/-/pipelines/{}", id * 100)},
            "web_url": format!("https://gitlab.example.com/shop/-/jobs/{}", id * 10), "artifacts": [], "runner": null, "artifacts_expire_at": null
        }
    })
}

fn gitlab_page_decoding(c: &mut Criterion) {
    use gitlab_deploy_bridge::model::Deployment;
    let page = serde_json::to_vec(&(1..=100).map(listed_deployment).collect::<Vec<_>>()).unwrap();
    c.bench_function("gitlab/decode 100 deployments, straight", |b| {
        b.iter(|| black_box(serde_json::from_slice::<Vec<Deployment>>(black_box(&page)).unwrap()))
    });
    c.bench_function("gitlab/decode 100 deployments, through Value", |b| {
        b.iter(|| {
            let v: serde_json::Value = serde_json::from_slice(black_box(&page)).unwrap();
            black_box(serde_json::from_value::<Vec<Deployment>>(v).unwrap())
        })
    });
}

criterion_group!(benches, signatures_and_reading, planning, router_dry_run, gitlab_page_decoding);
criterion_main!(benches);
