//! Netlify outgoing deploy webhooks (JWS-signed) end to end.

use crate::support::*;
use serde_json::{Value, json};

fn deploy(state: &str, sha: Value, context: &str) -> String {
    json!({
        "id": "65f0a1b2", "site_id": "0a1b", "build_id": "65f0b", "state": state, "name": "example-docs",
        "url": "https://docs.example.com", "ssl_url": "https://docs.example.com", "admin_url": "https://app.netlify.com/sites/example-docs",
        "deploy_url": "http://65f0a1b2--example-docs.netlify.app", "deploy_ssl_url": "https://65f0a1b2--example-docs.netlify.app",
        "created_at": "2026-10-02T10:00:00.000Z", "updated_at": "2026-10-02T10:02:00.000Z",
        "commit_ref": sha, "branch": "main", "context": context, "error_message": null, "title": "Add health endpoint", "review_id": null
    })
    .to_string()
}

async fn send(bridge: &Bridge, event: &str, body: &str) -> (u16, Value) {
    let headers = [
        ("X-Webhook-Signature", sign::signature("netlify", NETLIFY_SECRET, body)),
        ("X-Netlify-Event", event.to_string()),
    ];
    bridge.post_with("/hooks/netlify?project=42", &headers, body).await
}

#[tokio::test]
async fn building_then_ready_then_a_failed_preview() {
    let (gitlab, bridge) = setup().await;
    let (_, r) = send(&bridge, "deploy_building", &deploy("building", json!(SHA_A), "production")).await;
    assert_eq!(r["action"], "created", "{r}");
    let (_, r) = send(&bridge, "deploy_created", &deploy("ready", json!(SHA_A), "production")).await;
    assert_eq!(r["action"], "updated", "{r}");
    assert_eq!(r["deployment"]["external_url"], "https://docs.example.com");
    let (_, r) = send(&bridge, "deploy_failed", &deploy("error", json!(SHA_B), "deploy-preview")).await;
    assert_eq!(
        (r["deployment"]["environment"].as_str(), r["deployment"]["status"].as_str()),
        (Some("preview/main"), Some("failed")),
        "{r}"
    );
    let (s, r) = send(&bridge, "deploy_locked", &deploy("ready", json!(SHA_A), "production")).await;
    assert_eq!((s, r["action"].as_str()), (200, Some("ignored")));
    let deps = gitlab.deployments();
    assert_eq!(deps.len(), 2);
    assert_eq!(deps[0].history, vec!["running", "success"]);
}

#[tokio::test]
async fn forged_or_missing_signatures_and_missing_commits() {
    let (gitlab, bridge) = setup().await;
    let body = deploy("building", json!(SHA_A), "production");
    let forged = sign::signature("netlify", "wrong", &body);
    assert_signature_required(&bridge, &gitlab, "/hooks/netlify?project=42", "X-Webhook-Signature", forged, &body)
        .await;
    // A valid signature of another body: the body hash claim catches the swap.
    let other = sign::signature("netlify", NETLIFY_SECRET, "{}");
    assert_signature_required(&bridge, &gitlab, "/hooks/netlify?project=42", "X-Webhook-Signature", other, &body).await;
    let (s, r) = send(&bridge, "deploy_building", &deploy("building", Value::Null, "production")).await;
    assert_eq!(s, 400);
    assert!(r["error"].as_str().unwrap().contains("commit_ref"), "{r}");
}

/// The event header is not covered by the JWS: a captured signed "building" body resent with
/// `X-Netlify-Event: deploy_failed` must not fail the deployment.
#[tokio::test]
async fn the_unsigned_event_header_cannot_change_the_status() {
    let (gitlab, bridge) = setup().await;
    let body = deploy("building", json!(SHA_A), "production");
    let (_, r) = send(&bridge, "deploy_building", &body).await;
    assert_eq!(r["action"], "created", "{r}");
    let (s, r) = send(&bridge, "deploy_failed", &body).await;
    assert_eq!(
        (s, r["action"].as_str(), r["deployment"]["status"].as_str()),
        (200, Some("unchanged"), Some("running")),
        "{r}"
    );
    assert_eq!(gitlab.deployments()[0].history, vec!["running"]);
}

/// README: "`iss: netlify`" is checked; a JWS without it is refused like a forged one.
#[tokio::test]
async fn a_jws_without_the_netlify_issuer_is_refused() {
    let (gitlab, bridge) = setup().await;
    let body = deploy("ready", json!(SHA_A), "production");
    let claims = json!({"sha256": hex::encode(<sha2::Sha256 as sha2::Digest>::digest(body.as_bytes()))});
    let jws = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(NETLIFY_SECRET.as_bytes()),
    )
    .unwrap();
    let (s, r) = bridge.post_with("/hooks/netlify?project=42", &[("X-Webhook-Signature", jws)], &body).await;
    assert_eq!(s, 401, "{r}");
    assert!(gitlab.requests().is_empty());
}
