//! Vercel deployment webhooks end to end.

use crate::support::*;
use serde_json::{Value, json};

fn event(kind: &str, target: Value, meta: Value) -> String {
    json!({
        "id": format!("evt_{kind}"), "type": kind, "createdAt": 1759395600000u64, "region": "fra1",
        "payload": {
            "team": {"id": "team_example"}, "user": {"id": "user_example"}, "project": {"id": "prj_example"},
            "deployment": {"id": "dpl_1", "name": "example-web", "url": "example-web-1.vercel.app", "meta": meta,
                           "inspectorUrl": "https://vercel.com/example/example-web/1"},
            "links": {"deployment": "https://vercel.com/example/example-web/1", "project": "https://vercel.com/example/example-web"},
            "target": target, "name": "example-web", "url": "example-web-1.vercel.app"
        }
    })
    .to_string()
}

fn gitlab_meta(sha: &str, r: &str) -> Value {
    json!({"gitlabCommitSha": sha, "gitlabCommitRef": r, "gitlabProjectPath": "example/web"})
}

async fn send(bridge: &Bridge, body: &str) -> (u16, Value) {
    bridge
        .post_with(
            "/hooks/vercel?project=42",
            &[("x-vercel-signature", sign::signature("vercel", VERCEL_SECRET, body))],
            body,
        )
        .await
}

#[tokio::test]
async fn production_created_then_succeeded_and_previews_kept_apart() {
    let (gitlab, bridge) = setup().await;
    let (_, r) = send(&bridge, &event("deployment.created", json!("production"), gitlab_meta(SHA_A, "main"))).await;
    assert_eq!(r["action"], "created", "{r}");
    let (_, r) = send(&bridge, &event("deployment.succeeded", json!("production"), gitlab_meta(SHA_A, "main"))).await;
    assert_eq!(r["action"], "updated", "{r}");
    assert_eq!(r["deployment"]["external_url"], "https://example-web-1.vercel.app");
    let gh = json!({"githubCommitSha": SHA_B, "githubCommitRef": "release"});
    let (_, r) = send(&bridge, &event("deployment.error", Value::Null, gh.clone())).await;
    assert_eq!(
        (r["action"].as_str(), r["deployment"]["environment"].as_str()),
        (Some("created"), Some("preview/release")),
        "{r}"
    );
    // The preview's name is the bridge's convention, not the user's: nothing asks to rename it.
    assert!(r.get("warnings").is_none(), "{r}");
    let (_, r) = send(&bridge, &event("deployment.canceled", json!("staging"), gh)).await;
    assert_eq!(
        (r["deployment"]["environment"].as_str(), r["deployment"]["status"].as_str()),
        (Some("staging"), Some("canceled")),
        "{r}"
    );
    let deps = gitlab.deployments();
    assert_eq!(deps.len(), 3);
    assert_eq!(deps[0].history, vec!["running", "success"]);
    assert_eq!(deps.iter().filter(|d| d.environment == "production").count(), 1, "previews stay out of production");
    let (s, r) = send(&bridge, &event("project.created", Value::Null, json!({}))).await;
    assert_eq!((s, r["action"].as_str()), (200, Some("ignored")));
}

#[tokio::test]
async fn bad_signatures_and_missing_commits() {
    let (gitlab, bridge) = setup().await;
    let body = event("deployment.created", json!("production"), gitlab_meta(SHA_A, "main"));
    let forged = sign::signature("vercel", "wrong", &body);
    assert_signature_required(&bridge, &gitlab, "/hooks/vercel?project=42", "x-vercel-signature", forged, &body).await;
    let (s, r) = send(&bridge, &event("deployment.created", json!("production"), json!({}))).await;
    assert_eq!(s, 400);
    assert!(r["error"].as_str().unwrap().contains("CommitSha"), "{r}");
}
