//! The normalized event every delivery becomes, whatever tool sent it: **what changes** (the
//! verb, [`Change`]), **where** (a validated project and environment), and the tool's own facts
//! about it (its time, its delivery id).
//!
//! Its fields are validated types ([`ProjectRef`], [`EnvironmentName`], [`CommitSha`]): an
//! `Event` that exists is one GitLab can be asked to carry out, and validation lives here only.
//! A source reads a delivery into an [`EventDraft`] (what the payload says); [`Event::from_draft`]
//! applies the URL's [`Overrides`] and the operator's [`Defaults`] and validates. The event is
//! serializable as it is: the spool keeps it whole, so a new field needs no copy by hand.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use time::OffsetDateTime;

use crate::error::Error;
use crate::model::{Status, Tier};

/// A GitLab project as a call names it: a numeric id, or a full path whose segments are names
/// — never empty, `.` or `..`, which URL parsing would resolve away and so aim the call (and
/// the token) at another GitLab endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProjectRef(String);

impl ProjectRef {
    pub fn parse(p: &str) -> Result<ProjectRef, Error> {
        let p = p.trim();
        let ok = (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            || (p.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != "..")
                && p.chars().all(|c| c.is_alphanumeric() || "/-_.+".contains(c)));
        if ok {
            Ok(ProjectRef(p.to_string()))
        } else {
            Err(Error::BadRequest(format!(
                "`project` must be a numeric id or a full path such as group/subgroup/app, got {:?}",
                truncate(p, 80)
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Named by its numeric id (not its path).
    pub fn is_id(&self) -> bool {
        self.0.bytes().all(|b| b.is_ascii_digit())
    }
}

/// A GitLab environment name, by GitLab's own rule (`Gitlab::Regex.environment_name_regex`,
/// at most 255 characters): checked before GitLab is called, since old GitLab versions answer
/// an invalid name with a 500.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EnvironmentName(String);

impl EnvironmentName {
    pub fn parse(name: &str) -> Result<EnvironmentName, Error> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || "_${}. -/".contains(c);
        let ok = !name.is_empty()
            && name.chars().count() <= 255
            && name.chars().all(allowed)
            && !name.starts_with('/')
            && !name.ends_with('/');
        if ok {
            Ok(EnvironmentName(name.to_string()))
        } else {
            Err(Error::BadRequest(format!(
                "environment name {:?} is not valid in GitLab: it can contain only letters, digits, '-', '_', '/', '$', '{{', '}}', '.', and spaces, cannot start or end with '/', and is at most 255 characters",
                truncate(name, 80)
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A commit id, lower-cased: the full 40 hexadecimal digits, or an abbreviation of 7 to 39 that
/// GitLab expands when the event is delivered (a Heroku release's `Deploy 1a2b3c4d`, an image
/// tag), so that an event can wait in the spool while GitLab is down.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CommitSha(String);

impl CommitSha {
    /// A full 40-hex sha; anything else is `None`.
    pub fn full(s: &str) -> Option<CommitSha> {
        let s = s.trim();
        (s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())).then(|| CommitSha(s.to_ascii_lowercase()))
    }

    /// A full sha, or an abbreviation of at least 7 hexadecimal digits.
    pub fn full_or_abbreviated(s: &str) -> Option<CommitSha> {
        let s = s.trim();
        ((7..=40).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| CommitSha(s.to_ascii_lowercase()))
    }

    /// Still to be expanded by GitLab.
    pub fn is_abbreviated(&self) -> bool {
        self.0.len() < 40
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! text_type {
    ($($t:ident: $parse:expr),* $(,)?) => {$(
        impl TryFrom<String> for $t {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                let parse: fn(&str) -> Result<$t, String> = $parse;
                parse(&s)
            }
        }
        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.0
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    )*};
}

text_type! {
    ProjectRef: |s| ProjectRef::parse(s).map_err(|e| e.to_string()),
    EnvironmentName: |s| EnvironmentName::parse(s).map_err(|e| e.to_string()),
    CommitSha: |s| CommitSha::full_or_abbreviated(s).ok_or_else(|| format!("{s:?} is not a commit sha")),
}

/// Which input gave an event's ref (answers say so as `ref_source`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefSource {
    #[serde(rename = "query")]
    Query,
    #[serde(rename = "route")]
    Route,
    #[serde(rename = "environment config")]
    EnvironmentConfig,
    #[serde(rename = "payload")]
    Payload,
    #[serde(rename = "default")]
    Default,
}

/// What a source could read from one delivery. Fields a source does not know stay `None`
/// and may be supplied by the URL (`environment`, `ref`), the route or the defaults.
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
    /// `sha` may be an abbreviation, for GitLab to expand ([`CommitSha`]).
    pub short_sha: bool,
    /// The environment's name is the bridge's convention (Vercel's and Netlify's
    /// `preview/<branch>`), not something the user named: no warning asks to rename it.
    pub environment_by_bridge: bool,
}

/// Values from the URL (and the route); they win over what the payload says.
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

impl Overrides {
    /// What the call's unsigned parts chose (the query's project, environment, ref and tier, the
    /// facade's path project; the route's ref is the route's): part of a delivery's identity for
    /// the replay defence, so that a copy aimed elsewhere is not the same delivery.
    pub fn unsigned_choice(&self) -> String {
        let part = |v: &Option<String>| v.as_deref().unwrap_or("").to_string();
        [part(&self.project).to_ascii_lowercase(), part(&self.environment), part(&self.git_ref), part(&self.tier)]
            .join("\u{0}")
    }
}

/// What `ENVIRONMENTS` may say about one environment.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentSettings {
    pub tier: Option<Tier>,
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
}

/// What the operator decided for events that do not say: the ref of last resort (`DEFAULT_REF`)
/// and per-environment settings (`ENVIRONMENTS`). Given to [`Event::from_draft`] by the
/// pipeline; the domain never reads the process's configuration itself.
#[derive(Clone, Debug, PartialEq)]
pub struct Defaults {
    pub git_ref: String,
    pub environments: HashMap<String, EnvironmentSettings>,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults { git_ref: "main".into(), environments: HashMap::new() }
    }
}

/// One change for GitLab, validated, ready for the lifecycle (and for the spool).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The tool that sent it (a name of `sources::ALL`, kept as text: a spooled event is
    /// delivered whatever the sources of the build that delivers it).
    pub source: String,
    pub project: ProjectRef,
    pub environment: EnvironmentName,
    /// See [`EventDraft::environment_by_bridge`] (false when the URL or route named it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub environment_by_bridge: bool,
    /// What changes: the verb.
    pub change: Change,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<String>,
    /// The tool's own time of the event, when its payload carries one: a delivery older than
    /// what GitLab already shows changes nothing (see the lifecycle).
    #[serde(default, with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<OffsetDateTime>,
    /// Delivered from the spool, in its group's order: judged by the tool's times only, never
    /// by GitLab's clock (which recorded the spool's drain, not the events).
    #[serde(skip)]
    pub ordered: bool,
}

/// What an event asks GitLab to do. Matched in one place, the lifecycle; the spool keeps it as
/// it is (`{"deployment": {...}}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// A deployment's status: one rollout of one sha, `running` → `success` / `failed` / `canceled`.
    Deployment(Deploy),
}

/// A rollout's state change: which commit, on which ref, in which status, and what the
/// environment should say once it is recorded (tier, URL).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Deploy {
    pub sha: CommitSha,
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub ref_source: RefSource,
    pub tag: bool,
    pub status: Status,
    /// The tier to give the environment, when configured (query `tier`, the route or `ENVIRONMENTS`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<Tier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_url: Option<String>,
    /// See [`EventDraft::sha_hint`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha_hint: Option<String>,
}

impl Event {
    /// The deployment change, for events that are one (all of them, today).
    pub fn deploy(&self) -> Option<&Deploy> {
        match &self.change {
            Change::Deployment(d) => Some(d),
        }
    }

    /// The verb as a log line and an answer say it: the deployment status.
    pub fn verb(&self) -> &'static str {
        match &self.change {
            Change::Deployment(d) => d.status.as_str(),
        }
    }

    /// The commit, where the change has one (for logs).
    pub fn sha(&self) -> Option<&CommitSha> {
        match &self.change {
            Change::Deployment(d) => Some(&d.sha),
        }
    }

    /// Applies the URL's overrides and the operator's defaults to a draft, and validates every
    /// field; the 400 names the field and the fix.
    pub fn from_draft(
        source: &str,
        draft: EventDraft,
        overrides: &Overrides,
        defaults: &Defaults,
    ) -> Result<Event, Error> {
        let project = non_empty(overrides.project.clone()).ok_or_else(|| {
            Error::BadRequest(
                "query parameter `project` is required (numeric id or full path such as group/app)".into(),
            )
        })?;
        let project = ProjectRef::parse(&project)?;

        let environment_by_bridge = draft.environment_by_bridge && non_empty(overrides.environment.clone()).is_none();
        let environment = non_empty(overrides.environment.clone()).or(non_empty(draft.environment)).ok_or_else(|| {
            Error::BadRequest(format!(
                "`environment` is missing: the {source} payload names none; add `environment=<name>` to the webhook URL"
            ))
        })?;
        let environment = EnvironmentName::parse(&environment)?;

        let sha = non_empty(draft.sha)
            .ok_or_else(|| Error::BadRequest(format!("`sha` is missing from the {source} payload")))?;
        let parsed = if draft.short_sha { CommitSha::full_or_abbreviated(&sha) } else { CommitSha::full(&sha) };
        let sha = parsed.ok_or_else(|| {
            Error::BadRequest(format!(
                "`sha` must be a full 40-character hexadecimal commit id, got {:?}",
                truncate(&sha, 80)
            ))
        })?;

        let status =
            draft.status.ok_or_else(|| Error::BadRequest(format!("`status` is missing from the {source} payload")))?;

        let settings = defaults.environments.get(environment.as_str());
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
            (non_empty(overrides.git_ref.clone()), RefSource::Query),
            (non_empty(overrides.route_ref.clone()), RefSource::Route),
            (settings.and_then(|s| s.git_ref.clone()), RefSource::EnvironmentConfig),
            (non_empty(draft.git_ref), RefSource::Payload),
        ];
        let ((git_ref, ref_is_tag), ref_source) = candidates
            .into_iter()
            .find_map(|(r, from)| r.as_deref().and_then(usable_ref).map(|u| (u, from)))
            .unwrap_or(((defaults.git_ref.clone(), false), RefSource::Default));
        let tag = ref_is_tag || (ref_source == RefSource::Payload && draft.tag.unwrap_or(false));

        Ok(Event {
            source: source.to_string(),
            project,
            environment,
            environment_by_bridge,
            change: Change::Deployment(Deploy {
                sha,
                git_ref,
                ref_source,
                tag,
                status,
                tier,
                external_url: non_empty(draft.external_url),
                sha_hint: draft.sha_hint,
            }),
            delivery_id: non_empty(draft.delivery_id),
            occurred_at: draft.occurred_at,
            ordered: false,
        })
    }
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// A full 40-hex sha, lower-cased; anything else is `None` (for sources telling a commit id
/// from a version or a digest).
pub fn normalize_sha(s: &str) -> Option<String> {
    CommitSha::full(s).map(String::from)
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

    fn deploy(ev: &Event) -> &Deploy {
        ev.deploy().unwrap()
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
            assert!(ProjectRef::parse(ok).is_ok(), "{ok}");
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
            assert!(ProjectRef::parse(bad).is_err(), "{bad}");
        }
        assert!(ProjectRef::parse("42").unwrap().is_id() && !ProjectRef::parse("g/a").unwrap().is_id());
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
        let ev = Event::from_draft("generic", draft(), &o, &Defaults::default()).unwrap();
        let d = deploy(&ev);
        assert_eq!((d.ref_source, d.tier), (RefSource::Query, Some(Tier::Staging)));
        assert_eq!(ev.environment.as_str(), "staging");
        assert_eq!(d.git_ref, "release");
        assert_eq!(d.sha.as_str(), SHA);
        assert!(!d.tag);
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
        let defaults = Defaults { git_ref: "trunk".into(), ..Defaults::default() };
        let ev = Event::from_draft("generic", d.clone(), &overrides("1"), &defaults).unwrap();
        assert_eq!((deploy(&ev).git_ref.as_str(), deploy(&ev).ref_source), ("trunk", RefSource::Default));
        // A per-environment ref comes before the payload's and after the query's.
        let mut defaults = Defaults::default();
        defaults.environments.insert(
            "production".into(),
            EnvironmentSettings { tier: Some(Tier::Production), git_ref: Some("stable".into()) },
        );
        let ev = Event::from_draft("generic", draft(), &overrides("1"), &defaults).unwrap();
        let d = deploy(&ev);
        assert_eq!(
            (d.git_ref.as_str(), d.ref_source, d.tier),
            ("stable", RefSource::EnvironmentConfig, Some(Tier::Production))
        );
        let o = Overrides { git_ref: Some(SHA.into()), ..overrides("1") };
        let ev = Event::from_draft("generic", draft(), &o, &defaults).unwrap();
        assert_eq!(deploy(&ev).ref_source, RefSource::EnvironmentConfig, "a sha in the query falls through");
        let ev = Event::from_draft("generic", draft(), &overrides("1"), &Defaults::default()).unwrap();
        assert_eq!((deploy(&ev).git_ref.as_str(), deploy(&ev).ref_source), ("main", RefSource::Payload));
    }

    #[test]
    fn missing_and_invalid_fields_name_the_field() {
        let err = |d: EventDraft, o: &Overrides| {
            Event::from_draft("generic", d, o, &Defaults::default()).unwrap_err().to_string()
        };
        assert!(err(draft(), &Overrides::default()).contains("`project`"));
        let mut d = draft();
        d.sha = Some("abc123".into());
        assert!(err(d, &overrides("1")).contains("`sha`"));
        let mut d = draft();
        d.sha = Some("abc1234".into());
        assert!(err(d, &overrides("1")).contains("`sha`"), "an abbreviation only where the source says it may be one");
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
    fn abbreviated_shas_are_kept_for_gitlab_to_expand() {
        let d = EventDraft { sha: Some("C0FFEE12".into()), short_sha: true, ..draft() };
        let ev = Event::from_draft("heroku", d, &overrides("1"), &Defaults::default()).unwrap();
        assert_eq!(deploy(&ev).sha.as_str(), "c0ffee12");
        assert!(deploy(&ev).sha.is_abbreviated());
        let d = EventDraft { short_sha: true, ..draft() };
        let ev = Event::from_draft("heroku", d, &overrides("1"), &Defaults::default()).unwrap();
        assert!(!deploy(&ev).sha.is_abbreviated(), "a full sha stays full");
    }

    #[test]
    fn environment_names_follow_gitlab() {
        for ok in ["production", "review/feature-1", "prod eu", "${X}.y"] {
            assert!(EnvironmentName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["/prod", "prod/", "prod:eu", "é", ""] {
            assert!(EnvironmentName::parse(bad).is_err(), "{bad}");
        }
        assert!(EnvironmentName::parse(&"a".repeat(256)).is_err());
    }

    #[test]
    fn an_event_reads_back_as_it_was_written_and_refuses_what_it_would_not_build() {
        let mut ev = Event::from_draft("generic", draft(), &overrides("group/app"), &Defaults::default()).unwrap();
        ev.occurred_at = Some(crate::model::parse_time("2026-10-02T11:00:00.5Z").unwrap());
        let text = serde_json::to_string(&ev).unwrap();
        assert!(text.contains(r#""change":{"deployment":{"sha":"c0ffee"#), "{text}");
        assert_eq!(serde_json::from_str::<Event>(&text).unwrap(), ev);
        let bad = text.replace("group/app", "group/..");
        assert!(serde_json::from_str::<Event>(&bad).unwrap_err().to_string().contains("`project`"));
    }
}
