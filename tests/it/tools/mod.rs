//! One file per tool: what its payloads and signatures do end to end (`generic` is the bridge's
//! own JSON). Here, the samples: every file in `events/` parses as a function-URL event and
//! passes its source's authentication with the documented demo secrets, so the folder cannot rot.

mod argocd;
mod flux;
mod generic;
mod heroku;
mod netlify;
mod vercel;

use crate::support::*;
use gitlab_deploy_bridge::app;
use gitlab_deploy_bridge::secrets::StaticSecrets;
use serde_json::Value;
use std::sync::Arc;

#[tokio::test]
async fn every_event_file_runs_through_the_router_in_dry_run() {
    capture_logs();
    let secrets = StaticSecrets::from_env_vars(demo_env(), &[]);
    let mut cfg = config("http://127.0.0.1:9");
    cfg.dry_run = true;
    let secrets: Arc<StaticSecrets> = Arc::new(secrets);
    // Each sample on its own: a dry run keeps what earlier events planned.
    let fresh = || app::build(cfg.clone(), secrets.clone()).unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("events");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 21, "{files:?}");
    // At least one running, one success and one failure event per tool.
    for source in gitlab_deploy_bridge::sources::ALL {
        let tool = source.name();
        let mut statuses = std::collections::HashSet::new();
        for f in files.iter().filter(|f| f.file_name().unwrap().to_string_lossy().starts_with(&format!("{tool}-"))) {
            let answer = gitlab_deploy_bridge::cli::invoke::invoke(fresh(), std::slice::from_ref(f)).await.unwrap();
            assert!(answer, "{} was not answered with success", f.display());
            let text = std::fs::read_to_string(f).unwrap();
            let req = lambda_http::request::from_str(&text).unwrap();
            let resp = tower::ServiceExt::oneshot(fresh(), req).await.unwrap();
            let body: Value =
                serde_json::from_slice(&axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap()).unwrap();
            statuses.insert(body["deployment"]["status"].as_str().unwrap_or_default().to_string());
            // A tool that signs its time has it read (what recognises late deliveries); others
            // may carry one too (Argo CD's template sends the sync's times), `generic` only
            // when sent, which its samples do not.
            let name = f.file_name().unwrap().to_string_lossy().to_string();
            if let gitlab_deploy_bridge::sources::Replay::SignedTime { .. } = source.spec().replay {
                assert!(body["deployment"]["occurred_at"].is_string(), "{name}: {body}");
            }
        }
        for needed in ["running", "success", "failed"] {
            assert!(statuses.contains(needed), "events/ lacks a {needed} event for {tool}: {statuses:?}");
        }
    }
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let ev: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(ev["version"], "2.0", "{}", file.display());
        assert!(lambda_http::request::from_str(&text).is_ok(), "{} is not a function URL event", file.display());
    }
    // The same code path as `gitlab-deploy-bridge invoke`: every file is authenticated and planned.
    assert!(
        gitlab_deploy_bridge::cli::invoke::invoke(fresh(), &files).await.unwrap(),
        "an event file was not answered with success"
    );
}
