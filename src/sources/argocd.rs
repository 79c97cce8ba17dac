//! `argocd`: Argo CD notifications through the webhook service, authenticated by
//! `Authorization: Bearer <argocd webhook secret>` (Argo CD's webhook service sends configured
//! headers; it has no signature scheme). The body is the one our README's template renders with
//! Sprig's `toJson`, so every value arrives JSON-escaped:
//!
//! ```json
//! {"app":"guestbook","environment":"<annotation or empty>","phase":"Succeeded","message":"...",
//!  "health":"Healthy","revision":"<sync revision>","revisions":["<one per source>"],
//!  "source":{"repoURL":"...","targetRevision":"main"},"sources":[{"repoURL":"...","targetRevision":"..."}],
//!  "externalURLs":["https://..."],"images":["..."],"startedAt":"...","finishedAt":"...",
//!  "healthAt":"<health lastTransitionTime>","annotations":{}}
//! ```
//!
//! (Bodies of the earlier README template — flat `targetRevision`/`repoURL` — are read too.)
//! Status comes from the application's state, not from the trigger's name, so one template
//! serves every trigger: sync `Running` → running; `Succeeded` + `Healthy` → success;
//! `Succeeded` + `Progressing` → running (still rolling out); `Succeeded` + `Degraded`, or any
//! `Degraded` outside a running sync, → failed; `Error`/`Failed` → failed, except a sync an operator
//! terminated ("Operation terminated", how gitops-engine ends it) → canceled; `Terminating` → canceled.

use regex_lite::Regex;
use secrecy::SecretString;
use serde_json::{Map, Value};
use std::sync::Mutex;
use time::OffsetDateTime;

use super::{
    BEARER_HEADERS, BodyAuth, Credential, Read, Reading, Replay, Request, Setting, Settings, Source, Spec, any_value, str_field,
    time_field, verify_token,
};
use crate::error::Error;
use crate::event::{EventDraft, normalize_sha};
use crate::model::Status;

pub static SOURCE: &dyn Source = &ArgoCd;

pub struct ArgoCd;

/// The application annotation holding the application commit (GitOps mapping).
const SHA_ANNOTATION: &str = "ARGOCD_SHA_ANNOTATION";
/// The image whose tag is the application commit.
const IMAGE: &str = "ARGOCD_IMAGE";

static SPEC: Spec = Spec {
    name: "argocd",
    title: "Argo CD notifications (the webhook service)",
    credential: Credential {
        headers: BEARER_HEADERS,
        missing: "missing credentials: send `Authorization: Bearer <argocd webhook secret>`",
    },
    body: BodyAuth::Unsigned,
    replay: Replay::NoSignedTime {
        why: "Argo CD's webhook service sends configured headers and has no signature scheme: nothing it sends is signed, its times included",
    },
    settings: &[
        Setting {
            var: SHA_ANNOTATION,
            default: None,
            doc: "Argo CD application annotation holding the application commit (GitOps mapping)",
            check: any_value,
        },
        Setting {
            var: IMAGE,
            default: None,
            doc: "image whose tag is the application commit: `registry.example.com/app`, or a regex with one capture group ([regex-lite](https://docs.rs/regex-lite) syntax: Perl-style, ASCII classes such as `\\d`, no Unicode classes)",
            check: check_image,
        },
    ],
    secrets: &[],
    docs: "docs/tools/argocd.md",
};

/// `ARGOCD_IMAGE`: an image name, or a regex with exactly one capture group.
fn check_image(spec: &str) -> Result<(), String> {
    if !spec.contains('(') {
        return Ok(());
    }
    let re = Regex::new(spec).map_err(|e| format!("is not a valid regex: {e}"))?;
    match re.captures_len() {
        2 => Ok(()),
        _ => Err("as a regex needs exactly one capture group (the commit)".into()),
    }
}

/// Maps an application's sync phase, health and operation message to a deployment status, or says why not.
pub fn status_of(phase: &str, health: &str, message: &str) -> Result<Status, String> {
    match (phase, health) {
        ("Running", _) => Ok(Status::Running),
        ("Error" | "Failed", _) if terminated_by_operator(message) => Ok(Status::Canceled),
        ("Error" | "Failed", _) => Ok(Status::Failed),
        ("Terminating", _) => Ok(Status::Canceled),
        (_, "Degraded") => Ok(Status::Failed),
        ("Succeeded", "Healthy") => Ok(Status::Success),
        ("Succeeded", "Progressing" | "") => Ok(Status::Running),
        ("Succeeded", other) => Err(format!("sync succeeded but health is {other}, which is not a deployment state change")),
        ("", h) => Err(format!("no sync operation and health {h:?} is not a deployment state change")),
        (p, _) => Err(format!("sync phase {p:?} is not a deployment state change")),
    }
}

/// gitops-engine ends a terminated sync as `Failed` with the message "Operation terminated"
/// (`sync_context.go` `Terminate()`); Argo CD appends ", triggered by controller sync timeout" when
/// its own sync timeout terminated it, which is a failure, not a cancellation.
fn terminated_by_operator(message: &str) -> bool {
    message.starts_with("Operation terminated") && !message.contains("triggered by")
}

/// The time of the state change: the sync's start for a running sync, its end for a finished
/// one; for a failure found by health alone (`Degraded` after the sync), when the health became
/// what it is (`healthAt`, the health's `lastTransitionTime`, which Argo CD has since 2.14).
fn occurred_at(obj: &Map<String, Value>, phase: &str, health: &str) -> Option<OffsetDateTime> {
    match (phase, health) {
        ("Running" | "Terminating", _) | ("Succeeded", "Progressing" | "") => time_field(obj, "startedAt"),
        ("Error" | "Failed", _) | ("Succeeded", "Healthy") => time_field(obj, "finishedAt").or_else(|| time_field(obj, "startedAt")),
        (_, "Degraded") => time_field(obj, "healthAt"),
        _ => None,
    }
}

impl Source for ArgoCd {
    fn spec(&self) -> &'static Spec {
        &SPEC
    }

    fn verify(&self, request: &Request<'_>, secret: &SecretString) -> Result<(), Error> {
        verify_token(SPEC.name, request, secret)
    }

    fn read(&self, request: &Request<'_>, settings: &Settings) -> Result<Reading, Error> {
        let mut obj = request.json_object(SPEC.name)?;
        // Go templates print a missing map key as "<no value>": treat it as absent.
        obj.retain(|_, v| v.as_str() != Some("<no value>"));
        let read = match draft(&obj)? {
            Ok(mut d) => {
                gitops_mapping(&obj, settings, &mut d);
                Read::Draft(d, None)
            }
            Err(reason) => Read::Ignored(reason),
        };
        Ok(Reading { signed_at: None, delivery_key: None, read })
    }

    fn sign(&self, _body: &[u8], secret: &str) -> Vec<(&'static str, String)> {
        vec![("authorization", format!("Bearer {secret}"))]
    }
}

/// The draft of a notification, or why it is not a deployment state change.
fn draft(obj: &Map<String, Value>) -> Result<Result<EventDraft, String>, Error> {
    let app = str_field(obj, "app");
    let phase = str_field(obj, "phase").unwrap_or_default();
    let health = str_field(obj, "health").unwrap_or_default();
    if phase.is_empty() && health.is_empty() {
        return Err(Error::BadRequest(
            "`phase` and `health` are both missing from the argocd body; use the notification template of docs/tools/argocd.md".into(),
        ));
    }
    let message = str_field(obj, "message").unwrap_or_default();
    let status = match status_of(&phase, &health, &message) {
        Ok(s) => s,
        Err(reason) => return Ok(Err(reason)),
    };

    // An explicit `sha` wins; then the sync revision; for multi-source apps (no `revision`)
    // the first entry of `revisions` that is a commit id (chart versions skipped), whose
    // source (same index in `sources`) gives the branch and repository.
    let revisions: Vec<String> = match obj.get("revisions") {
        Some(Value::Array(a)) => a.iter().map(|v| v.as_str().unwrap_or_default().to_string()).collect(),
        _ => Vec::new(),
    };
    let commit_index = revisions.iter().position(|r| normalize_sha(r).is_some());
    let source = match (str_field(obj, "revision"), commit_index, obj.get("sources")) {
        (None, Some(i), Some(Value::Array(sources))) => sources.get(i).and_then(Value::as_object),
        _ => obj.get("source").and_then(Value::as_object),
    };
    let source_field = |key: &str| source.and_then(|s| str_field(s, key)).or_else(|| str_field(obj, key));
    let sha = str_field(obj, "sha")
        .or_else(|| str_field(obj, "revision"))
        .or_else(|| commit_index.and_then(|i| revisions.get(i).cloned()));
    let external_url = match obj.get("externalURLs") {
        Some(Value::Array(a)) => a.iter().find_map(|v| v.as_str()).map(str::to_string),
        _ => None,
    };
    let explicit = str_field(obj, "sha").is_some();
    let sha_hint = (!explicit && sha.is_some()).then(|| {
        let repo = source_field("repoURL").map(|r| format!(" ({r})")).unwrap_or_default();
        format!(
            "It is the revision Argo CD synced from the application's source repository{repo}; if that is a separate GitOps (manifests) repository, send the application commit instead: a `sha` field in the notification template, the annotation named by ARGOCD_SHA_ANNOTATION, or the image tag matched by ARGOCD_IMAGE (docs/tools/argocd.md, \"GitOps repositories\"; docs/dora.md, \"Trap 5\")"
        )
    });
    let delivery_id = app.as_ref().map(|a| format!("{a}@{}:{phase}/{health}", sha.as_deref().unwrap_or("?")));
    Ok(Ok(EventDraft {
        environment: str_field(obj, "environment").or(app),
        sha,
        git_ref: source_field("targetRevision"),
        tag: None,
        status: Some(status),
        external_url,
        delivery_id,
        sha_hint,
        occurred_at: occurred_at(obj, &phase, &health),
        short_sha: false,
        environment_by_bridge: false,
    }))
}

/// GitOps mapping: when the payload has no explicit `sha`, the application commit may come
/// from the annotation named by `ARGOCD_SHA_ANNOTATION`, or from the tag of the image named
/// by `ARGOCD_IMAGE` (a short sha there is expanded by GitLab). Otherwise the sync revision stays.
fn gitops_mapping(obj: &Map<String, Value>, settings: &Settings, draft: &mut EventDraft) {
    if str_field(obj, "sha").is_some() {
        return;
    }
    if let Some(key) = settings.get(SHA_ANNOTATION) {
        let value = obj.get("annotations").and_then(Value::as_object).and_then(|a| str_field(a, key));
        if let Some(v) = value {
            draft.sha = Some(v);
            draft.sha_hint = Some(format!("It was read from the application's annotation {key:?}"));
            return;
        }
    }
    if let Some(spec) = settings.get(IMAGE) {
        let images: Vec<&str> = match obj.get("images") {
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if let Some(tag) = images.iter().find_map(|i| image_commit(spec, i)) {
            // An abbreviation is expanded by GitLab when the event is delivered.
            draft.short_sha = true;
            draft.sha = Some(tag.clone());
            draft.sha_hint = Some(format!("It was read from the tag {tag:?} of an image matching ARGOCD_IMAGE ({spec:?})"));
        }
    }
}

/// The commit in `image` per `spec`: a regex with one capture group, or an image name whose
/// tag is taken (`registry.example.com/app:<tag>`, a `@sha256:` digest suffix ignored).
pub fn image_commit(spec: &str, image: &str) -> Option<String> {
    if spec.contains('(') {
        static CACHE: Mutex<Option<(String, Regex)>> = Mutex::new(None);
        let mut cache = CACHE.lock().ok()?;
        if cache.as_ref().is_none_or(|(p, _)| p != spec) {
            *cache = Some((spec.to_string(), Regex::new(spec).ok()?));
        }
        let (_, re) = cache.as_ref()?;
        return re.captures(image)?.get(1).map(|m| m.as_str().to_string());
    }
    let image = image.split('@').next().unwrap_or(image);
    let slash = image.rfind('/').map(|i| i + 1).unwrap_or(0);
    let colon = image[slash..].rfind(':').map(|i| slash + i)?;
    (image[..colon] == *spec).then(|| image[colon + 1..].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "c0ffee1234567890abcdef1234567890abcdef12";

    fn read_with(body: &str, settings: &Settings) -> Result<Read, Error> {
        Ok(ArgoCd.read(&Request::new(&axum::http::HeaderMap::new(), body.as_bytes()), settings)?.read)
    }

    fn parse(body: &str) -> Read {
        read_with(body, &Settings::default()).unwrap()
    }

    #[test]
    fn states_map_to_statuses() {
        assert_eq!(status_of("Running", "Progressing", ""), Ok(Status::Running));
        assert_eq!(status_of("Succeeded", "Healthy", ""), Ok(Status::Success));
        assert_eq!(status_of("Succeeded", "Progressing", ""), Ok(Status::Running));
        assert_eq!(status_of("Succeeded", "Degraded", ""), Ok(Status::Failed));
        assert_eq!(status_of("", "Degraded", ""), Ok(Status::Failed));
        assert_eq!(status_of("Failed", "Healthy", "one or more objects failed to apply"), Ok(Status::Failed));
        assert_eq!(status_of("Error", "", ""), Ok(Status::Failed));
        assert_eq!(status_of("Terminating", "", ""), Ok(Status::Canceled));
        assert_eq!(status_of("Failed", "Healthy", "Operation terminated"), Ok(Status::Canceled));
        assert_eq!(status_of("Failed", "Healthy", "Operation terminated (retried 2 times)."), Ok(Status::Canceled));
        assert_eq!(status_of("Failed", "", "Operation terminated, triggered by controller sync timeout"), Ok(Status::Failed));
        assert!(status_of("Succeeded", "Suspended", "").is_err());
        assert!(status_of("", "Healthy", "").is_err());
    }

    #[test]
    fn deployed_body_becomes_a_success_draft() {
        let body = format!(
            r#"{{"app":"example-api","phase":"Succeeded","health":"Healthy","revision":"{SHA}","revisions":[],"targetRevision":"main","externalURLs":["https://api.example.com"]}}"#
        );
        let Read::Draft(d, _) = parse(&body) else { panic!() };
        assert_eq!(d.status, Some(Status::Success));
        assert_eq!(d.environment.as_deref(), Some("example-api"));
        assert_eq!(d.sha.as_deref(), Some(SHA));
        assert_eq!(d.git_ref.as_deref(), Some("main"));
        assert_eq!(d.external_url.as_deref(), Some("https://api.example.com"));
    }

    #[test]
    fn multi_source_takes_first_commit_revision_and_explicit_fields_win() {
        let body = format!(r#"{{"app":"a","phase":"Running","revision":"","revisions":["1.2.3","{SHA}"]}}"#);
        let Read::Draft(d, _) = parse(&body) else { panic!() };
        assert_eq!(d.sha.as_deref(), Some(SHA));
        let other = "b".repeat(40);
        let body = format!(r#"{{"app":"a","environment":"prod","sha":"{other}","phase":"Running","revision":"{SHA}"}}"#);
        let Read::Draft(d, _) = parse(&body) else { panic!() };
        assert_eq!(d.sha.as_deref(), Some(other.as_str()));
        assert_eq!(d.environment.as_deref(), Some("prod"));
    }

    #[test]
    fn multi_source_ref_is_the_branch_of_the_source_the_commit_came_from() {
        let body = format!(
            r#"{{"app":"a","phase":"Succeeded","health":"Healthy","revision":"","revisions":["4.2.1","{SHA}"],
                "source":{{}},"sources":[{{"repoURL":"https://charts.example.com","chart":"a","targetRevision":"4.2.1"}},
                {{"repoURL":"https://gitlab.example.com/g/a.git","targetRevision":"release/2"}}]}}"#
        );
        let Read::Draft(d, _) = parse(&body) else { panic!() };
        assert_eq!((d.sha.as_deref(), d.git_ref.as_deref()), (Some(SHA), Some("release/2")));
        assert!(d.sha_hint.unwrap().contains("https://gitlab.example.com/g/a.git"));
        let single = format!(r#"{{"app":"a","phase":"Running","revision":"{SHA}","source":{{"repoURL":"r","targetRevision":"main"}}}}"#);
        let Read::Draft(d, _) = parse(&single) else { panic!() };
        assert_eq!(d.git_ref.as_deref(), Some("main"));
    }

    #[test]
    fn image_tags_by_name_or_regex() {
        assert_eq!(image_commit("registry.example.com:5000/team/app", &format!("registry.example.com:5000/team/app:{SHA}")), Some(SHA.into()));
        assert_eq!(image_commit("registry.example.com/app", "registry.example.com/app:c0ffee12@sha256:abcd"), Some("c0ffee12".into()));
        assert_eq!(image_commit("registry.example.com/app", "registry.example.com/other:c0ffee12"), None);
        assert_eq!(image_commit(r"app:v\d+-([0-9a-f]{40})$", &format!("ghcr.io/x/app:v2-{SHA}")), Some(SHA.into()));
        assert_eq!(image_commit(r"app:v\d+-([0-9a-f]{40})$", "ghcr.io/x/app:latest"), None);
    }

    #[test]
    fn the_time_is_the_syncs_start_or_end_or_the_healths_transition() {
        let at = |phase: &str, health: &str| {
            let body = format!(
                r#"{{"app":"a","phase":"{phase}","health":"{health}","revision":"{SHA}","startedAt":"2026-10-02T11:00:00Z","finishedAt":"2026-10-02T11:00:42Z"}}"#
            );
            let Read::Draft(d, _) = parse(&body) else { panic!("{phase} {health}") };
            d.occurred_at.map(crate::model::format_time)
        };
        assert_eq!(at("Running", "Progressing").as_deref(), Some("2026-10-02T11:00:00Z"));
        assert_eq!(at("Succeeded", "Healthy").as_deref(), Some("2026-10-02T11:00:42Z"));
        assert_eq!(at("Failed", "Healthy").as_deref(), Some("2026-10-02T11:00:42Z"));
        assert_eq!(at("Succeeded", "Degraded"), None, "no healthAt: no time");
        assert_eq!(at("", "Degraded"), None);
        let body = format!(r#"{{"app":"a","phase":"Succeeded","health":"Degraded","revision":"{SHA}","healthAt":"2026-10-02T11:09:00Z"}}"#);
        let Read::Draft(d, _) = parse(&body) else { panic!() };
        assert_eq!(d.occurred_at.map(crate::model::format_time).as_deref(), Some("2026-10-02T11:09:00Z"));
        let body = format!(r#"{{"app":"a","phase":"Running","revision":"{SHA}","startedAt":"<no value>"}}"#);
        let Read::Draft(d, _) = parse(&body) else { panic!() };
        assert_eq!(d.occurred_at, None);
    }

    #[test]
    fn go_template_no_value_is_absent() {
        let body = format!(r#"{{"app":"a","environment":"<no value>","phase":"Running","health":"<no value>","revision":"{SHA}"}}"#);
        let Read::Draft(d, _) = parse(&body) else { panic!() };
        assert_eq!(d.environment.as_deref(), Some("a"));
    }

    #[test]
    fn non_deployment_states_are_ignored_and_empty_bodies_rejected() {
        assert!(matches!(parse(r#"{"app":"a","phase":"","health":"Healthy"}"#), Read::Ignored(_)));
        assert!(read_with(r#"{"app":"a"}"#, &Settings::default()).is_err());
    }

    #[test]
    fn the_application_commit_from_an_annotation_or_an_image_tag() {
        let mut settings = super::super::ToolSettings::default();
        settings.set(SHA_ANNOTATION, "example.com/app-commit").unwrap();
        settings.set(IMAGE, "registry.example.com/shop").unwrap();
        let settings = settings.of("argocd");
        let other = "b".repeat(40);
        let body = |annotations: &str| {
            format!(
                r#"{{"app":"a","phase":"Running","revision":"{SHA}","annotations":{annotations},"images":["registry.example.com/shop:c0ffee12"]}}"#
            )
        };
        let Read::Draft(d, _) = read_with(&body(&format!(r#"{{"example.com/app-commit":"{other}"}}"#)), settings).unwrap() else {
            panic!()
        };
        assert_eq!(d.sha.as_deref(), Some(other.as_str()));
        let Read::Draft(d, _) = read_with(&body("{}"), settings).unwrap() else { panic!() };
        assert_eq!((d.sha.as_deref(), d.short_sha), (Some("c0ffee12"), true), "GitLab expands it");
        let Read::Draft(d, _) = parse(&body("{}")) else { panic!() };
        assert_eq!(d.sha.as_deref(), Some(SHA), "without settings, the sync revision");
    }

    #[test]
    fn an_image_setting_is_an_image_name_or_a_regex_with_one_group() {
        assert!(check_image("registry.example.com/app").is_ok() && check_image(r"app:v\d+-([0-9a-f]{40})$").is_ok());
        assert!(check_image("app:(a)(b)").unwrap_err().contains("one capture group"));
        assert!(check_image("app:(").is_err());
    }
}
