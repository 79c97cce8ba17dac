//! Secrets Manager through the real AWS SDK against moto's server.

use crate::support::moto::{self, CountingProxy};
use crate::support::*;
use gitlab_deploy_bridge::secrets::SecretsManager;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

fn secret_json(token: &str) -> String {
    json!({"gitlab_token": token, "generic_webhook_secret": GENERIC_SECRET, "argocd_webhook_secret": ARGOCD_SECRET})
        .to_string()
}

async fn bridge_with_secret(gitlab: &GitLabStub, name: &str, ttl: Duration) -> (Bridge, CountingProxy) {
    let proxy = CountingProxy::start().await;
    let provider = SecretsManager::new(moto::client(&proxy.url), name, ttl);
    let bridge = Bridge::start(config(&gitlab.url), Arc::new(provider)).await;
    (bridge, proxy)
}

#[tokio::test]
async fn secret_is_read_once_per_ttl_across_many_webhooks() {
    let token = fastrand_token();
    let gitlab = GitLabStub::start(&token).await;
    gitlab.add_commit(SHA_A);
    let name = moto::create_secret(&secret_json(&token)).await;
    let (bridge, proxy) = bridge_with_secret(&gitlab, &name, Duration::from_secs(300)).await;
    assert_eq!(proxy.reads(), 0, "nothing is read before the first webhook");
    for (i, status) in ["running", "success", "success", "running", "failed"].iter().cycle().take(12).enumerate() {
        let (s, r) = bridge.generic(&format!("env{}", i % 3), SHA_A, status).await;
        assert_eq!(s, 200, "{r}");
    }
    assert_eq!(proxy.reads(), 1);
}

#[tokio::test]
async fn secret_is_read_again_after_the_ttl() {
    let token = fastrand_token();
    let gitlab = GitLabStub::start(&token).await;
    gitlab.add_commit(SHA_A);
    let name = moto::create_secret(&secret_json(&token)).await;
    let (bridge, proxy) = bridge_with_secret(&gitlab, &name, Duration::from_secs(2)).await;
    bridge.generic("production", SHA_A, "running").await;
    bridge.generic("production", SHA_A, "running").await;
    assert_eq!(proxy.reads(), 1);
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let (s, _) = bridge.generic("production", SHA_A, "success").await;
    assert_eq!(s, 200);
    assert_eq!(proxy.reads(), 2);
}

#[tokio::test]
async fn rotated_token_is_picked_up_after_one_401() {
    let old = fastrand_token();
    let new = fastrand_token();
    let gitlab = GitLabStub::start(&old).await;
    gitlab.add_commit(SHA_A);
    let name = moto::create_secret(&secret_json(&old)).await;
    let (bridge, proxy) = bridge_with_secret(&gitlab, &name, Duration::from_secs(300)).await;
    let (s, _) = bridge.generic("production", SHA_A, "running").await;
    assert_eq!(s, 200);
    // Rotation: GitLab now only accepts the new token, and the secret holds it.
    gitlab.set_token(&new);
    moto::put_secret(&name, &secret_json(&new)).await;
    let (s, r) = bridge.generic("production", SHA_A, "success").await;
    assert_eq!((s, r["action"].as_str()), (200, Some("updated")), "{r}");
    assert_eq!(proxy.reads(), 2);
    let tokens: Vec<_> = gitlab.requests().iter().filter_map(|r| r.private_token.clone()).collect();
    assert_eq!(tokens.first(), Some(&old));
    assert_eq!(tokens.last(), Some(&new));
    let logs = logs();
    assert!(!logs.contains(&old) && !logs.contains(&new), "a token reached the logs");
}

#[tokio::test]
async fn unusable_secrets_give_clear_5xx_errors() {
    let gitlab = GitLabStub::start("t").await;
    gitlab.add_commit(SHA_A);
    let no_token = moto::create_secret(&json!({"generic_webhook_secret": GENERIC_SECRET}).to_string()).await;
    let not_json = moto::create_secret("glpat-just-a-string").await;
    let cases =
        [(no_token, "gitlab_token"), (not_json, "not JSON"), ("bridge/does-not-exist".to_string(), "no secret")];
    for (name, needle) in cases {
        let (bridge, _) = bridge_with_secret(&gitlab, &name, Duration::from_secs(300)).await;
        let (s, r) = bridge.generic("production", SHA_A, "running").await;
        assert_eq!(s, 500, "{name}: {r}");
        assert!(r["error"].as_str().unwrap().contains(needle), "{name}: {r}");
        // The caller is not authenticated yet: it learns the kind of problem, not the secret's name.
        assert!(!r.to_string().contains(&name), "{name}: {r}");
    }
    // An ARN names the account and the region: none of it is answered.
    let arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:gitlab-deploy-bridge-AbCdEf";
    let (bridge, _) = bridge_with_secret(&gitlab, arn, Duration::from_secs(300)).await;
    let (s, r) = bridge.generic("production", SHA_A, "running").await;
    assert_eq!(s, 500, "{r}");
    assert!(!r.to_string().contains("123456789012") && !r.to_string().contains("eu-west-1"), "{r}");
    assert!(gitlab.requests().is_empty());
}

/// Secrets Manager unreachable: 503 (a redelivery may succeed), without the endpoint's address.
#[tokio::test]
async fn an_unreachable_secrets_manager_is_503_without_its_address() {
    let gitlab = GitLabStub::start("t").await;
    let provider = SecretsManager::new(moto::client("http://127.0.0.1:9"), "bridge/secret", Duration::from_secs(300));
    let bridge = Bridge::start(config(&gitlab.url), Arc::new(provider)).await;
    let (s, r) = bridge.generic("production", SHA_A, "running").await;
    assert_eq!(s, 503, "{r}");
    assert!(!r.to_string().contains("127.0.0.1") && !r.to_string().contains(":9"), "{r}");
}

#[tokio::test]
async fn a_missing_webhook_secret_key_is_401() {
    let gitlab = GitLabStub::start("t").await;
    let name = moto::create_secret(&json!({"gitlab_token": "t"}).to_string()).await;
    let (bridge, _) = bridge_with_secret(&gitlab, &name, Duration::from_secs(300)).await;
    let (s, r) = bridge.generic("production", SHA_A, "running").await;
    assert_eq!(s, 401, "{r}");
    assert!(gitlab.requests().is_empty());
}

/// Secrets Manager accepts connections and never answers. The read is bounded by each request's
/// deadline and a failed read is not repeated by every request queued behind it: eight
/// concurrent webhooks are all answered by their deadline (they waited 10, 20, ... 80 s before).
#[tokio::test]
async fn a_hanging_secrets_manager_is_answered_within_each_requests_deadline() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    let gitlab = GitLabStub::start("t").await;
    let provider = SecretsManager::new(moto::client(&endpoint), "bridge/secret", Duration::from_secs(300));
    let mut cfg = config(&gitlab.url);
    cfg.deadlines.local = Duration::from_secs(2);
    let bridge = Arc::new(Bridge::start(cfg, Arc::new(provider)).await);
    let calls = (0..8).map(|i| {
        let bridge = bridge.clone();
        tokio::spawn(async move { bridge.generic(&format!("env{i}"), SHA_A, "running").await })
    });
    let answers = tokio::time::timeout(Duration::from_secs(20), async {
        let mut out = Vec::new();
        for c in calls {
            out.push(c.await.unwrap());
        }
        out
    })
    .await
    .expect("every webhook is answered (by its 2 s deadline), none waits on another's read");
    hold.abort();
    for (s, r) in answers {
        assert_eq!(s, 503, "{r}");
    }
    assert!(gitlab.requests().is_empty());
}

/// A provider reading through a proxy that can take Secrets Manager down, without the SDK's own
/// retries (what is tested is the bridge's cache, not the SDK's backoff).
async fn flaky_secret(gitlab: &GitLabStub, token: &str, ttl: Duration, stale: Duration) -> (Bridge, CountingProxy) {
    let name = moto::create_secret(&secret_json(token)).await;
    let proxy = CountingProxy::start().await;
    let client = moto::client_with(&proxy.url, aws_sdk_secretsmanager::config::retry::RetryConfig::disabled());
    let provider = SecretsManager::new(client, name, ttl).with_stale_limit(stale);
    (Bridge::start(config(&gitlab.url), Arc::new(provider)).await, proxy)
}

/// Issue 21: after Secrets Manager recovered, calls kept getting 503 for up to 5 s (a failure
/// hold). A failed read is shared only by the requests that waited for it.
#[tokio::test]
async fn a_recovered_secrets_manager_is_used_at_once() {
    let token = fastrand_token();
    let gitlab = GitLabStub::start(&token).await;
    gitlab.add_commit(SHA_A);
    let (bridge, proxy) = flaky_secret(&gitlab, &token, Duration::from_secs(300), Duration::from_secs(300)).await;
    proxy.set_down(true);
    let (s, r) = bridge.generic("production", SHA_A, "running").await;
    assert_eq!(s, 503, "{r}");
    proxy.set_down(false);
    let (s, r) = bridge.generic("production", SHA_A, "running").await;
    assert_eq!((s, r["action"].as_str()), (200, Some("created")), "read again at once: {r}");
    assert_eq!(proxy.reads(), 2);
}

/// Issue 21: a cached secret past its TTL was not used while a re-read failed. It keeps serving
/// (with a warning) up to SECRET_STALE_MAX_SECONDS past its TTL, re-read once per 5 s rather
/// than by every request; past the bound the call fails (503), and once Secrets Manager is
/// back, the fresh secret serves.
#[tokio::test]
async fn a_stale_secret_serves_while_secrets_manager_is_down_up_to_its_bound() {
    let token = fastrand_token();
    let gitlab = GitLabStub::start(&token).await;
    gitlab.add_commit(SHA_A);
    let (bridge, proxy) = flaky_secret(&gitlab, &token, Duration::from_secs(1), Duration::from_secs(3)).await;
    assert_eq!(bridge.generic("production", SHA_A, "running").await.0, 200);
    proxy.set_down(true);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for status in ["success", "running", "success"] {
        let (s, r) = bridge.generic("staging", SHA_A, status).await;
        assert_eq!(s, 200, "the stale secret serves: {r}");
    }
    assert_eq!(proxy.reads(), 2, "one re-read tried, not one per request");
    assert!(logs().contains("serving the one read last, past its TTL"), "the warning is logged");
    // 1 s TTL + 3 s: past the bound, nothing is served on it.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let (s, r) = bridge.generic("staging", SHA_A, "running").await;
    assert_eq!(s, 503, "{r}");
    proxy.set_down(false);
    let (s, r) = bridge.generic("staging", SHA_A, "success").await;
    assert_eq!(s, 200, "{r}");
}
