//! What a delivery cannot make the bridge do, whatever its query, path or payload says (issue
//! 10's findings, each reproduced as it was reported): reach GitLab with a `.` or `..` project,
//! carry a tool's API token outside its path segment (or to the API at all in a dry run), have
//! an unauthenticated or trickling body waited for, or hold `serve`'s connections with slow
//! headers or idle ones beyond its cap.

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
    // Every connection of these tests comes from 127.0.0.1: its share is the whole server.
    let settings = gitlab_deploy_bridge::config::ServeSettings {
        header_timeout: std::time::Duration::from_secs(1),
        max_connections: 8,
        max_connections_per_peer: 8,
    };
    tokio::spawn(gitlab_deploy_bridge::server::serve_on(listener, router, settings, async {
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
