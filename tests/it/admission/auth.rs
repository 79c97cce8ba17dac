//! Credentials: without its source's valid credential a delivery gets 401 and GitLab hears
//! nothing; a source without a configured secret fails closed, and its refusal reads like any
//! other, so a caller cannot tell which sources a bridge serves.

use crate::support::*;
use serde_json::json;
use std::sync::Arc;

#[tokio::test]
async fn bad_or_missing_credentials_get_401_and_no_gitlab_call() {
    let (gitlab, bridge) = setup().await;
    let body = json!({"environment": "production", "sha": SHA_A, "ref": "main", "status": "running"}).to_string();
    for token in [None, Some("wrong"), Some(ARGOCD_SECRET)] {
        let (s, r) = bridge.post("/hooks/generic?project=42", token, body.clone()).await;
        assert_eq!(s, 401, "{token:?} {r}");
        assert!(r["error"].as_str().unwrap().len() > 10);
    }
    let (s, _) = bridge.post("/hooks/argocd?project=42", Some(GENERIC_SECRET), "{}").await;
    assert_eq!(s, 401);
    assert!(gitlab.requests().is_empty());
}

#[tokio::test]
async fn a_source_without_a_secret_fails_closed() {
    let token = fastrand_token();
    let gitlab = GitLabStub::start(&token).await;
    let mut m = std::collections::HashMap::new();
    m.insert("gitlab_token".to_string(), secrecy::SecretString::from(token.clone()));
    let secrets = std::sync::Arc::new(gitlab_deploy_bridge::secrets::StaticSecrets::new(m));
    let bridge = Bridge::start(config(&gitlab.url), secrets).await;
    let (s, r) = bridge.post("/hooks/generic?project=42", Some("a-guess"), "{}").await;
    assert_eq!(s, 401, "{r}");
    // The caller is not told that the source is unconfigured (issue 10); the log says so.
    assert!(!r["error"].as_str().unwrap().contains("no webhook secret"), "{r}");
    let logs = logs();
    assert!(
        logs.lines().any(|l| l.contains("generic_webhook_secret") && l.contains("the secret has no such key")),
        "{logs}"
    );
    assert!(gitlab.requests().is_empty());
}

/// A 401 used to say "the vercel source has no webhook secret configured": an unauthenticated
/// caller could map which sources a bridge serves. Now an unconfigured source refuses in the words
/// a configured one uses for a wrong credential.
#[tokio::test]
async fn a_refusal_does_not_tell_which_sources_are_configured() {
    use gitlab_deploy_bridge::secrets::StaticSecrets;
    use secrecy::SecretString;
    let gitlab = GitLabStub::start("t").await;
    let without_vercel = StaticSecrets::new(
        [("gitlab_token", "t"), ("generic_webhook_secret", GENERIC_SECRET)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), SecretString::from(v.to_string())))
            .collect(),
    );
    let unconfigured = Bridge::start(config(&gitlab.url), Arc::new(without_vercel)).await;
    let configured = Bridge::start(config(&gitlab.url), static_secrets("t")).await;
    let body = r#"{"type":"deployment.created","payload":{}}"#;
    for headers in [vec![], vec![("x-vercel-signature", "00".repeat(20))]] {
        let (s1, r1) = unconfigured.post_with("/hooks/vercel?project=42", &headers, body).await;
        let (s2, r2) = configured.post_with("/hooks/vercel?project=42", &headers, body).await;
        assert_eq!((s1, s2), (401, 401));
        assert_eq!(r1, r2, "the two refusals must read the same");
    }
    assert!(gitlab.requests().is_empty());
}
