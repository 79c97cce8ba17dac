//! `invoke`: the README's first command (`invoke --dry-run events/*.json`) answers every event
//! without GitLab, plans a rollout as one deployment and can aim at your project and commit,
//! fails closed without the secret, and answers what lambda_http would panic on, or a setting
//! that would overflow, instead of panicking.

use crate::support::*;
use serde_json::{Value, json};
use std::process::Command;

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

/// `REQUEST_DEADLINE_SECONDS=18446744073709551615` panicked on the first request (the deadline
/// overflowed the clock). The setting is refused by name and the process answers, not dies.
#[test]
fn a_huge_deadline_setting_is_refused_not_panicked_on() {
    let event = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("events/generic-running.json");
    let out = invoke_dry_run(&[event], &[("REQUEST_DEADLINE_SECONDS", "18446744073709551615")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    let text = format!("{}{stderr}", String::from_utf8_lossy(&out.stdout));
    assert!(text.contains("REQUEST_DEADLINE_SECONDS"), "{text}");
}

/// The reproducer events through `invoke`, which converts events as Lambda does: each is
/// answered (401: unsigned), none panics.
#[test]
fn invoke_answers_events_lambda_http_would_panic_on() {
    let base: Value = serde_json::from_str(
        &std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("events/generic-running.json"))
            .unwrap(),
    )
    .unwrap();
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("reproducers");
    std::fs::create_dir_all(&dir).unwrap();
    let mut files = Vec::new();
    for (n, (header, value)) in
        [("host", "bad host with spaces"), ("host", "[::1"), ("x-forwarded-proto", "")].iter().enumerate()
    {
        let mut ev = base.clone();
        ev["headers"][*header] = json!(value);
        ev["headers"]["authorization"] = json!("Bearer not-the-secret");
        let f = dir.join(format!("reproducer-{n}.json"));
        std::fs::write(&f, ev.to_string()).unwrap();
        files.push(f);
    }
    let out = invoke_dry_run(&files, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    let answers: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l.get("event").is_some())
        .collect();
    assert_eq!(answers.len(), 3, "{stderr}");
    for a in answers {
        assert_eq!(a["statusCode"], 401, "{a}");
    }
}

/// The built binary's `invoke --dry-run` on `files`, outside Lambda, with the demo secrets and `env`.
fn invoke_dry_run(files: &[std::path::PathBuf], env: &[(&str, &str)]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_gitlab-deploy-bridge"))
        .args(["invoke", "--dry-run"])
        .args(files)
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .env_remove("SECRET_ID")
        .envs(demo_env())
        .envs(env.iter().copied())
        .output()
        .unwrap()
}
