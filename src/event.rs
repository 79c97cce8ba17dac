//! The normalized deployment event every source produces, and its validation.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::config::Config;
use crate::error::Error;
use crate::model::{Status, Tier};

/// What a source could read from one webhook. Fields a source does not know stay `None`
/// and may be supplied by the query string (`environment`, `ref`) or defaults.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EventDraft {
    pub environment: Option<String>,
    pub sha: Option<String>,
    pub git_ref: Option<String>,
    pub tag: Option<bool>,
    pub status: Option<Status>,
    pub external_url: Option<String>,
    pub delivery_id: Option<String>,
    /// Where the sha came from when it may not be the application's commit (a GitOps revision),
    /// used to explain GitLab's "The commit does not exist".
    pub sha_hint: Option<String>,
    /// When the tool says the event happened, where its payload says so.
    pub occurred_at: Option<OffsetDateTime>,
    /// `sha` is an abbreviation (a Heroku release's `Deploy 1a2b3c4d`, an image tag) that GitLab
    /// expands when the event is delivered ([`crate::lifecycle::Lifecycle::expand_sha`]), so an
    /// event can be spooled while GitLab is down.
    pub short_sha: bool,
    /// The environment's name is the bridge's convention (Vercel's and Netlify's
    /// `preview/<branch>`), not something the user named: no warning asks to rename it.
    pub environment_by_bridge: bool,
}

/// The result of parsing one webhook.
#[derive(Clone, Debug, PartialEq)]
pub enum SourceOutput {
    Event(EventDraft),
    /// Not a deployment state change (e.g. an Argo CD notification about something else).
    Ignored(String),
}

/// Values from the query string; they win over what the payload says.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Overrides {
    pub project: Option<String>,
    pub environment: Option<String>,
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    pub tier: Option<String>,
    /// The route's `ref` (a routed call), tried after the query's.
    #[serde(skip)]
    pub route_ref: Option<String>,
}

/// One deployment state change, validated and ready for the lifecycle.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeploymentEvent {
    pub source: &'static str,
    pub project: String,
    pub environment: String,
    pub sha: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// Which input gave the ref: `query`, `route`, `environment config`, `payload` or `default`.
    pub ref_source: &'static str,
    pub tag: bool,
    pub status: Status,
    /// The tier to give the environment, when configured (query `tier` or `ENVIRONMENTS`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<Tier>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<String>,
    #[serde(skip)]
    pub sha_hint: Option<String>,
    /// The tool's own time of the event, when its payload carries one: a delivery older than
    /// what GitLab already shows changes nothing (see the lifecycle).
    #[serde(skip)]
    pub occurred_at: Option<OffsetDateTime>,
    /// Delivered from the spool, in its group's order: judged by the tool's times only, never
    /// by GitLab's clock (which recorded the spool's drain, not the events).
    #[serde(skip)]
    pub ordered: bool,
    /// `sha` is an abbreviation still to be expanded by GitLab (see [`EventDraft::short_sha`]).
    #[serde(skip)]
    pub short_sha: bool,
    /// See [`EventDraft::environment_by_bridge`] (false when the URL or route named it).
    #[serde(skip)]
    pub environment_by_bridge: bool,
}

/// The names [`DeploymentEvent::ref_source`] takes.
const REF_SOURCES: [&str; 5] = ["query", "route", "environment config", "payload", "default"];

/// `name` as one of the ref sources (a spooled event's, read back); an unknown one is `default`.
pub fn ref_source_name(name: &str) -> &'static str {
    REF_SOURCES.into_iter().find(|s| *s == name).unwrap_or("default")
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

impl DeploymentEvent {
    /// Applies the query overrides, per-environment settings and defaults to a draft, and
    /// validates every field.
    pub fn from_draft(
        source: &'static str,
        draft: EventDraft,
        overrides: &Overrides,
        config: &Config,
    ) -> Result<DeploymentEvent, Error> {
        let project = non_empty(overrides.project.clone()).ok_or_else(|| {
            Error::BadRequest(
                "query parameter `project` is required (numeric id or full path such as group/app)".into(),
            )
        })?;
        validate_project(&project)?;

        let environment_by_bridge = draft.environment_by_bridge && non_empty(overrides.environment.clone()).is_none();
        let environment = non_empty(overrides.environment.clone())
            .or(non_empty(draft.environment))
            .ok_or_else(|| {
                Error::BadRequest(format!(
                    "`environment` is missing: the {source} payload names none; add `environment=<name>` to the webhook URL"
                ))
            })?;
        validate_environment_name(&environment)?;

        let sha = non_empty(draft.sha)
            .ok_or_else(|| Error::BadRequest(format!("`sha` is missing from the {source} payload")))?;
        let short = draft
            .short_sha
            .then(|| sha.to_ascii_lowercase())
            .filter(|s| (7..40).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit()));
        let sha = short.clone().or_else(|| normalize_sha(&sha)).ok_or_else(|| {
            Error::BadRequest(format!(
                "`sha` must be a full 40-character hexadecimal commit id, got {:?}",
                truncate(&sha, 80)
            ))
        })?;

        let status =
            draft.status.ok_or_else(|| Error::BadRequest(format!("`status` is missing from the {source} payload")))?;

        let settings = config.environments.get(&environment);
        let tier = match non_empty(overrides.tier.clone()) {
            Some(t) => Some(Tier::parse(&t).ok_or_else(|| {
                Error::BadRequest(format!(
                    "`tier` must be one of production, staging, testing, development, other; got {t:?}"
                ))
            })?),
            None => settings.and_then(|s| s.tier),
        };

        // MR linking needs the branch the MRs target: the first usable of these wins; a sha,
        // HEAD or a refs/... path (other than refs/heads/, refs/tags/) falls through.
        let candidates = [
            (non_empty(overrides.git_ref.clone()), "query"),
            (non_empty(overrides.route_ref.clone()), "route"),
            (settings.and_then(|s| s.git_ref.clone()), "environment config"),
            (non_empty(draft.git_ref), "payload"),
        ];
        let ((git_ref, ref_is_tag), ref_source) = candidates
            .into_iter()
            .find_map(|(r, from)| r.as_deref().and_then(usable_ref).map(|u| (u, from)))
            .unwrap_or(((config.default_ref.clone(), false), "default"));
        let tag = ref_is_tag || (ref_source == "payload" && draft.tag.unwrap_or(false));

        Ok(DeploymentEvent {
            source,
            project,
            environment,
            sha,
            git_ref,
            ref_source,
            tag,
            status,
            tier,
            external_url: non_empty(draft.external_url),
            delivery_id: non_empty(draft.delivery_id),
            sha_hint: draft.sha_hint,
            occurred_at: draft.occurred_at,
            ordered: false,
            short_sha: short.is_some(),
            environment_by_bridge,
        })
    }
}

/// A full 40-hex sha, lower-cased; anything else is `None`.
pub fn normalize_sha(s: &str) -> Option<String> {
    let s = s.trim();
    (s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())).then(|| s.to_ascii_lowercase())
}

/// A ref that can be sent to GitLab as `ref`, and whether it names a tag.
/// `refs/heads/x` becomes `x`, `refs/tags/v1` becomes tag `v1`; `HEAD`, commit shas and other
/// `refs/...` paths are not branch names and are refused (the caller falls back to the default ref).
pub fn usable_ref(r: &str) -> Option<(String, bool)> {
    let r = r.trim();
    let (name, tag) = if let Some(b) = r.strip_prefix("refs/heads/") {
        (b, false)
    } else if let Some(t) = r.strip_prefix("refs/tags/") {
        (t, true)
    } else {
        (r, false)
    };
    let looks_like_sha = name.len() >= 7 && name.len() <= 40 && name.bytes().all(|b| b.is_ascii_hexdigit());
    if name.is_empty() || name == "HEAD" || name.starts_with("refs/") || looks_like_sha || !is_ref_name(name) {
        return None;
    }
    Some((name.to_string(), tag))
}

/// Git's rules for a branch or tag name (`git check-ref-format`): no control characters, space
/// or `~^:?*[\`, no `..`, `@{` or `//`, no `.`-led component, not ending in `/`, `.` or `.lock`.
fn is_ref_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "@"
        && !name.chars().any(|c| c.is_control() || c == ' ' || "~^:?*[\\".contains(c))
        && !name.contains("..")
        && !name.contains("@{")
        && !name.contains("//")
        && !name.starts_with('/')
        && !name.ends_with('/')
        && !name.ends_with('.')
        && !name.ends_with(".lock")
        && !name.split('/').any(|c| c.starts_with('.'))
}

/// A numeric id, or a full path whose segments are names: never empty, `.` or `..` (which URL
/// parsing would resolve away, sending the call — and the token — to another GitLab endpoint).
pub fn validate_project(p: &str) -> Result<(), Error> {
    let ok = (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        || (p.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != "..")
            && p.chars().all(|c| c.is_alphanumeric() || "/-_.+".contains(c)));
    if ok {
        Ok(())
    } else {
        Err(Error::BadRequest(format!(
            "`project` must be a numeric id or a full path such as group/subgroup/app, got {:?}",
            truncate(p, 80)
        )))
    }
}

/// GitLab's own rule for environment names (`Gitlab::Regex.environment_name_regex`, max 255).
pub fn validate_environment_name(name: &str) -> Result<(), Error> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "_${}. -".contains(c);
    let ok = name.chars().count() <= 255
        && name.chars().all(|c| allowed(c) || c == '/')
        && !name.starts_with('/')
        && !name.ends_with('/');
    if ok {
        Ok(())
    } else {
        Err(Error::BadRequest(format!(
            "environment name {:?} is not valid in GitLab: it can contain only letters, digits, '-', '_', '/', '$', '{{', '}}', '.', and spaces, cannot start or end with '/', and is at most 255 characters",
            truncate(name, 80)
        )))
    }
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "c0ffee1234567890abcdef1234567890abcdef12";

    fn draft() -> EventDraft {
        EventDraft {
            environment: Some("production".into()),
            sha: Some(SHA.to_uppercase()),
            git_ref: Some("refs/heads/main".into()),
            status: Some(Status::Running),
            ..Default::default()
        }
    }

    fn overrides(project: &str) -> Overrides {
        Overrides { project: Some(project.into()), ..Default::default() }
    }

    #[test]
    fn refs_that_git_would_refuse_are_not_sent() {
        for bad in [
            "refs/heads/\rrefs/heads/",
            "refs/heads/\rmain",
            "ma\nin",
            "a b",
            "a..b",
            "a~1",
            "x:y",
            "a@{1}",
            "feat//x",
            ".hidden",
            "a/.b",
            "x.lock",
            "x/",
            "refs/heads/",
        ] {
            assert_eq!(usable_ref(bad), None, "{bad:?}");
        }
        for ok in ["main", "feature/x-1", "release/2.0", "refs/heads/main", "v1.4.0"] {
            assert!(usable_ref(ok).is_some(), "{ok:?}");
        }
    }

    #[test]
    fn project_paths_have_no_empty_or_dot_segments() {
        for ok in ["42", "group/app", "group/sub/my.app", "a+b/c_d-e"] {
            assert!(validate_project(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "group/..",
            "group/./app",
            "/group/app",
            "group/app/",
            "group//app",
            "group/app%2F..",
        ] {
            assert!(validate_project(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn query_overrides_payload_and_sha_is_normalized() {
        let o = Overrides {
            project: Some("group/app".into()),
            environment: Some("staging".into()),
            git_ref: Some("release".into()),
            tier: Some("staging".into()),
            ..Overrides::default()
        };
        let ev = DeploymentEvent::from_draft("generic", draft(), &o, &Config::default()).unwrap();
        assert_eq!((ev.ref_source, ev.tier), ("query", Some(Tier::Staging)));
        assert_eq!(ev.environment, "staging");
        assert_eq!(ev.git_ref, "release");
        assert_eq!(ev.sha, SHA);
        assert!(!ev.tag);
    }

    #[test]
    fn refs_are_cleaned_or_fall_back() {
        assert_eq!(usable_ref("refs/heads/main"), Some(("main".into(), false)));
        assert_eq!(usable_ref("refs/tags/v1.2"), Some(("v1.2".into(), true)));
        assert_eq!(usable_ref("HEAD"), None);
        assert_eq!(usable_ref(SHA), None);
        assert_eq!(usable_ref("refs/pull/1/head"), None);
        let mut d = draft();
        d.git_ref = Some("HEAD".into());
        let config = Config { default_ref: "trunk".into(), ..Config::default() };
        let ev = DeploymentEvent::from_draft("generic", d.clone(), &overrides("1"), &config).unwrap();
        assert_eq!((ev.git_ref.as_str(), ev.ref_source), ("trunk", "default"));
        // A per-environment ref comes before the payload's and after the query's.
        let mut config = Config::default();
        config.environments.insert(
            "production".into(),
            crate::config::EnvironmentSettings { tier: Some(Tier::Production), git_ref: Some("stable".into()) },
        );
        let ev = DeploymentEvent::from_draft("generic", draft(), &overrides("1"), &config).unwrap();
        assert_eq!(
            (ev.git_ref.as_str(), ev.ref_source, ev.tier),
            ("stable", "environment config", Some(Tier::Production))
        );
        let o = Overrides { git_ref: Some(SHA.into()), ..overrides("1") };
        let ev = DeploymentEvent::from_draft("generic", draft(), &o, &config).unwrap();
        assert_eq!(ev.ref_source, "environment config", "a sha in the query falls through");
        let ev = DeploymentEvent::from_draft("generic", draft(), &overrides("1"), &Config::default()).unwrap();
        assert_eq!((ev.git_ref.as_str(), ev.ref_source), ("main", "payload"));
    }

    #[test]
    fn missing_and_invalid_fields_name_the_field() {
        let err = |d: EventDraft, o: &Overrides| {
            DeploymentEvent::from_draft("generic", d, o, &Config::default()).unwrap_err().to_string()
        };
        assert!(err(draft(), &Overrides::default()).contains("`project`"));
        let mut d = draft();
        d.sha = Some("abc123".into());
        assert!(err(d, &overrides("1")).contains("`sha`"));
        let mut d = draft();
        d.sha = None;
        assert!(err(d, &overrides("1")).contains("`sha` is missing"));
        let mut d = draft();
        d.environment = None;
        assert!(err(d, &overrides("1")).contains("`environment`"));
        let mut d = draft();
        d.environment = Some("bad|name".into());
        assert!(err(d, &overrides("1")).contains("not valid"));
        assert!(err(draft(), &overrides("/abs")).contains("`project`"));
        assert!(err(draft(), &Overrides { tier: Some("prod".into()), ..overrides("1") }).contains("`tier`"));
    }

    #[test]
    fn environment_names_follow_gitlab() {
        for ok in ["production", "review/feature-1", "prod eu", "${X}.y"] {
            assert!(validate_environment_name(ok).is_ok(), "{ok}");
        }
        for bad in ["/prod", "prod/", "prod:eu", "é"] {
            assert!(validate_environment_name(bad).is_err(), "{bad}");
        }
        assert!(validate_environment_name(&"a".repeat(256)).is_err());
    }
}
