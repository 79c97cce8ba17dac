//! The replay defence (issue 10): a signed delivery whose time is outside the window, or which
//! was already handled, is answered 200 and changes nothing; a tool's retry after a failure is
//! not a replay; a dry run plans an old delivery and says a live run would not.

use crate::support::*;
use serde_json::{Value, json};

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
    bridge
        .post_with("/hooks/flux?project=42", &[("x-signature", sign::signature("flux", FLUX_SECRET, body))], body)
        .await
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

/// The bridge with its replay defence on, on `routes` (each route's secret `secret-<route>`).
async fn routed(gitlab: &GitLabStub, routes: &str, names: &[&str]) -> Bridge {
    let keys: Vec<(String, String)> =
        names.iter().map(|n| (format!("route_{}_secret", n.replace('-', "_")), format!("secret-{n}"))).collect();
    let extra: Vec<(&str, &str)> = keys.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let cfg = gitlab_deploy_bridge::config::Config {
        replay_windows: Default::default(),
        unbound_hooks: false,
        routes: gitlab_deploy_bridge::routes::Routes::parse(routes).unwrap(),
        ..config(&gitlab.url)
    };
    Bridge::start(cfg, static_secrets_with(&gitlab.token(), &extra)).await
}

fn heroku_event(resource: &str, delivery: &str) -> String {
    let now = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap();
    json!({"id": format!("ev-{delivery}"), "action": "update", "resource": resource, "created_at": now, "updated_at": now,
           "data": {"id": "build-1", "status": "pending", "app": {"id": "3c4d", "name": "heroku-app"},
                    "source_blob": {"version": SHA_A}},
           "webhook_metadata": {"delivery": {"id": delivery}, "attempt": {"id": "a-1"}, "event": {"id": "e-1"}, "webhook": {"id": "w-1"}}})
    .to_string()
}

/// Issue 21: 10,050 signed, ignored events on one route cleared the replay memory shared by
/// all routes, and a captured Heroku delivery then reached the lifecycle again. Each route has
/// its own memory now (and what was ignored is not remembered at all).
#[tokio::test]
async fn another_routes_traffic_never_flushes_a_routes_replay_memory() {
    let gitlab = GitLabStub::start(&fastrand_token()).await;
    gitlab.add_commit(SHA_A);
    let routes = r#"{"victim": {"source": "heroku", "projects": ["42"], "environments": ["heroku-app"]},
                     "noisy": {"source": "heroku", "projects": ["77"]}}"#;
    let bridge = std::sync::Arc::new(routed(&gitlab, routes, &["victim", "noisy"]).await);
    let captured = heroku_event("build", "captured");
    let send = |bridge: std::sync::Arc<Bridge>, route: &'static str, body: String| async move {
        let signature = sign::signature("heroku", &format!("secret-{route}"), &body);
        bridge.post_with(&format!("/hooks/heroku/{route}"), &[("heroku-webhook-hmac-sha256", signature)], &body).await
    };
    let (s, r) = send(bridge.clone(), "victim", captured.clone()).await;
    assert_eq!((s, r["action"].as_str()), (200, Some("created")), "{r}");
    let mut noise = tokio::task::JoinSet::new();
    for chunk in 0..50 {
        let bridge = bridge.clone();
        noise.spawn(async move {
            for i in 0..201 {
                let (s, r) = send(bridge.clone(), "noisy", heroku_event("dyno", &format!("n-{chunk}-{i}"))).await;
                assert_eq!((s, r["action"].as_str()), (200, Some("ignored")), "{r}");
            }
        });
    }
    while let Some(done) = noise.join_next().await {
        done.unwrap();
    }
    let calls = gitlab.request_count();
    let (s, r) = send(bridge.clone(), "victim", captured).await;
    assert_eq!((s, r["action"].as_str()), (200, Some("ignored")), "{r}");
    assert!(r["reason"].as_str().unwrap().contains("already handled"), "{r}");
    assert_eq!(gitlab.request_count(), calls, "the replay reached GitLab");
}

/// Issue 21: the first copy of a captured signed delivery decided through unsigned inputs and
/// burned the real one: a Netlify body sent with `X-Netlify-Event: deploy_locked` was ignored
/// and remembered, so the real delivery was "already handled"; a Vercel copy sent with
/// `?environment=preview/junk` on a route allowing `preview/*` likewise. A copy aimed elsewhere
/// is another delivery now, and an ignored one is not remembered.
#[tokio::test]
async fn a_copy_aimed_elsewhere_never_burns_the_real_delivery() {
    let gitlab = GitLabStub::start(&fastrand_token()).await;
    gitlab.add_commit(SHA_A);
    let routes = r#"{"docs": {"source": "netlify", "projects": ["77"]},
                     "shop": {"source": "vercel", "projects": ["42"], "environments": ["production", "preview/*"]}}"#;
    let bridge = routed(&gitlab, routes, &["docs", "shop"]).await;

    let netlify =
        json!({"id": "65f0a1b2", "state": "building", "commit_ref": SHA_A, "branch": "main", "context": "production",
                         "ssl_url": "https://docs.example.com"})
        .to_string();
    let netlify_send = |event: &'static str| {
        let headers = [
            ("X-Webhook-Signature", sign::signature("netlify", "secret-docs", &netlify)),
            ("X-Netlify-Event", event.to_string()),
        ];
        let (bridge, body) = (&bridge, netlify.clone());
        async move { bridge.post_with("/hooks/netlify/docs", &headers, &body).await }
    };
    let (s, r) = netlify_send("deploy_locked").await;
    assert_eq!((s, r["action"].as_str()), (200, Some("ignored")), "the copy: {r}");
    let (s, r) = netlify_send("deploy_building").await;
    assert_eq!((s, r["action"].as_str()), (200, Some("created")), "the real delivery: {r}");

    let now_ms = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    let vercel = json!({"id": "uev_1", "type": "deployment.created", "createdAt": now_ms,
                        "payload": {"target": "production", "deployment": {"id": "dpl_1", "url": "shop.vercel.app",
                                    "meta": {"githubCommitSha": SHA_A, "githubCommitRef": "main"}}}})
    .to_string();
    let headers = [("x-vercel-signature", sign::signature("vercel", "secret-shop", &vercel))];
    let (s, r) = bridge.post_with("/hooks/vercel/shop?environment=preview/junk", &headers, &vercel).await;
    assert_eq!((s, r["deployment"]["environment"].as_str()), (200, Some("preview/junk")), "the copy: {r}");
    let (s, r) = bridge.post_with("/hooks/vercel/shop", &headers, &vercel).await;
    assert_eq!(
        (s, r["action"].as_str(), r["deployment"]["environment"].as_str()),
        (200, Some("created"), Some("production")),
        "the real delivery: {r}"
    );
    // The real delivery itself is still handled once.
    let (s, r) = bridge.post_with("/hooks/vercel/shop", &headers, &vercel).await;
    assert_eq!((s, r["action"].as_str()), (200, Some("ignored")), "{r}");
}
