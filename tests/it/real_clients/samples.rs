//! Heroku, Vercel and Netlify as they really deliver: captured deliveries and documented
//! samples, kept verbatim under `tests/fixtures/samples/` (its README names where each came
//! from), signed as each tool signs and sent in the order the tool sends them.

use serde_json::Value;
use std::path::PathBuf;

use super::manifest_dir;
use crate::support::{self, Bridge, GitLabStub, HEROKU_SECRET, NETLIFY_SECRET, VERCEL_SECRET, sign};

fn sample_path(tool: &str, name: &str) -> PathBuf {
    manifest_dir().join("tests/fixtures/samples").join(tool).join(name)
}

fn sample(tool: &str, name: &str) -> String {
    std::fs::read_to_string(sample_path(tool, name)).unwrap_or_else(|e| panic!("{tool}/{name}: {e}"))
}

async fn heroku(bridge: &Bridge, body: &str) -> (u16, Value) {
    let path = "/hooks/heroku?project=group/app&environment=production";
    bridge
        .post_with(path, &[("heroku-webhook-hmac-sha256", sign::signature("heroku", HEROKU_SECRET, body))], body)
        .await
}

fn production(gitlab: &GitLabStub) -> Vec<(String, String)> {
    gitlab.deployments_in("production").into_iter().map(|d| (d.sha, d.status)).collect()
}

/// zulip's captured `git push` (heroku-24, 2025): build pending → build succeeded → release
/// pending → release succeeded (not yet current) → release succeeded (current). One deployment,
/// running then success, with no Heroku API token: the release's `data.slug.commit` names it.
#[tokio::test]
async fn a_captured_heroku_push_is_one_deployment() {
    const SHA: &str = "1a5f89db9a6a62f29689b6eeea65e6b6eb0879cd";
    let (gitlab, bridge) = support::setup().await;
    gitlab.add_commit(SHA);
    let mut actions = Vec::new();
    for name in ["build_create", "build_update", "release_pending", "release_update_not_current", "release_update"] {
        let (s, r) = heroku(&bridge, &sample("heroku", &format!("zulip-{name}.json"))).await;
        assert_eq!(s, 200, "{name}: {r}");
        actions.push(r["action"].as_str().unwrap_or_default().to_string());
    }
    assert_eq!(actions, ["created", "unchanged", "unchanged", "updated", "unchanged"]);
    let d = gitlab.deployments_in("production");
    assert_eq!(d.len(), 1);
    assert_eq!((d[0].sha.as_str(), d[0].history.clone()), (SHA, vec!["running".to_string(), "success".to_string()]));
    // The release named its commit itself: GitLab was not asked to resolve a short sha.
    assert!(!gitlab.requests().iter().any(|r| r.uri.contains("/repository/commits/")), "{:?}", gitlab.requests());
}

#[tokio::test]
async fn a_captured_failed_heroku_build_is_failed() {
    const SHA: &str = "1a5f89db9a6a62f29689b6eeea65e6b6eb0879cd";
    let (gitlab, bridge) = support::setup().await;
    gitlab.add_commit(SHA);
    for name in ["build_create", "build_failed"] {
        let (s, r) = heroku(&bridge, &sample("heroku", &format!("zulip-{name}.json"))).await;
        assert_eq!(s, 200, "{name}: {r}");
    }
    assert_eq!(production(&gitlab), vec![(SHA.to_string(), "failed".to_string())]);
}

/// A rollback is a release like any other: "Rollback to v6644", with the slug (and so the
/// commit) of the release it brings back. No public capture of one exists, so this is unsplash's
/// captured release with a rollback's description, version and times — the only fields that differ.
#[tokio::test]
async fn a_heroku_rollback_release_is_recorded_without_an_api_token() {
    const A: &str = "1a5f89db9a6a62f29689b6eeea65e6b6eb0879cd";
    const B: &str = "69eec518969cc409e116940aa5304ab6ab237a4d";
    let (gitlab, bridge) = support::setup().await;
    gitlab.add_commit(A);
    gitlab.add_commit(B);
    let release_b = sample("heroku", "mercury-release.json");
    let (s, r) = heroku(&bridge, &release_b).await;
    assert_eq!((s, r["action"].as_str()), (200, Some("created")), "{r}");
    let (s, r) = heroku(&bridge, &sample("heroku", "zulip-release_update.json")).await;
    assert_eq!((s, r["action"].as_str()), (200, Some("created")), "{r}");

    let mut rollback: Value = serde_json::from_str(&release_b).unwrap();
    rollback["data"]["description"] = "Rollback to v6644".into();
    rollback["data"]["version"] = 6645.into();
    rollback["data"]["created_at"] = "2025-05-17T12:30:00Z".into();
    rollback["data"]["updated_at"] = "2025-05-17T12:30:00Z".into();
    rollback["webhook_metadata"]["delivery"]["id"] = "7c1f2a9e-rollback".into();
    let (s, r) = heroku(&bridge, &rollback.to_string()).await;
    assert_eq!((s, r["action"].as_str()), (200, Some("created")), "a rollback is a new deployment: {r}");
    assert_eq!(
        production(&gitlab),
        vec![
            (B.to_string(), "success".to_string()),
            (A.to_string(), "success".to_string()),
            (B.to_string(), "success".to_string())
        ]
    );
}

async fn vercel(bridge: &Bridge, body: &str) -> (u16, Value) {
    bridge
        .post_with(
            "/hooks/vercel?project=group/app",
            &[("x-vercel-signature", sign::signature("vercel", VERCEL_SECRET, body))],
            body,
        )
        .await
}

async fn netlify(bridge: &Bridge, body: &str) -> (u16, Value) {
    bridge
        .post_with(
            "/hooks/netlify?project=group/app",
            &[("x-webhook-signature", sign::signature("netlify", NETLIFY_SECRET, body))],
            body,
        )
        .await
}

fn deployments(gitlab: &GitLabStub, environment: &str) -> Vec<(String, Vec<String>)> {
    gitlab.deployments_in(environment).into_iter().map(|d| (d.sha, d.history)).collect()
}

/// One Vercel project's real deliveries (zulip's captured fixtures, an integration webhook,
/// 2025-01), in the order Vercel sent them: a redeploy succeeded and was promoted, another
/// deployment of the same commit was canceled, then a new commit's deployment failed.
#[tokio::test]
async fn a_captured_vercel_history_is_recorded_as_it_happened() {
    const A: &str = "5af715d255d94d94fafee1d2254315e2b233c21c";
    const B: &str = "d8282fc3c718d84ee3eb331a6e7a30f0790f3b69";
    let (gitlab, bridge) = support::setup().await;
    gitlab.add_commit(A);
    gitlab.add_commit(B);
    let mut actions = Vec::new();
    for name in ["succeeded", "promoted", "canceled", "created", "error"] {
        let (s, r) = vercel(&bridge, &sample("vercel", &format!("zulip-deployment_{name}.json"))).await;
        assert_eq!(s, 200, "{name}: {r}");
        actions.push(r["action"].as_str().unwrap_or_default().to_string());
    }
    assert_eq!(actions, ["created", "unchanged", "created", "created", "updated"]);
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        deployments(&gitlab, "production"),
        vec![
            (A.to_string(), s(&["success"])),
            (A.to_string(), s(&["canceled"])),
            (B.to_string(), s(&["running", "failed"]))
        ]
    );
}

/// trigger.dev's captured preview deployment (`target: null`, 2023-10): a preview environment
/// named after the branch, running then success.
#[tokio::test]
async fn a_captured_vercel_preview_goes_to_its_branchs_preview_environment() {
    const SHA: &str = "d298272f30b0ece055912eb50739ce5106c3d716";
    let (gitlab, bridge) = support::setup().await;
    gitlab.add_commit(SHA);
    gitlab.add_ref("test-webhook");
    for name in ["created", "succeeded"] {
        let (s, r) = vercel(&bridge, &sample("vercel", &format!("triggerdev-deployment_{name}.json"))).await;
        assert_eq!(s, 200, "{name}: {r}");
    }
    assert_eq!(
        deployments(&gitlab, "preview/test-webhook"),
        vec![(SHA.to_string(), vec!["running".to_string(), "success".to_string()])]
    );
}

/// Sentry's capture of Vercel's (ZEIT's) retired format, `type: "deployment"`: not one of the
/// events the bridge records, and said so rather than refused.
#[tokio::test]
async fn vercels_retired_webhook_format_is_ignored_with_a_reason() {
    let (gitlab, bridge) = support::setup().await;
    let (s, r) = vercel(&bridge, &sample("vercel", "sentry-deployment_legacy.json")).await;
    assert_eq!((s, r["action"].as_str()), (200, Some("ignored")), "{r}");
    assert!(r["reason"].as_str().unwrap().contains("\"deployment\""), "{r}");
    assert!(gitlab.requests().is_empty());
}

/// zulip's captured Netlify deliveries (2018) have `commit_ref: null` — deploys not built from
/// git — and are refused with a 400 naming it; a deploy built from git (raymondcamden's captured
/// deploy object) is recorded.
#[tokio::test]
async fn captured_netlify_deploys_are_recorded_when_built_from_git_and_refused_clearly_otherwise() {
    let (gitlab, bridge) = support::setup().await;
    for name in ["building", "created", "failed"] {
        let (s, r) = netlify(&bridge, &sample("netlify", &format!("zulip-deploy_{name}.json"))).await;
        assert_eq!(s, 400, "{name}: {r}");
        assert!(r["error"].as_str().unwrap().contains("commit_ref"), "{name}: {r}");
    }
    assert!(gitlab.requests().is_empty());

    const SHA: &str = "b10e3145baf01f900cd3376257102ee89c5a1c3e";
    gitlab.add_commit(SHA);
    gitlab.add_ref("master");
    let (s, r) = netlify(&bridge, &sample("netlify", "raymondcamden-deploy_succeeded_function_event.json")).await;
    assert_eq!((s, r["action"].as_str()), (200, Some("created")), "{r}");
    assert_eq!(deployments(&gitlab, "production"), vec![(SHA.to_string(), vec!["success".to_string()])]);
    assert_eq!(gitlab.deployments()[0].git_ref, "master");
}
