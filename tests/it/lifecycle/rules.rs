//! The rollout rules, against the GitLab stand-in: a rollout is one deployment from `running` to
//! its final status; duplicates, late and stale deliveries change nothing; two shas are two
//! deployments, sixteen concurrent duplicates one; a project is found by its path; rollbacks,
//! redeploys, retries and racing rollouts; and what each event costs in GitLab calls.

use crate::support::*;
use serde_json::{Value, json};
use std::sync::Arc;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A `generic` webhook for project 42 carrying the tool's own time of the event.
async fn at(bridge: &Bridge, env: &str, sha: &str, status: &str, time: OffsetDateTime) -> (u16, Value) {
    let body = json!({"environment": env, "sha": sha, "ref": "main", "status": status, "timestamp": time.format(&Rfc3339).unwrap()});
    bridge.post("/hooks/generic?project=42", Some(GENERIC_SECRET), body.to_string()).await
}

fn action(r: &(u16, Value)) -> (u16, &str) {
    (r.0, r.1["action"].as_str().unwrap_or_default())
}

/// (sha, status) of the environment's deployments in id order.
fn shown(gitlab: &GitLabStub, env: &str) -> Vec<(String, String)> {
    gitlab.deployments_in(env).into_iter().map(|d| (d.sha, d.status)).collect()
}

/// The sha GitLab shows as deployed: the environment's newest success by `finished_at`.
fn live(gitlab: &GitLabStub, env: &str) -> Option<String> {
    gitlab
        .deployments_in(env)
        .into_iter()
        .filter(|d| d.status == "success")
        .max_by_key(|d| d.finished_seq)
        .map(|d| d.sha)
}

fn pair(sha: &str, status: &str) -> (String, String) {
    (sha.to_string(), status.to_string())
}

#[tokio::test]
async fn running_then_success_is_one_deployment() {
    let (gitlab, bridge) = setup().await;
    let (s, r) = bridge.generic("production", SHA_A, "running").await;
    assert_eq!((s, r["action"].as_str()), (200, Some("created")), "{r}");
    let (s, r2) = bridge.generic("production", SHA_A, "success").await;
    assert_eq!((s, r2["action"].as_str()), (200, Some("updated")), "{r2}");
    assert_eq!(r2["deployment"]["id"], r["deployment"]["id"]);
    assert_eq!(r2["deployment"]["status"], "success");
    let deps = gitlab.deployments();
    assert_eq!(deps.len(), 1);
    assert_eq!(deps[0].history, vec!["running", "success"]);
    assert_eq!((deps[0].environment.as_str(), deps[0].git_ref.as_str(), deps[0].tag), ("production", "main", false));
}

#[tokio::test]
async fn running_then_failed_and_then_canceled_elsewhere() {
    let (gitlab, bridge) = setup().await;
    bridge.generic("production", SHA_A, "running").await;
    let (s, r) = bridge.generic("production", SHA_A, "failed").await;
    assert_eq!((s, r["action"].as_str()), (200, Some("updated")), "{r}");
    bridge.generic("staging", SHA_A, "running").await;
    let (_, r) = bridge.generic("staging", SHA_A, "canceled").await;
    assert_eq!(r["action"], "updated");
    let deps = gitlab.deployments();
    assert_eq!(deps.len(), 2);
    assert_eq!(deps[0].history, vec!["running", "failed"]);
    assert_eq!(deps[1].history, vec!["running", "canceled"]);
}

#[tokio::test]
async fn duplicates_of_every_status_change_nothing() {
    let (gitlab, bridge) = setup().await;
    for (env, first, then) in [
        ("e1", "running", "running"),
        ("e2", "success", "success"),
        ("e3", "failed", "failed"),
        ("e4", "canceled", "canceled"),
    ] {
        let (s, r) = bridge.generic(env, SHA_A, first).await;
        assert_eq!((s, r["action"].as_str()), (200, Some("created")), "{env} {r}");
        let (s, r2) = bridge.generic(env, SHA_A, then).await;
        assert_eq!((s, r2["action"].as_str()), (200, Some("unchanged")), "{env} {r2}");
        assert_eq!(r2["deployment"]["id"], r["deployment"]["id"]);
    }
    // running, then success twice: one update, then unchanged (never GitLab's "cannot transition").
    bridge.generic("e5", SHA_A, "running").await;
    bridge.generic("e5", SHA_A, "success").await;
    let (s, r) = bridge.generic("e5", SHA_A, "success").await;
    assert_eq!((s, r["action"].as_str()), (200, Some("unchanged")), "{r}");
    assert_eq!(gitlab.deployments().len(), 5);
    assert!(gitlab.deployments().iter().all(|d| d.history.len() <= 2));
}

#[tokio::test]
async fn success_before_running_and_late_running_change_nothing_more() {
    let (gitlab, bridge) = setup().await;
    let (_, r) = bridge.generic("production", SHA_A, "success").await;
    assert_eq!(r["action"], "created", "{r}");
    let (_, r) = bridge.generic("production", SHA_A, "running").await;
    assert_eq!(r["action"], "unchanged", "{r}");
    assert_eq!(r["deployment"]["status"], "success");
    let deps = gitlab.deployments();
    assert_eq!(deps.len(), 1);
    assert_eq!(deps[0].history, vec!["success"]);
}

#[tokio::test]
async fn two_shas_are_two_deployments() {
    let (gitlab, bridge) = setup().await;
    for sha in [SHA_A, SHA_B] {
        bridge.generic("production", sha, "running").await;
    }
    bridge.generic("production", SHA_A, "success").await;
    bridge.generic("production", SHA_B, "failed").await;
    let deps = gitlab.deployments();
    assert_eq!(deps.len(), 2);
    assert_eq!((deps[0].sha.as_str(), deps[0].status.as_str()), (SHA_A, "success"));
    assert_eq!((deps[1].sha.as_str(), deps[1].status.as_str()), (SHA_B, "failed"));
}

#[tokio::test]
async fn a_running_deployment_older_than_a_page_is_still_found() {
    let (gitlab, bridge) = setup().await;
    let id = gitlab.seed("42", "production", SHA_A, "running");
    for _ in 0..120 {
        gitlab.seed("42", "production", SHA_B, "success");
    }
    let (_, r) = bridge.generic("production", SHA_A, "success").await;
    assert_eq!(r["action"], "updated", "{r}");
    assert_eq!(r["deployment"]["id"], id);
}

#[tokio::test]
async fn sixteen_concurrent_duplicates_make_one_deployment() {
    let (gitlab, bridge) = setup().await;
    let bridge = std::sync::Arc::new(bridge);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let b = bridge.clone();
        tasks.push(tokio::spawn(async move { b.generic("production", SHA_A, "running").await }));
    }
    let mut created = 0;
    for t in tasks {
        let (s, r) = t.await.unwrap();
        assert_eq!(s, 200, "{r}");
        created += (r["action"] == "created") as usize;
    }
    assert_eq!(created, 1);
    assert_eq!(gitlab.deployments().len(), 1);
}

#[tokio::test]
async fn project_by_full_path_is_encoded() {
    let (gitlab, bridge) = setup().await;
    let body = json!({"environment": "production", "sha": SHA_A, "ref": "main", "status": "running"});
    let (s, r) = bridge.post("/hooks/generic?project=group/sub/app", Some(GENERIC_SECRET), body.to_string()).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(gitlab.deployments()[0].project, "77");
    // The path is looked up once; every further call uses the numeric id.
    let uris: Vec<String> = gitlab.requests().into_iter().map(|r| r.uri).collect();
    assert_eq!(uris[0], "/api/v4/projects/group%2Fsub%2Fapp", "{uris:?}");
    assert!(uris[1..].iter().all(|u| u.starts_with("/api/v4/projects/77/")), "{uris:?}");
    let (s, _) = bridge.post("/hooks/generic?project=group/sub/app", Some(GENERIC_SECRET), body.to_string()).await;
    assert_eq!(s, 200);
    assert!(
        gitlab.requests().into_iter().skip(uris.len()).all(|r| r.uri.starts_with("/api/v4/projects/77/")),
        "looked up once per container"
    );
}

#[tokio::test]
async fn a_rollback_is_a_new_deployment_and_becomes_what_gitlab_shows() {
    let (gitlab, bridge) = setup().await;
    for sha in [SHA_A, SHA_B, SHA_A] {
        assert_eq!(action(&bridge.generic("production", sha, "running").await), (200, "created"));
        assert_eq!(action(&bridge.generic("production", sha, "success").await), (200, "updated"));
    }
    assert_eq!(
        shown(&gitlab, "production"),
        vec![pair(SHA_A, "success"), pair(SHA_B, "success"), pair(SHA_A, "success")]
    );
    assert_eq!(live(&gitlab, "production").as_deref(), Some(SHA_A));
    // A tool that only says "it worked" (no running event) rolls back just the same.
    for sha in [SHA_A, SHA_B, SHA_A] {
        assert_eq!(action(&bridge.generic("staging", sha, "success").await), (200, "created"));
    }
    assert_eq!(shown(&gitlab, "staging"), vec![pair(SHA_A, "success"), pair(SHA_B, "success"), pair(SHA_A, "success")]);
    assert_eq!(live(&gitlab, "staging").as_deref(), Some(SHA_A));
}

#[tokio::test]
async fn redeploying_the_live_sha_changes_nothing_and_a_retry_after_a_failure_is_recorded() {
    let (gitlab, bridge) = setup().await;
    bridge.generic("production", SHA_A, "running").await;
    bridge.generic("production", SHA_A, "success").await;
    // A re-sync of what already runs.
    assert_eq!(action(&bridge.generic("production", SHA_A, "running").await), (200, "unchanged"));
    assert_eq!(action(&bridge.generic("production", SHA_A, "success").await), (200, "unchanged"));
    assert_eq!(shown(&gitlab, "production"), vec![pair(SHA_A, "success")]);
    // B fails, then its retry succeeds: two attempts, two deployments.
    bridge.generic("production", SHA_B, "running").await;
    assert_eq!(action(&bridge.generic("production", SHA_B, "failed").await), (200, "updated"));
    assert_eq!(action(&bridge.generic("production", SHA_B, "running").await), (200, "created"));
    assert_eq!(action(&bridge.generic("production", SHA_B, "success").await), (200, "updated"));
    assert_eq!(
        shown(&gitlab, "production"),
        vec![pair(SHA_A, "success"), pair(SHA_B, "failed"), pair(SHA_B, "success")]
    );
    // A duplicate running of a rollout still in flight, after another sha started, is the same rollout.
    bridge.generic("staging", SHA_A, "running").await;
    bridge.generic("staging", SHA_B, "running").await;
    assert_eq!(action(&bridge.generic("staging", SHA_A, "running").await), (200, "unchanged"));
    assert_eq!(action(&bridge.generic("staging", SHA_A, "success").await), (200, "updated"));
    assert_eq!(action(&bridge.generic("staging", SHA_B, "canceled").await), (200, "updated"));
    assert_eq!(shown(&gitlab, "staging"), vec![pair(SHA_A, "success"), pair(SHA_B, "canceled")]);
}

#[tokio::test]
async fn a_stale_delivery_changes_nothing_and_says_so() {
    let (gitlab, bridge) = setup().await;
    let hour_ago = OffsetDateTime::now_utc() - time::Duration::hours(1);
    at(&bridge, "production", SHA_A, "running", hour_ago).await;
    at(&bridge, "production", SHA_A, "success", hour_ago + time::Duration::minutes(2)).await;
    let now = OffsetDateTime::now_utc();
    at(&bridge, "production", SHA_B, "running", now).await;
    at(&bridge, "production", SHA_B, "success", now).await;
    // Redeliveries of A's rollout, an hour late: by this container's memory of B's time...
    for status in ["success", "running", "failed"] {
        let (s, r) = at(&bridge, "production", SHA_A, status, hour_ago).await;
        assert_eq!((s, r["action"].as_str()), (200, Some("stale")), "{status}: {r}");
        assert!(r["reason"].as_str().unwrap().contains("older than"), "{r}");
        assert_eq!(r["deployment"]["sha"], SHA_A);
    }
    // ...and by GitLab's clock, in a container that has not seen B (another Lambda instance).
    let cold = Bridge::start(config(&gitlab.url), bridge_secrets(&gitlab)).await;
    let (s, r) = at(&cold, "production", SHA_A, "success", hour_ago).await;
    assert_eq!((s, r["action"].as_str()), (200, Some("stale")), "{r}");
    assert_eq!(shown(&gitlab, "production"), vec![pair(SHA_A, "success"), pair(SHA_B, "success")]);
    assert_eq!(live(&gitlab, "production").as_deref(), Some(SHA_B));
    // Within the clock skew (30 s by default) against GitLab's clock, the event is applied.
    let (s, r) =
        at(&cold, "production", SHA_A, "success", OffsetDateTime::now_utc() - time::Duration::seconds(5)).await;
    assert_eq!((s, r["action"].as_str()), (200, Some("created")), "{r}");
    // Without a timestamp a late redelivery cannot be told from a rollback: it is recorded.
    let (s, r) = bridge.generic("production", SHA_B, "success").await;
    assert_eq!((s, r["action"].as_str()), (200, Some("created")), "{r}");
    assert_eq!(live(&gitlab, "production").as_deref(), Some(SHA_B));
}

/// The token of the stand-in behind `setup()`'s bridge, for a second bridge (another container).
fn bridge_secrets(gitlab: &GitLabStub) -> Arc<dyn gitlab_deploy_bridge::secrets::SecretProvider> {
    static_secrets(&gitlab.token())
}

#[tokio::test]
async fn a_late_running_after_its_rollout_failed_is_not_a_retry() {
    let (gitlab, bridge) = setup().await;
    let started = OffsetDateTime::now_utc() - time::Duration::minutes(3);
    // The failure arrives first; the start of the same rollout arrives after it.
    at(&bridge, "production", SHA_A, "failed", started + time::Duration::minutes(2)).await;
    let (s, r) = at(&bridge, "production", SHA_A, "running", started).await;
    assert_eq!((s, r["action"].as_str()), (200, Some("stale")), "{r}");
    assert_eq!(shown(&gitlab, "production"), vec![pair(SHA_A, "failed")]);
    // A real retry, later than the failure, is a new deployment.
    let (s, r) = at(&bridge, "production", SHA_A, "running", OffsetDateTime::now_utc()).await;
    assert_eq!((s, r["action"].as_str()), (200, Some("created")), "{r}");
}

#[tokio::test]
async fn two_rollouts_racing_into_one_environment_are_each_one_deployment() {
    let (gitlab, bridge) = setup().await;
    bridge.generic("production", SHA_A, "running").await;
    bridge.generic("production", SHA_A, "success").await;
    let bridge = Arc::new(bridge);
    // B rolls out while A is rolled back to: both start at once, each delivered three times.
    let mut tasks = Vec::new();
    for sha in [SHA_B, SHA_A, SHA_B, SHA_A, SHA_B, SHA_A] {
        let b = bridge.clone();
        tasks.push(tokio::spawn(async move { b.generic("production", sha, "running").await }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().0, 200);
    }
    let running: Vec<_> = shown(&gitlab, "production").into_iter().filter(|(_, s)| s == "running").collect();
    assert_eq!(running.len(), 2, "one running deployment per rollout: {:?}", shown(&gitlab, "production"));
    let mut tasks = Vec::new();
    for sha in [SHA_B, SHA_A] {
        let b = bridge.clone();
        tasks.push(tokio::spawn(async move { b.generic("production", sha, "success").await }));
    }
    for t in tasks {
        assert_eq!(action(&t.await.unwrap()), (200, "updated"));
    }
    let all = shown(&gitlab, "production");
    assert_eq!(all.len(), 3, "{all:?}");
    assert!(all.iter().all(|(_, s)| s == "success"), "{all:?}");
}

#[tokio::test]
async fn the_id_and_the_path_of_one_project_share_one_lock() {
    let (gitlab, bridge) = setup().await;
    let bridge = Arc::new(bridge);
    for round in 0..5 {
        let env = format!("race-{round}");
        let mut tasks = Vec::new();
        for i in 0..8 {
            let (b, env) = (bridge.clone(), env.clone());
            let project = if i % 2 == 0 { "42" } else { "GROUP/app" };
            tasks.push(tokio::spawn(async move {
                let body = json!({"environment": env, "sha": SHA_A, "ref": "main", "status": "running"});
                b.post(&format!("/hooks/generic?project={project}"), Some(GENERIC_SECRET), body.to_string()).await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().0, 200);
        }
        assert_eq!(shown(&gitlab, &env).len(), 1, "round {round}: {:?}", shown(&gitlab, &env));
    }
}

#[tokio::test]
async fn cost_is_one_read_and_one_write_whatever_the_history() {
    let (gitlab, bridge) = setup().await;
    for i in 0..1000u32 {
        gitlab.seed("42", "production", &format!("{i:040x}"), "success");
    }
    gitlab.add_commits((0..1000u32).map(|i| format!("{i:040x}")));
    let calls = |before: usize| gitlab.request_count() - before;
    // A new rollout: the newest few deployments, then the create.
    let n = gitlab.request_count();
    assert_eq!(action(&bridge.generic("production", SHA_A, "running").await), (200, "created"));
    assert_eq!(calls(n), 2);
    // Its end, at the container that created it: one call.
    let n = gitlab.request_count();
    assert_eq!(action(&bridge.generic("production", SHA_A, "success").await), (200, "updated"));
    assert_eq!(calls(n), 1);
    // A redelivery of it: one read.
    let n = gitlab.request_count();
    assert_eq!(action(&bridge.generic("production", SHA_A, "success").await), (200, "unchanged"));
    assert_eq!(calls(n), 1);
    // A rollback reported only as "it worked", to a sha deployed 996 deployments ago: it could
    // still have a running deployment older than the newest few, so one more read looks for it.
    let n = gitlab.request_count();
    assert_eq!(action(&bridge.generic("production", &format!("{:040x}", 3), "success").await), (200, "created"));
    assert_eq!(calls(n), 3);
    // A terminal event whose running deployment another container created: one read, one write.
    let other = Bridge::start(config(&gitlab.url), bridge_secrets(&gitlab)).await;
    bridge.generic("production", SHA_B, "running").await;
    let n = gitlab.request_count();
    assert_eq!(action(&other.generic("production", SHA_B, "failed").await), (200, "updated"));
    assert_eq!(calls(n), 2);
}

#[tokio::test]
async fn a_remembered_deployment_that_changed_elsewhere_falls_back_to_the_look_up() {
    let (gitlab, bridge) = setup().await;
    let other = Bridge::start(config(&gitlab.url), bridge_secrets(&gitlab)).await;
    bridge.generic("production", SHA_A, "running").await;
    // Another container finishes the rollout; this one still remembers it as running.
    assert_eq!(action(&other.generic("production", SHA_A, "success").await), (200, "updated"));
    let (s, r) = bridge.generic("production", SHA_A, "success").await;
    assert_eq!((s, r["action"].as_str()), (200, Some("unchanged")), "{r}");
    assert_eq!(shown(&gitlab, "production"), vec![pair(SHA_A, "success")]);
    // The remembered deployment is gone (404): the look-up decides, and records the event.
    bridge.generic("staging", SHA_B, "running").await;
    gitlab.delete_all("staging");
    let (s, r) = bridge.generic("staging", SHA_B, "success").await;
    assert_eq!((s, r["action"].as_str()), (200, Some("created")), "{r}");
    assert_eq!(shown(&gitlab, "staging"), vec![pair(SHA_B, "success")]);
}

// Found by the model test (tests/it/lifecycle/model.rs), kept as examples.

#[tokio::test]
async fn the_same_failure_again_from_a_tool_that_reports_only_ends_is_one_deployment() {
    // Flux repeats ReconciliationFailed at every retry of a broken revision.
    let (gitlab, bridge) = setup().await;
    assert_eq!(action(&bridge.generic("production", SHA_A, "failed").await), (200, "created"));
    assert_eq!(action(&bridge.generic("production", SHA_A, "failed").await), (200, "unchanged"));
    assert_eq!(shown(&gitlab, "production"), vec![pair(SHA_A, "failed")]);
}

#[tokio::test]
async fn a_resync_of_what_runs_after_a_failed_attempt_leaves_nothing_running() {
    let (gitlab, bridge) = setup().await;
    let t0 = OffsetDateTime::now_utc() - time::Duration::minutes(10);
    at(&bridge, "production", SHA_A, "success", t0).await;
    at(&bridge, "production", SHA_B, "failed", t0 + time::Duration::minutes(1)).await;
    // A still runs; the tool re-syncs it, and its end arrives before its start.
    let t2 = t0 + time::Duration::minutes(2);
    assert_eq!(
        action(&at(&bridge, "production", SHA_A, "success", t2 + time::Duration::seconds(1)).await),
        (200, "unchanged")
    );
    assert_eq!(action(&at(&bridge, "production", SHA_A, "running", t2).await), (200, "unchanged"));
    assert_eq!(shown(&gitlab, "production"), vec![pair(SHA_A, "success"), pair(SHA_B, "failed")]);
    // The same re-sync in order changes nothing either.
    assert_eq!(
        action(&at(&bridge, "production", SHA_A, "running", t2 + time::Duration::seconds(5)).await),
        (200, "unchanged")
    );
    assert_eq!(
        action(&at(&bridge, "production", SHA_A, "success", t2 + time::Duration::seconds(6)).await),
        (200, "unchanged")
    );
    assert_eq!(shown(&gitlab, "production"), vec![pair(SHA_A, "success"), pair(SHA_B, "failed")]);
}

#[tokio::test]
async fn a_retry_whose_failure_arrives_before_its_start_leaves_nothing_running() {
    let (gitlab, bridge) = setup().await;
    let t0 = OffsetDateTime::now_utc() - time::Duration::minutes(10);
    at(&bridge, "production", SHA_A, "running", t0).await;
    at(&bridge, "production", SHA_A, "failed", t0 + time::Duration::seconds(30)).await;
    // The retry fails the same way; its failure is delivered first.
    let t1 = t0 + time::Duration::minutes(5);
    assert_eq!(
        action(&at(&bridge, "production", SHA_A, "failed", t1 + time::Duration::seconds(30)).await),
        (200, "unchanged")
    );
    assert_eq!(action(&at(&bridge, "production", SHA_A, "running", t1).await), (200, "stale"));
    assert_eq!(shown(&gitlab, "production"), vec![pair(SHA_A, "failed")]);
}

#[tokio::test]
async fn the_end_of_an_earlier_attempt_does_not_finish_the_retry() {
    let (gitlab, bridge) = setup().await;
    let t0 = OffsetDateTime::now_utc() - time::Duration::minutes(10);
    at(&bridge, "production", SHA_A, "running", t0).await;
    at(&bridge, "production", SHA_A, "failed", t0 + time::Duration::minutes(1)).await;
    at(&bridge, "production", SHA_A, "running", t0 + time::Duration::minutes(5)).await;
    // The first attempt's failure, redelivered late, while the retry runs.
    let (s, r) = at(&bridge, "production", SHA_A, "failed", t0 + time::Duration::minutes(1)).await;
    assert_eq!((s, r["action"].as_str()), (200, Some("stale")), "{r}");
    assert_eq!(shown(&gitlab, "production"), vec![pair(SHA_A, "failed"), pair(SHA_A, "running")]);
    assert_eq!(
        action(&at(&bridge, "production", SHA_A, "success", t0 + time::Duration::minutes(6)).await),
        (200, "updated")
    );
    assert_eq!(shown(&gitlab, "production"), vec![pair(SHA_A, "failed"), pair(SHA_A, "success")]);
}

#[tokio::test]
async fn late_confirmations_of_older_states_do_not_hide_the_latest_change() {
    let (gitlab, bridge) = setup().await;
    let t0 = OffsetDateTime::now_utc() - time::Duration::minutes(10);
    let min = time::Duration::minutes;
    at(&bridge, "production", SHA_B, "success", t0).await;
    at(&bridge, "production", SHA_A, "failed", t0 + min(1)).await;
    at(&bridge, "production", SHA_A, "running", t0 + min(2)).await;
    at(&bridge, "production", SHA_A, "failed", t0 + min(3)).await;
    let before = shown(&gitlab, "production");
    // Each of these redeliveries confirms a state GitLab shows; none may lower what the
    // container knows of the latest change, so the retry's late start is still stale.
    assert_eq!(action(&at(&bridge, "production", SHA_B, "success", t0).await), (200, "unchanged"));
    assert_eq!(action(&at(&bridge, "production", SHA_A, "failed", t0 + min(1)).await), (200, "unchanged"));
    assert_eq!(action(&at(&bridge, "production", SHA_A, "running", t0 + min(2)).await), (200, "stale"));
    assert_eq!(shown(&gitlab, "production"), before);
}

#[tokio::test]
async fn times_at_the_ends_of_the_calendar_are_answered_not_panicked_on() {
    let (gitlab, bridge) = setup().await;
    bridge.generic("production", SHA_A, "success").await;
    for t in ["9999-12-31T23:59:59.999Z", "0000-01-01T00:00:00Z", "-0001-01-01T00:00:00Z"] {
        let body =
            json!({"environment": "production", "sha": SHA_B, "ref": "main", "status": "running", "timestamp": t});
        let (s, r) = bridge.post("/hooks/generic?project=42", Some(GENERIC_SECRET), body.to_string()).await;
        assert!(s == 200 || s == 400, "{t}: {s} {r}");
    }
    // A skew too large for any calendar is not an error either.
    let mut cfg = config(&gitlab.url);
    cfg.clock_skew = std::time::Duration::from_secs(u64::MAX);
    let huge = Bridge::start(cfg, bridge_secrets(&gitlab)).await;
    let (s, r) = at(&huge, "production", SHA_A, "running", OffsetDateTime::now_utc() - time::Duration::days(1)).await;
    assert_eq!(s, 200, "{r}");
}

#[tokio::test]
async fn what_runs_is_the_success_that_finished_last_not_the_newest_id() {
    let (gitlab, bridge) = setup().await;
    let pause = || tokio::time::sleep(std::time::Duration::from_millis(5));
    // Two rollouts overlap; B started last but A finished last, so GitLab shows A as deployed.
    bridge.generic("production", SHA_A, "running").await;
    bridge.generic("production", SHA_B, "running").await;
    bridge.generic("production", SHA_B, "success").await;
    pause().await;
    bridge.generic("production", SHA_A, "success").await;
    assert_eq!(live(&gitlab, "production").as_deref(), Some(SHA_A));
    pause().await;
    // Going back to B is a rollout, not a re-sync of what runs.
    assert_eq!(action(&bridge.generic("production", SHA_B, "running").await), (200, "created"));
    assert_eq!(action(&bridge.generic("production", SHA_B, "success").await), (200, "updated"));
    assert_eq!(live(&gitlab, "production").as_deref(), Some(SHA_B));
}

/// The same failure twice (the second reported end first), then a re-sync of what runs, then
/// the second failure's start delivered late: it changes nothing. Confirming what runs used to
/// replace this container's memory of the latest change (the failure), so the late start was
/// judged by GitLab's clock, newer than the first failure's record, and opened a running
/// deployment nothing finished (found by the in-process model test, `lifecycle::model`).
#[tokio::test]
async fn a_late_start_of_a_repeated_failure_after_a_resync_of_what_runs_changes_nothing() {
    let (gitlab, bridge) = setup().await;
    let ms = time::Duration::milliseconds;
    let now = OffsetDateTime::now_utc;
    assert_eq!(action(&at(&bridge, "production", SHA_B, "success", now()).await), (200, "created"));
    assert_eq!(action(&at(&bridge, "production", SHA_A, "canceled", now()).await), (200, "created"));
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let again = now();
    assert_eq!(action(&at(&bridge, "production", SHA_A, "canceled", again + ms(1)).await), (200, "unchanged"));
    assert_eq!(action(&at(&bridge, "production", SHA_A, "running", again).await), (200, "stale"));
    assert_eq!(action(&at(&bridge, "production", SHA_B, "success", now()).await), (200, "unchanged"));
    let late = at(&bridge, "production", SHA_A, "running", again).await;
    assert_eq!(action(&late), (200, "stale"), "{}", late.1);
    assert_eq!(shown(&gitlab, "production"), vec![pair(SHA_B, "success"), pair(SHA_A, "canceled")]);
}
