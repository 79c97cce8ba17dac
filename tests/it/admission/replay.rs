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
