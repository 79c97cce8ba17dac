//! The binary outside Lambda: the README's first command (`invoke --dry-run events/*.json`) and
//! `serve`, which must behave exactly like the router the other tests drive.

use crate::support::*;
use serde_json::{Value, json};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_gitlab-deploy-bridge");

fn event_files() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("events");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| p.display().to_string())
        .collect();
    files.sort();
    files
}

/// The README's first command: `invoke --dry-run <args>` with the demo secrets, no AWS, no GitLab.
fn dry_run(args: &[String]) -> std::process::Output {
    Command::new(BIN)
        .args(["invoke", "--dry-run"])
        .args(args)
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .env_remove("SECRET_ID")
        .envs(demo_env())
        .env("GITLAB_URL", "http://127.0.0.1:9")
        .output()
        .unwrap()
}

#[test]
fn readme_dry_run_command_answers_every_event_without_gitlab() {
    let out = dry_run(&event_files());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let (planned, answers): (Vec<Value>, Vec<Value>) = lines.into_iter().partition(|l| l.get("planned").is_some());
    assert_eq!(answers.len(), event_files().len());
    // The batch is planned in order against one in-memory GitLab: a rollout's later events find
    // the deployment its first one would create (the summary's last line says so).
    let planned = planned[0]["planned"].as_array().unwrap().clone();
    assert!(planned.iter().any(|d| d["statuses"] == json!(["running", "success"])), "{planned:?}");
    for a in &answers {
        // The GitLab-compatible facade answers as GitLab does: 201 with the deployment, the
        // bridge's own answer beside it.
        let facade = a["event"].as_str().unwrap().contains("facade");
        assert_eq!(a["statusCode"], if facade { 201 } else { 200 }, "{a}");
        let body = if facade { &a["body"]["bridge"] } else { &a["body"] };
        assert_eq!(body["dry_run"], true, "{a}");
        assert!(body["gitlab_calls"].as_array().is_some(), "{a}");
    }
    assert!(
        answers.iter().any(|a| a["body"]["action"] == "updated"),
        "a later event of a rollout updates what an earlier one created"
    );
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("\"created\""),
        "no log line claims a creation in a dry run"
    );
}

#[test]
fn a_dry_run_plans_a_rollout_as_one_deployment_and_can_aim_at_your_project_and_commit() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("events");
    let run = |extra: &[&str]| {
        let mut args: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
        args.extend(["generic-running.json", "generic-success.json"].map(|f| dir.join(f).display().to_string()));
        let out = dry_run(&args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let lines: Vec<Value> =
            String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        (lines, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (lines, logs) = run(&[]);
    let actions: Vec<&str> = lines.iter().filter_map(|l| l["body"]["action"].as_str()).collect();
    assert_eq!(actions, ["created", "updated"], "{lines:?}");
    assert_eq!(lines[2]["planned"][0]["statuses"], json!(["running", "success"]), "{lines:?}");
    assert!(
        logs.contains("webhook planned (dry run)")
            && logs.contains("would create")
            && !logs.contains("webhook handled"),
        "{logs}"
    );
    assert!(!logs.contains("None"), "no Rust debug formatting in the log: {logs}");

    let sha = "0123456789abcdef0123456789abcdef01234567";
    let (lines, _) = run(&["--project", "my-group/my-app", "--sha", sha, "--environment", "bridge-test"]);
    let planned = &lines[2]["planned"][0];
    assert_eq!(
        (planned["project"].as_str(), planned["sha"].as_str(), planned["environment"].as_str()),
        (Some("my-group/my-app"), Some(sha), Some("bridge-test")),
        "{lines:?}"
    );
    let first_call = lines[0]["body"]["gitlab_calls"][0]["path"].as_str().unwrap();
    assert!(first_call.starts_with("/api/v4/projects/my-group%2Fmy-app"), "{first_call}");
}

#[test]
fn invoke_without_the_secret_fails_closed_and_exits_non_zero() {
    let files = event_files();
    let out = Command::new(BIN)
        .args(["invoke", "--dry-run", &files[0]])
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .env_remove("SECRET_ID")
        .env_remove("GENERIC_WEBHOOK_SECRET")
        .env_remove("ARGOCD_WEBHOOK_SECRET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let first = String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or_default().to_string();
    let answer: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(answer["statusCode"], 401);
}

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

#[test]
fn help_describes_every_argument_and_names_the_configuration() {
    let help = |args: &[&str]| {
        let out = Command::new(BIN).args(args).env_remove("AWS_LAMBDA_RUNTIME_API").output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let top = help(&["--help"]);
    for needle in ["GITLAB_URL", "GITLAB_TOKEN", "SECRET_ID", "ROUTES", "check", "spool"] {
        assert!(top.contains(needle), "--help lacks {needle}:\n{top}");
    }
    assert!(help(&["serve", "--help"]).contains("Address and port to listen on"));
    let invoke = help(&["invoke", "--help"]);
    assert!(invoke.contains("event files") && invoke.contains("--project") && invoke.contains("--sha"), "{invoke}");
}
