//! The durable spool end to end: `serve`'s local one and Lambda's SQS FIFO queue in moto, driven
//! with Argo CD-, Flux- and Heroku-shaped rollouts. [`outage`]: nothing lost when GitLab is down
//! (issue 11); [`routes`]: a spooled event is delivered only where `ROUTES` lets it go now;
//! [`faults`]: the spool under the faults it exists for (issue 21) — a full disk, an entry that
//! cannot be read, a spool at its bounds, 50,000 events waiting.

mod faults;
mod outage;
mod routes;

use crate::support::moto;
use crate::support::runtime::{RuntimeApi, function_command};
use crate::support::*;
use gitlab_deploy_bridge::config::Config;
use gitlab_deploy_bridge::routes::Routes;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::OffsetDateTime;

const BIN: &str = env!("CARGO_BIN_EXE_gitlab-deploy-bridge");

/// One route per tool, each bound to one environment of `group/app`.
const ROUTES: &str = r#"{
  "argo": {"source": "argocd", "projects": ["group/app"], "environments": ["argo-prod"]},
  "flux": {"source": "flux", "projects": ["group/app"], "environments": ["flux-staging"]},
  "heroku": {"source": "heroku", "projects": ["group/app"], "environments": ["heroku-app"]}
}"#;

const ROUTE_SECRETS: [(&str, &str); 3] = [("argo", ARGOCD_SECRET), ("flux", FLUX_SECRET), ("heroku", HEROKU_SECRET)];

/// A commit GitLab does not have: the poison event's.
const SHA_UNKNOWN: &str = "dead000000000000000000000000000000000bad";

/// One webhook as the tool sends it.
#[derive(Clone, Debug)]
struct Call {
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

/// What a tool reports, rendered with the time it is sent at (so the replay defence stays on).
#[derive(Clone, Copy, Debug)]
enum Step {
    ArgoRunning(&'static str),
    ArgoSucceeded(&'static str),
    ArgoFailed(&'static str),
    FluxProgressing(&'static str),
    FluxSucceeded(&'static str),
    HerokuBuild(&'static str, &'static str, u32),
    /// A release's description names the commit by its first 8 characters: GitLab expands it.
    HerokuRelease(&'static str, &'static str, u32),
}

fn stamp(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap()
}

fn render(step: Step, at: OffsetDateTime) -> Call {
    let now = stamp(at);
    match step {
        Step::ArgoRunning(sha) | Step::ArgoSucceeded(sha) | Step::ArgoFailed(sha) => {
            let (phase, health, finished) = match step {
                Step::ArgoRunning(_) => ("Running", "Progressing", ""),
                Step::ArgoSucceeded(_) => ("Succeeded", "Healthy", now.as_str()),
                _ => ("Failed", "Degraded", now.as_str()),
            };
            let body = json!({
                "app": "argo-prod", "environment": "argo-prod", "annotations": {}, "externalURLs": [],
                "phase": phase, "health": health, "healthAt": now, "startedAt": now, "finishedAt": finished,
                "message": "", "revision": sha, "revisions": [], "images": [], "sources": [],
                "source": {"path": "deploy", "repoURL": "https://gitlab.example.com/group/app.git", "targetRevision": "main"}
            })
            .to_string();
            Call {
                path: "/hooks/argocd/argo".into(),
                headers: vec![("authorization".into(), format!("Bearer {ARGOCD_SECRET}"))],
                body,
            }
        }
        Step::FluxProgressing(sha) | Step::FluxSucceeded(sha) => {
            let reason =
                if matches!(step, Step::FluxProgressing(_)) { "Progressing" } else { "ReconciliationSucceeded" };
            let body = json!({
                "involvedObject": {"kind": "Kustomization", "namespace": "flux-system", "name": "flux-staging", "uid": "1a2b",
                                   "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "resourceVersion": "102934"},
                "severity": "info", "timestamp": now, "message": format!("{reason} for revision main@sha1:{sha}"), "reason": reason,
                "metadata": {"revision": format!("main@sha1:{sha}")}, "reportingController": "kustomize-controller", "reportingInstance": "kc-1"
            })
            .to_string();
            let headers = vec![
                ("x-signature".into(), sign::signature("flux", FLUX_SECRET, &body)),
                ("gotk-component".into(), "kustomize-controller".into()),
            ];
            Call { path: "/hooks/flux/flux".into(), headers, body }
        }
        Step::HerokuBuild(sha, status, n) => {
            let body = json!({
                "id": format!("b-{n}"), "action": if status == "pending" { "create" } else { "update" }, "resource": "build",
                "actor": {"email": "ops@example.com", "id": "5a6b"}, "previous_data": {}, "sequence": null,
                "created_at": now, "updated_at": now, "published_at": now, "version": "application/vnd.heroku+json; version=3",
                "data": {"id": format!("build-{n}"), "status": status, "app": {"id": "3c4d", "name": "heroku-app"},
                         "source_blob": {"checksum": null, "url": "https://example-source.invalid/a.tar.gz", "version": sha, "version_description": "change"},
                         "release": null, "slug": null, "stack": "heroku-24", "output_stream_url": "https://build-output.heroku.com/streams/7e"},
                "webhook_metadata": {"attempt": {"id": format!("a-{n}")}, "delivery": {"id": format!("d-{n}")}, "event": {"id": format!("e-{n}"), "include": "api:build"}, "webhook": {"id": "w1"}}
            })
            .to_string();
            Call {
                path: "/hooks/heroku/heroku".into(),
                headers: vec![("heroku-webhook-hmac-sha256".into(), sign::signature("heroku", HEROKU_SECRET, &body))],
                body,
            }
        }
        Step::HerokuRelease(sha, status, n) => {
            let body = json!({
                "id": format!("r-{n}"), "action": "update", "resource": "release", "previous_data": {"status": "pending"}, "sequence": null,
                "created_at": now, "updated_at": now, "published_at": now, "version": "application/vnd.heroku+json; version=3",
                "data": {"id": format!("release-{n}"), "version": n, "status": status, "description": format!("Deploy {}", &sha[..8]), "current": true,
                         "app": {"id": "3c4d", "name": "heroku-app"}, "slug": {"id": "1d2e"}, "addon_plan_names": [],
                         "output_stream_url": "https://release-output.heroku.com/streams/9f"},
                "webhook_metadata": {"attempt": {"id": format!("a-{n}")}, "delivery": {"id": format!("d-{n}")}, "event": {"id": format!("e-{n}"), "include": "api:release"}, "webhook": {"id": "w1"}}
            })
            .to_string();
            Call {
                path: "/hooks/heroku/heroku".into(),
                headers: vec![("heroku-webhook-hmac-sha256".into(), sign::signature("heroku", HEROKU_SECRET, &body))],
                body,
            }
        }
    }
}

/// Two rollouts per tool, interleaved as three teams' deploys would be; the second Argo CD
/// one fails.
fn rollouts() -> Vec<Step> {
    vec![
        Step::ArgoRunning(SHA_A),
        Step::FluxProgressing(SHA_A),
        Step::HerokuBuild(SHA_A, "pending", 1),
        Step::ArgoSucceeded(SHA_A),
        Step::HerokuBuild(SHA_A, "succeeded", 2),
        Step::FluxSucceeded(SHA_A),
        Step::HerokuRelease(SHA_A, "succeeded", 3),
        Step::ArgoRunning(SHA_B),
        Step::HerokuBuild(SHA_B, "pending", 4),
        Step::FluxProgressing(SHA_B),
        Step::ArgoFailed(SHA_B),
        Step::FluxSucceeded(SHA_B),
        Step::HerokuBuild(SHA_B, "succeeded", 5),
        Step::HerokuRelease(SHA_B, "succeeded", 6),
    ]
}

/// Each environment's deployments in id order: sha and every status it went through.
type State = BTreeMap<String, Vec<(String, Vec<String>)>>;

fn state(gitlab: &GitLabStub) -> State {
    let mut out = State::new();
    for d in gitlab.deployments() {
        out.entry(d.environment.clone()).or_default().push((d.sha.clone(), d.history.clone()));
    }
    out
}

/// What GitLab shows when the same deliveries meet no outage (the in-process router, no spool).
async fn baseline(steps: &[Step]) -> State {
    let token = format!("glpat-{}", fastrand_token());
    let gitlab = GitLabStub::start(&token).await;
    gitlab.add_commits([SHA_A.to_string(), SHA_B.to_string()]);
    let keys: Vec<(String, &str)> = ROUTE_SECRETS.iter().map(|(r, s)| (format!("route_{r}_secret"), *s)).collect();
    let extra: Vec<(&str, &str)> = keys.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let config = Config {
        routes: Routes::parse(ROUTES).unwrap(),
        unbound_hooks: false,
        replay_windows: Default::default(),
        ..config(&gitlab.url)
    };
    let bridge = Bridge::start(config, static_secrets_with(&token, &extra)).await;
    for step in steps {
        let call = render(*step, OffsetDateTime::now_utc());
        let headers: Vec<(&str, String)> = call.headers.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        let (status, answer) = bridge.post_with(&call.path, &headers, &call.body).await;
        assert_eq!(status, 200, "{step:?}: {answer}");
    }
    let state = state(&gitlab);
    // The scenario means something: three environments, two rollouts each, one failed.
    assert_eq!(state.values().map(Vec::len).collect::<Vec<_>>(), vec![2, 2, 2], "{state:?}");
    assert!(state.values().flatten().all(|(_, h)| h.last().is_some_and(|s| s != "running")), "{state:?}");
    state
}

/// Waits until `check` holds, for at most `secs` seconds.
async fn eventually(secs: u64, mut check: impl FnMut() -> bool) -> bool {
    for _ in 0..secs * 10 {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    check()
}

/// Whether the log says the spooled event of `sha` was delivered and judged stale.
fn delivered_stale(logs: &str, sha: &str) -> bool {
    logs.lines().any(|l| l.contains("spool: event delivered") && l.contains(sha) && l.contains("stale"))
}

// ---------------------------------------------------------------------------------------------
// serve

struct Serve {
    child: tokio::process::Child,
    base: String,
    output: Arc<Mutex<String>>,
}

impl Serve {
    async fn start(gitlab: &GitLabStub, dir: &Path) -> Serve {
        Serve::start_with(gitlab, dir, &[]).await
    }

    /// `serve` with `env` on top of the defaults below (`ROUTES`, say).
    async fn start_with(gitlab: &GitLabStub, dir: &Path, env: &[(&str, &str)]) -> Serve {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env_remove("AWS_LAMBDA_RUNTIME_API")
            .env_remove("SECRET_ID")
            .env("GITLAB_URL", &gitlab.url)
            .env("GITLAB_TOKEN", gitlab.token())
            .env("ROUTES", ROUTES)
            .env("SPOOL_DIR", dir)
            // GitLab gets a second before the spool takes an event; retries come at most a
            // second apart (the defaults are 5 s and 5 min).
            .env("SPOOL_AFTER_SECONDS", "1")
            .env("SPOOL_RETRY_MAX_SECONDS", "1")
            .env("GITLAB_RETRY_BASE_MS", "20")
            .env("GITLAB_MAX_ATTEMPTS", "2")
            // Flux's deliveries count as replays 3 s after they were signed: the outage lasts
            // longer, and the spool must still deliver them (freshness is judged at receipt).
            .env("REPLAY_WINDOWS", r#"{"flux": 3}"#)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (route, secret) in ROUTE_SECRETS {
            cmd.env(format!("ROUTE_{}_SECRET", route.to_ascii_uppercase()), secret);
        }
        cmd.envs(env.iter().copied());
        let mut child = cmd.spawn().unwrap();
        let output = capture_output(&mut child);
        let base = format!("http://127.0.0.1:{port}");
        assert!(healthy(&base).await, "serve did not answer /healthz: {}", output.lock().unwrap());
        Serve { child, base, output }
    }

    async fn send(&self, step: Step) -> (u16, Value) {
        let call = render(step, OffsetDateTime::now_utc());
        let mut rb = reqwest::Client::new()
            .post(format!("{}{}", self.base, call.path))
            .header("content-type", "application/json")
            .body(call.body);
        for (k, v) in &call.headers {
            rb = rb.header(k, v);
        }
        let r = rb.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    /// SIGKILL: no shutdown, no flush.
    async fn kill9(&mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }

    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }
}

fn spool_dir() -> PathBuf {
    std::env::temp_dir().join(format!("bridge-spool-{}", fastrand_token()))
}

/// `gitlab-deploy-bridge spool <args>` on the local spool in `dir`: its JSON lines.
fn spool_command(dir: &Path, args: &[&str]) -> (bool, Vec<Value>, String) {
    let out = std::process::Command::new(BIN)
        .arg("spool")
        .args(args)
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .env_remove("SPOOL_DLQ_URL")
        .env_remove("SPOOL_QUEUE_URL")
        .env("SPOOL_DIR", dir)
        .output()
        .unwrap();
    let lines = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    (out.status.success(), lines, String::from_utf8_lossy(&out.stderr).into_owned())
}

async fn gitlab_down() -> GitLabStub {
    let token = format!("glpat-{}", fastrand_token());
    let gitlab = GitLabStub::start(&token).await;
    gitlab.add_commits([SHA_A.to_string(), SHA_B.to_string()]);
    gitlab.set_down(Some(502));
    gitlab
}

// ---------------------------------------------------------------------------------------------
// Lambda: SQS FIFO in moto

fn sqs_client() -> aws_sdk_sqs::Client {
    let conf = aws_sdk_sqs::Config::builder()
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
        .http_client(moto::sdk_http())
        .region(aws_sdk_sqs::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new("test", "test", None, None, "test"))
        .endpoint_url(moto::endpoint())
        .build();
    aws_sdk_sqs::Client::from_conf(conf)
}

/// A FIFO queue and its FIFO dead-letter queue, as template.yaml makes them.
async fn queues(sqs: &aws_sdk_sqs::Client) -> (String, String) {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let name = format!("bridge-{}", fastrand_token());
    let dlq = sqs
        .create_queue()
        .queue_name(format!("{name}-dlq.fifo"))
        .attributes(A::FifoQueue, "true")
        .send()
        .await
        .unwrap();
    let dlq_url = dlq.queue_url().unwrap().to_string();
    let dlq_arn = sqs.get_queue_attributes().queue_url(&dlq_url).attribute_names(A::QueueArn).send().await.unwrap();
    let dlq_arn = dlq_arn.attributes().unwrap().get(&A::QueueArn).unwrap().clone();
    let queue = sqs
        .create_queue()
        .queue_name(format!("{name}.fifo"))
        .attributes(A::FifoQueue, "true")
        .attributes(A::VisibilityTimeout, "120")
        .attributes(A::RedrivePolicy, json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 500}).to_string())
        .send()
        .await
        .unwrap();
    (queue.queue_url().unwrap().to_string(), dlq_url)
}

/// A function-URL event for a call.
fn function_url_event(call: &Call) -> String {
    let mut headers: serde_json::Map<String, Value> = call.headers.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    headers.insert("content-type".into(), json!("application/json"));
    json!({
        "version": "2.0", "routeKey": "$default", "rawPath": call.path, "rawQueryString": "", "headers": headers,
        "requestContext": {"accountId": "anonymous", "apiId": "abc", "domainName": "abc.lambda-url.us-east-1.on.aws", "domainPrefix": "abc",
            "http": {"method": "POST", "path": call.path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.7", "userAgent": "tool"},
            "requestId": fastrand_token(), "routeKey": "$default", "stage": "$default", "time": "29/Nov/2026:12:00:00 +0000", "timeEpoch": 0},
        "body": call.body, "isBase64Encoded": false
    })
    .to_string()
}

struct Function {
    _child: tokio::process::Child,
    output: Arc<Mutex<String>>,
}

async fn start_function(
    runtime: &RuntimeApi,
    gitlab: &GitLabStub,
    queue: &str,
    dlq: &str,
    extra: &[(&str, &str)],
) -> Function {
    let mut cmd = function_command(runtime);
    cmd.env("AWS_ENDPOINT_URL", moto::endpoint())
        .env("GITLAB_URL", &gitlab.url)
        .env("GITLAB_TOKEN", gitlab.token())
        .env("ROUTES", ROUTES)
        .env("SPOOL_QUEUE_URL", queue)
        .env("SPOOL_DLQ_URL", dlq)
        .env("SPOOL_AFTER_SECONDS", "1")
        .env("SPOOL_RETRY_MAX_SECONDS", "1")
        .env("GITLAB_MAX_ATTEMPTS", "2")
        .env("REPLAY_WINDOWS", r#"{"flux": 3}"#);
    for (route, secret) in ROUTE_SECRETS {
        cmd.env(format!("ROUTE_{}_SECRET", route.to_ascii_uppercase()), secret);
    }
    cmd.envs(extra.iter().copied());
    let mut child = cmd.spawn().expect("start the function binary");
    let output = capture_output(&mut child);
    Function { _child: child, output }
}

/// What Lambda's event source mapping does, once: receive a batch, invoke the function with it
/// as an SQS event, delete what the answer does not list in `batchItemFailures`. Returns how
/// many records were in the batch and how many failed.
async fn poll_once(sqs: &aws_sdk_sqs::Client, runtime: &RuntimeApi, queue: &str) -> (usize, usize) {
    use aws_sdk_sqs::types::MessageSystemAttributeName as M;
    let got = sqs
        .receive_message()
        .queue_url(queue)
        .max_number_of_messages(10)
        .message_system_attribute_names(M::All)
        .send()
        .await
        .unwrap();
    let messages = got.messages();
    if messages.is_empty() {
        return (0, 0);
    }
    let records: Vec<Value> = messages
        .iter()
        .map(|m| {
            let attributes: serde_json::Map<String, Value> =
                m.attributes().unwrap().iter().map(|(k, v)| (k.as_str().to_string(), json!(v))).collect();
            json!({
                "messageId": m.message_id(), "receiptHandle": m.receipt_handle(), "body": m.body(),
                "attributes": attributes, "messageAttributes": {}, "md5OfBody": m.md5_of_body(),
                "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:bridge.fifo", "awsRegion": "us-east-1"
            })
        })
        .collect();
    let posted = runtime.invoke(&json!({ "Records": records }).to_string()).await;
    assert_eq!(posted.kind, "response", "{}", posted.body);
    let answer: Value = serde_json::from_str(&posted.body).unwrap();
    let failed: Vec<&str> =
        answer["batchItemFailures"].as_array().unwrap().iter().map(|f| f["itemIdentifier"].as_str().unwrap()).collect();
    for m in messages {
        if !failed.contains(&m.message_id().unwrap()) {
            sqs.delete_message().queue_url(queue).receipt_handle(m.receipt_handle().unwrap()).send().await.unwrap();
        }
    }
    (messages.len(), failed.len())
}
