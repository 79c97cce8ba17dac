//! `gitlab-deploy-bridge check`: verifies a configuration against the real services before any
//! tool is pointed at it, loading configuration and secret exactly as the function does (the
//! environment locally, `SECRET_ID` from Secrets Manager when set). One line per check, with the
//! fix in words; the command fails when any check fails (a warning does not).

use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::gitlab::http::HttpGitLab;
use crate::gitlab::{CallCtx, GitLab, GitLabError};
use crate::secrets::{SecretBundle, SecretProvider};
use crate::sources;

/// GitLab's Developer role: what creating deployments needs.
const DEVELOPER: u64 = 30;
/// A token that expires sooner than this is warned about.
const EXPIRY_WARNING_DAYS: i64 = 14;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    Warning,
    Failed,
}

/// One check's result.
#[derive(Debug, Clone, Serialize)]
pub struct Line {
    pub check: String,
    pub verdict: Verdict,
    pub detail: String,
}

impl Line {
    fn new(check: impl Into<String>, verdict: Verdict, detail: impl Into<String>) -> Line {
        Line { check: check.into(), verdict, detail: detail.into() }
    }

    /// The line as printed: ✓, ! or ✗, the check, what was found or what to do.
    pub fn text(&self) -> String {
        let mark = match self.verdict {
            Verdict::Ok => "✓",
            Verdict::Warning => "!",
            Verdict::Failed => "✗",
        };
        format!("{mark} {}: {}", self.check, self.detail)
    }
}

/// The one check of a configuration the bridge refuses to start with (`ROUTES` with a project
/// pattern such as `acme*`, a duration out of bounds, ...): nothing else can be checked.
pub fn configuration_refused(e: &crate::config::ConfigError) -> Line {
    Line::new("configuration", Verdict::Failed, format!("{e}; the bridge will not start with it"))
}

/// Runs every check; `projects` are checked besides the routes' own (plain) projects.
pub async fn run(
    config: &Config,
    secrets: Arc<dyn SecretProvider>,
    gitlab: &HttpGitLab,
    projects: &[String],
) -> Vec<Line> {
    let mut out = Vec::new();
    let bundle = match secrets.current().await {
        Ok(bundle) => {
            let origin = if config.secret_id.is_some() {
                "Secrets Manager (SECRET_ID)"
            } else {
                "environment variables (no SECRET_ID)"
            };
            out.push(Line::new("secret", Verdict::Ok, format!("read from {origin}")));
            bundle
        }
        Err(e) => {
            out.push(Line::new("secret", Verdict::Failed, e.to_string()));
            return out;
        }
    };
    secret_shape(config, &bundle, &mut out);
    if bundle.gitlab_token().is_err() {
        return out;
    }
    let ctx = CallCtx::new(Instant::now() + Duration::from_secs(30));
    if !token(config, gitlab, &ctx, &mut out).await {
        return out;
    }
    let mut all: Vec<String> = projects.to_vec();
    for (_, route) in config.routes.iter() {
        for p in &route.projects {
            if !p.ends_with("/*") && !all.iter().any(|q| q.eq_ignore_ascii_case(p)) {
                all.push(p.clone());
            }
        }
    }
    if all.is_empty() {
        out.push(Line::new(
            "projects",
            Verdict::Warning,
            "none checked: name one with --project <id or full path> (or declare routes)",
        ));
    }
    for project in &all {
        project_check(config, gitlab, &ctx, project, &mut out).await;
    }
    out
}

/// Which keys the secret has, which it needs, and which it has for nothing.
fn secret_shape(config: &Config, bundle: &SecretBundle, out: &mut Vec<Line>) {
    let keys: BTreeSet<&str> = bundle.keys().collect();
    let env = config.secret_id.is_none();
    // Where a key is put: a key of the secret, or (without SECRET_ID) an environment variable.
    let named = |key: &str| if env { key.to_ascii_uppercase() } else { key.to_string() };
    match keys.contains(crate::secrets::GITLAB_TOKEN_KEY) {
        true => out.push(Line::new("gitlab token", Verdict::Ok, format!("{} is set", named("gitlab_token")))),
        false => out.push(Line::new(
            "gitlab token",
            Verdict::Failed,
            bundle.gitlab_token().err().map(|e| e.to_string()).unwrap_or_default(),
        )),
    }
    // Every key something reads: the token, the routes', the tools' (their webhook secrets and
    // the keys their specs declare).
    let mut known: BTreeSet<String> = [crate::secrets::GITLAB_TOKEN_KEY.to_string()].into();
    known.extend(sources::declared_secret_keys().into_iter().map(str::to_string));
    for (name, route) in config.routes.iter() {
        let key = crate::routes::secret_key(name);
        if keys.contains(key.as_str()) {
            out.push(Line::new(
                format!("route {name}"),
                Verdict::Ok,
                format!("{} calls verified with {}", route.source, named(&key)),
            ));
        } else {
            out.push(Line::new(
                format!("route {name}"),
                Verdict::Failed,
                format!("no {}: every call of this route is refused (401); set it", named(&key)),
            ));
        }
        known.insert(key);
    }
    let mut unbound = Vec::new();
    for source in sources::ALL.iter().map(|s| s.name()) {
        let key = sources::webhook_secret_key(source);
        if keys.contains(key.as_str()) {
            unbound.push(source);
        }
        known.insert(key);
    }
    match (config.unbound_hooks, unbound.is_empty()) {
        (true, true) => out.push(Line::new(
            "unbound hooks",
            Verdict::Warning,
            "UNBOUND_HOOKS=allow, but no <source>_webhook_secret is set: every /hooks/<source> call is refused (401)",
        )),
        (true, false) => out.push(Line::new(
            "unbound hooks",
            Verdict::Ok,
            format!("served for {}; the others are refused (401)", unbound.join(", ")),
        )),
        (false, false) => out.push(Line::new(
            "unbound hooks",
            Verdict::Warning,
            format!("secrets for {} are set but unused: UNBOUND_HOOKS=refuse (routes only)", unbound.join(", ")),
        )),
        (false, true) => {}
    }
    if config.routes.iter().next().is_none() && !config.unbound_hooks {
        out.push(Line::new("routes", Verdict::Failed, "ROUTES declares no route and UNBOUND_HOOKS=refuse: every webhook is refused; declare a route (README \"Routes\")"));
    }
    for key in keys.iter().filter(|k| !known.contains(**k)) {
        out.push(Line::new(
            "secret keys",
            Verdict::Warning,
            format!(
                "{} is not read by the bridge (a typo? it reads gitlab_token, route_<route>_secret for the routes in ROUTES, <source>_webhook_secret for {}{})",
                named(key),
                sources::names(),
                sources::declared_secret_keys().iter().map(|k| format!(", {k}")).collect::<String>()
            ),
        ));
    }
}

/// The token: valid, with the `api` scope, not about to expire. `false` when GitLab cannot be
/// used at all (the project checks would only repeat why).
async fn token(config: &Config, gitlab: &HttpGitLab, ctx: &CallCtx, out: &mut Vec<Line>) -> bool {
    let at = &config.gitlab.base_url;
    match gitlab.get_api(ctx, "personal_access_tokens/self").await {
        Ok(t) => {
            let scopes: Vec<&str> =
                t["scopes"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
            let name = t["name"].as_str().unwrap_or("?");
            if scopes.contains(&"api") {
                out.push(Line::new(
                    "gitlab token",
                    Verdict::Ok,
                    format!("{at} accepts token {name:?} (scopes: {})", scopes.join(", ")),
                ));
            } else {
                out.push(Line::new(
                    "gitlab token",
                    Verdict::Failed,
                    format!(
                        "token {name:?} lacks the `api` scope (it has: {}); create one with `api`",
                        scopes.join(", ")
                    ),
                ));
            }
            expiry(t["expires_at"].as_str(), out);
            true
        }
        // GitLab before 16.0 has no token-self endpoint; the project checks still tell.
        Err(GitLabError::Rejected { status: 404, .. }) => {
            out.push(Line::new(
                "gitlab token",
                Verdict::Warning,
                format!("{at} cannot describe the token (GitLab before 16.0?): its scopes and expiry are not checked"),
            ));
            true
        }
        Err(GitLabError::Unauthorized) => {
            out.push(Line::new("gitlab token", Verdict::Failed, format!("{at} refused the token (401): it is wrong, expired or revoked; create a token with the `api` scope and the Developer role")));
            false
        }
        Err(e) => {
            out.push(Line::new("gitlab", Verdict::Failed, format!("{at}: {e}")));
            false
        }
    }
}

fn expiry(expires_at: Option<&str>, out: &mut Vec<Line>) {
    let Some(date) = expires_at else {
        out.push(Line::new("token expiry", Verdict::Ok, "never expires"));
        return;
    };
    match parse_date(date) {
        Some(day) => {
            let left = (day - time::OffsetDateTime::now_utc().date()).whole_days();
            if left < 0 {
                out.push(Line::new(
                    "token expiry",
                    Verdict::Failed,
                    format!("expired on {date}; create a new token and put it in the secret"),
                ));
            } else if left < EXPIRY_WARNING_DAYS {
                out.push(Line::new(
                    "token expiry",
                    Verdict::Warning,
                    format!(
                        "expires on {date}, in {left} days: rotate it (README \"Deploy\", rotate the GitLab token)"
                    ),
                ));
            } else {
                out.push(Line::new("token expiry", Verdict::Ok, format!("expires on {date}")));
            }
        }
        None => out.push(Line::new(
            "token expiry",
            Verdict::Warning,
            format!("GitLab says it expires at {date:?}, which is no date"),
        )),
    }
}

async fn project_check(config: &Config, gitlab: &HttpGitLab, ctx: &CallCtx, project: &str, out: &mut Vec<Line>) {
    let check = format!("project {project}");
    let found = match gitlab.project(ctx, project).await {
        Ok(p) => p,
        Err(GitLabError::Rejected { status: 404, .. }) => {
            out.push(Line::new(check, Verdict::Failed, "not found for this token: check the id or full path, and that the token's user, group or project is a member"));
            return;
        }
        Err(e) => {
            out.push(Line::new(check, Verdict::Failed, e.to_string()));
            return;
        }
    };
    let path = found["path_with_namespace"].as_str().unwrap_or(project).to_string();
    let level = |k: &str| found["permissions"][k]["access_level"].as_u64();
    match level("project_access").max(level("group_access")) {
        Some(l) if l >= DEVELOPER => out.push(Line::new(check.clone(), Verdict::Ok, format!("{path}: the token's role ({}) may create deployments", role(l)))),
        Some(l) => out.push(Line::new(
            check.clone(),
            Verdict::Failed,
            format!("{path}: the token's role is {}; creating deployments needs Developer or higher (and 'Allowed to deploy' on protected environments)", role(l)),
        )),
        None => out.push(Line::new(check.clone(), Verdict::Warning, format!("{path}: GitLab did not say the token's role; creating deployments needs Developer or higher"))),
    }
    let id = found["id"].as_u64().map(|i| i.to_string()).unwrap_or_else(|| project.to_string());
    let mut names: Vec<(&String, &crate::event::EnvironmentSettings)> = config.events.environments.iter().collect();
    names.sort_by_key(|(name, _)| *name);
    for (name, settings) in names {
        let check = format!("environment {path}:{name}");
        match gitlab.find_environment(ctx, &id, name).await {
            Ok(Some(e)) => {
                let has = e.tier.clone().unwrap_or_else(|| "(none)".into());
                match settings.tier {
                    Some(want) if want.as_str() != has => out.push(Line::new(
                        check.clone(),
                        Verdict::Warning,
                        format!("GitLab has tier {has}; ENVIRONMENTS says {want}, set at its next deployment"),
                    )),
                    _ => out.push(Line::new(check.clone(), Verdict::Ok, format!("exists, tier {has}"))),
                }
            }
            Ok(None) => {
                out.push(Line::new(check.clone(), Verdict::Ok, "not created yet: its first deployment creates it"))
            }
            Err(e) => out.push(Line::new(check.clone(), Verdict::Failed, e.to_string())),
        }
        for warning in crate::environment::warnings(name, settings.tier, true) {
            out.push(Line::new(check.clone(), Verdict::Warning, warning));
        }
    }
}

/// GitLab's `expires_at`: `YYYY-MM-DD`.
fn parse_date(text: &str) -> Option<time::Date> {
    let mut parts = text.split('-').map(|p| p.parse::<i32>().ok());
    let (y, m, d) = (parts.next()??, parts.next()??, parts.next()??);
    if parts.next().is_some() {
        return None;
    }
    time::Date::from_calendar_date(y, time::Month::try_from(u8::try_from(m).ok()?).ok()?, u8::try_from(d).ok()?).ok()
}

/// GitLab's name of an access level.
fn role(level: u64) -> String {
    match level {
        0 => "No access".into(),
        5 => "Minimal access".into(),
        10 => "Guest".into(),
        15 => "Planner".into(),
        20 => "Reporter".into(),
        30 => "Developer".into(),
        40 => "Maintainer".into(),
        50 => "Owner".into(),
        other => format!("access level {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_judged_by_days_left() {
        let day = |d: i64| (time::OffsetDateTime::now_utc().date() + time::Duration::days(d)).to_string();
        let verdict = |d: Option<&str>| {
            let mut out = Vec::new();
            expiry(d, &mut out);
            out[0].verdict
        };
        assert_eq!(verdict(None), Verdict::Ok);
        assert_eq!(verdict(Some(&day(100))), Verdict::Ok);
        assert_eq!(verdict(Some(&day(3))), Verdict::Warning);
        assert_eq!(verdict(Some(&day(-1))), Verdict::Failed);
        assert_eq!(verdict(Some("soon")), Verdict::Warning);
        assert_eq!(role(30), "Developer");
    }
}
