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

use axum::http::HeaderMap;
use hmac::Hmac;
use secrecy::SecretString;
use serde_json::{Map, Value};
use sha1::Sha1;

use super::{Source, body_field, hmac_matches, json_object, required_header, str_field};
use crate::error::Error;
use crate::event::{EventDraft, SourceOutput};
use crate::model::Status;

pub static SOURCE: &dyn Source = &Vercel;

pub struct Vercel;

const PROVIDERS: [&str; 3] = ["gitlab", "github", "bitbucket"];

fn object<'a>(v: &'a Map<String, Value>, key: &str) -> Option<&'a Map<String, Value>> {
    v.get(key).and_then(Value::as_object)
}

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

fn signature(headers: &HeaderMap) -> Result<&str, Error> {
    required_header(headers, "x-vercel-signature", "missing x-vercel-signature header")
}

impl Source for Vercel {
    fn name(&self) -> &'static str {
        "vercel"
    }

    fn credentials(&self, headers: &HeaderMap) -> Result<(), Error> {
        signature(headers).map(drop)
    }

    /// The envelope's `createdAt` (milliseconds; in the signed body).
    fn signed_at(&self, _headers: &HeaderMap, body: &[u8]) -> Option<time::OffsetDateTime> {
        let ms = body_field(body, "createdAt")?.as_i64()?;
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
    }

    /// The envelope's `id`, the delivery's.
    fn delivery_key(&self, _headers: &HeaderMap, body: &[u8]) -> Option<String> {
        body_field(body, "id")?.as_str().map(str::to_string)
    }

    /// Vercel retries a failed delivery for up to 24 hours: two days.
    fn replay_window(&self) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_secs(2 * 86_400))
    }

    fn verify(&self, headers: &HeaderMap, body: &[u8], secret: &SecretString) -> Result<(), Error> {
        let given = signature(headers)?;
        let given = hex::decode(given).map_err(|_| Error::Unauthorized("x-vercel-signature is not hexadecimal".into()))?;
        if hmac_matches::<Hmac<Sha1>>(secret, body, &given) {
            Ok(())
        } else {
            Err(Error::Unauthorized("x-vercel-signature does not match the body and the vercel webhook secret".into()))
        }
    }

    fn parse(&self, _headers: &HeaderMap, body: &[u8]) -> Result<SourceOutput, Error> {
        let obj = json_object("vercel", body)?;
        let kind = str_field(&obj, "type").ok_or_else(|| Error::BadRequest("`type` is missing from the Vercel webhook".into()))?;
        let status = match kind.as_str() {
            "deployment.created" => Status::Running,
            "deployment.succeeded" | "deployment.ready" | "deployment.promoted" => Status::Success,
            "deployment.error" => Status::Failed,
            "deployment.canceled" => Status::Canceled,
            other => return Ok(SourceOutput::Ignored(format!("Vercel event {other:?} is not a deployment state change"))),
        };
        let payload = object(&obj, "payload").ok_or_else(|| Error::BadRequest("`payload` is missing from the Vercel webhook".into()))?;
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
        Ok(SourceOutput::Event(EventDraft {
            environment: Some(environment),
            sha: Some(sha),
            git_ref,
            tag: None,
            status: Some(status),
            external_url,
            delivery_id: str_field(&obj, "id"),
            // The event's creation time, in milliseconds since the epoch.
            occurred_at: obj
                .get("createdAt")
                .and_then(Value::as_i64)
                .and_then(|ms| time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()),
            sha_hint: None,
            short_sha: false,
            environment_by_bridge,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::Mac;

    const SHA: &str = "c0ffee1234567890abcdef1234567890abcdef12";

    fn body(kind: &str, target: &str, meta: &str) -> String {
        format!(r#"{{"id":"evt_1","type":"{kind}","payload":{{"deployment":{{"id":"dpl_1","url":"web-1.vercel.app","meta":{meta}}},"target":{target}}}}}"#)
    }

    #[test]
    fn providers_targets_and_types() {
        let gh = format!(r#"{{"githubCommitSha":"{SHA}","githubCommitRef":"feature-x"}}"#);
        let SourceOutput::Event(d) = Vercel.parse(&HeaderMap::new(), body("deployment.created", "null", &gh).as_bytes()).unwrap() else { panic!() };
        assert_eq!((d.status, d.environment.as_deref(), d.git_ref.as_deref()), (Some(Status::Running), Some("preview/feature-x"), Some("feature-x")));
        assert_eq!(d.external_url.as_deref(), Some("https://web-1.vercel.app"));
        let bb = format!(r#"{{"bitbucketCommitSha":"{SHA}","bitbucketCommitRef":"main"}}"#);
        let SourceOutput::Event(d) = Vercel.parse(&HeaderMap::new(), body("deployment.succeeded", "\"production\"", &bb).as_bytes()).unwrap() else { panic!() };
        assert_eq!((d.status, d.environment.as_deref()), (Some(Status::Success), Some("production")));
        let SourceOutput::Event(d) = Vercel.parse(&HeaderMap::new(), body("deployment.canceled", "\"staging\"", &bb).as_bytes()).unwrap() else { panic!() };
        assert_eq!((d.status, d.environment.as_deref()), (Some(Status::Canceled), Some("staging")));
        let SourceOutput::Event(d) = Vercel.parse(&HeaderMap::new(), body("deployment.ready", "\"production\"", &bb).as_bytes()).unwrap() else { panic!() };
        assert_eq!(d.status, Some(Status::Success));
        let SourceOutput::Event(d) = Vercel.parse(&HeaderMap::new(), body("deployment.promoted", "null", &bb).as_bytes()).unwrap() else { panic!() };
        assert_eq!((d.status, d.environment.as_deref()), (Some(Status::Success), Some("production")));
        assert!(matches!(Vercel.parse(&HeaderMap::new(), body("project.created", "null", &bb).as_bytes()).unwrap(), SourceOutput::Ignored(_)));
        assert!(Vercel.parse(&HeaderMap::new(), body("deployment.error", "null", "{}").as_bytes()).unwrap_err().to_string().contains("githubCommitSha"));
    }

    #[test]
    fn signature_is_hex_hmac_sha1() {
        let secret = SecretString::from("s");
        let b = b"{\"type\":\"x\"}";
        let mut m = <Hmac<Sha1> as Mac>::new_from_slice(b"s").unwrap();
        m.update(b);
        let mut h = HeaderMap::new();
        assert!(Vercel.verify(&h, b, &secret).is_err());
        h.insert("x-vercel-signature", hex::encode(m.finalize().into_bytes()).parse().unwrap());
        assert!(Vercel.verify(&h, b, &secret).is_ok());
        assert!(Vercel.verify(&h, b"{}", &secret).is_err());
    }
}
