//! `argocd`: Argo CD notifications through the webhook service, authenticated by
//! `Authorization: Bearer <argocd webhook secret>` (Argo CD's webhook service sends configured
//! headers; it has no signature scheme). The body is the one our README's template renders:
//!
//! ```json
//! {"app":"guestbook","phase":"Succeeded","health":"Healthy",
//!  "revision":"<sync revision>","revisions":["<multi-source revisions>"],
//!  "targetRevision":"main","externalURLs":["https://..."], "environment":"<optional>", "sha":"<optional>"}
//! ```
//!
//! Status comes from the application's state, not from the trigger's name, so one template
//! serves every trigger: sync `Running` → running; `Succeeded` + `Healthy` → success;
//! `Succeeded` + `Progressing` → running (still rolling out); `Succeeded` + `Degraded`, or any
//! `Degraded` outside a running sync, → failed; `Error`/`Failed` → failed; `Terminating` → canceled.

use axum::http::HeaderMap;
use secrecy::SecretString;
use serde_json::Value;

use super::{Source, json_object, str_field, verify_token};
use crate::error::Error;
use crate::event::{EventDraft, SourceOutput, Status, normalize_sha};

pub static SOURCE: &dyn Source = &ArgoCd;

pub struct ArgoCd;

/// Maps an application's sync phase and health to a deployment status, or says why not.
pub fn status_of(phase: &str, health: &str) -> Result<Status, String> {
    match (phase, health) {
        ("Running", _) => Ok(Status::Running),
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

impl Source for ArgoCd {
    fn name(&self) -> &'static str {
        "argocd"
    }

    fn verify(&self, headers: &HeaderMap, _body: &[u8], secret: &SecretString) -> Result<(), Error> {
        verify_token(self.name(), headers, secret)
    }

    fn parse(&self, _headers: &HeaderMap, body: &[u8]) -> Result<SourceOutput, Error> {
        let mut obj = json_object("argocd", body)?;
        // Go templates print a missing map key as "<no value>": treat it as absent.
        obj.retain(|_, v| v.as_str() != Some("<no value>"));
        let app = str_field(&obj, "app");
        let phase = str_field(&obj, "phase").unwrap_or_default();
        let health = str_field(&obj, "health").unwrap_or_default();
        if phase.is_empty() && health.is_empty() {
            return Err(Error::BadRequest(
                "`phase` and `health` are both missing from the argocd body; use the README's notification template".into(),
            ));
        }
        let status = match status_of(&phase, &health) {
            Ok(s) => s,
            Err(reason) => return Ok(SourceOutput::Ignored(reason)),
        };

        // An explicit `sha` wins; then the sync revision; for multi-source apps (empty
        // `revision`) the first entry of `revisions` that is a commit id (chart versions skipped).
        let revisions: Vec<String> = match obj.get("revisions") {
            Some(Value::Array(a)) => a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
            _ => Vec::new(),
        };
        let sha = str_field(&obj, "sha")
            .or_else(|| str_field(&obj, "revision"))
            .or_else(|| revisions.iter().find(|r| normalize_sha(r).is_some()).cloned());
        let external_url = match obj.get("externalURLs") {
            Some(Value::Array(a)) => a.iter().find_map(|v| v.as_str()).map(str::to_string),
            _ => None,
        };
        let delivery_id = app.as_ref().map(|a| {
            format!("{a}@{}:{phase}/{health}", sha.as_deref().unwrap_or("?"))
        });
        Ok(SourceOutput::Event(EventDraft {
            environment: str_field(&obj, "environment").or(app),
            sha,
            git_ref: str_field(&obj, "targetRevision"),
            tag: None,
            status: Some(status),
            external_url,
            delivery_id,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "c0ffee1234567890abcdef1234567890abcdef12";

    fn parse(body: &str) -> SourceOutput {
        ArgoCd.parse(&HeaderMap::new(), body.as_bytes()).unwrap()
    }

    #[test]
    fn states_map_to_statuses() {
        assert_eq!(status_of("Running", "Progressing"), Ok(Status::Running));
        assert_eq!(status_of("Succeeded", "Healthy"), Ok(Status::Success));
        assert_eq!(status_of("Succeeded", "Progressing"), Ok(Status::Running));
        assert_eq!(status_of("Succeeded", "Degraded"), Ok(Status::Failed));
        assert_eq!(status_of("", "Degraded"), Ok(Status::Failed));
        assert_eq!(status_of("Failed", "Healthy"), Ok(Status::Failed));
        assert_eq!(status_of("Error", ""), Ok(Status::Failed));
        assert_eq!(status_of("Terminating", ""), Ok(Status::Canceled));
        assert!(status_of("Succeeded", "Suspended").is_err());
        assert!(status_of("", "Healthy").is_err());
    }

    #[test]
    fn deployed_body_becomes_a_success_draft() {
        let body = format!(
            r#"{{"app":"example-api","phase":"Succeeded","health":"Healthy","revision":"{SHA}","revisions":[],"targetRevision":"main","externalURLs":["https://api.example.com"]}}"#
        );
        let SourceOutput::Event(d) = parse(&body) else { panic!() };
        assert_eq!(d.status, Some(Status::Success));
        assert_eq!(d.environment.as_deref(), Some("example-api"));
        assert_eq!(d.sha.as_deref(), Some(SHA));
        assert_eq!(d.git_ref.as_deref(), Some("main"));
        assert_eq!(d.external_url.as_deref(), Some("https://api.example.com"));
    }

    #[test]
    fn multi_source_takes_first_commit_revision_and_explicit_fields_win() {
        let body = format!(r#"{{"app":"a","phase":"Running","revision":"","revisions":["1.2.3","{SHA}"]}}"#);
        let SourceOutput::Event(d) = parse(&body) else { panic!() };
        assert_eq!(d.sha.as_deref(), Some(SHA));
        let other = "b".repeat(40);
        let body = format!(r#"{{"app":"a","environment":"prod","sha":"{other}","phase":"Running","revision":"{SHA}"}}"#);
        let SourceOutput::Event(d) = parse(&body) else { panic!() };
        assert_eq!(d.sha.as_deref(), Some(other.as_str()));
        assert_eq!(d.environment.as_deref(), Some("prod"));
    }

    #[test]
    fn go_template_no_value_is_absent() {
        let body = format!(r#"{{"app":"a","environment":"<no value>","phase":"Running","health":"<no value>","revision":"{SHA}"}}"#);
        let SourceOutput::Event(d) = parse(&body) else { panic!() };
        assert_eq!(d.environment.as_deref(), Some("a"));
    }

    #[test]
    fn non_deployment_states_are_ignored_and_empty_bodies_rejected() {
        assert!(matches!(parse(r#"{"app":"a","phase":"","health":"Healthy"}"#), SourceOutput::Ignored(_)));
        assert!(ArgoCd.parse(&HeaderMap::new(), br#"{"app":"a"}"#).is_err());
    }
}
