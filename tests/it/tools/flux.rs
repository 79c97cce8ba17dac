//! Flux notification-controller events (generic-hmac provider) end to end.

use crate::support::*;
use serde_json::{Value, json};

fn event(kind: &str, reason: &str, severity: &str, metadata: Value) -> String {
    json!({
        "involvedObject": {"kind": kind, "namespace": "flux-system", "name": "example-api", "uid": "1a2b",
                           "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "resourceVersion": "102934"},
        "severity": severity, "timestamp": "2026-10-02T09:00:00Z", "message": "m", "reason": reason,
        "metadata": metadata, "reportingController": "kustomize-controller", "reportingInstance": "kc-1"
    })
    .to_string()
}

fn rev(sha: &str) -> Value {
    json!({"revision": format!("main@sha1:{sha}"), "summary": "staging cluster"})
}

async fn send(bridge: &Bridge, body: &str) -> (u16, Value) {
    bridge
        .post_with("/hooks/flux?project=42", &[("X-Signature", sign::signature("flux", FLUX_SECRET, body))], body)
        .await
}

#[tokio::test]
async fn progressing_then_succeeded_then_interval_repeats() {
    let (gitlab, bridge) = setup().await;
    for (reason, action) in
        [("Progressing", "created"), ("ReconciliationSucceeded", "updated"), ("ReconciliationSucceeded", "unchanged")]
    {
        let (s, r) = send(&bridge, &event("Kustomization", reason, "info", rev(SHA_A))).await;
        assert_eq!((s, r["action"].as_str()), (200, Some(action)), "{reason}: {r}");
    }
    let deps = gitlab.deployments();
    assert_eq!(deps.len(), 1);
    assert_eq!((deps[0].environment.as_str(), deps[0].git_ref.as_str()), ("example-api", "main"));
    assert_eq!(deps[0].history, vec!["running", "success"]);
}

#[tokio::test]
async fn failures_helm_releases_old_revision_format_and_environment_metadata() {
    let (gitlab, bridge) = setup().await;
    let (_, r) = send(&bridge, &event("Kustomization", "HealthCheckFailed", "error", rev(SHA_A))).await;
    assert_eq!((r["action"].as_str(), r["deployment"]["status"].as_str()), (Some("created"), Some("failed")), "{r}");
    let meta = json!({"revision": format!("main/{SHA_B}"), "environment": "production"});
    let (_, r) = send(&bridge, &event("Kustomization", "Progressing", "info", meta.clone())).await;
    assert_eq!(r["deployment"]["environment"], "production", "{r}");
    let (_, r) = send(&bridge, &event("HelmRelease", "UpgradeFailed", "error", meta)).await;
    assert_eq!((r["action"].as_str(), r["deployment"]["status"].as_str()), (Some("updated"), Some("failed")), "{r}");
    let (s, r) = send(&bridge, &event("Kustomization", "DependencyNotReady", "info", rev(SHA_A))).await;
    assert_eq!((s, r["action"].as_str()), (200, Some("ignored")), "{r}");
    assert_eq!(gitlab.deployments().len(), 2);
}

#[tokio::test]
async fn bad_signatures_and_missing_commits() {
    let (gitlab, bridge) = setup().await;
    let body = event("Kustomization", "Progressing", "info", rev(SHA_A));
    assert_signature_required(
        &bridge,
        &gitlab,
        "/hooks/flux?project=42",
        "X-Signature",
        sign::signature("flux", "wrong", &body),
        &body,
    )
    .await;
    let chart = event("HelmRelease", "UpgradeSucceeded", "info", json!({"revision": "6.2.1"}));
    let (s, r) = send(&bridge, &chart).await;
    assert_eq!(s, 400);
    assert!(r["error"].as_str().unwrap().contains("metadata.revision"), "{r}");
}
