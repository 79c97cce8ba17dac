//! The vocabulary every other module speaks, and which depends on nothing of ours: deployment
//! statuses, environment tiers, the deployment and environment records GitLab returns, times.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A boxed future: what the ports' methods (GitLab, secrets, a tool's API) return, so that their
/// implementations can be chosen at run time (`Arc<dyn …>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The four statuses GitLab's Deployments API accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Running,
    Success,
    Failed,
    Canceled,
}

impl Status {
    pub const ALL: [Status; 4] = [Status::Running, Status::Success, Status::Failed, Status::Canceled];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Success => "success",
            Status::Failed => "failed",
            Status::Canceled => "canceled",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// GitLab's environment tiers; DORA counts only `production`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Production,
    Staging,
    Testing,
    Development,
    Other,
}

impl Tier {
    pub const ALL: [Tier; 5] = [Tier::Production, Tier::Staging, Tier::Testing, Tier::Development, Tier::Other];

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Production => "production",
            Tier::Staging => "staging",
            Tier::Testing => "testing",
            Tier::Development => "development",
            Tier::Other => "other",
        }
    }

    pub fn parse(s: &str) -> Option<Tier> {
        Tier::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The tier GitLab gives an environment it creates itself (`Environment#guess_tier`, current
    /// master: first match wins, case-insensitive, substrings).
    pub fn guess(name: &str) -> Tier {
        let n = name.to_ascii_lowercase();
        let has = |subs: &[&str]| subs.iter().any(|s| n.contains(s));
        if has(&["dev", "review", "trunk"]) {
            Tier::Development
        } else if has(&["test", "tst", "int", "acpt", "accept", "qa", "qc", "control", "quality"]) {
            Tier::Testing
        } else if has(&["stg", "stag", "modl", "model", "pre", "demo", "non"]) {
            Tier::Staging
        } else if has(&["prd", "prod", "live"]) {
            Tier::Production
        } else {
            Tier::Other
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A deployment as GitLab returns it (the fields the bridge uses).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    pub id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iid: Option<u64>,
    pub status: String,
    #[serde(default)]
    pub sha: String,
    #[serde(rename = "ref", default)]
    pub git_ref: String,
    /// When GitLab created it, and last changed it (its status), as GitLab's clock saw it.
    #[serde(default, with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub created_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<EnvironmentRef>,
}

impl Deployment {
    /// Whether this is a deployment of `sha` (GitLab returns lower-case shas; compare without case).
    pub fn is_of(&self, sha: &str) -> bool {
        self.sha.eq_ignore_ascii_case(sha)
    }

    pub fn status(&self) -> Option<Status> {
        Status::parse(&self.status)
    }

    /// The last time GitLab changed this deployment.
    pub fn changed_at(&self) -> Option<OffsetDateTime> {
        self.updated_at.or(self.created_at)
    }
}

/// The environment as a deployment names it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvironmentRef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_url: Option<String>,
}

/// An environment as the Environments API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    pub id: u64,
    pub name: String,
    #[serde(default)]
    pub tier: Option<String>,
    #[serde(default)]
    pub external_url: Option<String>,
}

/// An RFC 3339 time (`2026-10-02T11:00:00Z`, fractions and offsets allowed), as tools and
/// GitLab write them.
pub fn parse_time(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s.trim(), &Rfc3339).ok()
}

/// RFC 3339 in UTC, for answers and logs.
pub fn format_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    t.format(&Rfc3339).unwrap_or_else(|_| t.unix_timestamp().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_with_fractions_and_offsets() {
        let a = parse_time("2026-10-02T11:00:00Z").unwrap();
        let b = parse_time("2026-10-02T13:00:00.250+02:00").unwrap();
        assert_eq!(b - a, time::Duration::milliseconds(250));
        assert!(parse_time("yesterday").is_none());
        assert_eq!(format_time(a), "2026-10-02T11:00:00Z");
    }

    #[test]
    fn gitlab_deployment_entity_decodes() {
        let d: Deployment = serde_json::from_str(
            r#"{"id": 42, "iid": 2, "ref": "main", "sha": "a91957a858320c0e17f3a0eca7cfacbff50ea29a",
                "created_at": "2016-08-11T11:32:35.444Z", "updated_at": "2016-08-11T11:34:01.123+01:00",
                "status": "success", "user": {"id": 1}, "environment": {"id": 9, "name": "production", "external_url": null},
                "deployable": null}"#,
        )
        .unwrap();
        assert_eq!(
            (d.id, d.status(), d.is_of("A91957A858320C0E17F3A0ECA7CFACBFF50EA29A")),
            (42, Some(Status::Success), true)
        );
        assert!(d.changed_at().unwrap() < d.created_at.unwrap(), "the offset is applied");
    }
}
