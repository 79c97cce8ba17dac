//! Routes (issue 10, finding 1): a signed delivery writes only where its route allows.
//!
//! The reproducer: one captured Vercel delivery, replayed with
//! `?project=77&environment=prod-{0..4}&tier=production`, created five production-tier
//! deployments in another project; with an unknown sha the deployment failed but the
//! environment's tier and URL had already been changed.

use crate::support::*;
use gitlab_deploy_bridge::config::Config;
use gitlab_deploy_bridge::routes::Routes;
use serde_json::{Value, json};

const SHOP_SECRET: &str = "route-shop-secret";
const OTHER_SECRET: &str = "route-other-secret";
const CI_SECRET: &str = "route-ci-secret";

fn routes() -> Routes {
    Routes::parse(
        &json!({
            "shop": {"source": "vercel", "projects": ["42"], "environments": ["production", "preview/*"], "tier": "production"},
            "other": {"source": "vercel", "projects": ["77"]},
            "ci": {"source": "generic", "projects": ["group/app"], "environments": ["staging"]},
            "fixed": {"source": "generic", "projects": ["42"], "environments": ["prod-eu"], "tier": "production", "ref": "release", "set_environment": false},
        })
        .to_string(),
    )
    .unwrap()
}

async fn start(dry_run: bool) -> (GitLabStub, Bridge) {
    let token = format!("glpat-{}", fastrand_token());
    let gitlab = GitLabStub::start(&token).await;
    gitlab.add_commit(SHA_A);
    gitlab.add_commit(SHA_B);
    let config = Config { routes: routes(), unbound_hooks: false, dry_run, ..config(&gitlab.url) };
    let secrets = static_secrets_with(
        &token,
        &[
            ("route_shop_secret", SHOP_SECRET),
            ("route_other_secret", OTHER_SECRET),
            ("route_ci_secret", CI_SECRET),
            ("route_fixed_secret", CI_SECRET),
        ],
    );
    (gitlab, Bridge::start(config, secrets).await)
}

fn vercel(kind: &str, target: Value, sha: &str) -> String {
    json!({
        "id": format!("evt_{kind}_{sha}"), "type": kind, "createdAt": 1759395600000u64,
        "payload": {"deployment": {"id": "dpl_1", "url": "shop-1.vercel.app", "meta": {"gitlabCommitSha": sha, "gitlabCommitRef": "main"}},
                    "project": {"id": "prj_1"}, "target": target, "url": "shop-1.vercel.app"}
    })
    .to_string()
}

async fn post_vercel(bridge: &Bridge, path: &str, secret: &str, body: &str) -> (u16, Value) {
    bridge.post_with(path, &[("x-vercel-signature", sign::signature("vercel", secret, body))], body).await
}

fn writes(gitlab: &GitLabStub) -> Vec<String> {
    gitlab.requests().into_iter().filter(|r| r.method != "GET").map(|r| format!("{} {}", r.method, r.uri)).collect()
}

#[tokio::test]
async fn a_captured_delivery_cannot_be_aimed_at_another_project_environment_or_tier() {
    let (gitlab, bridge) = start(false).await;
    let body = vercel("deployment.succeeded", json!("production"), SHA_A);
    // The route's own call works, and the route's tier is set on its environment.
    let (s, r) = post_vercel(&bridge, "/hooks/vercel/shop", SHOP_SECRET, &body).await;
    assert_eq!(
        (s, r["action"].as_str(), r["deployment"]["tier"].as_str()),
        (200, Some("created"), Some("production")),
        "{r}"
    );

    // The reproducer's replays: another project, other environments, a tier from the query.
    for (query, status) in [
        ("?project=77", 403),
        ("?project=group/sub/app", 403),
        ("?project=42/../77", 400),
        ("?environment=prod-0", 403),
        ("?environment=preview", 403),
        ("?tier=production", 400),
        ("?project=77&environment=prod-0&tier=production", 400),
    ] {
        let before = writes(&gitlab).len();
        let (s, r) = post_vercel(&bridge, &format!("/hooks/vercel/shop{query}"), SHOP_SECRET, &body).await;
        assert_eq!(s, status, "{query}: {r}");
        assert_eq!(writes(&gitlab).len(), before, "{query} wrote to GitLab");
    }
    // On another route (another project) the body does not verify: its secret is the route's.
    let (s, r) = post_vercel(&bridge, "/hooks/vercel/other", SHOP_SECRET, &body).await;
    assert_eq!(s, 401, "{r}");
    // The tool-wide secret signs nothing on a route, and an unknown route is refused in the same
    // words as a wrong signature (the answer does not tell which routes exist).
    let (s, wrong) = post_vercel(&bridge, "/hooks/vercel/shop", VERCEL_SECRET, &body).await;
    assert_eq!(s, 401, "{wrong}");
    let (s, unknown) = post_vercel(&bridge, "/hooks/vercel/nosuch", SHOP_SECRET, &body).await;
    assert_eq!((s, &unknown["error"]), (401, &wrong["error"]), "{unknown}");
    let (s, r) = post_vercel(&bridge, "/hooks/vercel/ci", CI_SECRET, &body).await;
    assert_eq!(s, 401, "route ci is generic's, not vercel's: {r}");

    assert_eq!(gitlab.deployments().len(), 1);
    assert!(gitlab.deployments().iter().all(|d| d.project == "42" && d.environment == "production"));
    assert_eq!(gitlab.environments().len(), 1, "{:?}", gitlab.environments());
}

#[tokio::test]
async fn the_query_may_choose_only_among_what_the_route_allows() {
    let (gitlab, bridge) = start(false).await;
    // A preview environment the route allows, named by the payload.
    let body = vercel("deployment.created", Value::Null, SHA_B);
    let (s, r) = post_vercel(&bridge, "/hooks/vercel/shop", SHOP_SECRET, &body).await;
    assert_eq!((s, r["deployment"]["environment"].as_str()), (200, Some("preview/main")), "{r}");
    // The same delivery with the query naming an allowed environment.
    let (s, r) =
        post_vercel(&bridge, "/hooks/vercel/shop?environment=preview/other&project=42", SHOP_SECRET, &body).await;
    assert_eq!((s, r["deployment"]["environment"].as_str()), (200, Some("preview/other")), "{r}");
    // A route for several projects needs the query to name one.
    let routes = Routes::parse(r#"{"many": {"source": "vercel", "projects": ["group/*"]}}"#).unwrap();
    let route = routes.get("many").unwrap();
    assert!(route.allows_project("group/app") && route.default_project().is_none());
    assert_eq!(gitlab.deployments().len(), 2);
}

#[tokio::test]
async fn an_unknown_commit_changes_no_environment() {
    let (gitlab, bridge) = start(false).await;
    let unknown = "c".repeat(40);
    // (GitLab creates the environment of a refused deployment itself, with the tier it guesses.)
    let (s, r) = post_vercel(
        &bridge,
        "/hooks/vercel/shop?environment=preview/x",
        SHOP_SECRET,
        &vercel("deployment.succeeded", json!("production"), &unknown),
    )
    .await;
    assert_eq!(s, 422, "{r}");
    let env_writes: Vec<String> = writes(&gitlab).into_iter().filter(|w| w.contains("/environments")).collect();
    assert!(env_writes.is_empty(), "tier or URL changed before the deployment call succeeded: {env_writes:?}");
    assert!(
        gitlab.environments().iter().all(|e| e.tier != "production" && e.external_url.is_none()),
        "{:?}",
        gitlab.environments()
    );
}

#[tokio::test]
async fn a_finished_event_sets_the_tier_before_gitlab_sees_it_finish() {
    let (gitlab, bridge) = start(false).await;
    // `production-eu` would be guessed `production` anyway; `preview/x` is guessed otherwise.
    let (s, r) = post_vercel(
        &bridge,
        "/hooks/vercel/shop?environment=preview/x",
        SHOP_SECRET,
        &vercel("deployment.succeeded", json!("production"), SHA_A),
    )
    .await;
    assert_eq!(
        (s, r["action"].as_str(), r["deployment"]["status"].as_str()),
        (200, Some("created"), Some("success")),
        "{r}"
    );
    let calls: Vec<String> = writes(&gitlab).into_iter().map(|c| c.split('?').next().unwrap().to_string()).collect();
    let at = |prefix: &str| calls.iter().position(|c| c.starts_with(prefix));
    let (open, tier, finish) = (
        at("POST /api/v4/projects/42/deployments"),
        at("PUT /api/v4/projects/42/environments/"),
        at("PUT /api/v4/projects/42/deployments/"),
    );
    assert!(open.is_some() && open < tier && tier < finish, "{calls:?}");
    let d = &gitlab.deployments()[0];
    assert_eq!(d.history, vec!["running", "success"]);
    assert_eq!(gitlab.environments()[0].tier, "production");
    // Once the tier is right, a finished event is one call again.
    let before = writes(&gitlab).len();
    let (s, r) = post_vercel(
        &bridge,
        "/hooks/vercel/shop?environment=preview/x",
        SHOP_SECRET,
        &vercel("deployment.succeeded", json!("production"), SHA_B),
    )
    .await;
    assert_eq!((s, r["action"].as_str()), (200, Some("created")), "{r}");
    assert_eq!(writes(&gitlab).len(), before + 1, "{:?}", writes(&gitlab));
}

#[tokio::test]
async fn a_route_fixes_project_environment_ref_and_may_leave_environments_alone() {
    let (gitlab, bridge) = start(false).await;
    let body = json!({"sha": SHA_A, "status": "success", "ref": "main"}).to_string();
    let (s, r) = bridge.post("/hooks/generic/fixed", Some(CI_SECRET), body).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(
        (r["deployment"]["environment"].as_str(), r["deployment"]["ref"].as_str()),
        (Some("prod-eu"), Some("release")),
        "{r}"
    );
    assert_eq!(r["deployment"]["ref_source"], "route");
    assert!(r["warnings"].to_string().contains("set_environment"), "{r}");
    assert!(writes(&gitlab).iter().all(|w| !w.contains("/environments")), "{:?}", writes(&gitlab));
}

#[tokio::test]
async fn the_facade_on_a_route_writes_only_its_project_and_environments() {
    let (gitlab, bridge) = start(false).await;
    let token = [("PRIVATE-TOKEN", CI_SECRET.to_string())];
    let create = |env: &str, sha: &str| {
        json!({"environment": env, "sha": sha, "ref": "main", "tag": false, "status": "running"}).to_string()
    };
    let (s, r) =
        bridge.post_with("/routes/ci/api/v4/projects/group%2Fapp/deployments", &token, &create("staging", SHA_A)).await;
    assert_eq!(s, 201, "{r}");
    let id = r["id"].as_u64().unwrap();
    let (s, r) = bridge.post_with("/routes/ci/api/v4/projects/77/deployments", &token, &create("staging", SHA_A)).await;
    assert_eq!((s, r["message"].is_string()), (403, true), "{r}");
    let (s, r) = bridge
        .post_with("/routes/ci/api/v4/projects/group%2Fapp/deployments", &token, &create("production", SHA_B))
        .await;
    assert_eq!(s, 403, "{r}");
    // A deployment of the project in an environment the route does not allow cannot be changed.
    let other = gitlab.seed("42", "production", SHA_B, "running");
    let put = |id: u64| format!("/routes/ci/api/v4/projects/group%2Fapp/deployments/{id}");
    let resp = bridge
        .http
        .put(format!("{}{}", bridge.url, put(other)))
        .header("PRIVATE-TOKEN", CI_SECRET)
        .json(&json!({"status": "success"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    let resp = bridge
        .http
        .put(format!("{}{}", bridge.url, put(id)))
        .header("PRIVATE-TOKEN", CI_SECRET)
        .json(&json!({"status": "success"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let statuses: Vec<(String, String)> = gitlab.deployments().into_iter().map(|d| (d.environment, d.status)).collect();
    assert!(
        statuses.contains(&("staging".into(), "success".into()))
            && statuses.contains(&("production".into(), "running".into())),
        "{statuses:?}"
    );
    // The unbound facade is refused like any unbound hook.
    let (s, _) = bridge
        .post_with(
            "/api/v4/projects/42/deployments",
            &[("PRIVATE-TOKEN", GENERIC_SECRET.to_string())],
            &create("staging", SHA_A),
        )
        .await;
    assert_eq!(s, 403);
}

#[tokio::test]
async fn unbound_hooks_are_refused_before_the_body_is_read_and_planned_in_a_dry_run() {
    let (gitlab, bridge) = start(false).await;
    let body = vercel("deployment.succeeded", json!("production"), SHA_A);
    let (s, r) = post_vercel(&bridge, "/hooks/vercel?project=42", VERCEL_SECRET, &body).await;
    assert_eq!(s, 403, "{r}");
    assert!(r["error"].as_str().unwrap().contains("/hooks/vercel/<route>"), "{r}");
    assert!(gitlab.requests().is_empty());

    let (gitlab, bridge) = start(true).await;
    let (s, r) = post_vercel(&bridge, "/hooks/vercel?project=42", VERCEL_SECRET, &body).await;
    assert_eq!(s, 200, "{r}");
    assert!(r["unbound"].as_str().unwrap().contains("a live run would refuse"), "{r}");
    assert!(gitlab.requests().is_empty());
}
