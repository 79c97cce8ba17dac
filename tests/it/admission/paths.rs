//! The path a delivery comes by: an unknown source or path gets a JSON 404 (405 for a GET, 400
//! for a path that is not UTF-8, 413 for an oversize body) and GitLab hears nothing; a source's
//! name cannot forge a log line; and a pasted URL's doubled or trailing slash reaches its hook.

use crate::support::*;
use serde_json::{Value, json};

#[tokio::test]
async fn unknown_source_unknown_route_and_oversize_body() {
    let (gitlab, bridge) = setup().await;
    let (s, r) = bridge.post("/hooks/jenkins?project=42", Some(GENERIC_SECRET), "{}").await;
    assert_eq!(s, 404, "{r}");
    assert!(r["error"].as_str().unwrap().contains("generic"), "{r}");
    let (s, _) = bridge.post("/nope", None, "{}").await;
    assert_eq!(s, 404);
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(1024 * 1024 + 10));
    let (s, r) = bridge.post("/hooks/generic?project=42", Some(GENERIC_SECRET), big).await;
    assert_eq!(s, 413, "{r}");
    let resp = bridge.http.get(format!("{}/hooks/generic", bridge.url)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    // A path that is not UTF-8 once decoded still gets a JSON answer.
    let (s, r) = bridge.post("/hooks/%FF%FE?project=42", Some(GENERIC_SECRET), "{}").await;
    assert_eq!(s, 400, "{r}");
    assert!(gitlab.requests().is_empty());
}

/// `/hooks/x%0A<forged line>` put a raw newline into the error, which a text log prints as a
/// line of its own. The name is escaped now, in the answer and in the log.
#[tokio::test]
async fn an_unknown_source_name_cannot_forge_a_log_line() {
    let (gitlab, bridge) = setup().await;
    let (s, r) =
        bridge.post("/hooks/x%0A2026-11-29T00:00:00Z%20INFO%20webhook%20handled", Some(GENERIC_SECRET), "{}").await;
    assert_eq!(s, 404, "{r}");
    let error = r["error"].as_str().unwrap();
    assert!(!error.contains('\n') && error.contains("x\\n2026"), "{error}");
    for line in logs().lines().filter(|l| l.contains("2026-11-29T00:00:00Z")) {
        let v: Value = serde_json::from_str(line).unwrap();
        for field in ["source", "error"] {
            assert!(!v[field].as_str().unwrap_or_default().contains('\n'), "{line}");
        }
    }
    assert!(gitlab.requests().is_empty());
}

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
