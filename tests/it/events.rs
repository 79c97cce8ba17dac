//! Every file in `events/` parses as a function-URL event and passes its source's authentication
//! with the documented demo secrets, so the folder cannot rot.

use crate::support::*;
use gitlab_deploy_bridge::app;
use gitlab_deploy_bridge::secrets::StaticSecrets;
use serde_json::Value;
use std::sync::Arc;

#[tokio::test]
async fn every_event_file_runs_through_the_router_in_dry_run() {
    capture_logs();
    let secrets = StaticSecrets::from_env_vars([
        ("GENERIC_WEBHOOK_SECRET".to_string(), "demo-generic-secret".to_string()),
        ("ARGOCD_WEBHOOK_SECRET".to_string(), "demo-argocd-secret".to_string()),
    ]);
    let mut cfg = config("http://127.0.0.1:9");
    cfg.dry_run = true;
    let router = app::build(cfg, Arc::new(secrets)).unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("events");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 9, "{files:?}");
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let ev: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(ev["version"], "2.0", "{}", file.display());
        assert!(lambda_http::request::from_str(&text).is_ok(), "{} is not a function URL event", file.display());
    }
    // The same code path as `gitlab-deploy-bridge invoke`: every file is authenticated and planned.
    assert!(app::invoke(router, &files).await.unwrap(), "an event file was not answered with success");
}
