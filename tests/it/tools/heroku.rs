//! Heroku app webhooks (api:build, api:release) end to end.

use crate::support::*;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

const APP: &str = "example-api-staging";

fn build(action: &str, status: &str, sha: Option<&str>) -> String {
    let mut blob = json!({"checksum": null, "url": "https://example-source.invalid/archive.tar.gz", "version_description": "Add health endpoint"});
    if let Some(s) = sha {
        blob["version"] = json!(s);
    }
    json!({
        "id": "0b2f1c3e-8d7a-4e6f-9a1b-2c3d4e5f6a7b", "action": action, "resource": "build",
        "actor": {"email": "ops@example.com", "id": "5a6b"}, "previous_data": {}, "sequence": null,
        "created_at": "2026-10-02T08:00:00Z", "updated_at": "2026-10-02T08:01:10Z", "published_at": "2026-10-02T08:01:11Z",
        "version": "application/vnd.heroku+json; version=3",
        "data": {"id": "7e8f", "status": status, "app": {"id": "3c4d", "name": APP}, "source_blob": blob,
                 "release": null, "slug": null, "stack": "heroku-24", "output_stream_url": "https://build-output.heroku.com/streams/7e"},
        "webhook_metadata": {"attempt": {"id": "a1"}, "delivery": {"id": format!("d-build-{status}")}, "event": {"id": "e1", "include": "api:build"}, "webhook": {"id": "w1"}}
    })
    .to_string()
}

fn release(status: &str, description: &str) -> String {
    json!({
        "id": "2b3c", "action": "update", "resource": "release", "previous_data": {"status": "pending"}, "sequence": null,
        "version": "application/vnd.heroku+json; version=3",
        "data": {"id": "9f0a", "version": 17, "status": status, "description": description, "current": true,
                 "app": {"id": "3c4d", "name": APP}, "slug": {"id": "1d2e"}, "addon_plan_names": [],
                 "output_stream_url": "https://release-output.heroku.com/streams/9f"},
        "webhook_metadata": {"attempt": {"id": "a2"}, "delivery": {"id": format!("d-release-{status}")}, "event": {"id": "e2", "include": "api:release"}, "webhook": {"id": "w1"}}
    })
    .to_string()
}

async fn send(bridge: &Bridge, body: &str) -> (u16, Value) {
    bridge
        .post_with(
            "/hooks/heroku?project=42",
            &[("Heroku-Webhook-Hmac-SHA256", sign::signature("heroku", HEROKU_SECRET, body))],
            body,
        )
        .await
}

fn short(sha: &str) -> String {
    format!("Deploy {}", &sha[..8])
}

#[tokio::test]
async fn git_push_is_one_deployment_from_build_start_to_release() {
    let (gitlab, bridge) = setup().await;
    for (body, action) in [
        (build("create", "pending", Some(SHA_A)), "created"),
        (build("update", "succeeded", Some(SHA_A)), "unchanged"),
        (release("pending", &short(SHA_A)), "unchanged"),
        (release("succeeded", &short(SHA_A)), "updated"),
        (release("succeeded", &short(SHA_A)), "unchanged"),
    ] {
        let (s, r) = send(&bridge, &body).await;
        assert_eq!((s, r["action"].as_str()), (200, Some(action)), "{r}");
    }
    let deps = gitlab.deployments();
    assert_eq!(deps.len(), 1);
    assert_eq!((deps[0].environment.as_str(), deps[0].sha.as_str()), (APP, SHA_A));
    assert_eq!(deps[0].history, vec!["running", "success"]);
}

#[tokio::test]
async fn release_delivered_before_the_build_still_makes_one_deployment() {
    let (gitlab, bridge) = setup().await;
    let (_, r) = send(&bridge, &release("succeeded", &short(SHA_A))).await;
    assert_eq!(r["action"], "created", "{r}");
    let (_, r) = send(&bridge, &build("create", "pending", Some(SHA_A))).await;
    assert_eq!(r["action"], "unchanged", "{r}");
    assert_eq!(gitlab.deployments().len(), 1);
    assert_eq!(gitlab.deployments()[0].status, "success");
}

#[tokio::test]
async fn failed_build_and_failed_release_phase() {
    let (gitlab, bridge) = setup().await;
    send(&bridge, &build("create", "pending", Some(SHA_A))).await;
    let (_, r) = send(&bridge, &build("update", "failed", Some(SHA_A))).await;
    assert_eq!((r["action"].as_str(), r["deployment"]["status"].as_str()), (Some("updated"), Some("failed")), "{r}");
    send(&bridge, &build("create", "pending", Some(SHA_B))).await;
    let (_, r) = send(&bridge, &release("failed", &short(SHA_B))).await;
    assert_eq!((r["action"].as_str(), r["deployment"]["status"].as_str()), (Some("updated"), Some("failed")), "{r}");
    let deps = gitlab.deployments();
    assert_eq!(
        deps.iter().map(|d| d.history.clone()).collect::<Vec<_>>(),
        vec![vec!["running", "failed"], vec!["running", "failed"]]
    );
}

#[tokio::test]
async fn releases_without_a_commit_are_ignored_without_an_api_token() {
    let (gitlab, bridge) = setup().await;
    for d in ["Set FOO config vars", "Rollback to v16"] {
        let (s, r) = send(&bridge, &release("succeeded", d)).await;
        assert_eq!((s, r["action"].as_str()), (200, Some("ignored")), "{r}");
        assert!(r["reason"].as_str().unwrap().contains("heroku_api_token"));
    }
    let dyno = json!({"resource": "dyno", "action": "create", "data": {}}).to_string();
    let (_, r) = send(&bridge, &dyno).await;
    assert_eq!(r["action"], "ignored");
    assert!(gitlab.requests().is_empty());
}

#[tokio::test]
async fn with_an_api_token_the_slug_commit_ties_any_release() {
    // A stand-in for the Heroku Platform API that records the credentials it receives.
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let app = Router::new()
        .route(
            "/apps/{app}/slugs/{slug}",
            get(
                |State(seen): State<Arc<Mutex<Vec<String>>>>,
                 Path((app, slug)): Path<(String, String)>,
                 h: HeaderMap| async move {
                    seen.lock().unwrap().push(format!(
                        "{} {}",
                        h["authorization"].to_str().unwrap(),
                        h["accept"].to_str().unwrap()
                    ));
                    assert_eq!((app.as_str(), slug.as_str()), ("3c4d", "1d2e"));
                    Json(json!({"id": slug, "commit": SHA_B, "commit_description": "Fix"}))
                },
            ),
        )
        .route(
            "/apps/{app}",
            get(|| async { Json(json!({"name": APP, "web_url": "https://example-api-staging-1234.herokuapp.com/"})) }),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let heroku_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let token = fastrand_token();
    let gitlab = GitLabStub::start(&token).await;
    gitlab.add_commit(SHA_B);
    let mut cfg = config(&gitlab.url);
    cfg.tools.set("HEROKU_API_URL", &heroku_url).unwrap();
    let bridge = Bridge::start(cfg, static_secrets_with(&token, &[("heroku_api_token", "heroku-api-token")])).await;
    let (s, r) = send(&bridge, &release("succeeded", "Rollback to v16")).await;
    assert_eq!((s, r["action"].as_str()), (200, Some("created")), "{r}");
    assert_eq!(r["deployment"]["sha"], SHA_B);
    assert_eq!(r["deployment"]["external_url"], "https://example-api-staging-1234.herokuapp.com/");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen, vec!["Bearer heroku-api-token application/vnd.heroku+json; version=3".to_string()]);
    assert!(!seen.iter().any(|s| s.contains(&token)), "the GitLab token went to Heroku");
}

#[tokio::test]
async fn bad_signatures_and_missing_commits() {
    let (gitlab, bridge) = setup().await;
    let body = build("create", "pending", Some(SHA_A));
    let forged = sign::signature("heroku", "wrong", &body);
    assert_signature_required(
        &bridge,
        &gitlab,
        "/hooks/heroku?project=42",
        "Heroku-Webhook-Hmac-SHA256",
        forged,
        &body,
    )
    .await;
    let (s, r) = send(&bridge, &build("create", "pending", None)).await;
    assert_eq!(s, 400);
    assert!(r["error"].as_str().unwrap().contains("source_blob.version"), "{r}");
    let unknown = "e".repeat(40);
    let (s, r) = send(&bridge, &release("succeeded", &short(&unknown))).await;
    // GitLab expands the short sha when the event is delivered (so it can wait in the spool);
    // a commit it does not have is its refusal, 422, as for a full sha.
    assert_eq!(s, 422, "{r}");
    assert!(r["error"].as_str().unwrap().contains("eeeeeeee"), "{r}");
}
