//! `heroku`: Heroku app webhooks for `api:build` and `api:release`, signed with
//! `Heroku-Webhook-Hmac-SHA256` = base64(HMAC-SHA256(secret, raw body)).
//!
//! One `git push` (or GitHub/GitLab-integrated deploy) is one GitLab deployment in the
//! environment named after the app: the build starting (`pending`) makes it `running`; a failed
//! build makes it `failed`; the release finishing — release phase included — makes it
//! `success` or `failed` (a release is `pending` while its release phase runs). Any delivery
//! order gives the same single deployment: the rollout's start after its end changes nothing.
//!
//! Builds carry the commit (`data.source_blob.version`). Real release deliveries carry the
//! slug's commit too (`data.slug.commit`), though the Platform API schema gives a release's slug
//! only an `id`; a release is tied to its commit by, in order:
//! - `data.slug.commit`, when the delivery has it — rollbacks ("Rollback to v297") and config
//!   changes included (a config change re-releases the same commit and changes nothing);
//! - with `heroku_api_token` in the secret: the slug's commit from the Platform API
//!   (`GET /apps/{app}/slugs/{slug}` → `commit`);
//! - else the short sha in the description (`Deploy 3f1c2b9d`) resolved to the full sha by
//!   GitLab; a release naming no commit at all is ignored.
//!
//! With `heroku_api_token`, the app's `web_url` also becomes the environment's external URL.

use axum::http::HeaderMap;
use base64::Engine;
use hmac::Hmac;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use sha2::Sha256;

use super::{Lookup, Source, body_field, hmac_matches, json_object, required_header, str_field, time_field};
use crate::error::Error;
use crate::event::{EventDraft, SourceOutput};
use crate::model::Status;
use crate::secrets::BoxFuture;

pub static SOURCE: &dyn Source = &Heroku;

pub struct Heroku;

const SIGNATURE_HEADER: &str = "heroku-webhook-hmac-sha256";
/// Key of the optional Heroku API token in the secret.
pub const API_TOKEN_KEY: &str = "heroku_api_token";

fn data(obj: &serde_json::Map<String, Value>) -> Result<&serde_json::Map<String, Value>, Error> {
    obj.get("data")
        .and_then(Value::as_object)
        .ok_or_else(|| Error::BadRequest("the heroku body has no `data` object".into()))
}

fn nested(v: &serde_json::Map<String, Value>, outer: &str, inner: &str) -> Option<String> {
    v.get(outer).and_then(Value::as_object).and_then(|o| str_field(o, inner))
}

/// The short sha in a release description such as `Deploy 3f1c2b9d`.
fn described_sha(description: &str) -> Option<&str> {
    let rest = description.trim().strip_prefix("Deploy ")?;
    let word = rest.split_whitespace().next()?;
    (word.len() >= 7 && word.len() <= 40 && word.bytes().all(|b| b.is_ascii_hexdigit())).then_some(word)
}

/// When the record's state began: a build or release that is still running began when it was
/// created; a finished one when it was last updated. A build's `updated_at` is not the rollout's
/// start: Heroku finalizes the build record after it has created (even finished) the release —
/// in a captured push the build says 11:38:03 and its release 11:37:58 — so a release judged
/// against it would look older than its own rollout.
fn state_began(d: &serde_json::Map<String, Value>, status: Status) -> Option<time::OffsetDateTime> {
    if status == Status::Running { time_field(d, "created_at") } else { time_field(d, "updated_at") }
}

fn signature(headers: &HeaderMap) -> Result<&str, Error> {
    required_header(headers, SIGNATURE_HEADER, "missing Heroku-Webhook-Hmac-SHA256 header")
}

impl Source for Heroku {
    fn name(&self) -> &'static str {
        "heroku"
    }

    fn credentials(&self, headers: &HeaderMap) -> Result<(), Error> {
        signature(headers).map(drop)
    }

    /// The event's `created_at` (in the signed body).
    fn signed_at(&self, _headers: &HeaderMap, body: &[u8]) -> Option<time::OffsetDateTime> {
        body_field(body, "created_at").and_then(|v| v.as_str().and_then(crate::model::parse_time))
    }

    /// `webhook_metadata.delivery.id`: the same for every attempt at one delivery.
    fn delivery_key(&self, _headers: &HeaderMap, body: &[u8]) -> Option<String> {
        let meta = body_field(body, "webhook_metadata")?;
        meta.get("delivery")?.get("id")?.as_str().map(str::to_string)
    }

    /// Level `sync` retries for 72 hours (Heroku's 2023 changelog; its webhooks-docs still say
    /// about seven days), and deliveries queue behind a failing one: eight days.
    fn replay_window(&self) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_secs(8 * 86_400))
    }

    fn verify(&self, headers: &HeaderMap, body: &[u8], secret: &SecretString) -> Result<(), Error> {
        let given = signature(headers)?;
        let given = base64::engine::general_purpose::STANDARD
            .decode(given)
            .map_err(|_| Error::Unauthorized("Heroku-Webhook-Hmac-SHA256 is not base64".into()))?;
        if hmac_matches::<Hmac<Sha256>>(secret, body, &given) {
            Ok(())
        } else {
            Err(Error::Unauthorized("Heroku-Webhook-Hmac-SHA256 does not match the body and the heroku webhook secret".into()))
        }
    }

    fn parse(&self, _headers: &HeaderMap, body: &[u8]) -> Result<SourceOutput, Error> {
        let obj = json_object("heroku", body)?;
        let resource = str_field(&obj, "resource").unwrap_or_default();
        if str_field(&obj, "action").as_deref() == Some("destroy") {
            return Ok(SourceOutput::Ignored(format!("a deleted {resource} is not a deployment")));
        }
        let delivery_id = obj
            .get("webhook_metadata")
            .and_then(Value::as_object)
            .and_then(|m| nested(m, "delivery", "id"))
            .or_else(|| str_field(&obj, "id"));
        if resource != "build" && resource != "release" {
            return Ok(SourceOutput::Ignored(format!(
                "Heroku {resource:?} events are not deployments; subscribe to api:build and api:release"
            )));
        }
        let d = data(&obj)?;
        let status_text = str_field(d, "status").unwrap_or_default();
        let status = match (resource.as_str(), status_text.as_str()) {
            ("build", "pending") => Status::Running,
            // Built, not yet released: still running until the release says how it went.
            ("build", "succeeded") => Status::Running,
            // A pending release is running its release phase.
            ("release", "pending") => Status::Running,
            ("release", "succeeded") => Status::Success,
            (_, "failed") => Status::Failed,
            (r, other) => {
                return Ok(SourceOutput::Ignored(format!("{r} status {other:?} is not a deployment state change")));
            }
        };
        // Builds carry the commit; releases carry their slug's, when the delivery has it (else
        // `enrich` looks for it).
        let sha = if resource == "build" {
            Some(nested(d, "source_blob", "version").ok_or_else(|| {
                Error::BadRequest("`data.source_blob.version` (the commit) is missing from the Heroku build".into())
            })?)
        } else {
            nested(d, "slug", "commit")
        };
        Ok(SourceOutput::Event(EventDraft {
            environment: nested(d, "app", "name"),
            sha,
            status: Some(status),
            delivery_id,
            occurred_at: state_began(d, status).or_else(|| time_field(&obj, "updated_at")),
            ..Default::default()
        }))
    }

    fn enrich<'a>(
        &'a self,
        _headers: &'a HeaderMap,
        body: &'a [u8],
        mut draft: EventDraft,
        lookup: &'a Lookup<'a>,
    ) -> BoxFuture<'a, Result<SourceOutput, Error>> {
        Box::pin(async move {
            let obj = json_object("heroku", body)?;
            if str_field(&obj, "resource").as_deref() != Some("release") {
                return Ok(SourceOutput::Event(draft));
            }
            let d = data(&obj)?;
            let app = nested(d, "app", "id").or_else(|| nested(d, "app", "name")).unwrap_or_default();
            let description = str_field(d, "description").unwrap_or_default();

            // A dry run calls no one: not GitLab, and not Heroku with a real token either.
            let token = lookup.secrets.get(API_TOKEN_KEY).filter(|_| !lookup.config.dry_run);
            if let Some(token) = token {
                if draft.sha.is_none()
                    && let Some(slug) = nested(d, "slug", "id")
                {
                    let slug_info = platform_api(lookup, token, &["apps", &app, "slugs", &slug]).await?;
                    match slug_info.get("commit").and_then(Value::as_str) {
                        Some(commit) if !commit.is_empty() => draft.sha = Some(commit.to_string()),
                        _ => {
                            return Ok(SourceOutput::Ignored(format!(
                                "release {description:?}: its slug has no commit (not built from git)"
                            )));
                        }
                    }
                }
                if draft.sha.is_some() {
                    let app_info = platform_api(lookup, token, &["apps", &app]).await?;
                    draft.external_url = app_info.get("web_url").and_then(Value::as_str).map(str::to_string);
                }
            }
            if draft.sha.is_some() {
                return Ok(SourceOutput::Event(draft));
            }

            let Some(short) = described_sha(&description) else {
                return Ok(SourceOutput::Ignored(format!(
                    "release {description:?} names no commit (no `data.slug.commit`, no \"Deploy <sha>\" description); add heroku_api_token to the secret to look its slug's commit up"
                )));
            };
            // GitLab expands it when the event is delivered (now, or from the spool).
            draft.sha = Some(short.to_string());
            draft.short_sha = true;
            Ok(SourceOutput::Event(draft))
        })
    }
}

/// The Heroku Platform API path of `segments`, each one a single path segment whatever the
/// payload put in it (`/`, `#`, `?`, `%` encoded; `.` and `..` refused), so an app id such as
/// `a/../../users/me#` cannot aim the API token at another endpoint.
fn api_path(segments: &[&str]) -> Result<String, Error> {
    const SEGMENT: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
    let mut path = String::new();
    for seg in segments {
        if seg.is_empty() || *seg == "." || *seg == ".." {
            return Err(Error::BadRequest(format!("{seg:?} is not a Heroku app or slug id")));
        }
        path.push('/');
        path.extend(percent_encoding::utf8_percent_encode(seg, SEGMENT));
    }
    Ok(path)
}

/// One GET on the Heroku Platform API with the optional API token.
async fn platform_api(lookup: &Lookup<'_>, token: &SecretString, segments: &[&str]) -> Result<Value, Error> {
    let path = api_path(segments)?;
    let url = format!("{}{path}", lookup.config.heroku_api_url);
    let unavailable = |message: String| Error::ToolApi { service: "the Heroku Platform API", message };
    let remaining = lookup.ctx.remaining().ok_or_else(|| unavailable("no time left before the deadline".into()))?;
    let resp = lookup
        .http
        .get(&url)
        .header("Accept", "application/vnd.heroku+json; version=3")
        .bearer_auth(token.expose_secret())
        .timeout(remaining.min(lookup.config.request_timeout))
        .send()
        .await
        .map_err(|e| unavailable(e.without_url().to_string()))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(unavailable(format!("{path} answered {status}; check heroku_api_token")));
    }
    resp.json::<Value>().await.map_err(|e| unavailable(format!("{path}: {e}")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn api_paths_keep_every_payload_value_in_its_segment() {
        assert_eq!(super::api_path(&["apps", "3c4d", "slugs", "1d2e"]).unwrap(), "/apps/3c4d/slugs/1d2e");
        assert_eq!(super::api_path(&["apps", "a/../../users/me#"]).unwrap(), "/apps/a%2F..%2F..%2Fusers%2Fme%23");
        assert_eq!(super::api_path(&["apps", "x?y=1%2F"]).unwrap(), "/apps/x%3Fy%3D1%252F");
        for bad in ["..", ".", ""] {
            assert!(super::api_path(&["apps", bad]).is_err(), "{bad:?}");
        }
    }

    use super::*;
    use hmac::Mac;

    #[test]
    fn signature_is_base64_hmac_sha256_of_the_body() {
        let secret = SecretString::from("s3cret");
        let body = br#"{"resource":"build"}"#;
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"s3cret").unwrap();
        mac.update(body);
        let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        let mut h = HeaderMap::new();
        assert!(Heroku.verify(&h, body, &secret).unwrap_err().to_string().contains("missing"));
        h.insert(SIGNATURE_HEADER, sig.parse().unwrap());
        assert!(Heroku.verify(&h, body, &secret).is_ok());
        assert!(Heroku.verify(&h, br#"{"resource":"release"}"#, &secret).is_err());
        h.insert(SIGNATURE_HEADER, "not base64!".parse().unwrap());
        assert!(Heroku.verify(&h, body, &secret).is_err());
    }

    #[test]
    fn descriptions_name_short_shas() {
        assert_eq!(described_sha("Deploy c0ffee12"), Some("c0ffee12"));
        assert_eq!(described_sha("Deploy c0ffee12 by ops"), Some("c0ffee12"));
        assert_eq!(described_sha("Rollback to v41"), None);
        assert_eq!(described_sha("Set FOO config vars"), None);
        assert_eq!(described_sha("Deploy abc"), None);
    }

    #[test]
    fn builds_and_releases_map_to_statuses() {
        let build = |status: &str| format!(r#"{{"resource":"build","action":"update","data":{{"status":"{status}","app":{{"name":"web"}},"source_blob":{{"version":"{}"}}}},"webhook_metadata":{{"delivery":{{"id":"d1"}}}}}}"#, "a".repeat(40));
        let SourceOutput::Event(d) = Heroku.parse(&HeaderMap::new(), build("pending").as_bytes()).unwrap() else { panic!() };
        assert_eq!((d.status, d.environment.as_deref(), d.delivery_id.as_deref()), (Some(Status::Running), Some("web"), Some("d1")));
        let SourceOutput::Event(d) = Heroku.parse(&HeaderMap::new(), build("failed").as_bytes()).unwrap() else { panic!() };
        assert_eq!(d.status, Some(Status::Failed));
        let release = r#"{"resource":"release","action":"update","data":{"status":"succeeded","description":"Deploy c0ffee12","app":{"name":"web"}}}"#;
        let SourceOutput::Event(d) = Heroku.parse(&HeaderMap::new(), release.as_bytes()).unwrap() else { panic!() };
        assert_eq!((d.status, d.sha), (Some(Status::Success), None));
        let dyno = r#"{"resource":"dyno","action":"create","data":{}}"#;
        assert!(matches!(Heroku.parse(&HeaderMap::new(), dyno.as_bytes()).unwrap(), SourceOutput::Ignored(_)));
        let no_commit = r#"{"resource":"build","data":{"status":"pending","app":{"name":"web"},"source_blob":{}}}"#;
        assert!(Heroku.parse(&HeaderMap::new(), no_commit.as_bytes()).unwrap_err().to_string().contains("source_blob.version"));
    }
}
