//! A platform engineer's first hour (issue 12): the URL as pasted works, and every message
//! says what to do.

use crate::support::*;
use gitlab_deploy_bridge::secrets::StaticSecrets;
use secrecy::SecretString;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

#[tokio::test]
async fn a_doubled_leading_slash_and_a_trailing_slash_reach_their_route() {
    let (gitlab, bridge) = setup().await;
    let body = json!({"environment": "production", "sha": SHA_A, "ref": "main", "status": "running"}).to_string();
    // `<function URL>/hooks/...`: the function URL already ends in `/`.
    let (s, r) = bridge.post("//hooks/generic?project=42", Some(GENERIC_SECRET), body.clone()).await;
    assert_eq!((s, r["action"].as_str()), (200, Some("created")), "{r}");
    let (s, r) = bridge.post("/hooks/generic/?project=42", Some(GENERIC_SECRET), body.clone()).await;
    assert_eq!((s, r["action"].as_str()), (200, Some("unchanged")), "{r}");
    let (s, r) = bridge.post("//api/v4/projects/42/deployments/", Some(GENERIC_SECRET), body.clone()).await;
    assert_eq!(
        (s, r["bridge"]["action"].as_str()),
        (201, Some("unchanged")),
        "the facade too, answered as GitLab answers: {r}"
    );
    let (s, _) = bridge.post("//nowhere/", Some(GENERIC_SECRET), body).await;
    assert_eq!(s, 404);
    assert_eq!(gitlab.deployments().len(), 1);
}

#[tokio::test]
async fn without_a_gitlab_token_the_answer_names_the_variable_and_nothing_is_counted_as_sent() {
    let gitlab = GitLabStub::start("t").await;
    let secrets: HashMap<String, SecretString> =
        [("generic_webhook_secret".to_string(), SecretString::from(GENERIC_SECRET))].into();
    let bridge = Bridge::start(config(&gitlab.url), Arc::new(StaticSecrets::new(secrets))).await;
    let body = json!({"environment": "no-token-env", "sha": SHA_A, "ref": "main", "status": "running"}).to_string();
    let (s, r) = bridge.post("/hooks/generic?project=42", Some(GENERIC_SECRET), body).await;
    assert_eq!(s, 500, "{r}");
    assert!(r["error"].as_str().unwrap().contains("set the environment variable GITLAB_TOKEN"), "{r}");
    let logs = logs();
    let line =
        logs.lines().find(|l| l.contains("no-token-env") && l.contains("webhook refused")).expect("the webhook's line");
    assert!(line.contains("gitlab_calls=0") || line.contains(r#""gitlab_calls":0"#), "{line}");
    assert!(gitlab.requests().is_empty());
}

#[tokio::test]
async fn json_sent_with_curls_default_content_type_is_explained() {
    let (gitlab, bridge) = setup().await;
    let body = json!({"environment": "production", "sha": SHA_A, "ref": "main", "status": "running"}).to_string();
    let headers = [
        ("authorization", format!("Bearer {GENERIC_SECRET}")),
        ("content-type", "application/x-www-form-urlencoded".to_string()),
    ];
    let resp = bridge
        .http
        .post(format!("{}/hooks/generic?project=42", bridge.url))
        .header(headers[0].0, &headers[0].1)
        .header(headers[1].0, &headers[1].1)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let r: serde_json::Value = resp.json().await.unwrap();
    assert!(r["error"].as_str().unwrap().contains("Content-Type: application/json"), "{r}");
    assert!(gitlab.requests().is_empty());
}

#[tokio::test]
async fn an_unreachable_gitlab_is_named_in_the_answer() {
    // Nothing listens on port 9 (discard) of the loopback.
    let bridge = Bridge::start(config("http://127.0.0.1:9"), static_secrets("t")).await;
    let (s, r) = bridge.generic("production", SHA_A, "running").await;
    assert!(s == 502 || s == 504, "{s} {r}");
    assert!(r["error"].as_str().unwrap().contains("127.0.0.1:9"), "{r}");
}
