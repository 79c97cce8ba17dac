//! The core relay: lifecycle, authentication, input errors, GitLab failures.

use crate::support::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

#[tokio::test]
async fn running_then_success_is_one_deployment() {
    let (gitlab, bridge) = setup().await;
    let (s, r) = bridge.generic("production", SHA_A, "running").await;
    assert_eq!((s, r["action"].as_str()), (200, Some("created")), "{r}");
    let (s, r2) = bridge.generic("production", SHA_A, "success").await;
    assert_eq!((s, r2["action"].as_str()), (200, Some("updated")), "{r2}");
    assert_eq!(r2["deployment"]["id"], r["deployment"]["id"]);
    assert_eq!(r2["deployment"]["status"], "success");
    let deps = gitlab.deployments();
    assert_eq!(deps.len(), 1);
    assert_eq!(deps[0].history, vec!["running", "success"]);
    assert_eq!((deps[0].environment.as_str(), deps[0].git_ref.as_str(), deps[0].tag), ("production", "main", false));
}

#[tokio::test]
async fn running_then_failed_and_then_canceled_elsewhere() {
    let (gitlab, bridge) = setup().await;
    bridge.generic("production", SHA_A, "running").await;
    let (s, r) = bridge.generic("production", SHA_A, "failed").await;
    assert_eq!((s, r["action"].as_str()), (200, Some("updated")), "{r}");
    bridge.generic("staging", SHA_A, "running").await;
    let (_, r) = bridge.generic("staging", SHA_A, "canceled").await;
    assert_eq!(r["action"], "updated");
    let deps = gitlab.deployments();
    assert_eq!(deps.len(), 2);
    assert_eq!(deps[0].history, vec!["running", "failed"]);
    assert_eq!(deps[1].history, vec!["running", "canceled"]);
}

#[tokio::test]
async fn duplicates_of_every_status_change_nothing() {
    let (gitlab, bridge) = setup().await;
    for (env, first, then) in [
        ("e1", "running", "running"),
        ("e2", "success", "success"),
        ("e3", "failed", "failed"),
        ("e4", "canceled", "canceled"),
    ] {
        let (s, r) = bridge.generic(env, SHA_A, first).await;
        assert_eq!((s, r["action"].as_str()), (200, Some("created")), "{env} {r}");
        let (s, r2) = bridge.generic(env, SHA_A, then).await;
        assert_eq!((s, r2["action"].as_str()), (200, Some("unchanged")), "{env} {r2}");
        assert_eq!(r2["deployment"]["id"], r["deployment"]["id"]);
    }
    // running, then success twice: one update, then unchanged (never GitLab's "cannot transition").
    bridge.generic("e5", SHA_A, "running").await;
    bridge.generic("e5", SHA_A, "success").await;
    let (s, r) = bridge.generic("e5", SHA_A, "success").await;
    assert_eq!((s, r["action"].as_str()), (200, Some("unchanged")), "{r}");
    assert_eq!(gitlab.deployments().len(), 5);
    assert!(gitlab.deployments().iter().all(|d| d.history.len() <= 2));
}

#[tokio::test]
async fn success_before_running_and_late_running_change_nothing_more() {
    let (gitlab, bridge) = setup().await;
    let (_, r) = bridge.generic("production", SHA_A, "success").await;
    assert_eq!(r["action"], "created", "{r}");
    let (_, r) = bridge.generic("production", SHA_A, "running").await;
    assert_eq!(r["action"], "unchanged", "{r}");
    assert_eq!(r["deployment"]["status"], "success");
    let deps = gitlab.deployments();
    assert_eq!(deps.len(), 1);
    assert_eq!(deps[0].history, vec!["success"]);
}

#[tokio::test]
async fn two_shas_are_two_deployments() {
    let (gitlab, bridge) = setup().await;
    for sha in [SHA_A, SHA_B] {
        bridge.generic("production", sha, "running").await;
    }
    bridge.generic("production", SHA_A, "success").await;
    bridge.generic("production", SHA_B, "failed").await;
    let deps = gitlab.deployments();
    assert_eq!(deps.len(), 2);
    assert_eq!((deps[0].sha.as_str(), deps[0].status.as_str()), (SHA_A, "success"));
    assert_eq!((deps[1].sha.as_str(), deps[1].status.as_str()), (SHA_B, "failed"));
}

#[tokio::test]
async fn a_running_deployment_older_than_a_page_is_still_found() {
    let (gitlab, bridge) = setup().await;
    let id = gitlab.seed("42", "production", SHA_A, "running");
    for _ in 0..120 {
        gitlab.seed("42", "production", SHA_B, "success");
    }
    let (_, r) = bridge.generic("production", SHA_A, "success").await;
    assert_eq!(r["action"], "updated", "{r}");
    assert_eq!(r["deployment"]["id"], id);
}

#[tokio::test]
async fn sixteen_concurrent_duplicates_make_one_deployment() {
    let (gitlab, bridge) = setup().await;
    let bridge = std::sync::Arc::new(bridge);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let b = bridge.clone();
        tasks.push(tokio::spawn(async move { b.generic("production", SHA_A, "running").await }));
    }
    let mut created = 0;
    for t in tasks {
        let (s, r) = t.await.unwrap();
        assert_eq!(s, 200, "{r}");
        created += (r["action"] == "created") as usize;
    }
    assert_eq!(created, 1);
    assert_eq!(gitlab.deployments().len(), 1);
}

#[tokio::test]
async fn project_by_full_path_is_encoded() {
    let (gitlab, bridge) = setup().await;
    let body = json!({"environment": "production", "sha": SHA_A, "ref": "main", "status": "running"});
    let (s, r) = bridge.post("/hooks/generic?project=group/sub/app", Some(GENERIC_SECRET), body.to_string()).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(gitlab.deployments()[0].project, "77");
    // The path is looked up once; every further call uses the numeric id.
    let uris: Vec<String> = gitlab.requests().into_iter().map(|r| r.uri).collect();
    assert_eq!(uris[0], "/api/v4/projects/group%2Fsub%2Fapp", "{uris:?}");
    assert!(uris[1..].iter().all(|u| u.starts_with("/api/v4/projects/77/")), "{uris:?}");
    let (s, _) = bridge.post("/hooks/generic?project=group/sub/app", Some(GENERIC_SECRET), body.to_string()).await;
    assert_eq!(s, 200);
    assert!(
        gitlab.requests().into_iter().skip(uris.len()).all(|r| r.uri.starts_with("/api/v4/projects/77/")),
        "looked up once per container"
    );
}

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

#[tokio::test]
async fn unknown_commit_is_422_with_gitlabs_message() {
    let (gitlab, bridge) = setup().await;
    let unknown = "d".repeat(40);
    let (s, r) = bridge.generic("production", &unknown, "running").await;
    assert_eq!(s, 422, "{r}");
    assert!(r["error"].as_str().unwrap().contains("The commit does not exist"), "{r}");
    let body = json!({"environment": "production", "sha": SHA_A, "ref": "no-such-branch", "status": "running"});
    let (s, r) = bridge.post("/hooks/generic?project=42", Some(GENERIC_SECRET), body.to_string()).await;
    assert_eq!(s, 422, "{r}");
    assert!(r["error"].as_str().unwrap().contains("The branch or tag does not exist"), "{r}");
    let (s, r) = bridge.post("/hooks/generic?project=999", Some(GENERIC_SECRET), body.to_string()).await;
    assert_eq!(s, 422, "{r}");
    assert!(r["error"].as_str().unwrap().contains("404 Project Not Found"), "{r}");
    assert!(gitlab.deployments().is_empty());
}

#[tokio::test]
async fn two_502s_then_success() {
    let (gitlab, bridge) = setup().await;
    for _ in 0..2 {
        gitlab.push_fault(Fault::Json(502, json!({"message": "502 Bad Gateway"})));
    }
    let (s, r) = bridge.generic("production", SHA_A, "running").await;
    assert_eq!((s, r["action"].as_str()), (200, Some("created")), "{r}");
    assert_eq!(gitlab.deployments().len(), 1);
    // A 500 on the create itself: the bridge looks again before re-creating.
    gitlab.push_fault_for("POST", Fault::Json(500, json!({"message": "500 Internal Server Error"})));
    let (s, r) = bridge.generic("production", SHA_B, "success").await;
    assert_eq!((s, r["action"].as_str()), (200, Some("created")), "{r}");
    assert_eq!(gitlab.deployments().len(), 2);
    let posts = gitlab.requests().iter().filter(|r| r.method == "POST").count();
    assert_eq!(posts, 3, "one POST for the first sha, two for the second");
}

#[tokio::test]
async fn a_create_whose_answer_was_lost_is_not_made_twice() {
    let (gitlab, bridge) = setup().await;
    gitlab.push_fault_for("POST", Fault::LostAnswer(502));
    let (s, r) = bridge.generic("production", SHA_A, "running").await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(gitlab.deployments().len(), 1);
    gitlab.push_fault_for("POST", Fault::LostAnswer(504));
    let (s, r) = bridge.generic("staging", SHA_A, "success").await;
    assert_eq!((s, r["action"].as_str()), (200, Some("unchanged")), "{r}");
    assert_eq!(gitlab.deployments().len(), 2);
}

#[tokio::test]
async fn retry_after_of_a_plain_text_429_is_honoured() {
    let (gitlab, bridge) = setup().await;
    gitlab.push_fault(Fault::RateLimited { retry_after_secs: 1 });
    let (s, r) = bridge.generic("production", SHA_A, "running").await;
    assert_eq!((s, r["action"].as_str()), (200, Some("created")), "{r}");
    let reqs = gitlab.requests();
    assert!(reqs.len() >= 2);
    let gap = reqs[1].at.duration_since(reqs[0].at);
    assert!(gap >= Duration::from_millis(950), "retried after {gap:?}, before Retry-After");
}

#[tokio::test]
async fn a_429_longer_than_the_deadline_is_503_with_retry_after() {
    let token = fastrand_token();
    let gitlab = GitLabStub::start(&token).await;
    gitlab.add_commit(SHA_A);
    let mut cfg = config(&gitlab.url);
    cfg.deadlines.local = Duration::from_secs(2);
    let bridge = Bridge::start(cfg, static_secrets(&token)).await;
    gitlab.push_fault(Fault::RateLimited { retry_after_secs: 60 });
    let resp = bridge
        .http
        .post(format!("{}/hooks/generic?project=42", bridge.url))
        .bearer_auth(GENERIC_SECRET)
        .body(json!({"environment": "production", "sha": SHA_A, "status": "running"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    // GitLab's 60 s is not passed on as is: Argo CD would sleep that long in its notification
    // worker (it obeys Retry-After without a cap), and Flux gives the exchange 15 s in all.
    assert_eq!(resp.headers()["retry-after"], "5");
    assert_eq!(gitlab.requests().len(), 1);
}

#[tokio::test]
async fn gitlab_down_is_5xx_within_the_deadline() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut cfg = config(&format!("http://127.0.0.1:{port}"));
    cfg.deadlines.local = Duration::from_secs(3);
    cfg.gitlab.max_attempts = 100;
    let bridge = Bridge::start(cfg, static_secrets("t")).await;
    let started = Instant::now();
    let (s, r) = bridge.generic("production", SHA_A, "running").await;
    assert!(s == 502 || s == 504, "{s} {r}");
    assert!(r["error"].as_str().unwrap().contains("GitLab"), "{r}");
    assert!(started.elapsed() < Duration::from_secs(5), "answered after {:?}", started.elapsed());
}

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

#[tokio::test]
async fn argocd_sync_then_deployed_is_one_deployment() {
    let (gitlab, bridge) = setup().await;
    let body = |phase: &str, health: &str| {
        json!({"app": "example-api", "phase": phase, "health": health, "revision": SHA_A, "revisions": [],
               "targetRevision": "HEAD", "externalURLs": ["https://api.example.com"]})
        .to_string()
    };
    let (s, r) = bridge.post("/hooks/argocd?project=42", Some(ARGOCD_SECRET), body("Running", "Progressing")).await;
    assert_eq!((s, r["action"].as_str()), (200, Some("created")), "{r}");
    let (_, r) = bridge.post("/hooks/argocd?project=42", Some(ARGOCD_SECRET), body("Succeeded", "Progressing")).await;
    assert_eq!(r["action"], "unchanged", "{r}");
    let (_, r) = bridge.post("/hooks/argocd?project=42", Some(ARGOCD_SECRET), body("Succeeded", "Healthy")).await;
    assert_eq!(r["action"], "updated", "{r}");
    assert_eq!(r["deployment"]["external_url"], "https://api.example.com");
    let (s, r) = bridge.post("/hooks/argocd?project=42", Some(ARGOCD_SECRET), body("", "Healthy")).await;
    assert_eq!((s, r["action"].as_str()), (200, Some("ignored")), "{r}");
    let deps = gitlab.deployments();
    assert_eq!(deps.len(), 1);
    assert_eq!(deps[0].environment, "example-api");
    assert_eq!(deps[0].git_ref, "main", "HEAD falls back to DEFAULT_REF");
    assert_eq!(deps[0].history, vec!["running", "success"]);
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
