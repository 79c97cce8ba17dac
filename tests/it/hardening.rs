//! Issue 10's findings, each reproduced as it was reported: what a delivery may not make the
//! bridge do, whatever its query, path or payload says.

use crate::support::*;
use axum::Router;
use axum::http::Uri;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

/// `project=.`/`..` (also percent-encoded, and on the facade path) used to reach
/// `GET /api/v4/deployments` with the token. Now every one is a 400 and GitLab hears nothing.
#[tokio::test]
async fn dot_projects_never_reach_gitlab() {
    let (gitlab, bridge) = setup().await;
    let body = json!({"environment": "production", "sha": SHA_A, "ref": "main", "status": "running"}).to_string();
    for project in [".", "..", "%2E%2E", "%2e", "group%2F..", "..%2F..%2Fusers"] {
        let (s, r) =
            bridge.post(&format!("/hooks/generic?project={project}"), Some(GENERIC_SECRET), body.clone()).await;
        assert_eq!(s, 400, "{project}: {r}");
        assert!(r["error"].as_str().unwrap().contains("project"), "{r}");
    }
    // HTTP clients resolve `%2E%2E` segments before sending; a raw request does not.
    for project in ["%2E%2E", "%2E", "group%2F%2E%2E", ".."] {
        let (status, answer) = raw_post(&bridge, &format!("/api/v4/projects/{project}/deployments"), &body).await;
        assert_eq!(status, 400, "facade {project}: {answer}");
    }
    assert!(gitlab.requests().is_empty(), "{:?}", gitlab.requests());
}

/// POSTs `body` to `path` exactly as written (no client-side normalization), with the generic
/// secret; returns the status and the answer's text.
async fn raw_post(bridge: &Bridge, path: &str, body: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = bridge.url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\nprivate-token: {GENERIC_SECRET}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let status = answer.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, answer)
}

/// A stand-in for the Heroku Platform API that records every URI it is asked for.
async fn heroku_api() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let record = seen.clone();
    let app = Router::new().fallback(move |uri: Uri| {
        let record = record.clone();
        async move {
            record.lock().unwrap().push(uri.to_string());
            axum::Json(json!({"commit": SHA_B, "web_url": "https://example.herokuapp.com/"}))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

fn release(app_id: &str) -> String {
    json!({
        "id": "2b3c", "action": "update", "resource": "release",
        "data": {"id": "9f0a", "version": 17, "status": "succeeded", "description": "Rollback to v16", "current": true,
                 "app": {"id": app_id, "name": "example"}, "slug": {"id": "1d2e"}},
        "webhook_metadata": {"delivery": {"id": "d-1"}}
    })
    .to_string()
}

/// The Heroku API path was built from payload fields without escaping: `data.app.id =
/// "a/../../users/me#"` sent the Heroku token to `GET /users/me`.
#[tokio::test]
async fn payload_values_stay_inside_their_heroku_api_path_segment() {
    let (heroku_url, seen) = heroku_api().await;
    let token = fastrand_token();
    let gitlab = GitLabStub::start(&token).await;
    gitlab.add_commit(SHA_B);
    let mut cfg = config(&gitlab.url);
    cfg.tools.set("HEROKU_API_URL", &heroku_url).unwrap();
    let bridge = Bridge::start(cfg, static_secrets_with(&token, &[("heroku_api_token", "heroku-api-token")])).await;
    let body = release("a/../../users/me#");
    let (s, r) = bridge
        .post_with(
            "/hooks/heroku?project=42&environment=production",
            &[("Heroku-Webhook-Hmac-SHA256", sign::signature("heroku", HEROKU_SECRET, &body))],
            &body,
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.is_empty());
    for uri in &seen {
        assert!(uri.starts_with("/apps/a%2F..%2F..%2Fusers%2Fme%23"), "{uri}");
    }
}

/// A dry run calls no one: it used to call the Heroku API with the real token.
#[tokio::test]
async fn a_dry_run_does_not_call_the_heroku_api() {
    let (heroku_url, seen) = heroku_api().await;
    let mut cfg = config("http://127.0.0.1:9");
    cfg.tools.set("HEROKU_API_URL", &heroku_url).unwrap();
    cfg.dry_run = true;
    let bridge = Bridge::start(cfg, static_secrets_with("t", &[("heroku_api_token", "heroku-api-token")])).await;
    let body = release("3c4d");
    let (s, r): (u16, Value) = bridge
        .post_with(
            "/hooks/heroku?project=42&environment=production",
            &[("Heroku-Webhook-Hmac-SHA256", sign::signature("heroku", HEROKU_SECRET, &body))],
            &body,
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert!(seen.lock().unwrap().is_empty(), "{:?}", seen.lock().unwrap());
}

/// A 401 used to say "the vercel source has no webhook secret configured": an unauthenticated
/// caller could map which sources a bridge serves. Now an unconfigured source refuses in the words
/// a configured one uses for a wrong credential.
#[tokio::test]
async fn a_refusal_does_not_tell_which_sources_are_configured() {
    use gitlab_deploy_bridge::secrets::StaticSecrets;
    use secrecy::SecretString;
    let gitlab = GitLabStub::start("t").await;
    let without_vercel = StaticSecrets::new(
        [("gitlab_token", "t"), ("generic_webhook_secret", GENERIC_SECRET)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), SecretString::from(v.to_string())))
            .collect(),
    );
    let unconfigured = Bridge::start(config(&gitlab.url), Arc::new(without_vercel)).await;
    let configured = Bridge::start(config(&gitlab.url), static_secrets("t")).await;
    let body = r#"{"type":"deployment.created","payload":{}}"#;
    for headers in [vec![], vec![("x-vercel-signature", "00".repeat(20))]] {
        let (s1, r1) = unconfigured.post_with("/hooks/vercel?project=42", &headers, body).await;
        let (s2, r2) = configured.post_with("/hooks/vercel?project=42", &headers, body).await;
        assert_eq!((s1, s2), (401, 401));
        assert_eq!(r1, r2, "the two refusals must read the same");
    }
    assert!(gitlab.requests().is_empty());
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

/// `/hooks/x%0A<forged line>` put a raw newline into the error, which a text log prints as a
/// line of its own. The name is escaped now, in the answer and in the log.
#[tokio::test]
async fn an_unknown_source_name_cannot_forge_a_log_line() {
    let (gitlab, bridge) = setup().await;
    let (s, r) =
        bridge.post("/hooks/x%0A2026-11-29T00:00:00Z%20INFO%20webhook%20handled", Some(GENERIC_SECRET), "{}").await;
    assert_eq!(s, 404, "{r}");
    let error = r["error"].as_str().unwrap();
    assert!(!error.contains('\n') && error.contains("x\\n2026"), "{error}");
    for line in logs().lines().filter(|l| l.contains("2026-11-29T00:00:00Z")) {
        let v: Value = serde_json::from_str(line).unwrap();
        for field in ["source", "error"] {
            assert!(!v[field].as_str().unwrap_or_default().contains('\n'), "{line}");
        }
    }
    assert!(gitlab.requests().is_empty());
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

/// Sends a request head (and the first `sent` bytes of its body) and waits at most 8 s for the
/// status line, without ever sending the rest.
async fn partial_request(bridge: &Bridge, head: &str, sent: &[u8]) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(bridge.url.trim_start_matches("http://")).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(sent).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(8), stream.read(&mut buf)).await.ok()?.ok()?;
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    text.split_whitespace().nth(1).and_then(|s| s.parse().ok())
}

/// A caller without the source's credential header used to make the bridge buffer up to 1 MiB
/// before it was refused (150 half-sent bodies: 169 MB of RSS). Now it is refused on its headers.
#[tokio::test]
async fn an_unauthenticated_body_is_never_waited_for() {
    let (gitlab, bridge) = setup().await;
    for path in
        ["/hooks/flux?project=42", "/hooks/generic?project=42", "/hooks/nosuchtool", "/api/v4/projects/42/deployments"]
    {
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1048576\r\n\r\n"
        );
        let status = partial_request(&bridge, &head, b"{").await;
        let expected = if path.contains("nosuchtool") { 404 } else { 401 };
        assert_eq!(status, Some(expected), "{path}: answered before the body arrived");
    }
    assert!(gitlab.requests().is_empty());
}

/// An authenticated-looking request whose body trickles in is cut off with 408.
#[tokio::test]
async fn a_body_that_does_not_arrive_is_cut_off() {
    let gitlab = GitLabStub::start("t").await;
    let mut cfg = config(&gitlab.url);
    cfg.deadlines.body = std::time::Duration::from_secs(1);
    let bridge = Bridge::start(cfg, static_secrets("t")).await;
    let head = format!(
        "POST /hooks/generic?project=42 HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {GENERIC_SECRET}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n"
    );
    assert_eq!(partial_request(&bridge, &head, b"{\"environment\":").await, Some(408));
    assert!(gitlab.requests().is_empty());
}

/// `serve` with small limits (1 s header timeout, 8 connections), in-process on a free port.
async fn small_server(gitlab: &GitLabStub) -> (String, tokio::sync::oneshot::Sender<()>) {
    let router = gitlab_deploy_bridge::app::build(config(&gitlab.url), static_secrets("t")).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(gitlab_deploy_bridge::app::serve_on(listener, router, std::time::Duration::from_secs(1), 8, async {
        let _ = stopped.await;
    }));
    (addr, stop)
}

/// Whether the server closes the connection (read returns 0 or fails) within `within`.
async fn closed_within(stream: &mut tokio::net::TcpStream, within: std::time::Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(within, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue, // a 408 or similar before closing
        }
    }
}

async fn healthz(addr: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.ok()?;
    let mut out = String::new();
    tokio::time::timeout(std::time::Duration::from_secs(3), s.read_to_string(&mut out)).await.ok()?.ok()?;
    out.split_whitespace().nth(1).and_then(|c| c.parse().ok())
}

/// Slow headers used to hold a connection for 40 s and more: they now get the header timeout.
#[tokio::test]
async fn serve_closes_a_connection_whose_headers_trickle() {
    use tokio::io::AsyncWriteExt;
    let gitlab = GitLabStub::start("t").await;
    let (addr, _stop) = small_server(&gitlab).await;
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"POST /hooks/generic?project=42 HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    assert!(closed_within(&mut s, std::time::Duration::from_secs(5)).await, "the connection stayed open");
}

/// Idle connections up to the cap (300 idle ones used to starve `/healthz`): a connection beyond
/// it is refused at once, and once the idle ones have timed out the server answers again.
#[tokio::test]
async fn serve_caps_connections_and_drops_idle_ones() {
    let gitlab = GitLabStub::start("t").await;
    let (addr, _stop) = small_server(&gitlab).await;
    assert_eq!(healthz(&addr).await, Some(200));
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut extra = tokio::net::TcpStream::connect(&addr).await.unwrap();
    assert!(closed_within(&mut extra, std::time::Duration::from_secs(1)).await, "a connection over the cap was kept");
    for s in idle.iter_mut() {
        assert!(
            closed_within(s, std::time::Duration::from_secs(5)).await,
            "an idle connection was kept past the header timeout"
        );
    }
    assert_eq!(healthz(&addr).await, Some(200));
}

/// The bridge with its replay defence on (the other tests turn it off for their fixed payloads).
async fn defended(gitlab: &GitLabStub, dry_run: bool) -> Bridge {
    let mut cfg = gitlab_deploy_bridge::config::Config { replay_windows: Default::default(), ..config(&gitlab.url) };
    cfg.dry_run = dry_run;
    Bridge::start(cfg, static_secrets(&gitlab.token())).await
}

fn flux_event(at: time::OffsetDateTime, reason: &str) -> String {
    json!({"involvedObject": {"kind": "Kustomization", "namespace": "flux-system", "name": "web"},
           "severity": "info", "timestamp": at.format(&time::format_description::well_known::Rfc3339).unwrap(),
           "message": "Reconciliation finished", "reason": reason,
           "metadata": {"revision": format!("main@sha1:{SHA_A}"), "environment": "production"},
           "reportingController": "kustomize-controller"})
    .to_string()
}

async fn flux(bridge: &Bridge, body: &str) -> (u16, Value) {
    bridge.post_with("/hooks/flux?project=42", &[("x-signature", sign::signature("flux", FLUX_SECRET, body))], body).await
}

/// A Flux event signed in 2001 (or an hour from now) was accepted. Each is now answered 200
/// (a 4xx would make the tool retry) and changes nothing.
#[tokio::test]
async fn signed_times_outside_the_window_change_nothing() {
    let gitlab = GitLabStub::start(&fastrand_token()).await;
    gitlab.add_commit(SHA_A);
    let bridge = defended(&gitlab, false).await;
    let now = time::OffsetDateTime::now_utc();
    for (at, word) in
        [(now - time::Duration::days(365 * 25), "replay window"), (now + time::Duration::hours(1), "future")]
    {
        let (s, r) = flux(&bridge, &flux_event(at, "ReconciliationSucceeded")).await;
        assert_eq!((s, r["action"].as_str()), (200, Some("ignored")), "{r}");
        assert!(r["reason"].as_str().unwrap().contains(word), "{r}");
    }
    assert!(gitlab.requests().is_empty());
    let (s, r) = flux(&bridge, &flux_event(now, "ReconciliationSucceeded")).await;
    assert_eq!((s, r["action"].as_str()), (200, Some("created")), "a fresh one is handled: {r}");
}

/// Replaying captured deliveries (a success and a failure, alternately) reached GitLab each time
/// and, against the landed bridge, added records. A delivery is now handled once: its replays are
/// answered `ignored` without a single GitLab call.
#[tokio::test]
async fn replayed_deliveries_are_handled_once() {
    let gitlab = GitLabStub::start(&fastrand_token()).await;
    gitlab.add_commit(SHA_A);
    let bridge = defended(&gitlab, false).await;
    let now_ms = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    let vercel_event = |id: &str, kind: &str, at: i64| {
        json!({"id": id, "type": kind, "createdAt": at,
               "payload": {"target": "production", "deployment": {"id": "dpl_1", "url": "app.vercel.app",
                           "meta": {"githubCommitSha": SHA_A, "githubCommitRef": "main"}}}})
        .to_string()
    };
    let success = vercel_event("uev_success", "deployment.succeeded", now_ms - 60_000);
    let failure = vercel_event("uev_failure", "deployment.error", now_ms);
    let send = |body: String| {
        let bridge = &bridge;
        async move {
            bridge
                .post_with(
                    "/hooks/vercel?project=42",
                    &[("x-vercel-signature", sign::signature("vercel", VERCEL_SECRET, &body))],
                    &body,
                )
                .await
        }
    };
    for body in [&success, &failure] {
        let (s, r) = send(body.clone()).await;
        assert_eq!((s, r["action"].as_str()), (200, Some("created")), "{r}");
    }
    let calls = gitlab.request_count();
    for body in [&success, &failure, &success, &failure] {
        let (s, r) = send(body.clone()).await;
        assert_eq!((s, r["action"].as_str()), (200, Some("ignored")), "{r}");
    }
    assert_eq!(gitlab.request_count(), calls, "a replay reached GitLab");
    assert_eq!(gitlab.deployments().len(), 2);
}

/// Only a handled delivery is remembered: the tool's retry after a 5xx goes through.
#[tokio::test]
async fn a_retry_after_a_failure_is_not_taken_for_a_replay() {
    let gitlab = GitLabStub::start(&fastrand_token()).await;
    gitlab.add_commit(SHA_A);
    let bridge = defended(&gitlab, false).await;
    let body = flux_event(time::OffsetDateTime::now_utc(), "Progressing");
    for _ in 0..40 {
        gitlab.push_fault(Fault::Json(503, json!({"message": "503 Service Unavailable"})));
    }
    let (s, r) = flux(&bridge, &body).await;
    assert!(s >= 500, "{s} {r}");
    gitlab.clear_faults();
    let (s, r) = flux(&bridge, &body).await;
    assert_eq!((s, r["action"].as_str()), (200, Some("created")), "{r}");
    let (s, r) = flux(&bridge, &body).await;
    assert_eq!((s, r["action"].as_str()), (200, Some("ignored")), "{r}");
}

/// A dry run plans what a live run would do, and says when a live run would refuse the delivery.
#[tokio::test]
async fn a_dry_run_plans_an_old_delivery_and_says_a_live_run_would_not() {
    let gitlab = GitLabStub::start(&fastrand_token()).await;
    let bridge = defended(&gitlab, true).await;
    let old = time::OffsetDateTime::now_utc() - time::Duration::days(30);
    let (s, r) = flux(&bridge, &flux_event(old, "ReconciliationSucceeded")).await;
    assert_eq!((s, r["action"].as_str()), (200, Some("created")), "{r}");
    assert!(r["replay"].as_str().unwrap().contains("a live run would change nothing"), "{r}");
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
