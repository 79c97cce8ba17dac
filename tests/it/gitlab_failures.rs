//! When GitLab refuses or fails: its 422 is passed on with its message; 5xx and 429 are retried
//! (Retry-After honoured, and capped by the deadline); a create whose answer was lost is not made
//! twice; a down or unreachable GitLab is answered 5xx within the deadline and named; and a
//! redirect is never followed, so the token stays home.

use crate::support::*;
use axum::Router;
use axum::http::Uri;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
async fn an_unreachable_gitlab_is_named_in_the_answer() {
    // Nothing listens on port 9 (discard) of the loopback.
    let bridge = Bridge::start(config("http://127.0.0.1:9"), static_secrets("t")).await;
    let (s, r) = bridge.generic("production", SHA_A, "running").await;
    assert!(s == 502 || s == 504, "{s} {r}");
    assert!(r["error"].as_str().unwrap().contains("127.0.0.1:9"), "{r}");
}

/// GitLab (or something in front of it) answering with a redirect: the bridge follows none, so
/// the token never reaches the other host, and the answer says what to fix.
#[tokio::test]
async fn a_redirect_from_gitlab_is_not_followed() {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let record = seen.clone();
    let elsewhere = Router::new().fallback(move |uri: Uri, headers: axum::http::HeaderMap| {
        let record = record.clone();
        async move {
            record.lock().unwrap().push(format!("{uri} {:?}", headers.get("private-token")));
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let elsewhere_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, elsewhere).await.unwrap() });
    let target = elsewhere_url.clone();
    let redirecting =
        Router::new().fallback(move || {
            let target = target.clone();
            async move {
                (axum::http::StatusCode::FOUND, [(axum::http::header::LOCATION, format!("{target}/api/v4/steal"))])
            }
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gitlab_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, redirecting).await.unwrap() });

    let bridge = Bridge::start(config(&gitlab_url), static_secrets("glpat-must-stay-home")).await;
    let (s, r) = bridge.generic("production", SHA_A, "running").await;
    assert_eq!(s, 502, "{r}");
    assert!(r["error"].as_str().unwrap().contains("redirect"), "{r}");
    assert!(seen.lock().unwrap().is_empty(), "the redirect was followed: {:?}", seen.lock().unwrap());
}

/// Issue 21: GitLab's answers were read whole: a 1 GiB answer meant 1.04 GB peak RSS on the
/// webhook path and 2.1 GB in `check` — more than a 128–1024 MB Lambda has. An answer is read up
/// to GITLAB_MAX_ANSWER_BYTES (4 MiB) and refused with an error naming the cap; the process
/// stays small (measured, for the record, by the peak resident memory of the real binary).
#[tokio::test]
async fn a_gigabyte_answer_is_refused_unread_on_the_webhook_path_and_in_check() {
    const GIB: u64 = 1 << 30;
    const BIN: &str = env!("CARGO_BIN_EXE_gitlab-deploy-bridge");
    let token = format!("glpat-{}", fastrand_token());
    let gitlab = GitLabStub::start(&token).await;
    gitlab.add_commit(SHA_A);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut serve = tokio::process::Command::new(BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .env_remove("SECRET_ID")
        .env("GITLAB_URL", &gitlab.url)
        .env("GITLAB_TOKEN", &token)
        .env("ROUTES", r#"{"app": {"source": "generic", "projects": ["42"], "environments": ["production"]}}"#)
        .env("ROUTE_APP_SECRET", "s")
        .env("SPOOL_MODE", "off")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    assert!(healthy(&base).await);
    let before = peak_rss_kib(serve.id().unwrap()).unwrap();
    // The environment's deployments, 1 GiB of them.
    gitlab.push_fault_for("GET", Fault::Huge(GIB));
    let answer = reqwest::Client::new()
        .post(format!("{base}/hooks/generic/app"))
        .bearer_auth("s")
        .json(&json!({"sha": SHA_A, "ref": "main", "status": "running"}))
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    let answer: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(status, 502, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("more than 4194304 bytes (GITLAB_MAX_ANSWER_BYTES)"),
        "{answer}"
    );
    let peak = peak_rss_kib(serve.id().unwrap()).unwrap();
    println!("serve: peak RSS {} MiB before, {} MiB after a 1 GiB answer", before / 1024, peak / 1024);
    assert!(peak < 128 * 1024, "serve's peak RSS is {} MiB", peak / 1024);
    assert!(gitlab.deployments().is_empty(), "nothing was decided on an answer not read");
    serve.kill().await.unwrap();

    // `check`: the token's own description, 1 GiB of it.
    gitlab.push_fault_for("GET", Fault::Huge(GIB));
    let mut check = tokio::process::Command::new(BIN);
    check
        .args(["check", "--json"])
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .env_remove("SECRET_ID")
        .env("GITLAB_URL", &gitlab.url)
        .env("GITLAB_TOKEN", &token)
        .env("ROUTES", r#"{"app": {"source": "generic", "projects": ["42"]}}"#)
        .env("ROUTE_APP_SECRET", "s");
    let (out, peak) = run_measured(check).await;
    println!("check: peak RSS {} MiB with a 1 GiB answer", peak / 1024);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success() && text.contains("GITLAB_MAX_ANSWER_BYTES"), "{text}");
    assert!(peak < 128 * 1024, "check's peak RSS is {} MiB", peak / 1024);
}

/// Issue 21, item 3: a create GitLab commits after the bridge gave up on its answer (its
/// request timed out) was made again by the re-check that followed, which read the environment
/// before the commit. The create's claim makes the second attempt wait: the webhook is answered
/// 503, and once GitLab shows the deployment, the tool's redelivery finds it.
#[tokio::test]
async fn a_create_that_timed_out_in_flight_is_not_made_again() {
    let (gitlab, bridge) = setup_with(|c| c.gitlab.request_timeout = Duration::from_millis(300)).await;
    gitlab.set_commit_delay(Some(Duration::from_millis(1500)));
    let (s, r) = bridge.generic("production", SHA_A, "running").await;
    assert_eq!(s, 503, "{r}");
    assert!(r["error"].as_str().unwrap().contains("may still be committing"), "{r}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    gitlab.set_commit_delay(None);
    let (s, r) = bridge.generic("production", SHA_A, "running").await;
    assert_eq!((s, r["action"].as_str()), (200, Some("unchanged")), "{r}");
    let (s, r) = bridge.generic("production", SHA_A, "success").await;
    assert_eq!((s, r["action"].as_str()), (200, Some("updated")), "{r}");
    let deployments = gitlab.deployments();
    assert_eq!(deployments.len(), 1, "{deployments:?}");
    assert_eq!(deployments[0].history, ["running", "success"]);
}
