//! Environments, tiers and refs: the traps that silently break DORA metrics and merge-request
//! tracking, reproduced against the GitLab stand-in (which guesses tiers exactly as GitLab's
//! `guess_tier`), and what the bridge does about each.

use crate::support::*;
use gitlab_deploy_bridge::event::EnvironmentSettings;
use gitlab_deploy_bridge::model::Tier;
use serde_json::json;

fn generic(sha: &str, status: &str) -> String {
    json!({"environment": "ignored-by-query", "sha": sha, "ref": "main", "status": status}).to_string()
}

fn env_calls(gitlab: &GitLabStub) -> Vec<String> {
    gitlab
        .requests()
        .into_iter()
        .filter(|r| r.uri.contains("/environments"))
        .map(|r| format!("{} {}", r.method, r.uri))
        .collect()
}

#[tokio::test]
async fn a_production_looking_name_guessed_otherwise_is_warned_about_and_fixed_by_tier() {
    let (gitlab, bridge) = setup().await;
    // The trap: GitLab guesses `testing` for "production-internal" (it contains "int").
    let (s, r) = bridge
        .post(
            "/hooks/generic?project=42&environment=production-internal",
            Some(GENERIC_SECRET),
            generic(SHA_A, "success"),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert!(r["warnings"][0].as_str().unwrap().contains("tier=production"), "{r}");
    assert_eq!(gitlab.environments()[0].tier, "testing", "what GitLab does by itself");

    // The fix: `tier=production` makes the bridge set that tier, once the deployment call
    // succeeded (a call GitLab refuses changes no environment).
    let before = gitlab.requests().len();
    let (s, r) = bridge
        .post(
            "/hooks/generic?project=42&environment=production-eu-internal&tier=production",
            Some(GENERIC_SECRET),
            generic(SHA_A, "running"),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert!(r.get("warnings").is_none(), "{r}");
    assert_eq!(r["deployment"]["tier"], "production");
    let env = gitlab.environments().into_iter().find(|e| e.name == "production-eu-internal").unwrap();
    assert_eq!(env.tier, "production");
    let reqs: Vec<String> = gitlab
        .requests()
        .iter()
        .skip(before)
        .map(|r| r.method.clone() + " " + r.uri.split('?').next().unwrap())
        .collect();
    let at = |call: &str| reqs.iter().position(|r| r == call);
    let (created, env_read, env_set) = (
        at("POST /api/v4/projects/42/deployments"),
        at("GET /api/v4/projects/42/environments"),
        at("PUT /api/v4/projects/42/environments/1003"),
    );
    assert!(created.is_some() && env_read.is_some() && env_set.is_some(), "{reqs:?}");
    assert!(created < env_read && env_read < env_set, "deployment before environment: {reqs:?}");
}

#[tokio::test]
async fn a_configured_tier_corrects_an_existing_environment_once_per_container() {
    let (gitlab, bridge) = setup_with(|c| {
        c.events
            .environments
            .insert("eu-west-1".into(), EnvironmentSettings { tier: Some(Tier::Production), git_ref: None });
    })
    .await;
    gitlab.seed_environment("42", "eu-west-1", None);
    assert_eq!(gitlab.environments()[0].tier, "other", "GitLab's guess for eu-west-1");
    for (sha, status) in [(SHA_A, "running"), (SHA_A, "success"), (SHA_B, "running"), (SHA_B, "success")] {
        let (s, r) = bridge
            .post("/hooks/generic?project=42&environment=eu-west-1", Some(GENERIC_SECRET), generic(sha, status))
            .await;
        assert_eq!(s, 200, "{r}");
    }
    assert_eq!(gitlab.environments()[0].tier, "production");
    let calls = env_calls(&gitlab);
    assert_eq!(calls.len(), 2, "one look and one update, then cached: {calls:?}");
    assert!(calls[1].starts_with("PUT /api/v4/projects/42/environments/"), "{calls:?}");
}

#[tokio::test]
async fn external_url_is_set_and_only_changed_when_it_changes() {
    let (gitlab, bridge) = setup().await;
    let argocd = |phase: &str, url: &str| {
        json!({"app": "shop", "phase": phase, "health": "Healthy", "revision": SHA_A, "targetRevision": "main", "externalURLs": [url]}).to_string()
    };
    bridge.post("/hooks/argocd?project=42", Some(ARGOCD_SECRET), argocd("Running", "https://shop.example.com")).await;
    bridge.post("/hooks/argocd?project=42", Some(ARGOCD_SECRET), argocd("Succeeded", "https://shop.example.com")).await;
    assert_eq!(gitlab.environments()[0].external_url.as_deref(), Some("https://shop.example.com"));
    assert_eq!(env_calls(&gitlab).len(), 2, "GET + POST once: {:?}", env_calls(&gitlab));
    bridge
        .post("/hooks/argocd?project=42", Some(ARGOCD_SECRET), argocd("Running", "https://shop-v2.example.com"))
        .await;
    assert_eq!(gitlab.environments()[0].external_url.as_deref(), Some("https://shop-v2.example.com"));
    assert_eq!(env_calls(&gitlab).len(), 4, "{:?}", env_calls(&gitlab));
}

#[tokio::test]
async fn the_ref_is_the_branch_merge_requests_target() {
    let (gitlab, bridge) = setup_with(|c| {
        c.events
            .environments
            .insert("configured".into(), EnvironmentSettings { tier: None, git_ref: Some("release".into()) });
    })
    .await;
    let body =
        |r: &str, env: &str| json!({"environment": env, "sha": SHA_A, "ref": r, "status": "success"}).to_string();
    let cases = [
        ("/hooks/generic?project=42", body("refs/heads/release", "e1"), "release", "payload"),
        ("/hooks/generic?project=42", body("HEAD", "e2"), "main", "default"),
        ("/hooks/generic?project=42", body(SHA_A, "e3"), "main", "default"),
        ("/hooks/generic?project=42", body("refs/pull/7/head", "e4"), "main", "default"),
        ("/hooks/generic?project=42", body("main", "configured"), "release", "environment config"),
        ("/hooks/generic?project=42&ref=main", body("HEAD", "configured"), "main", "query"),
    ];
    for (path, b, want, from) in cases {
        let (s, r) = bridge.post(path, Some(GENERIC_SECRET), b.clone()).await;
        assert_eq!(s, 200, "{b}: {r}");
        assert_eq!(
            (r["deployment"]["ref"].as_str(), r["deployment"]["ref_source"].as_str()),
            (Some(want), Some(from)),
            "{b}"
        );
    }
    assert!(gitlab.deployments().iter().all(|d| d.git_ref == "main" || d.git_ref == "release"));
}

#[tokio::test]
async fn environment_names_are_checked_before_gitlab_and_folders_warned() {
    let (gitlab, bridge) = setup().await;
    let (s, r) = bridge
        .post("/hooks/generic?project=42&environment=prod%3Aeu", Some(GENERIC_SECRET), generic(SHA_A, "running"))
        .await;
    assert_eq!(s, 400);
    assert!(r["error"].as_str().unwrap().contains("can contain only letters"), "{r}");
    assert!(gitlab.requests().is_empty());
    let (_, r) = bridge
        .post("/hooks/generic?project=42&environment=apps/shop", Some(GENERIC_SECRET), generic(SHA_A, "running"))
        .await;
    assert!(r["warnings"][0].as_str().unwrap().contains("does not link merge requests"), "{r}");
    let (_, r) = bridge
        .post(
            "/hooks/generic?project=42&environment=apps/shop&tier=production",
            Some(GENERIC_SECRET),
            generic(SHA_A, "success"),
        )
        .await;
    assert!(r.get("warnings").is_none(), "{r}");
}

#[tokio::test]
async fn a_refused_environment_change_does_not_lose_the_deployment() {
    let (gitlab, bridge) = setup().await;
    // The token may deploy but not manage environments (e.g. a protected environment): the
    // environment exists, and changing it is refused.
    gitlab.seed_environment("42", "eu-west-1", None);
    gitlab.push_fault_for("PUT", Fault::Json(403, json!({"message": "403 Forbidden"})));
    let path = "/hooks/generic?project=42&environment=eu-west-1&tier=production";
    let (s, r) = bridge.post(path, Some(GENERIC_SECRET), generic(SHA_A, "running")).await;
    assert_eq!((s, r["action"].as_str()), (200, Some("created")), "{r}");
    assert!(r["warnings"][0].as_str().unwrap().contains("403"), "{r}");
    assert_eq!(gitlab.environments()[0].tier, "other", "GitLab guessed");
    // Nothing was cached, so the next event sets the tier.
    let (s, r) = bridge.post(path, Some(GENERIC_SECRET), generic(SHA_A, "success")).await;
    assert_eq!((s, r["action"].as_str()), (200, Some("updated")), "{r}");
    assert_eq!(gitlab.environments()[0].tier, "production");
}
