//! The Lambda path itself: the built binary, started the way Lambda starts it, against a
//! Runtime API stand-in, moto's Secrets Manager and the GitLab stand-in.
//!
//! `BRIDGE_BINARY` (and optionally `BRIDGE_RUNNER`, e.g. `qemu-aarch64 -L /usr/aarch64-linux-gnu`)
//! run another build of the function, such as the arm64 `bootstrap`, through the same tests.

use crate::support::moto::{self, CountingProxy};
use crate::support::runtime::{RuntimeApi, function_command};
use crate::support::*;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const EVENT_SHA: &str = "c0ffee1234567890abcdef1234567890abcdef12";

struct Function {
    _child: tokio::process::Child,
    output: Arc<Mutex<String>>,
}

impl Function {
    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }
}

async fn start_function(runtime: &RuntimeApi, extra: &[(&str, &str)]) -> Function {
    let mut cmd = function_command(runtime);
    // The sample events are dated 2026-10 and some are sent twice on purpose.
    cmd.env("REPLAY_WINDOWS", r#"{"*": 0}"#)
        .env("UNBOUND_HOOKS", "allow")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128");
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start the function binary");
    let output = capture_output(&mut child);
    Function { _child: child, output }
}

fn event_file(name: &str) -> String {
    std::fs::read_to_string(format!("{}/events/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// Invokes an event and returns the function URL response's status and JSON body.
async fn invoke(runtime: &RuntimeApi, event: &str) -> (u16, Value) {
    let posted = runtime.invoke(event).await;
    assert_eq!(posted.kind, "response", "the function reported an error: {}", posted.body);
    let resp: Value = serde_json::from_str(&posted.body).expect("response is JSON");
    let body: Value = serde_json::from_str(resp["body"].as_str().expect("body is a string")).expect("body is JSON");
    (resp["statusCode"].as_u64().unwrap() as u16, body)
}

/// The secret as an operator would store it: the token and the demo webhook secrets.
fn demo_secret(token: &str) -> String {
    let mut secret = serde_json::Map::new();
    secret.insert("gitlab_token".into(), json!(token));
    for (k, v) in demo_env() {
        secret.insert(k.to_lowercase(), json!(v));
    }
    Value::Object(secret).to_string()
}

/// The function as deployed: its secret in Secrets Manager (moto, behind a proxy counting the
/// reads), a fresh GitLab stand-in that knows `EVENT_SHA`.
struct Deployed {
    token: String,
    gitlab: GitLabStub,
    proxy: CountingProxy,
    runtime: RuntimeApi,
    function: Function,
}

async fn deployed() -> Deployed {
    deployed_with(|_| {}).await
}

/// [`deployed`], with the GitLab stand-in prepared before the function starts.
async fn deployed_with(prepare: impl FnOnce(&GitLabStub)) -> Deployed {
    let token = format!("glpat-{}", fastrand_token());
    let gitlab = GitLabStub::start(&token).await;
    gitlab.add_commit(EVENT_SHA);
    prepare(&gitlab);
    let secret = moto::create_secret(&demo_secret(&token)).await;
    let proxy = CountingProxy::start().await;
    let runtime = RuntimeApi::start(Duration::from_secs(30)).await;
    let function = start_function(
        &runtime,
        &[("SECRET_ID", &secret), ("GITLAB_URL", &gitlab.url), ("AWS_ENDPOINT_URL", &proxy.url)],
    )
    .await;
    Deployed { token, gitlab, proxy, runtime, function }
}

#[tokio::test]
async fn the_binary_serves_function_url_events_under_the_runtime_api() {
    let Deployed { token, gitlab, proxy, runtime, function } = deployed().await;

    let series = [
        ("argocd-running.json", "created", "running"),
        ("argocd-running.json", "unchanged", "running"),
        ("argocd-deployed.json", "updated", "success"),
        ("generic-success.json", "unchanged", "success"),
        ("facade-success.json", "created", "success"),
        ("heroku-build-pending.json", "created", "running"),
        ("heroku-release-succeeded.json", "updated", "success"),
    ];
    for (file, action, status) in series {
        let (code, body) = invoke(&runtime, &event_file(file)).await;
        if file.starts_with("facade") {
            // The GitLab-compatible facade answers as GitLab: 201 and the deployment object.
            assert_eq!(code, 201, "{file}: {body}");
            assert_eq!(
                (&body["bridge"]["action"], &body["status"]),
                (&json!(action), &json!(status)),
                "{file}: {body}"
            );
            continue;
        }
        assert_eq!(code, 200, "{file}: {body}");
        assert_eq!(body["action"], action, "{file}: {body}");
        assert_eq!(body["deployment"]["status"], status, "{file}: {body}");
    }
    let deps = gitlab.deployments();
    assert_eq!(deps.len(), 3);
    assert_eq!(
        (deps[2].environment.as_str(), deps[2].history.clone()),
        ("example-api", vec!["running".to_string(), "success".to_string()])
    );
    assert_eq!(
        (deps[0].environment.as_str(), deps[0].history.clone()),
        ("production", vec!["running".to_string(), "success".to_string()])
    );
    assert_eq!((deps[1].environment.as_str(), deps[1].status.as_str()), ("staging", "success"));
    assert_eq!(proxy.reads(), 1, "Secrets Manager read once across the series");

    // A bad credential is answered by the function, not by a crash.
    let mut forged: Value = serde_json::from_str(&event_file("generic-running.json")).unwrap();
    forged["headers"]["authorization"] = json!("Bearer not-the-secret");
    let (code, body) = invoke(&runtime, &forged.to_string()).await;
    assert_eq!(code, 401, "{body}");

    let out = function.output();
    assert!(!out.contains(&token), "the GitLab token reached the function's output");
    let lines: Vec<Value> = out.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let handled: Vec<&Value> = lines.iter().filter(|l| l["message"] == "webhook handled").collect();
    assert_eq!(handled.len(), 7, "one JSON log line per webhook:\n{out}");
    for l in &handled {
        for field in
            ["source", "project", "environment", "sha", "status", "action", "deployment_id", "latency_ms", "outcome"]
        {
            assert!(!l[field].is_null(), "{field} missing in {l}");
        }
    }
    assert!(lines.iter().any(|l| l["message"] == "webhook refused" && l["http_status"] == 401), "{out}");
}

#[tokio::test]
async fn a_misconfigured_function_answers_5xx_and_keeps_running() {
    let runtime = RuntimeApi::start(Duration::from_secs(30)).await;
    let function = start_function(&runtime, &[("GITLAB_URL", "http://127.0.0.1:9")]).await;
    for _ in 0..2 {
        let (code, body) = invoke(&runtime, &event_file("generic-running.json")).await;
        assert_eq!(code, 500, "{body}");
        assert!(body["error"].as_str().unwrap().contains("SECRET_ID"), "{body}");
    }
    assert!(function.output().contains("SECRET_ID"));

    let runtime = RuntimeApi::start(Duration::from_secs(30)).await;
    let _f = start_function(&runtime, &[("GITLAB_URL", "not a url"), ("SECRET_ID", "x")]).await;
    let (code, body) = invoke(&runtime, &event_file("generic-running.json")).await;
    assert_eq!(code, 500, "{body}");
    assert!(body["error"].as_str().unwrap().contains("GITLAB_URL"), "{body}");

    let no_token = moto::create_secret(&json!({"generic_webhook_secret": "demo-generic-secret"}).to_string()).await;
    let not_json = moto::create_secret("glpat-not-a-json-object").await;
    for (secret_id, needle) in
        [(no_token.as_str(), "gitlab_token"), (not_json.as_str(), "not JSON"), ("bridge/missing", "no secret")]
    {
        let runtime = RuntimeApi::start(Duration::from_secs(30)).await;
        let f = start_function(
            &runtime,
            &[("SECRET_ID", secret_id), ("GITLAB_URL", "http://127.0.0.1:9"), ("AWS_ENDPOINT_URL", &moto::endpoint())],
        )
        .await;
        for _ in 0..2 {
            let (code, body) = invoke(&runtime, &event_file("generic-running.json")).await;
            assert_eq!(code, 500, "{secret_id}: {body}");
            assert!(body["error"].as_str().unwrap().contains(needle), "{secret_id}: {body}");
        }
        // One actionable JSON line per webhook, naming the cause.
        let out = f.output();
        let refused: Vec<Value> = out
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l["message"] == "webhook refused" && l["http_status"] == 500)
            .collect();
        assert_eq!(refused.len(), 2, "{out}");
        assert!(refused[0]["error"].as_str().unwrap().contains(needle), "{out}");
    }
}

#[tokio::test]
async fn the_invocation_deadline_bounds_gitlab_retries() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let secret = moto::create_secret(&demo_secret("t")).await;
    let runtime = RuntimeApi::start(Duration::from_secs(3)).await;
    let _f = start_function(
        &runtime,
        &[
            ("SECRET_ID", &secret),
            ("GITLAB_URL", &format!("http://127.0.0.1:{port}")),
            ("AWS_ENDPOINT_URL", &moto::endpoint()),
            ("GITLAB_MAX_ATTEMPTS", "20"),
            ("DEADLINE_MARGIN_MS", "500"),
        ],
    )
    .await;
    let posted = runtime.invoke(&event_file("generic-running.json")).await;
    assert_eq!(posted.kind, "response", "{}", posted.body);
    let resp: Value = serde_json::from_str(&posted.body).unwrap();
    let code = resp["statusCode"].as_u64().unwrap();
    assert!(code == 502 || code == 504, "{code} {}", posted.body);
    assert!(
        posted.at_ms <= posted.deadline_ms,
        "answered {} ms after the invocation deadline",
        posted.at_ms - posted.deadline_ms
    );
    // It did retry: the budget was spent, not given up at the first refusal.
    assert!(
        posted.deadline_ms - posted.at_ms < 2500,
        "gave up {} ms before the deadline",
        posted.deadline_ms - posted.at_ms
    );
}

/// The function without `SECRET_ID`: the GitLab token and the demo webhook secrets from the
/// environment (as under `cargo lambda watch`), against a fresh GitLab stand-in.
async fn function_with_environment_secrets() -> (String, GitLabStub, RuntimeApi, Function) {
    let token = fastrand_token();
    let gitlab = GitLabStub::start(&token).await;
    gitlab.add_commit(EVENT_SHA);
    let runtime = RuntimeApi::start(Duration::from_secs(30)).await;
    let mut env: Vec<(String, String)> = demo_env();
    env.push(("GITLAB_TOKEN".into(), token.clone()));
    env.push(("GITLAB_URL".into(), gitlab.url.clone()));
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let function = start_function(&runtime, &env_refs).await;
    (token, gitlab, runtime, function)
}

#[tokio::test]
async fn without_secret_id_environment_secrets_serve_as_under_cargo_lambda_watch() {
    let (token, gitlab, runtime, function) = function_with_environment_secrets().await;
    let (code, body) = invoke(&runtime, &event_file("netlify-deploy-building.json")).await;
    assert_eq!((code, body["action"].as_str()), (200, Some("created")), "{body}");
    assert_eq!(gitlab.deployments().len(), 1);
    assert!(!function.output().contains(&token));
}

/// lambda_http 1.3.2 panicked (`Url::parse(..).unwrap()`) on an invalid `host` header or an
/// empty `x-forwarded-proto`, killing the process before the router ran. Each reproducer is now
/// answered, as a 4xx for what it is (these are unsigned), and the process goes on to serve a
/// real event.
#[tokio::test]
async fn events_lambda_http_would_panic_on_are_answered_and_the_process_lives() {
    let (_token, gitlab, runtime, function) = function_with_environment_secrets().await;
    let base: Value = serde_json::from_str(&event_file("generic-running.json")).unwrap();
    let reproducers =
        [("host", json!("bad host with spaces")), ("host", json!("[::1")), ("x-forwarded-proto", json!(""))];
    for (header, value) in reproducers {
        let mut ev = base.clone();
        ev["headers"][header] = value.clone();
        ev["headers"]["authorization"] = json!("Bearer not-the-secret");
        let (code, body) = invoke(&runtime, &ev.to_string()).await;
        assert_eq!(code, 401, "{header}={value}: {body}");
    }
    let (code, body) = invoke(&runtime, &event_file("generic-running.json")).await;
    assert_eq!((code, body["action"].as_str()), (200, Some("created")), "{body}");
    assert_eq!(gitlab.deployments().len(), 1, "only the real event reached GitLab");
    assert!(!function.output().contains("panicked"), "{}", function.output());
}

/// Waits (up to 60 s: the arm64 build runs under qemu) until `ready` holds.
async fn eventually(what: &str, ready: impl Fn() -> bool) {
    for _ in 0..600 {
        if ready() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} did not happen within 60 s");
}

#[tokio::test]
async fn init_reads_the_secret_and_opens_gitlab_before_the_first_event() {
    let Deployed { gitlab, proxy, runtime, function, .. } = deployed().await;
    // No event yet: what happens now is Lambda's init.
    eventually("the warm-up", || proxy.reads() == 1 && !gitlab.requests().is_empty()).await;
    let warm = gitlab.requests();
    assert_eq!((warm[0].method.as_str(), warm[0].uri.as_str()), ("HEAD", "/api/v4/version"), "{warm:?}");
    assert_eq!(warm[0].private_token, None, "the warm-up sends no token");

    let (code, body) = invoke(&runtime, &event_file("generic-success.json")).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["deployment"]["status"], "success", "{body}");
    assert_eq!(proxy.reads(), 1, "the first webhook found the secret read in init");
    let out = function.output();
    let warm_line: Value = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["message"] == "warm-up")
        .unwrap_or_else(|| panic!("no warm-up line in:\n{out}"));
    assert_eq!((&warm_line["secret"], &warm_line["gitlab"]), (&json!("ready"), &json!("connected")), "{warm_line}");
}

#[tokio::test]
async fn a_warm_up_that_cannot_finish_leaves_the_work_to_the_first_event() {
    // GitLab takes longer than init's warm-up budget (2 s) to answer anything.
    let Deployed { gitlab, runtime, function, .. } =
        deployed_with(|gitlab| gitlab.set_latency(Some(Duration::from_secs(5)))).await;
    eventually("the warm-up's give-up line", || function.output().contains("warm-up did not finish in time")).await;
    gitlab.set_latency(None);
    let (code, body) = invoke(&runtime, &event_file("generic-success.json")).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["deployment"]["status"], "success", "{body}");
}
