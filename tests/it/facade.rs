//! The GitLab-compatible facade: a GitLab client's own create (`POST /projects/:id/deployments`)
//! and update (`PUT /projects/:id/deployments/:deployment_id`), authenticated with the generic
//! secret, answered as GitLab answers them, with the bridge's answer beside GitLab's.

use crate::support::*;
use serde_json::{Value, json};

#[tokio::test]
async fn facade_accepts_gitlabs_own_body_and_the_generic_secret() {
    let (gitlab, bridge) = setup().await;
    let body = json!({"environment": "production", "sha": SHA_A, "ref": "main", "tag": "false", "status": "running"})
        .to_string();
    let resp = bridge
        .http
        .post(format!("{}/api/v4/projects/group%2Fapp/deployments", bridge.url))
        .header("PRIVATE-TOKEN", GENERIC_SECRET)
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201, "GitLab answers a create with 201");
    let d: Value = resp.json().await.unwrap();
    assert_eq!(
        (d["status"].as_str(), d["sha"].as_str(), d["ref"].as_str()),
        (Some("running"), Some(SHA_A), Some("main")),
        "{d}"
    );
    assert_eq!(d["environment"]["name"], "production", "{d}");
    assert!(d["id"].as_u64().is_some() && d["iid"].as_u64().is_some(), "{d}");
    assert_eq!(d["bridge"]["action"], "created", "the bridge's answer rides beside GitLab's: {d}");
    let resp = bridge
        .http
        .post(format!("{}/api/v4/projects/group%2Fapp/deployments", bridge.url))
        .header("PRIVATE-TOKEN", "the-real-gitlab-token-is-not-accepted")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let deps = gitlab.deployments();
    assert_eq!(deps.len(), 1);
    assert_eq!(deps[0].project, "42");
}

/// A GitLab client creates with POST, keeps the `id` of the answer, and updates with
/// `PUT /projects/:id/deployments/:deployment_id` (GitLab's documented update call).
#[tokio::test]
async fn facade_updates_the_deployment_a_gitlab_client_created() {
    let (gitlab, bridge) = setup().await;
    let put = |id: String, token: &'static str, body: Value| {
        let http = bridge.http.clone();
        let url = format!("{}/api/v4/projects/42/deployments/{id}", bridge.url);
        async move {
            let resp = http.put(url).header("PRIVATE-TOKEN", token).json(&body).send().await.unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    };
    let create = json!({"environment": "production", "sha": SHA_A, "ref": "main", "tag": false, "status": "running"});
    let resp = bridge
        .http
        .post(format!("{}/api/v4/projects/42/deployments", bridge.url))
        .header("PRIVATE-TOKEN", GENERIC_SECRET)
        .json(&create)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let id = resp.json::<Value>().await.unwrap()["id"].as_u64().unwrap();

    // A wrong token changes nothing.
    let (s, _) = put(id.to_string(), "not-the-secret", json!({"status": "success"})).await;
    assert_eq!(s, 401);
    assert_eq!(gitlab.deployments()[0].status, "running");

    let (s, d) = put(id.to_string(), GENERIC_SECRET, json!({"status": "success"})).await;
    assert_eq!(s, 200, "GitLab answers an update with 200: {d}");
    assert_eq!(
        (d["id"].as_u64(), d["status"].as_str(), d["sha"].as_str()),
        (Some(id), Some("success"), Some(SHA_A)),
        "{d}"
    );
    assert_eq!(d["environment"]["name"], "production");
    assert_eq!(gitlab.deployments()[0].history, vec!["running", "success"]);

    // The same update again (a tool's retry) is answered with the deployment, unchanged.
    let (s, d) = put(id.to_string(), GENERIC_SECRET, json!({"status": "success"})).await;
    assert_eq!((s, d["bridge"]["action"].as_str()), (200, Some("unchanged")), "{d}");
    // A finished deployment never goes back, nor to another final status (GitLab would allow success → failed).
    for status in ["running", "failed"] {
        let (s, d) = put(id.to_string(), GENERIC_SECRET, json!({"status": status})).await;
        assert_eq!(s, 400, "{status}: {d}");
        assert!(d["message"].as_str().unwrap().contains("cannot transition"), "{d}");
    }
    assert_eq!(gitlab.deployments()[0].history, vec!["running", "success"]);

    // GitLab's own answers pass through: an unknown deployment is 404, a bad status 400.
    let (s, d) = put("999999".into(), GENERIC_SECRET, json!({"status": "success"})).await;
    assert_eq!(s, 404, "{d}");
    assert!(d["message"].is_string(), "{d}");
    let (s, d) = put(id.to_string(), GENERIC_SECRET, json!({"status": "deployed"})).await;
    assert_eq!(s, 400, "{d}");
    assert!(d["message"].as_str().unwrap().contains("status"), "{d}");
    let (s, _) = put("abc".into(), GENERIC_SECRET, json!({"status": "success"})).await;
    assert_eq!(s, 404);
}
