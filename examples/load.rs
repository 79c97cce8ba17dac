//! Lifecycle load: the bridge binary's `serve` in front of the GitLab stand-in of the tests
//! (in this process, so it can count every GitLab call), driven by concurrent workers that each
//! roll out fresh shas (`running`, then `success`) into environments that already hold
//! `--history` deployments. Prints events/s, latency and GitLab calls per event.
//!
//! `cargo run --release --example load -- --bridge target/release/gitlab-deploy-bridge`
//! (`bash scripts/load` runs it). Loopback only.

#[allow(dead_code)]
#[path = "../tests/it/support/gitlab.rs"]
mod gitlab;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Args {
    bridge: String,
    workers: usize,
    seconds: u64,
    history: u32,
    /// All workers roll out into one environment (serialized by its lock), instead of one each.
    shared: bool,
}

fn args() -> Result<Args, String> {
    let mut a = Args { bridge: String::new(), workers: 64, seconds: 10, history: 1000, shared: false };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut val = || it.next().ok_or(format!("{k} needs a value"));
        match k.as_str() {
            "--bridge" => a.bridge = val()?,
            "--workers" => a.workers = val()?.parse().map_err(|e| format!("--workers: {e}"))?,
            "--seconds" => a.seconds = val()?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--history" => a.history = val()?.parse().map_err(|e| format!("--history: {e}"))?,
            "--shared-environment" => a.shared = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.bridge.is_empty() {
        return Err("usage: load --bridge <gitlab-deploy-bridge binary> [--workers 64] [--seconds 10] [--history 1000] [--shared-environment]".into());
    }
    Ok(a)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(3000)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = args()?;
    let token = "glpat-load-test-token";
    let secret = "load-generic-secret";
    let gitlab = gitlab::GitLabStub::start(token).await;
    gitlab.accept_any_commit();
    let envs: Vec<String> =
        if args.shared { vec!["production".into()] } else { (0..args.workers).map(|w| format!("env-{w}")).collect() };
    // Interleaved, as environments deploy side by side (and so each one's newest deployments
    // are near the end of the stand-in's list).
    for i in 0..args.history {
        for env in &envs {
            gitlab.seed("42", env, &format!("{:08x}{i:032x}", u32::MAX), "success");
        }
    }

    let port = free_port();
    let mut child = Command::new(&args.bridge)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("GITLAB_URL", &gitlab.url)
        .env("GITLAB_TOKEN", token)
        // A route, as a production setup has (unbound hooks are refused by default).
        .env("ROUTES", r#"{"load": {"source": "generic", "projects": ["42"]}}"#)
        .env("ROUTE_LOAD_SECRET", secret)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()?;
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder().pool_max_idle_per_host(args.workers).build()?;
    for _ in 0..100 {
        if http.get(format!("{url}/healthz")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let before = gitlab.request_count();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for w in 0..args.workers {
        let (http, url, env) = (http.clone(), url.clone(), Arc::new(envs[w % envs.len()].clone()));
        tasks.push(tokio::spawn(async move {
            let (mut latencies, mut failures) = (Vec::new(), 0usize);
            let mut n = 0u64;
            while Instant::now() < deadline {
                n += 1;
                let sha = format!("{w:08x}{n:032x}");
                for status in ["running", "success"] {
                    let body = serde_json::json!({"environment": *env, "sha": sha, "ref": "main", "status": status});
                    let t = Instant::now();
                    let ok = http
                        .post(format!("{url}/hooks/generic/load?project=42"))
                        .bearer_auth(secret)
                        .json(&body)
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                    latencies.push(t.elapsed());
                    failures += usize::from(!ok);
                }
            }
            (latencies, failures)
        }));
    }
    let (mut latencies, mut failures) = (Vec::new(), 0);
    for t in tasks {
        let (l, f) = t.await?;
        latencies.extend(l);
        failures += f;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let calls = gitlab.request_count() - before;
    let _ = child.kill();
    let _ = child.wait();

    latencies.sort();
    let pct = |p: f64| {
        latencies.get(((latencies.len() as f64 - 1.0) * p) as usize).map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0)
    };
    let events = latencies.len();
    println!(
        "{}",
        serde_json::json!({
            "environments": envs.len(),
            "earlier_deployments_per_environment": args.history,
            "workers": args.workers,
            "events": events,
            "failed": failures,
            "events_per_second": (events as f64 / elapsed).round(),
            "latency_ms": {"p50": (pct(0.5) * 100.0).round() / 100.0, "p99": (pct(0.99) * 100.0).round() / 100.0},
            "gitlab_calls": calls,
            "gitlab_calls_per_event": ((calls as f64 / events.max(1) as f64) * 100.0).round() / 100.0,
        })
    );
    if failures > 0 {
        return Err(format!(
            "{failures} of the events were not answered with a 2xx; the figures above measure failures"
        )
        .into());
    }
    Ok(())
}
