//! `gitlab-deploy-bridge check` end to end: the built binary against the GitLab stand-in (its
//! `personal_access_tokens/self` and project endpoints in GitLab's shapes) and moto's Secrets
//! Manager, configured the way the function is.

use crate::support::gitlab::TokenInfo;
use crate::support::moto;
use crate::support::*;
use serde_json::Value;
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_gitlab-deploy-bridge");

const ROUTES: &str = r#"{"ci": {"source": "generic", "projects": ["group/app"], "environments": ["production"]},
                         "argo": {"source": "argocd", "projects": ["group/*"]}}"#;

/// Runs `check` with `env`; its exit status and its checks by name.
async fn check(env: &[(&str, &str)], args: &[&str]) -> (bool, Vec<Value>) {
    // Not std's blocking Command: the GitLab stand-in answers on this test's runtime.
    let out = Command::new(BIN)
        .arg("check")
        .args(args)
        .arg("--json")
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .env_remove("SECRET_ID")
        .env_remove("GITLAB_TOKEN")
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap();
    let lines: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    });
    (out.status.success(), lines)
}

fn verdict<'a>(lines: &'a [Value], check: &str) -> Vec<(&'a str, &'a str)> {
    lines
        .iter()
        .filter(|l| l["check"] == check)
        .map(|l| (l["verdict"].as_str().unwrap(), l["detail"].as_str().unwrap()))
        .collect()
}

#[tokio::test]
async fn check_names_every_problem_with_its_fix_and_passes_once_they_are_fixed() {
    let token = format!("glpat-{}", fastrand_token());
    let gitlab = GitLabStub::start(&token).await;
    let env = |extra: &[(&'static str, &'static str)]| {
        let mut v: Vec<(&str, String)> = vec![
            ("GITLAB_URL", gitlab.url.clone()),
            ("GITLAB_TOKEN", token.clone()),
            ("ROUTES", ROUTES.into()),
            ("ENVIRONMENTS", r#"{"production": {"tier": "production"}}"#.into()),
        ];
        v.extend(extra.iter().map(|(k, x)| (*k, x.to_string())));
        v
    };
    // The argo route has no secret; a key with a typo; a project that does not exist.
    let e = env(&[("ROUTE_CI_SECRET", "s1"), ("ARGO_WEBHOOK_SECRET", "typo")]);
    let e: Vec<(&str, &str)> = e.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (ok, lines) = check(&e, &["--project", "no/such-project"]).await;
    assert!(!ok, "{lines:#?}");
    assert_eq!(verdict(&lines, "route ci")[0].0, "ok");
    let argo = verdict(&lines, "route argo");
    assert!(argo[0].0 == "failed" && argo[0].1.contains("ROUTE_ARGO_SECRET"), "{argo:?}");
    assert!(
        verdict(&lines, "secret keys").iter().any(|(v, d)| *v == "warning" && d.contains("ARGO_WEBHOOK_SECRET")),
        "{lines:#?}"
    );
    assert!(verdict(&lines, "gitlab token")[1].1.contains("deploy-bridge"), "{lines:#?}");
    assert_eq!(verdict(&lines, "project group/app")[0].0, "ok", "{lines:#?}");
    let missing = verdict(&lines, "project no/such-project");
    assert!(missing[0].0 == "failed" && missing[0].1.contains("not found"), "{missing:?}");
    assert!(verdict(&lines, "environment group/app:production")[0].1.contains("not created yet"), "{lines:#?}");

    // A token without `api`, about to expire, with the Reporter role.
    let soon = (time::OffsetDateTime::now_utc().date() + time::Duration::days(3)).to_string();
    gitlab.set_token_info(TokenInfo { scopes: vec!["read_api".into()], expires_at: Some(soon), access_level: 20 });
    let e = env(&[("ROUTE_CI_SECRET", "s1"), ("ROUTE_ARGO_SECRET", "s2")]);
    let e: Vec<(&str, &str)> = e.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (ok, lines) = check(&e, &[]).await;
    assert!(!ok);
    assert!(verdict(&lines, "gitlab token")[1].1.contains("lacks the `api` scope"), "{lines:#?}");
    assert_eq!(verdict(&lines, "token expiry")[0].0, "warning", "{lines:#?}");
    assert!(verdict(&lines, "project group/app")[0].1.contains("Reporter"), "{lines:#?}");

    // All fixed: every check holds, the exit status says so.
    gitlab.set_token_info(TokenInfo::default());
    let (ok, lines) = check(&e, &["--project", "42"]).await;
    assert!(ok, "{lines:#?}");
    assert!(lines.iter().all(|l| l["verdict"] != "failed"), "{lines:#?}");
    // The token never appears in what check prints.
    assert!(!serde_json::to_string(&lines).unwrap().contains(&token));

    // A wrong token and an unreachable GitLab are named as such.
    let wrong = env(&[("ROUTE_CI_SECRET", "s1"), ("ROUTE_ARGO_SECRET", "s2")]);
    let mut wrong: Vec<(&str, &str)> = wrong.iter().map(|(k, v)| (*k, v.as_str())).collect();
    wrong.push(("GITLAB_TOKEN", "glpat-wrong"));
    let (ok, lines) = check(&wrong, &[]).await;
    assert!(!ok && verdict(&lines, "gitlab token")[1].1.contains("refused the token (401)"), "{lines:#?}");
    wrong.push(("GITLAB_URL", "http://127.0.0.1:9"));
    let (ok, lines) = check(&wrong, &[]).await;
    assert!(!ok && verdict(&lines, "gitlab")[0].1.contains("127.0.0.1:9"), "{lines:#?}");
}

#[tokio::test]
async fn check_reads_the_secret_from_secrets_manager_as_the_function_does() {
    let token = format!("glpat-{}", fastrand_token());
    let gitlab = GitLabStub::start(&token).await;
    let secret = moto::create_secret(
        &serde_json::json!({"gitlab_token": token, "route_ci_secret": "s1", "route_argo_secret": "s2"}).to_string(),
    )
    .await;
    let endpoint = moto::endpoint();
    let env = [
        ("GITLAB_URL", gitlab.url.as_str()),
        ("ROUTES", ROUTES),
        ("SECRET_ID", secret.as_str()),
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
    ];
    let (ok, lines) = check(&env, &[]).await;
    assert!(ok, "{lines:#?}");
    assert!(verdict(&lines, "secret")[0].1.contains("Secrets Manager"), "{lines:#?}");
    let (ok, lines) = check(
        &[
            ("SECRET_ID", "no-such-secret"),
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("GITLAB_URL", gitlab.url.as_str()),
        ],
        &[],
    )
    .await;
    assert!(!ok && verdict(&lines, "secret")[0].0 == "failed", "{lines:#?}");
}

/// Issue 21: `"acme*"` was accepted, matched `acme-evil/x` (and `"42*"` project 4242), and
/// `check` reported it as a project that does not exist. Only `group/*` forms are patterns:
/// anything else is refused at startup, and `check` names it as the configuration's failure.
#[tokio::test]
async fn a_project_pattern_that_is_not_group_star_is_a_configuration_error_at_startup_and_in_check() {
    let gitlab = GitLabStub::start("t").await;
    for pattern in ["acme*", "42*", "group/app-*"] {
        let routes = format!(r#"{{"ci": {{"source": "generic", "projects": ["{pattern}"]}}}}"#);
        let env = [("GITLAB_URL", gitlab.url.as_str()), ("GITLAB_TOKEN", "t"), ("ROUTES", routes.as_str())];
        let (ok, lines) = check(&env, &[]).await;
        assert!(!ok, "{lines:#?}");
        let configuration = verdict(&lines, "configuration");
        assert_eq!(configuration.len(), 1, "{lines:#?}");
        assert!(
            configuration[0].0 == "failed"
                && configuration[0].1.contains(&format!("{pattern:?} is not one"))
                && configuration[0].1.contains("group/*"),
            "{configuration:?}"
        );
        assert!(verdict(&lines, &format!("project {pattern}")).is_empty(), "not checked as a project: {lines:#?}");
        // `serve` refuses to start with it.
        let out = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env_remove("AWS_LAMBDA_RUNTIME_API")
            .envs(env.iter().copied())
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains("is not one"), "{stderr}");
    }
    assert!(gitlab.requests().is_empty(), "nothing was asked of GitLab");
}
