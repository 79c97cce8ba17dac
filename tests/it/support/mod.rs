//! Test harness: the bridge's real router on a loopback port, a GitLab stand-in, moto's
//! Secrets Manager, a Lambda Runtime API stand-in, and a capture of every log line.

pub mod gitlab;
pub mod moto;
pub mod runtime;
pub mod sign;

use gitlab_deploy_bridge::app;
use gitlab_deploy_bridge::config::{Config, Deadlines, GitLabSettings};
use gitlab_deploy_bridge::secrets::{SecretProvider, StaticSecrets};
use gitlab_deploy_bridge::sources;
use gitlab_deploy_bridge::spool::Spool;
use gitlab_deploy_bridge::spool::local::LocalSpool;
use secrecy::SecretString;
use serde_json::Value;
use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

pub use gitlab::{Fault, GitLabStub};

pub const SHA_A: &str = "a91957a858320c0e17f3a0eca7cfacbff50ea29a";
pub const SHA_B: &str = "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0";
// Shorthands of `secret_of` for the tools most tests use.
pub const GENERIC_SECRET: &str = "test-generic-secret";
pub const ARGOCD_SECRET: &str = "test-argocd-secret";
pub const HEROKU_SECRET: &str = "test-heroku-secret";
pub const FLUX_SECRET: &str = "test-flux-secret";
pub const VERCEL_SECRET: &str = "test-vercel-secret";
pub const NETLIFY_SECRET: &str = "test-netlify-secret";

static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs (once) a JSON log subscriber at DEBUG for the bridge that records every line.
pub fn capture_logs() {
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = Capture(buf.clone());
        // The bridge's own JSON lines: a webhook's span fields flat in its line, as in Lambda.
        let filter = tracing_subscriber::EnvFilter::new("debug,hyper=info,h2=info");
        let _ = gitlab_deploy_bridge::telemetry::json_subscriber(filter, move || writer.clone(), true).try_init();
        buf
    });
}

/// Every log line captured so far (from all tests in this binary).
pub fn logs() -> String {
    LOGS.get().map(|b| String::from_utf8_lossy(&b.lock().unwrap()).into_owned()).unwrap_or_default()
}

/// A configuration pointing at `gitlab_url`, with short retry steps so tests run fast.
pub fn config(gitlab_url: &str) -> Config {
    Config {
        gitlab: GitLabSettings {
            base_url: gitlab_url.to_string(),
            retry_base: Duration::from_millis(20),
            retry_max: Duration::from_millis(200),
            ..GitLabSettings::default()
        },
        deadlines: Deadlines { local: Duration::from_secs(10), ..Deadlines::default() },
        // The payloads of most tests carry fixed times from 2026-10 and are sent again on purpose
        // (duplicates, redeliveries): the replay defence is tested on its own (admission/replay.rs).
        replay_windows: [("*".to_string(), 0)].into_iter().collect(),
        // Most tests are about what a delivery does, not where it may go: they use unbound
        // hooks with the project in the query; routes are tested on their own (admission/routes.rs).
        unbound_hooks: true,
        ..Config::default()
    }
}

pub fn static_secrets(token: &str) -> Arc<dyn SecretProvider> {
    static_secrets_with(token, &[])
}

/// A tool's test secret: `test-<tool>-secret` (the constants above follow it).
pub fn secret_of(tool: &str) -> String {
    format!("test-{tool}-secret")
}

/// Every source's test secret (from the registry), the GitLab token, and `extra` keys.
pub fn static_secrets_with(token: &str, extra: &[(&str, &str)]) -> Arc<dyn SecretProvider> {
    let mut m = HashMap::new();
    for source in gitlab_deploy_bridge::sources::ALL {
        m.insert(sources::webhook_secret_key(source.name()), SecretString::from(secret_of(source.name())));
    }
    for (k, v) in extra {
        m.insert(k.to_string(), SecretString::from(v.to_string()));
    }
    m.insert("gitlab_token".to_string(), SecretString::from(token.to_string()));
    Arc::new(StaticSecrets::new(m))
}

/// The bridge's real router served on a free loopback port.
pub struct Bridge {
    pub url: String,
    pub http: reqwest::Client,
}

impl Bridge {
    pub async fn start(config: Config, secrets: Arc<dyn SecretProvider>) -> Bridge {
        capture_logs();
        let router = app::build(config, secrets).expect("router builds");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Bridge { url, http: reqwest::Client::new() }
    }

    /// The bridge with `serve`'s local spool in `dir` and its worker running.
    pub async fn start_spooled(
        config: Config,
        secrets: Arc<dyn SecretProvider>,
        dir: &std::path::Path,
    ) -> (Bridge, Arc<LocalSpool>) {
        capture_logs();
        let local = Arc::new(LocalSpool::open(dir).expect("spool opens"));
        let wake = Arc::new(tokio::sync::Notify::new());
        let http = gitlab_deploy_bridge::transport::http_client(config.gitlab.connect_timeout).expect("HTTP client");
        let built = app::assemble(config, secrets, Some(Spool::Local(local.clone(), wake.clone())), http)
            .expect("router builds");
        tokio::spawn(gitlab_deploy_bridge::drain::run_local(
            built.pipeline.clone(),
            local.clone(),
            wake,
            std::future::pending(),
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, built.router).await.unwrap() });
        (Bridge { url, http: reqwest::Client::new() }, local)
    }

    /// POSTs `body` to `path` with `Authorization: Bearer <token>` (when given); returns status and JSON.
    pub async fn post(&self, path: &str, token: Option<&str>, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let mut rb =
            self.http.post(format!("{}{path}", self.url)).header("content-type", "application/json").body(body);
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        let resp = rb.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or_else(|_| panic!("answer is not JSON: {status} {text:?}"));
        (status, json)
    }

    /// POSTs `body` to `path` with the given headers; returns status and JSON.
    pub async fn post_with(&self, path: &str, headers: &[(&str, String)], body: &str) -> (u16, Value) {
        let mut rb = self
            .http
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body.to_string());
        for (k, v) in headers {
            rb = rb.header(*k, v);
        }
        let resp = rb.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or_else(|_| panic!("answer is not JSON: {status} {text:?}"));
        (status, json)
    }

    /// A `generic` webhook for project 42.
    pub async fn generic(&self, environment: &str, sha: &str, status: &str) -> (u16, Value) {
        let body =
            serde_json::json!({"environment": environment, "sha": sha, "ref": "main", "tag": false, "status": status});
        self.post("/hooks/generic?project=42", Some(GENERIC_SECRET), body.to_string()).await
    }
}

/// A forged signature and a missing one both get 401 (the answer naming `header`), and
/// GitLab hears nothing.
pub async fn assert_signature_required(
    bridge: &Bridge,
    gitlab: &GitLabStub,
    path: &str,
    header: &str,
    forged: String,
    body: &str,
) {
    let (s, r) = bridge.post_with(path, &[(header, forged)], body).await;
    assert_eq!(s, 401, "forged {header}: {r}");
    let (s, r) = bridge.post_with(path, &[], body).await;
    assert_eq!(s, 401, "missing {header}: {r}");
    assert!(r["error"].as_str().unwrap().contains(header), "{r}");
    assert!(gitlab.requests().is_empty(), "a refused call reached GitLab");
}

/// A standard setup: a GitLab stand-in knowing SHA_A and SHA_B, and the bridge in front of it.
pub async fn setup() -> (GitLabStub, Bridge) {
    let token = format!("glpat-{}", fastrand_token());
    let gitlab = GitLabStub::start(&token).await;
    gitlab.add_commit(SHA_A);
    gitlab.add_commit(SHA_B);
    let bridge = Bridge::start(config(&gitlab.url), static_secrets(&token)).await;
    (gitlab, bridge)
}

/// The standard setup with the configuration changed by `cfg` first.
pub async fn setup_with(cfg: impl FnOnce(&mut Config)) -> (GitLabStub, Bridge) {
    let token = fastrand_token();
    let gitlab = GitLabStub::start(&token).await;
    gitlab.add_commit(SHA_A);
    gitlab.add_commit(SHA_B);
    let mut c = config(&gitlab.url);
    cfg(&mut c);
    let bridge = Bridge::start(c, static_secrets(&token)).await;
    (gitlab, bridge)
}

/// A distinct random token per test, so leaks can be searched for in the shared log.
pub fn fastrand_token() -> String {
    (0..20).map(|_| fastrand::alphanumeric()).collect()
}

/// The demo secrets of `events/demo.env` (what the README's first command loads).
pub fn demo_env() -> Vec<(String, String)> {
    let text =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("events/demo.env")).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').expect("KEY=value");
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// Collects a child's stdout and stderr, as they come, into one string.
pub fn capture_output(child: &mut tokio::process::Child) -> Arc<Mutex<String>> {
    use tokio::io::AsyncReadExt;
    let output = Arc::new(Mutex::new(String::new()));
    for mut stream in [
        Box::new(child.stdout.take().expect("stdout piped")) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
        Box::new(child.stderr.take().expect("stderr piped")),
    ] {
        let out = output.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                out.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
    }
    output
}

/// Whether `base`/healthz answers 200 within 15 s (a `serve` process starting).
pub async fn healthy(base: &str) -> bool {
    let http = reqwest::Client::new();
    for _ in 0..300 {
        if http.get(format!("{base}/healthz")).send().await.is_ok_and(|r| r.status() == 200) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// A process's peak resident memory so far (`VmHWM`), in KiB; `None` once it has ended.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs a command to its end, sampling its peak resident memory every 10 ms: its output and
/// the highest `VmHWM` seen (KiB; the high-water mark only grows, so the last sample is it).
pub async fn run_measured(mut cmd: tokio::process::Command) -> (std::process::Output, u64) {
    let child = cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let pid = child.id().unwrap();
    let sampler = tokio::spawn(async move {
        let mut peak = 0;
        while let Some(kib) = peak_rss_kib(pid) {
            peak = peak.max(kib);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        peak
    });
    let out = child.wait_with_output().await.unwrap();
    (out, sampler.await.unwrap())
}
