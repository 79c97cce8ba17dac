//! Running the bridge: `/healthz` needs neither secrets nor GitLab; a dry run plans GitLab's
//! calls and sends none; each webhook is one log line, with no token in it or in the answer; and
//! a bridge without a GitLab token names the variable to set and counts no call as sent.

use crate::support::*;
use gitlab_deploy_bridge::secrets::StaticSecrets;
use secrecy::SecretString;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

#[tokio::test]
async fn healthz_needs_neither_secrets_nor_gitlab() {
    let secrets = std::sync::Arc::new(gitlab_deploy_bridge::secrets::Unconfigured("nothing".into()));
    let bridge = Bridge::start(config("http://127.0.0.1:9"), secrets).await;
    let resp = bridge.http.get(format!("{}/healthz", bridge.url)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let (s, r) = bridge.generic("production", SHA_A, "running").await;
    assert_eq!(s, 500, "{r}");
    assert!(r["error"].as_str().unwrap().contains("nothing"));
}

#[tokio::test]
async fn dry_run_plans_calls_and_sends_none() {
    let token = fastrand_token();
    let gitlab = GitLabStub::start(&token).await;
    let mut cfg = config(&gitlab.url);
    cfg.dry_run = true;
    let bridge = Bridge::start(cfg, static_secrets(&token)).await;
    let (s, r) = bridge.generic("production", SHA_A, "success").await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["dry_run"], true);
    let calls = r["gitlab_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2, "{r}");
    assert_eq!(
        calls[0]["path"],
        "/api/v4/projects/42/deployments?environment=production&order_by=id&sort=desc&per_page=20"
    );
    assert_eq!(calls[1]["method"], "POST");
    assert_eq!(calls[1]["path"], "/api/v4/projects/42/deployments");
    assert_eq!(
        calls[1]["body"],
        json!({"environment": "production", "sha": SHA_A, "ref": "main", "tag": false, "status": "success"})
    );
    assert!(gitlab.requests().is_empty());
}

#[tokio::test]
async fn one_log_line_per_webhook_and_no_token_in_logs() {
    let (gitlab, bridge) = setup().await;
    bridge.generic("logged-env", SHA_A, "running").await;
    gitlab.push_fault(Fault::Json(401, json!({"message": "401 Unauthorized"})));
    gitlab.push_fault(Fault::Json(401, json!({"message": "401 Unauthorized"})));
    let (s, r) = bridge.generic("logged-env", SHA_A, "success").await;
    assert_eq!(s, 502, "{r}");
    let used: Vec<String> = gitlab.requests().iter().filter_map(|r| r.private_token.clone()).collect();
    assert!(!used.is_empty());
    let logs = logs();
    for t in &used {
        assert!(!logs.contains(t.as_str()), "token leaked into logs");
        assert!(!r.to_string().contains(t.as_str()), "token leaked into the answer");
    }
    let line = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["environment"] == "logged-env" && l["outcome"] == "ok")
        .expect("a log line for the webhook");
    for field in ["source", "project", "environment", "sha", "status", "action", "deployment_id", "latency_ms"] {
        assert!(!line[field].is_null(), "log line lacks {field}: {line}");
    }
    assert_eq!(line["action"], "created");
    assert_eq!(line["source"], "generic");
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
