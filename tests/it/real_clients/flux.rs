//! Flux: events as kustomize-controller and helm-controller record them, carried through
//! notification-controller's metadata rewrite and generic-hmac forwarder by
//! `tests/fixtures/flux` (Go `encoding/json` + `crypto/hmac`), with every revision format
//! source-controller writes. The Secret, Provider and Alert are the docs', copied out of
//! docs/tools/flux.md (only the URL and the token are the test's).

use serde_json::{Value, json};
use std::ffi::OsStr;

use super::{docs_yaml, go_tool, run_tool, scratch};
use crate::support::{Bridge, FLUX_SECRET, GitLabStub, SHA_A, SHA_B};

const DIGEST: &str = "sha256:5b1a0b1d0c2a3f4e5d6c7b8a9f0e1d2c3b4a5f6e7d8c9b0a1f2e3d4c5b6a7f8e";

const DOCS_ADDRESS: &str = "https://<url-id>.lambda-url.<region>.on.aws/hooks/flux/my-app-flux";

/// The docs' Flux manifests (the fenced YAML block with the generic-hmac Provider), pointed at
/// `bridge` and carrying the test's token.
fn readme_manifests(bridge: &Bridge) -> String {
    let block = docs_yaml("flux", "type: generic-hmac");
    for placeholder in [DOCS_ADDRESS, "token: <route_my_app_flux_secret>"] {
        assert!(block.contains(placeholder), "the docs' Flux manifests changed: {placeholder}");
    }
    block
        .replace(DOCS_ADDRESS, &format!("{}/hooks/flux/my-app-flux", bridge.url))
        .replace("<route_my_app_flux_secret>", FLUX_SECRET)
}

fn kustomization(annotations: Value) -> Value {
    object("Kustomization", "my-app", annotations)
}

fn object(kind: &str, name: &str, annotations: Value) -> Value {
    json!({"kind": kind, "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "namespace": "flux-system",
           "name": name, "uid": "4c1e9f3a-2b7d-4a8e-9c6f-1d3b5e7a9c2f", "resourceVersion": "918273",
           "annotations": annotations})
}

fn helmrelease(annotations: Value) -> Value {
    json!({"kind": "HelmRelease", "apiVersion": "helm.toolkit.fluxcd.io/v2", "namespace": "flux-system",
           "name": "my-app", "uid": "7a2c4e6f-8b1d-4f3a-a5c7-9e1b3d5f7a9c", "resourceVersion": "551902",
           "annotations": annotations})
}

/// One event as a controller's recorder emits it.
fn event(object: &Value, severity: &str, at: &str, reason: &str, message: &str, metadata: Value) -> Value {
    let controller = if object["kind"] == "HelmRelease" { "helm-controller" } else { "kustomize-controller" };
    json!({"object": object, "severity": severity, "timestamp": at, "reason": reason, "message": message,
           "metadata": metadata, "reportingController": controller,
           "reportingInstance": format!("{controller}-6d9f8b7c5d-x2x4z")})
}

/// A Kustomization reconcile that applies `revision`: apply, health check, success.
fn reconcile(revision: &str, origin: Option<&str>, minute: u32) -> Vec<Value> {
    let obj = kustomization(json!({}));
    let mut meta = json!({"kustomize.toolkit.fluxcd.io/revision": revision});
    if let Some(o) = origin {
        meta["kustomize.toolkit.fluxcd.io/originRevision"] = json!(o);
    }
    let mut done = meta.clone();
    done["kustomize.toolkit.fluxcd.io/commit_status"] = json!("update");
    vec![
        event(
            &obj,
            "info",
            &format!("2026-10-02T10:{minute:02}:01Z"),
            "Progressing",
            "Deployment/web/web configured\nService/web/web unchanged",
            meta.clone(),
        ),
        event(
            &obj,
            "info",
            &format!("2026-10-02T10:{minute:02}:25Z"),
            "Progressing",
            "Health check passed in 24.0s",
            meta,
        ),
        event(
            &obj,
            "info",
            &format!("2026-10-02T10:{minute:02}:25Z"),
            "ReconciliationSucceeded",
            "Reconciliation finished in 24.3s, next run in 10m0s",
            done,
        ),
    ]
}

async fn forward(bridge: &Bridge, events: Vec<Value>) -> Option<Vec<Value>> {
    let tool = go_tool("flux")?;
    let file = scratch("flux.json", json!({ "events": events }).to_string().as_bytes());
    let manifests = scratch("flux.yaml", readme_manifests(bridge).as_bytes());
    let args = [
        OsStr::new("-manifests"),
        manifests.as_os_str(),
        OsStr::new("-scenario"),
        file.as_os_str(),
        OsStr::new("-retry-wait"),
        OsStr::new("20ms"),
    ];
    let records = run_tool(&tool, &args).await;
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_file(&manifests);
    Some(records)
}

fn assert_ok(records: &[Value]) {
    for r in records {
        assert_eq!(r["status"], 200, "{r:#}");
    }
}

fn production(gitlab: &GitLabStub) -> Vec<(String, String, String, bool)> {
    gitlab.deployments_in("production").into_iter().map(|d| (d.sha, d.git_ref, d.status, d.tag)).collect()
}

#[tokio::test]
async fn a_kustomization_reconcile_is_one_deployment_and_its_repeats_change_nothing() {
    let (gitlab, bridge) = super::readme_routed_setup().await;
    let mut events = reconcile(&format!("main@sha1:{SHA_A}"), None, 0);
    // Ten minutes later the same revision is reconciled again: only the success repeats.
    events.push(events[2].clone());
    events[3]["timestamp"] = json!("2026-10-02T10:10:25Z");
    let Some(records) = forward(&bridge, events).await else { return };
    assert_ok(&records);
    let actions: Vec<Value> = records
        .iter()
        .map(|r| serde_json::from_str::<Value>(r["response"].as_str().unwrap()).unwrap()["action"].clone())
        .collect();
    assert_eq!(
        actions,
        vec![json!("created"), json!("unchanged"), json!("updated"), json!("unchanged")],
        "{records:#?}"
    );
    assert_eq!(production(&gitlab), vec![(SHA_A.into(), "main".into(), "success".into(), false)]);
    // What notification-controller forwards: the prefixes stripped, the Alert's metadata merged.
    let body: Value = serde_json::from_str(records[2]["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        body["metadata"],
        json!({"revision": format!("main@sha1:{SHA_A}"), "commit_status": "update", "environment": "production"})
    );
}

/// A GitRepository pinned by `spec.ref.commit` has no branch: its revision is `sha1:<sha>`.
#[tokio::test]
async fn a_source_pinned_to_a_commit_is_deployed_on_the_default_ref() {
    let (gitlab, bridge) = super::readme_routed_setup().await;
    let Some(records) = forward(&bridge, reconcile(&format!("sha1:{SHA_A}"), None, 0)).await else { return };
    assert_ok(&records);
    assert_eq!(production(&gitlab), vec![(SHA_A.into(), "main".into(), "success".into(), false)]);
}

/// An OCIRepository's revision is `<oci tag>@sha256:<digest>`; the commit and its branch come
/// from the artifact's origin revision. `latest` is not a git ref (GitLab refuses it).
#[tokio::test]
async fn an_oci_artifact_is_deployed_on_the_branch_of_its_origin() {
    let (gitlab, bridge) = super::readme_routed_setup().await;
    let events = reconcile(&format!("latest@{DIGEST}"), Some(&format!("main@sha1:{SHA_B}")), 0);
    let Some(records) = forward(&bridge, events).await else { return };
    assert_ok(&records);
    assert_eq!(production(&gitlab), vec![(SHA_B.into(), "main".into(), "success".into(), false)]);
}

/// `spec.ref.tag` (or `semver`) gives `<tag>@sha1:<sha>`: a deployment of a tag.
#[tokio::test]
async fn a_tag_revision_is_deployed_as_a_tag() {
    let (gitlab, bridge) = super::readme_routed_setup().await;
    let Some(records) = forward(&bridge, reconcile(&format!("v1.0.0@sha1:{SHA_A}"), None, 0)).await else { return };
    assert_ok(&records);
    assert_eq!(production(&gitlab), vec![(SHA_A.into(), "v1.0.0".into(), "success".into(), true)]);
}

/// A HelmRelease's revision is its chart version and helm-controller sends no origin revision:
/// the commit comes from the `event.toolkit.fluxcd.io/commit` annotation, and without it the
/// answer says so.
#[tokio::test]
async fn a_helmrelease_is_deployed_by_its_commit_annotation_and_refused_clearly_without() {
    let (gitlab, bridge) = super::readme_routed_setup().await;
    let meta = json!({"helm.toolkit.fluxcd.io/revision": "6.6.1+0cc9a8446c95", "helm.toolkit.fluxcd.io/app-version": "6.6.1",
                      "helm.toolkit.fluxcd.io/token": "b8f0c2d4e6a81357"});
    let annotated = helmrelease(json!({"event.toolkit.fluxcd.io/commit": SHA_B}));
    let upgrade = |obj: &Value, minute: u32| {
        event(
            obj,
            "info",
            &format!("2026-10-02T11:{minute:02}:00Z"),
            "UpgradeSucceeded",
            "Helm upgrade succeeded for release flux-system/my-app.v4 with chart podinfo@6.6.1+0cc9a8446c95",
            meta.clone(),
        )
    };
    let Some(records) = forward(&bridge, vec![upgrade(&annotated, 0)]).await else { return };
    assert_ok(&records);
    let body: Value = serde_json::from_str(records[0]["body"].as_str().unwrap()).unwrap();
    assert!(body["metadata"].get("token").is_none(), "notification-controller drops the token: {body}");
    assert_eq!(body["metadata"]["commit"], SHA_B, "{body}");
    assert_eq!(production(&gitlab), vec![(SHA_B.into(), "main".into(), "success".into(), false)]);

    let Some(records) = forward(&bridge, vec![upgrade(&helmrelease(json!({})), 5)]).await else { return };
    assert_eq!(records[0]["status"], 400, "{:#}", records[0]);
    let answer: Value = serde_json::from_str(records[0]["response"].as_str().unwrap()).unwrap();
    let error = answer["error"].as_str().unwrap();
    assert!(error.contains("event.toolkit.fluxcd.io/commit") && error.contains("chart version"), "{error}");
    assert_eq!(gitlab.deployments().len(), 1);
}

/// `spec.ref.name: refs/heads/main` keeps the full reference in the revision.
#[tokio::test]
async fn a_full_reference_name_is_deployed_on_its_branch() {
    let (gitlab, bridge) = super::readme_routed_setup().await;
    let Some(records) = forward(&bridge, reconcile(&format!("refs/heads/main@sha1:{SHA_A}"), None, 0)).await else {
        return;
    };
    assert_ok(&records);
    assert_eq!(production(&gitlab), vec![(SHA_A.into(), "main".into(), "success".into(), false)]);
}

/// The docs' Alert lists its sources: an event of another Kustomization never reaches the
/// bridge, and so never reaches GitLab.
#[tokio::test]
async fn only_the_alerts_sources_reach_the_bridge() {
    let (gitlab, bridge) = super::readme_routed_setup().await;
    let infra = object("Kustomization", "infrastructure", json!({}));
    let meta = json!({"kustomize.toolkit.fluxcd.io/revision": format!("main@sha1:{SHA_A}")});
    let ev = event(
        &infra,
        "info",
        "2026-10-02T10:00:01Z",
        "ReconciliationSucceeded",
        "Reconciliation finished in 2s, next run in 10m0s",
        meta,
    );
    let Some(records) = forward(&bridge, vec![ev]).await else { return };
    assert_eq!(records[0]["forwarded"], false, "{records:#?}");
    assert!(gitlab.requests().is_empty());
}
