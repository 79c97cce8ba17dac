//! `serve`: the built binary on a port runs the same router as the other tests drive (routes,
//! a route that is not the source's failing closed, unbound hooks refused by default) and keeps
//! the token out of its log.

use crate::support::*;
use serde_json::{Value, json};
use std::process::Stdio;

const BIN: &str = env!("CARGO_BIN_EXE_gitlab-deploy-bridge");

#[tokio::test]
async fn serve_runs_the_same_router() {
    let token = format!("glpat-{}", fastrand_token());
    let gitlab = GitLabStub::start(&token).await;
    gitlab.add_commit(SHA_A);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = tokio::process::Command::new(BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .env_remove("SECRET_ID")
        .env("GITLAB_URL", &gitlab.url)
        .env("GITLAB_TOKEN", &token)
        .env("GENERIC_WEBHOOK_SECRET", GENERIC_SECRET)
        .env("ROUTES", r#"{"app": {"source": "generic", "projects": ["group/app"], "environments": ["production"]}}"#)
        .env("ROUTE_APP_SECRET", "the-app-route-secret")
        .env("SPOOL_DIR", std::env::temp_dir().join(format!("bridge-cli-spool-{}", fastrand_token())))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    assert!(healthy(&base).await, "serve did not answer /healthz");
    for (status, action) in [("running", "created"), ("success", "updated"), ("success", "unchanged")] {
        let r: Value = http
            .post(format!("{base}/hooks/generic/app"))
            .bearer_auth("the-app-route-secret")
            .json(&json!({"environment": "production", "sha": SHA_A, "ref": "main", "status": status}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(r["action"], action, "{r}");
    }
    let r = http.post(format!("{base}/hooks/argocd/app")).bearer_auth("x").body("{}").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401, "route app is not argocd's: fail closed");
    let unbound = http
        .post(format!("{base}/hooks/generic?project=group/app"))
        .bearer_auth(GENERIC_SECRET)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(unbound.status().as_u16(), 403, "unbound hooks are refused by default");
    assert_eq!(gitlab.deployments().len(), 1);
    child.kill().await.unwrap();
    let mut stderr = String::new();
    use tokio::io::AsyncReadExt;
    child.stderr.take().unwrap().read_to_string(&mut stderr).await.unwrap();
    assert!(!stderr.contains(&token), "the token reached the log");
    assert!(stderr.contains("webhook handled"), "{stderr}");
}
