//! Argo CD: the docs' `argocd-notifications-cm`, copied out of docs/tools/argocd.md exactly as a user
//! copies it (only the URL is theirs), rendered and triggered by `tests/fixtures/argocd`
//! against histories of real-shaped Application objects (`tests/fixtures/argocd/histories`),
//! sent over HTTP to the bridge, and checked in the GitLab stand-in.

use proptest::prelude::*;
use serde_json::{Value, json};
use std::ffi::OsStr;

use super::{docs_yaml, go_tool, manifest_dir, run_tool, scratch};
use crate::support::{ARGOCD_SECRET, Bridge, GENERIC_SECRET, GitLabStub, SHA_A};

const SHA_B: &str = "3c7e1f0a9d2b4e6f8a1c3e5d7b9f0a2c4e6d8b1f";
const DOCS_URL: &str = "url: https://<url-id>.lambda-url.<region>.on.aws";

fn history(name: &str) -> Value {
    let path = manifest_dir().join("tests/fixtures/argocd/histories").join(name);
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

struct Setup {
    gitlab: GitLabStub,
    bridge: Bridge,
}

async fn setup() -> Setup {
    let (gitlab, bridge) = super::readme_routed_setup().await;
    gitlab.add_commit(SHA_B);
    Setup { gitlab, bridge }
}

/// Runs the engine over `history` with the ConfigMap `cm`; returns one record per send.
async fn notify(cm: &str, history: &Value) -> Option<Vec<Value>> {
    let tool = go_tool("argocd")?;
    let cm = scratch("cm.yaml", cm.as_bytes());
    let secrets = scratch("secrets.json", json!({"gitlab-deploy-bridge-secret": ARGOCD_SECRET}).to_string().as_bytes());
    let history = scratch("history.json", history.to_string().as_bytes());
    let args: Vec<&OsStr> = vec![
        OsStr::new("-cm"),
        cm.as_os_str(),
        OsStr::new("-secrets"),
        secrets.as_os_str(),
        OsStr::new("-history"),
        history.as_os_str(),
        OsStr::new("-retry-wait"),
        OsStr::new("20ms"),
    ];
    let records = run_tool(&tool, &args).await;
    for f in [&cm, &secrets, &history] {
        let _ = std::fs::remove_file(f);
    }
    Some(records)
}

/// The docs' ConfigMap pointed at `bridge`; nothing else changed.
fn readme_cm_for(bridge: &Bridge) -> String {
    let cm = docs_yaml("argocd", "name: argocd-notifications-cm");
    assert!(cm.contains(DOCS_URL), "the docs' service URL placeholder changed; update this test");
    cm.replace(DOCS_URL, &format!("url: {}", bridge.url))
}

fn steps_of(records: &[Value], trigger: &str) -> Vec<u64> {
    records.iter().filter(|r| r["trigger"] == trigger).map(|r| r["step"].as_u64().unwrap()).collect()
}

fn assert_all_delivered(records: &[Value]) {
    for r in records {
        assert_eq!(r["delivered"], true, "a notification was not delivered: {r:#}");
    }
}

/// (sha, status) of every deployment in `environment`, oldest first.
fn deployments(gitlab: &GitLabStub, environment: &str) -> Vec<(String, String)> {
    gitlab.deployments_in(environment).into_iter().map(|d| (d.sha, d.status)).collect()
}

fn strip_key(v: &mut Value, key: &str) {
    match v {
        Value::Object(m) => {
            m.remove(key);
            m.values_mut().for_each(|x| strip_key(x, key));
        }
        Value::Array(a) => a.iter_mut().for_each(|x| strip_key(x, key)),
        _ => {}
    }
}

#[tokio::test]
async fn success_is_sent_once_the_health_was_assessed_after_the_sync() {
    let s = setup().await;
    let Some(records) = notify(&readme_cm_for(&s.bridge), &history("single-source.json")).await else { return };
    assert_all_delivered(&records);
    // Step 2 finishes the sync while the health is still the Healthy from before it; only step 4
    // (Healthy, assessed after the sync) may say success.
    assert_eq!(steps_of(&records, "gitlab-deployed"), vec![0, 4], "{records:#?}");
    assert_eq!(steps_of(&records, "gitlab-sync-running"), vec![1]);
    assert_eq!(
        deployments(&s.gitlab, "production"),
        vec![(SHA_A.into(), "success".into()), (SHA_B.into(), "success".into())],
        "one deployment per sync"
    );
    let b = s.gitlab.deployments_in("production").into_iter().find(|d| d.sha == SHA_B).unwrap();
    assert_eq!(b.history, vec!["running", "success"], "B moved through its states as one deployment");
    let answers: Vec<&str> = records.iter().map(|r| r["response"].as_str().unwrap()).collect();
    assert!(answers.iter().all(|a| a.contains("\"environment\":\"production\"")), "{answers:?}");
}

/// Argo CD before 2.14 has no `status.health.lastTransitionTime`; the triggers must not depend on it.
#[tokio::test]
async fn argo_cd_without_health_transition_times_gets_the_same_record() {
    let s = setup().await;
    let mut h = history("single-source.json");
    strip_key(&mut h, "lastTransitionTime");
    let Some(records) = notify(&readme_cm_for(&s.bridge), &h).await else { return };
    assert_all_delivered(&records);
    assert_eq!(steps_of(&records, "gitlab-deployed"), vec![0, 4], "{records:#?}");
    assert_eq!(
        deployments(&s.gitlab, "production"),
        vec![(SHA_A.into(), "success".into()), (SHA_B.into(), "success".into())]
    );
}

/// A sync that changes nothing Argo CD assesses health on (a ConfigMap, a Service): the health stays
/// Healthy from before the sync, and the first reconcile after it is what confirms it.
#[tokio::test]
async fn a_sync_that_leaves_the_health_alone_still_ends_in_success() {
    let s = setup().await;
    let mut h = history("single-source.json");
    let steps = h["steps"].as_array_mut().unwrap();
    steps.truncate(3);
    steps.push(json!({"patch": {"status": {"reconciledAt": "2026-10-02T10:10:05Z"}}}));
    let Some(records) = notify(&readme_cm_for(&s.bridge), &h).await else { return };
    assert_all_delivered(&records);
    assert_eq!(steps_of(&records, "gitlab-deployed"), vec![0, 3], "{records:#?}");
    assert_eq!(deployments(&s.gitlab, "production").last(), Some(&(SHA_B.into(), "success".into())));
}

#[tokio::test]
async fn every_sync_of_a_multi_source_application_ends_in_its_final_status() {
    let s = setup().await;
    let Some(records) = notify(&readme_cm_for(&s.bridge), &history("multi-source.json")).await else { return };
    assert_all_delivered(&records);
    assert_eq!(steps_of(&records, "gitlab-deployed"), vec![2, 6], "{records:#?}");
    assert_eq!(
        deployments(&s.gitlab, "staging"),
        vec![(SHA_A.into(), "success".into()), (SHA_B.into(), "success".into())],
        "{records:#?}"
    );
    // The ref is the branch of the source the commit came from, not the chart's version.
    assert!(s.gitlab.deployments_in("staging").iter().all(|d| d.git_ref == "main"));
}

#[tokio::test]
async fn a_terminated_sync_is_recorded_as_canceled() {
    let s = setup().await;
    let Some(records) = notify(&readme_cm_for(&s.bridge), &history("terminated.json")).await else { return };
    assert_all_delivered(&records);
    assert_eq!(
        deployments(&s.gitlab, "billing-production"),
        vec![(SHA_A.into(), "success".into()), (SHA_B.into(), "canceled".into())],
        "{records:#?}"
    );
}

#[tokio::test]
async fn degraded_after_a_good_sync_ends_failed() {
    let s = setup().await;
    let Some(records) = notify(&readme_cm_for(&s.bridge), &history("degraded-after-sync.json")).await else { return };
    assert_all_delivered(&records);
    assert_eq!(steps_of(&records, "gitlab-deployed"), vec![2]);
    assert_eq!(steps_of(&records, "gitlab-health-degraded"), vec![3]);
    let d = deployments(&s.gitlab, "worker-production");
    assert_eq!(d.last(), Some(&(SHA_A.into(), "failed".into())), "{d:?}");
    assert!(d.contains(&(SHA_A.into(), "success".into())), "the success stays in the history: {d:?}");
}

/// Every application subscribed through the ConfigMap's `subscriptions`, one of them without any
/// annotation: the templates render, and the bridge says what is missing.
#[tokio::test]
async fn an_application_without_annotations_gets_a_clear_refusal() {
    let s = setup().await;
    let cm = format!(
        "{}\n  subscriptions: |\n    - recipients: [gitlab-deploy-bridge]\n      triggers: [gitlab-sync-running, gitlab-deployed, gitlab-sync-failed, gitlab-health-degraded]\n",
        readme_cm_for(&s.bridge).trim_end()
    );
    let Some(records) = notify(&cm, &history("no-annotations.json")).await else { return };
    assert_eq!(records.len(), 1, "{records:#?}");
    let r = &records[0];
    assert!(!r["error"].as_str().unwrap_or("").starts_with("render"), "the template must render: {r:#}");
    assert_eq!(r["status"], 400, "{r:#}");
    let answer: Value = serde_json::from_str(r["response"].as_str().unwrap()).unwrap();
    assert!(answer["error"].as_str().unwrap().contains("project"), "{answer}");
    assert!(s.gitlab.requests().is_empty());
}

/// GitLab's own Argo CD example, unchanged but for URL and token, through the facade: each sync is
/// one success deployment, and Argo CD (like any GitLab client) reads GitLab's answer.
#[tokio::test]
async fn gitlab_docs_example_works_through_the_facade() {
    let s = setup().await;
    let text =
        std::fs::read_to_string(manifest_dir().join("tests/fixtures/argocd/gitlab-docs-configmap.yaml")).unwrap();
    for placeholder in ["https://gitlab.com/api/v4", "<your-access-token>", "<your-project-id>"] {
        assert!(text.contains(placeholder), "{placeholder}");
    }
    let cm = text
        .replace("https://gitlab.com/api/v4", &format!("{}/routes/ci/api/v4", s.bridge.url))
        .replace("<your-access-token>", GENERIC_SECRET)
        .replace("<your-project-id>", "my-group%2Fmy-app");
    let Some(records) = notify(&cm, &history("gitlab-docs-seed.json")).await else { return };
    assert_eq!(steps_of(&records, "on-deployed"), vec![0, 2], "{records:#?}");
    for r in &records {
        assert_eq!(r["status"], 201, "GitLab answers a create with 201: {r:#}");
        let d: Value = serde_json::from_str(r["response"].as_str().unwrap()).unwrap();
        for field in ["id", "iid", "ref", "sha", "status", "created_at", "updated_at", "environment"] {
            assert!(d.get(field).is_some(), "GitLab's deployment object has `{field}`: {d}");
        }
        assert_eq!(d["status"], "success");
        assert_eq!(d["environment"]["name"], "production");
    }
    assert_eq!(
        deployments(&s.gitlab, "production"),
        vec![(SHA_A.into(), "success".into()), (SHA_B.into(), "success".into())]
    );
}

/// How a generated sync ends.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    Success,
    Failed,
    Terminated,
    /// Succeeds and is Healthy, then its pods crash: Degraded.
    DegradedLater,
}

#[derive(Debug, Clone)]
struct Sync {
    sha: usize,
    outcome: Outcome,
    /// The sync ends while the health shown is still the one from before it.
    left_over_health: bool,
    /// The sync changes no workload: the health stays as it was (no Progressing).
    health_unchanged: bool,
}

const SHAS: [&str; 3] = [SHA_A, SHA_B, "5f2d8e4c6a0b1d3f5e7c9a1b3d5f7e9c1a3b5d7f"];

/// The history's clock: it starts a minute from now, so that a state change without a time of its
/// own (a health degradation), which GitLab stamps with its clock, precedes the syncs after it —
/// as it does when Argo CD reports in real time.
fn clock() -> impl Fn(usize, u64) -> String {
    use time::format_description::well_known::Rfc3339;
    let base = (time::OffsetDateTime::now_utc() + time::Duration::minutes(1)).replace_nanosecond(0).unwrap();
    move |sync, seconds| {
        (base + time::Duration::minutes(10 * sync as i64) + time::Duration::seconds(seconds as i64))
            .format(&Rfc3339)
            .unwrap()
    }
}

/// The application's successive states, as Argo CD shows them, through `syncs`.
fn generated_history(syncs: &[Sync]) -> Value {
    let at = clock();
    let mut app = json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
        "metadata": {"name": "generated", "namespace": "argocd", "annotations": {
            "gitlab-deploy-bridge/project": "my-group/my-app", "gitlab-deploy-bridge/environment": "production",
            "notifications.argoproj.io/subscribe.gitlab-sync-running.gitlab-deploy-bridge": "",
            "notifications.argoproj.io/subscribe.gitlab-deployed.gitlab-deploy-bridge": "",
            "notifications.argoproj.io/subscribe.gitlab-sync-failed.gitlab-deploy-bridge": "",
            "notifications.argoproj.io/subscribe.gitlab-health-degraded.gitlab-deploy-bridge": ""}},
        "spec": {"project": "default", "source": {"repoURL": "https://gitlab.example.com/group/app.git", "targetRevision": "main", "path": "k8s"},
                 "destination": {"server": "https://kubernetes.default.svc", "namespace": "generated"}},
        "status": {"sync": {"status": "Synced"}, "health": {"status": "Healthy"}, "reconciledAt": "2026-10-01T09:00:00Z"}
    });
    let mut steps = Vec::new();
    for (k, s) in syncs.iter().enumerate() {
        let sha = SHAS[s.sha];
        let status = &mut app["status"];
        status["operationState"] =
            json!({"operation": {"sync": {"revision": sha}}, "phase": "Running", "message": "", "startedAt": at(k, 0)});
        steps.push(json!({"app": app.clone()}));
        let finished = at(k, 10);
        let status = &mut app["status"];
        match s.outcome {
            Outcome::Failed => {
                status["operationState"]["phase"] = json!("Failed");
                status["operationState"]["message"] =
                    json!("one or more objects failed to apply, reason: Deployment.apps \"generated\" is invalid");
                status["operationState"]["finishedAt"] = json!(finished);
                status["reconciledAt"] = json!(at(k, 11));
                steps.push(json!({"app": app.clone()}));
            }
            Outcome::Terminated => {
                status["operationState"]["phase"] = json!("Terminating");
                status["operationState"]["message"] = json!("operation is terminating");
                steps.push(json!({"app": app.clone()}));
                let status = &mut app["status"];
                status["operationState"]["phase"] = json!("Failed");
                status["operationState"]["message"] = json!("Operation terminated");
                status["operationState"]["finishedAt"] = json!(finished);
                steps.push(json!({"app": app.clone()}));
            }
            Outcome::Success | Outcome::DegradedLater => {
                status["operationState"]["phase"] = json!("Succeeded");
                status["operationState"]["message"] = json!("successfully synced (all tasks run)");
                status["operationState"]["syncResult"] = json!({"revision": sha});
                status["operationState"]["finishedAt"] = json!(finished);
                if !s.left_over_health {
                    status["reconciledAt"] = json!(at(k, 10));
                }
                steps.push(json!({"app": app.clone()}));
                if !s.health_unchanged {
                    let status = &mut app["status"];
                    status["health"] = json!({"status": "Progressing"});
                    status["reconciledAt"] = json!(at(k, 11));
                    steps.push(json!({"app": app.clone()}));
                }
                let status = &mut app["status"];
                status["health"] = json!({"status": "Healthy"});
                status["reconciledAt"] = json!(at(k, 40));
                steps.push(json!({"app": app.clone()}));
                if s.outcome == Outcome::DegradedLater {
                    let status = &mut app["status"];
                    status["health"] = json!({"status": "Degraded", "lastTransitionTime": at(k, 300), "message": "Deployment \"generated\" exceeded its progress deadline"});
                    status["reconciledAt"] = json!(at(k, 300));
                    steps.push(json!({"app": app.clone()}));
                }
            }
        }
    }
    json!({ "steps": steps })
}

fn sync_strategy() -> impl Strategy<Value = Sync> {
    let outcome = prop_oneof![4 => Just(Outcome::Success), 1 => Just(Outcome::Failed), 1 => Just(Outcome::Terminated), 1 => Just(Outcome::DegradedLater)];
    (0..SHAS.len(), outcome, any::<bool>(), any::<bool>()).prop_map(
        |(sha, outcome, left_over_health, health_unchanged)| Sync { sha, outcome, left_over_health, health_unchanged },
    )
}

fn generated_cases() -> u32 {
    std::env::var("REAL_CLIENT_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: generated_cases(), max_shrink_iters: 200, ..ProptestConfig::default() })]

    /// Random sequences of syncs — rollbacks, re-syncs, failures, terminations, health left over
    /// from the sync before, degradations — through the docs' ConfigMap and Argo CD's engine.
    /// After each history: every notification was accepted; no deployment is left running; each
    /// deployment went `running` → final or was created final; no sync made two deployments; what
    /// runs in GitLab is the sha that last synced successfully; and a sync that ended badly last
    /// is GitLab's latest change, with its status.
    #[test]
    fn every_generated_sync_history_ends_as_argo_cd_left_it(syncs in prop::collection::vec(sync_strategy(), 1..6)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let s = setup().await;
            s.gitlab.add_commit(SHAS[2]);
            let Some(records) = notify(&readme_cm_for(&s.bridge), &generated_history(&syncs)).await else { return Ok(()) };
            for r in &records {
                prop_assert_eq!(&r["delivered"], &json!(true), "{:#}", r);
            }
            let deps = s.gitlab.deployments_in("production");
            for d in &deps {
                let h: Vec<&str> = d.history.iter().map(String::as_str).collect();
                prop_assert!(matches!(h.as_slice(), [f] | ["running", f] if *f != "running"), "deployment #{} went {:?}", d.id, h);
            }
            let degraded = syncs.iter().filter(|x| x.outcome == Outcome::DegradedLater).count();
            prop_assert!(deps.len() <= syncs.len() + degraded, "{} deployments for {} syncs: {:?}", deps.len(), syncs.len(), deps);
            if let Some(last_good) = syncs.iter().rev().find(|x| matches!(x.outcome, Outcome::Success | Outcome::DegradedLater)) {
                let live = deps.iter().filter(|d| d.status == "success").max_by_key(|d| d.finished_seq);
                prop_assert_eq!(live.map(|d| d.sha.as_str()), Some(SHAS[last_good.sha]), "what runs: {:#?}\n{:#?}", records, deps);
            }
            let last = syncs.last().unwrap();
            let bad = match last.outcome {
                Outcome::Failed | Outcome::DegradedLater => Some("failed"),
                Outcome::Terminated => Some("canceled"),
                Outcome::Success => None,
            };
            if let Some(status) = bad {
                let latest = deps.iter().max_by_key(|d| (d.updated_at, d.id)).unwrap();
                prop_assert_eq!((latest.sha.as_str(), latest.status.as_str()), (SHAS[last.sha], status), "latest change");
            }
            Ok(())
        })?;
    }
}
