//! The `generic` source end to end: the bridge's own JSON body, which the query overrides, and
//! the 400 that names the field (or the Content-Type) to fix, with no GitLab call.

use crate::support::*;
use serde_json::json;

#[tokio::test]
async fn query_overrides_payload() {
    let (gitlab, bridge) = setup().await;
    let body = json!({"environment": "ignored", "sha": SHA_A, "ref": "main", "status": "running"});
    let (s, r) = bridge
        .post("/hooks/generic?project=42&environment=prod-eu&ref=release", Some(GENERIC_SECRET), body.to_string())
        .await;
    assert_eq!(s, 200, "{r}");
    let d = &gitlab.deployments()[0];
    assert_eq!((d.environment.as_str(), d.git_ref.as_str()), ("prod-eu", "release"));
}

#[tokio::test]
async fn bad_input_gets_400_naming_the_field_and_no_gitlab_call() {
    let (gitlab, bridge) = setup().await;
    let cases = [
        ("/hooks/generic?project=42", "{not json".to_string(), "JSON"),
        (
            "/hooks/generic?project=42",
            json!({"environment": "p", "ref": "main", "status": "running"}).to_string(),
            "`sha`",
        ),
        (
            "/hooks/generic?project=42",
            json!({"environment": "p", "sha": "abc", "status": "running"}).to_string(),
            "`sha`",
        ),
        (
            "/hooks/generic?project=42",
            json!({"environment": "p", "sha": SHA_A, "status": "done"}).to_string(),
            "`status`",
        ),
        ("/hooks/generic", json!({"environment": "p", "sha": SHA_A, "status": "running"}).to_string(), "`project`"),
        ("/hooks/generic?project=42", json!({"sha": SHA_A, "status": "running"}).to_string(), "`environment`"),
        (
            "/hooks/generic?project=42",
            json!({"environment": "bad:name", "sha": SHA_A, "status": "running"}).to_string(),
            "environment name",
        ),
    ];
    for (path, body, needle) in cases {
        let (s, r) = bridge.post(path, Some(GENERIC_SECRET), body.clone()).await;
        assert_eq!(s, 400, "{body} → {r}");
        assert!(r["error"].as_str().unwrap().contains(needle), "{body} → {r}");
    }
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
