//! `vercel`: Vercel webhooks, signed with `x-vercel-signature` = hex(HMAC-SHA1(secret, raw body))
//! (the webhook's secret; for an integration, its client secret).
//!
//! `deployment.created` → running; `deployment.succeeded` (and the older `deployment.ready`) →
//! success; `deployment.error` → failed; `deployment.canceled` → canceled;
//! `deployment.promoted` → success in production (an existing build made live); other types are
//! ignored.
//!
//! The commit and branch come from the deployment's git metadata, which differs by provider:
//! `meta.{gitlab,github,bitbucket}Commit{Sha,Ref}`, else `gitSource.{sha,ref}`.
//!
//! Environments: `target: "production"` → `production`; another named target (e.g. `staging`)
//! → that name; previews (`target: null`) → `preview/<branch>`, so previews never count as
//! production deployments and group in GitLab like review apps.

use hmac::Hmac;
use secrecy::SecretString;
use serde_json::{Map, Value};
use sha1::Sha1;
use std::time::Duration;

use super::{
    BodyAuth, Credential, Read, Reading, Replay, Request, Settings, Source, Spec, hmac_matches, hmac_of, object,
    required_header, str_field,
};
use crate::error::Error;
use crate::event::EventDraft;
use crate::model::Status;

pub static SOURCE: &dyn Source = &Vercel;

pub struct Vercel;

const SIGNATURE_HEADER: &str = "x-vercel-signature";

static SPEC: Spec = Spec {
    name: "vercel",
    title: "Vercel webhooks (deployment events)",
    credential: Credential { headers: &[SIGNATURE_HEADER], missing: "missing x-vercel-signature header" },
    body: BodyAuth::Signed,
    replay: Replay::SignedTime { window: Duration::from_secs(2 * 86_400), why: "Vercel retries a failed delivery for up to 24 hours: two days" },
    settings: &[],
    secrets: &[],
    docs: "docs/tools/vercel.md",
};

const PROVIDERS: [&str; 3] = ["gitlab", "github", "bitbucket"];

/// (sha, ref) from a deployment object.
fn git_of(deployment: &Map<String, Value>) -> (Option<String>, Option<String>) {
    if let Some(meta) = object(deployment, "meta") {
        for p in PROVIDERS {
            if let Some(sha) = str_field(meta, &format!("{p}CommitSha")) {
                return (Some(sha), str_field(meta, &format!("{p}CommitRef")));
            }
        }
    }
    match object(deployment, "gitSource") {
        Some(g) => (str_field(g, "sha"), str_field(g, "ref")),
        None => (None, None),
    }
}

impl Source for Vercel {
    fn spec(&self) -> &'static Spec {
        &SPEC
    }

    fn verify(&self, request: &Request<'_>, secret: &SecretString) -> Result<(), Error> {
        let given = required_header(request, SIGNATURE_HEADER, SPEC.credential.missing)?;
        let given = hex::decode(given).map_err(|_| Error::Unauthorized("x-vercel-signature is not hexadecimal".into()))?;
        if hmac_matches::<Hmac<Sha1>>(secret, request.body, &given) {
            Ok(())
        } else {
            Err(Error::Unauthorized("x-vercel-signature does not match the body and the vercel webhook secret".into()))
        }
    }

    /// The signed time is the envelope's `createdAt` (milliseconds); the delivery key its `id`.
    fn read(&self, request: &Request<'_>, _settings: &Settings) -> Result<Reading, Error> {
        let obj = request.json_object(SPEC.name)?;
        let created_at = obj
            .get("createdAt")
            .and_then(Value::as_i64)
            .and_then(|ms| time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok());
        let read = match draft(&obj, created_at)? {
            Ok(d) => Read::Draft(d, None),
            Err(reason) => Read::Ignored(reason),
        };
        Ok(Reading { signed_at: created_at, delivery_key: str_field(&obj, "id"), read })
    }

    fn sign(&self, body: &[u8], secret: &str) -> Vec<(&'static str, String)> {
        vec![(SIGNATURE_HEADER, hex::encode(hmac_of::<Hmac<Sha1>>(secret, body)))]
    }
}

/// The draft of a delivery, or why it is not a deployment state change.
fn draft(obj: &Map<String, Value>, created_at: Option<time::OffsetDateTime>) -> Result<Result<EventDraft, String>, Error> {
    let kind = str_field(obj, "type").ok_or_else(|| Error::BadRequest("`type` is missing from the Vercel webhook".into()))?;
        let status = match kind.as_str() {
            "deployment.created" => Status::Running,
            "deployment.succeeded" | "deployment.ready" | "deployment.promoted" => Status::Success,
            "deployment.error" => Status::Failed,
            "deployment.canceled" => Status::Canceled,
            other => return Ok(Err(format!("Vercel event {other:?} is not a deployment state change"))),
        };
        let payload = object(obj, "payload").ok_or_else(|| Error::BadRequest("`payload` is missing from the Vercel webhook".into()))?;
        let empty = Map::new();
        let deployment = object(payload, "deployment").unwrap_or(&empty);
        let (sha, git_ref) = git_of(deployment);
        let sha = sha.ok_or_else(|| {
            Error::BadRequest(
                "the Vercel deployment carries no commit (`payload.deployment.meta.githubCommitSha`, `gitlabCommitSha` or `bitbucketCommitSha`); deployments from `vercel deploy` of a local folder cannot be recorded".into(),
            )
        })?;
        let target = if kind == "deployment.promoted" { Some("production".to_string()) } else { str_field(payload, "target") };
        let environment_by_bridge = target.is_none();
        let environment = match target {
            Some(t) => t,
            None => format!("preview/{}", git_ref.clone().unwrap_or_else(|| "unknown".into())),
        };
        let url = str_field(deployment, "url").or_else(|| str_field(payload, "url"));
        let external_url = url.map(|u| if u.starts_with("http") { u } else { format!("https://{u}") });
        Ok(Ok(EventDraft {
            environment: Some(environment),
            sha: Some(sha),
            git_ref,
            tag: None,
            status: Some(status),
            external_url,
            delivery_id: str_field(obj, "id"),
            // The event's creation time, in milliseconds since the epoch.
            occurred_at: created_at,
            sha_hint: None,
            short_sha: false,
            environment_by_bridge,
        }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    fn parse(body: &str) -> Result<Read, Error> {
        Ok(Vercel.read(&Request::new(&HeaderMap::new(), body.as_bytes()), &Settings::default())?.read)
    }

    const SHA: &str = "c0ffee1234567890abcdef1234567890abcdef12";

    fn body(kind: &str, target: &str, meta: &str) -> String {
        format!(r#"{{"id":"evt_1","type":"{kind}","payload":{{"deployment":{{"id":"dpl_1","url":"web-1.vercel.app","meta":{meta}}},"target":{target}}}}}"#)
    }

    #[test]
    fn providers_targets_and_types() {
        let gh = format!(r#"{{"githubCommitSha":"{SHA}","githubCommitRef":"feature-x"}}"#);
        let Read::Draft(d, _) = parse(&body("deployment.created", "null", &gh)).unwrap() else { panic!() };
        assert_eq!((d.status, d.environment.as_deref(), d.git_ref.as_deref()), (Some(Status::Running), Some("preview/feature-x"), Some("feature-x")));
        assert_eq!(d.external_url.as_deref(), Some("https://web-1.vercel.app"));
        let bb = format!(r#"{{"bitbucketCommitSha":"{SHA}","bitbucketCommitRef":"main"}}"#);
        let Read::Draft(d, _) = parse(&body("deployment.succeeded", "\"production\"", &bb)).unwrap() else { panic!() };
        assert_eq!((d.status, d.environment.as_deref()), (Some(Status::Success), Some("production")));
        let Read::Draft(d, _) = parse(&body("deployment.canceled", "\"staging\"", &bb)).unwrap() else { panic!() };
        assert_eq!((d.status, d.environment.as_deref()), (Some(Status::Canceled), Some("staging")));
        let Read::Draft(d, _) = parse(&body("deployment.ready", "\"production\"", &bb)).unwrap() else { panic!() };
        assert_eq!(d.status, Some(Status::Success));
        let Read::Draft(d, _) = parse(&body("deployment.promoted", "null", &bb)).unwrap() else { panic!() };
        assert_eq!((d.status, d.environment.as_deref()), (Some(Status::Success), Some("production")));
        assert!(matches!(parse(&body("project.created", "null", &bb)).unwrap(), Read::Ignored(_)));
        assert!(parse(&body("deployment.error", "null", "{}")).err().unwrap().to_string().contains("githubCommitSha"));
    }

    #[test]
    fn signature_is_hex_hmac_sha1() {
        let secret = SecretString::from("s");
        let b = b"{\"type\":\"x\"}";
        let verify = |h: &HeaderMap, body: &[u8]| Vercel.verify(&Request::new(h, body), &secret);
        let mut h = HeaderMap::new();
        assert!(verify(&h, b).is_err());
        h.insert("x-vercel-signature", hex::encode(hmac_of::<Hmac<Sha1>>("s", b)).parse().unwrap());
        assert!(verify(&h, b).is_ok());
        assert!(verify(&h, b"{}").is_err());
        assert_eq!(Vercel.sign(b, "s")[0].1, hex::encode(hmac_of::<Hmac<Sha1>>("s", b)));
    }
}
