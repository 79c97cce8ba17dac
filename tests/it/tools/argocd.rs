//! Argo CD notifications end to end, as the docs' template renders them (the real notification
//! engine drives the bridge in `real_clients::argocd`): a sync and its health are one deployment,
//! and the GitOps revision Argo CD reports is mapped to the application's commit — by a field,
//! the configured annotation or image tag (and, beside it, Flux's commit annotation) — or the
//! refusal explains how to map it.

use crate::support::*;
use serde_json::{Value, json};

#[tokio::test]
async fn argocd_sync_then_deployed_is_one_deployment() {
    let (gitlab, bridge) = setup().await;
    let body = |phase: &str, health: &str| {
        json!({"app": "example-api", "phase": phase, "health": health, "revision": SHA_A, "revisions": [],
               "targetRevision": "HEAD", "externalURLs": ["https://api.example.com"]})
        .to_string()
    };
    let (s, r) = bridge.post("/hooks/argocd?project=42", Some(ARGOCD_SECRET), body("Running", "Progressing")).await;
    assert_eq!((s, r["action"].as_str()), (200, Some("created")), "{r}");
    let (_, r) = bridge.post("/hooks/argocd?project=42", Some(ARGOCD_SECRET), body("Succeeded", "Progressing")).await;
    assert_eq!(r["action"], "unchanged", "{r}");
    let (_, r) = bridge.post("/hooks/argocd?project=42", Some(ARGOCD_SECRET), body("Succeeded", "Healthy")).await;
    assert_eq!(r["action"], "updated", "{r}");
    assert_eq!(r["deployment"]["external_url"], "https://api.example.com");
    let (s, r) = bridge.post("/hooks/argocd?project=42", Some(ARGOCD_SECRET), body("", "Healthy")).await;
    assert_eq!((s, r["action"].as_str()), (200, Some("ignored")), "{r}");
    let deps = gitlab.deployments();
    assert_eq!(deps.len(), 1);
    assert_eq!(deps[0].environment, "example-api");
    assert_eq!(deps[0].git_ref, "main", "HEAD falls back to DEFAULT_REF");
    assert_eq!(deps[0].history, vec!["running", "success"]);
}

fn argocd_body(revision: &str, extra: Value) -> String {
    let mut b = json!({"app": "shop", "phase": "Succeeded", "health": "Healthy", "revision": revision, "targetRevision": "main",
                       "repoURL": "https://gitlab.example.com/platform/gitops.git"});
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    b.to_string()
}

#[tokio::test]
async fn a_gitops_revision_unknown_to_the_project_is_explained() {
    let (gitlab, bridge) = setup().await;
    let gitops = "9".repeat(40);
    let (s, r) = bridge
        .post("/hooks/argocd?project=42&environment=production", Some(ARGOCD_SECRET), argocd_body(&gitops, json!({})))
        .await;
    assert_eq!(s, 422, "{r}");
    let msg = r["error"].as_str().unwrap();
    for needle in [
        "The commit does not exist",
        &gitops,
        "https://gitlab.example.com/platform/gitops.git",
        "ARGOCD_SHA_ANNOTATION",
        "ARGOCD_IMAGE",
    ] {
        assert!(msg.contains(needle), "{needle} missing in {msg}");
    }
    assert!(gitlab.deployments().is_empty());
}

#[tokio::test]
async fn the_application_commit_from_a_field_an_annotation_or_an_image_tag() {
    let (gitlab, bridge) = setup_with(|c| {
        c.tools.set("ARGOCD_SHA_ANNOTATION", "example.com/app-commit").unwrap();
        c.tools.set("ARGOCD_IMAGE", "registry.example.com/shop").unwrap();
    })
    .await;
    let gitops = "9".repeat(40);
    let post = |env: &str, extra: Value| {
        let body = argocd_body(&gitops, extra);
        let path = format!("/hooks/argocd?project=42&environment={env}");
        let b = &bridge;
        async move { b.post(&path, Some(ARGOCD_SECRET), body).await }
    };
    // (a) an explicit field
    let (s, r) = post("a", json!({"sha": SHA_A})).await;
    assert_eq!((s, r["deployment"]["sha"].as_str()), (200, Some(SHA_A)), "{r}");
    // (b) the configured annotation
    let (s, r) = post("b", json!({"annotations": {"example.com/app-commit": SHA_B, "other": "x"}})).await;
    assert_eq!((s, r["deployment"]["sha"].as_str()), (200, Some(SHA_B)), "{r}");
    // (c) the configured image's tag, a short sha resolved by GitLab
    let images = json!({"images": ["docker.io/library/redis:7", format!("registry.example.com/shop:{}", &SHA_A[..8])]});
    let (s, r) = post("c", images).await;
    assert_eq!((s, r["deployment"]["sha"].as_str()), (200, Some(SHA_A)), "{r}");
    assert_eq!(gitlab.deployments().len(), 3);

    // Flux: an annotation `event.toolkit.fluxcd.io/commit` arrives as metadata.commit.
    let flux = json!({"involvedObject": {"kind": "Kustomization", "name": "shop", "namespace": "flux-system"},
                      "reason": "ReconciliationSucceeded", "metadata": {"revision": format!("main@sha1:{gitops}"), "commit": SHA_B}})
    .to_string();
    let (s, r) = bridge
        .post_with(
            "/hooks/flux?project=42&environment=flux",
            &[("X-Signature", sign::signature("flux", FLUX_SECRET, &flux))],
            &flux,
        )
        .await;
    assert_eq!((s, r["deployment"]["sha"].as_str()), (200, Some(SHA_B)), "{r}");
    let unmapped = json!({"involvedObject": {"kind": "Kustomization", "name": "shop"}, "reason": "Progressing",
                          "metadata": {"revision": format!("main@sha1:{gitops}")}})
    .to_string();
    let (s, r) = bridge
        .post_with(
            "/hooks/flux?project=42&environment=flux",
            &[("X-Signature", sign::signature("flux", FLUX_SECRET, &unmapped))],
            &unmapped,
        )
        .await;
    assert_eq!(s, 422, "{r}");
    assert!(r["error"].as_str().unwrap().contains("event.toolkit.fluxcd.io/commit"), "{r}");
}
