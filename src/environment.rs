//! GitLab environments: what DORA and merge-request tracking need from them.
//!
//! - the **tier**: DORA counts only `production` environments, and GitLab *guesses* the tier
//!   from the name when the Deployments API auto-creates an environment (`production-internal`
//!   → testing). The bridge sets the tier explicitly when one is configured (query `tier`, or
//!   `ENVIRONMENTS`), and warns when a name that looks like production would be guessed otherwise;
//! - the **external URL**, set from the tool when it has one, only when it changed;
//! - **folders**: a `/` in the name stops MR linking on many GitLab versions unless the tier is
//!   production or staging.
//!
//! What was ensured is remembered per warm container, so the hot path makes no extra call.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::gitlab::{CallCtx, EnvironmentChange, GitLab, GitLabError};
use crate::model::Tier;

/// The tier GitLab gives an environment it creates itself ([`Tier::guess`]).
pub fn guess_tier(name: &str) -> Tier {
    Tier::guess(name)
}

/// Whether a person would read the name as a production environment.
pub fn looks_like_production(name: &str) -> bool {
    name.to_ascii_lowercase()
        .split(|c: char| !c.is_ascii_alphanumeric())
        .any(|w| matches!(w, "prod" | "production" | "prd" | "live"))
}

/// Warnings about how GitLab will treat this environment (logged, and returned to the caller).
/// `named_by_user`: the user chose the name (not the bridge's `preview/<branch>`), so a
/// warning may ask to change it.
pub fn warnings(name: &str, tier: Option<Tier>, named_by_user: bool) -> Vec<String> {
    let mut out = Vec::new();
    let effective = tier.unwrap_or_else(|| guess_tier(name));
    if tier.is_none() && looks_like_production(name) && effective != Tier::Production {
        out.push(format!(
            "GitLab will guess tier `{effective}` for environment {name:?}, so DORA will not count it; add `tier=production` to the webhook URL or set it in ENVIRONMENTS"
        ));
    }
    if named_by_user && name.contains('/') && !matches!(effective, Tier::Production | Tier::Staging) {
        out.push(format!(
            "environment {name:?} is in a folder (`/`) with tier `{effective}`: GitLab does not link merge requests to its deployments; use a name without `/` or tier production/staging"
        ));
    }
    out
}

#[derive(Clone, Debug, PartialEq)]
struct Ensured {
    tier: Option<Tier>,
    external_url: Option<String>,
}

/// Makes environments carry the configured tier and the tool's URL, once per container.
#[derive(Default)]
pub struct Environments {
    ensured: Mutex<HashMap<(String, String), Ensured>>,
}

/// Bound of what is remembered (environments of a long-running container); cleared when full.
const MEMORY_LIMIT: usize = 10_000;

impl Environments {
    fn remember(&self, key: (String, String), ensured: Ensured) {
        if let Ok(mut m) = self.ensured.lock() {
            if m.len() >= MEMORY_LIMIT {
                m.clear();
            }
            m.insert(key, ensured);
        }
    }

    /// Whether giving `project`'s environment `name` the tier `tier` would change it (it does
    /// not exist yet, or has another tier). Reads; remembers a tier found right.
    pub async fn tier_differs(
        &self,
        gitlab: &dyn GitLab,
        ctx: &CallCtx,
        project: &str,
        name: &str,
        tier: Tier,
    ) -> Result<bool, GitLabError> {
        let key = (project.to_string(), name.to_string());
        if self.ensured.lock().map(|m| m.get(&key).is_some_and(|e| e.tier == Some(tier))).unwrap_or(false) {
            return Ok(false);
        }
        match gitlab.find_environment(ctx, project, name).await? {
            Some(e) if e.tier.as_deref() == Some(tier.as_str()) => {
                self.remember(key, Ensured { tier: Some(tier), external_url: e.external_url });
                Ok(false)
            }
            _ => Ok(true),
        }
    }

    /// Ensures `project`'s environment `name` exists with `tier` and `external_url` (each only
    /// when given). No call when neither is given or this container already did it.
    pub async fn ensure(
        &self,
        gitlab: &dyn GitLab,
        ctx: &CallCtx,
        project: &str,
        name: &str,
        tier: Option<Tier>,
        external_url: Option<&str>,
    ) -> Result<(), GitLabError> {
        if tier.is_none() && external_url.is_none() {
            return Ok(());
        }
        let key = (project.to_string(), name.to_string());
        let wanted = Ensured { tier, external_url: external_url.map(str::to_string) };
        let satisfied = |e: &Ensured| {
            tier.is_none_or(|t| e.tier == Some(t)) && external_url.is_none_or(|u| e.external_url.as_deref() == Some(u))
        };
        if self.ensured.lock().map(|m| m.get(&key).is_some_and(satisfied)).unwrap_or(false) {
            return Ok(());
        }
        let existing = gitlab.find_environment(ctx, project, name).await?;
        let now = match existing {
            None => match gitlab.create_environment(ctx, project, name, EnvironmentChange { tier, external_url }).await
            {
                Ok(e) => {
                    let verb =
                        if gitlab.dry_run() { "would create environment (dry run)" } else { "created environment" };
                    tracing::info!(project, environment = name, tier = tier.map(Tier::as_str).unwrap_or(""), "{verb}");
                    e
                }
                // Created meanwhile (a concurrent call, or a retried create that had worked).
                Err(GitLabError::Rejected { status: 400, message }) if message.contains("taken") => {
                    match gitlab.find_environment(ctx, project, name).await? {
                        Some(e) => {
                            gitlab
                                .update_environment(ctx, project, e.id, EnvironmentChange { tier, external_url })
                                .await?
                        }
                        None => return Err(GitLabError::Rejected { status: 400, message }),
                    }
                }
                Err(e) => return Err(e),
            },
            Some(e) => {
                let tier_change = tier.filter(|t| e.tier.as_deref() != Some(t.as_str()));
                let url_change = external_url.filter(|u| e.external_url.as_deref() != Some(*u));
                if tier_change.is_some() || url_change.is_some() {
                    let verb =
                        if gitlab.dry_run() { "would update environment (dry run)" } else { "updating environment" };
                    tracing::info!(
                        project,
                        environment = name,
                        from_tier = e.tier.as_deref().unwrap_or(""),
                        tier = tier_change.map(Tier::as_str).unwrap_or(""),
                        "{verb}"
                    );
                    gitlab
                        .update_environment(
                            ctx,
                            project,
                            e.id,
                            EnvironmentChange { tier: tier_change, external_url: url_change },
                        )
                        .await?
                } else {
                    e
                }
            }
        };
        let ensured = Ensured {
            tier: now.tier.as_deref().and_then(Tier::parse).or(wanted.tier),
            external_url: now.external_url.or(wanted.external_url),
        };
        self.remember(key, ensured);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guesses_like_gitlab() {
        for (name, tier) in [
            ("production", Tier::Production),
            ("prod", Tier::Production),
            ("prd", Tier::Production),
            ("live", Tier::Production),
            ("Production/EU", Tier::Production),
            ("prod-eu", Tier::Production),
            ("production-internal", Tier::Testing),
            ("prod-intl", Tier::Testing),
            ("live-maintenance", Tier::Testing),
            ("preprod", Tier::Staging),
            ("non-prod", Tier::Staging),
            ("staging", Tier::Staging),
            ("prod-devops", Tier::Development),
            ("review/feature", Tier::Development),
            ("eu-west-1", Tier::Other),
            ("customer-portal", Tier::Other),
            ("main", Tier::Other),
        ] {
            assert_eq!(guess_tier(name), tier, "{name}");
        }
    }

    #[test]
    fn warns_about_traps() {
        assert!(warnings("production-internal", None, true)[0].contains("tier=production"));
        assert!(warnings("production-internal", Some(Tier::Production), true).is_empty());
        assert!(warnings("production", None, true).is_empty());
        assert!(warnings("eu-west-1", None, true).is_empty());
        assert!(warnings("preview/feature", None, true)[0].contains("folder"));
        assert!(
            warnings("preview/feature", None, false).is_empty(),
            "the bridge's own preview names are not the user's to change"
        );
        assert!(warnings("production/eu", None, true).is_empty());
        assert!(warnings("apps/eu", Some(Tier::Staging), true).is_empty());
    }
}
