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

use base64::Engine;
use hmac::Hmac;
use secrecy::SecretString;
use serde_json::{Map, Value};
use sha2::Sha256;
use std::time::Duration;

use super::{
    BodyAuth, Credential, Enrich, Lookup, Read, Reading, Replay, Request, SecretKey, Setting, Settings, Source, Spec, base_url,
    hmac_matches, hmac_of, object, required_header, str_field, time_field,
};
use crate::error::Error;
use crate::event::EventDraft;
use crate::model::{BoxFuture, Status};

pub static SOURCE: &dyn Source = &Heroku;

pub struct Heroku;

const SIGNATURE_HEADER: &str = "heroku-webhook-hmac-sha256";
/// Key of the optional Heroku API token in the secret.
pub const API_TOKEN_KEY: &str = "heroku_api_token";
const API_URL: &str = "HEROKU_API_URL";
const API_URL_DEFAULT: &str = "https://api.heroku.com";

static SPEC: Spec = Spec {
    name: "heroku",
    title: "Heroku app webhooks (api:build, api:release)",
    credential: Credential { headers: &[SIGNATURE_HEADER], missing: "missing Heroku-Webhook-Hmac-SHA256 header" },
    body: BodyAuth::Signed,
    replay: Replay::SignedTime {
        window: Duration::from_secs(8 * 86_400),
        why: "level `sync` retries for 72 hours (Heroku's 2023 changelog; its webhooks docs still say about seven days), and deliveries queue behind a failing one: eight days",
    },
    settings: &[Setting {
        var: API_URL,
        default: Some(API_URL_DEFAULT),
        doc: "Heroku Platform API (only used with `heroku_api_token`)",
        check: base_url,
    }],
    secrets: &[SecretKey {
        key: API_TOKEN_KEY,
        doc: "optional: a Heroku API token, to tie a release that names no commit to its slug's commit, and to set the environment's URL from the app's `web_url`",
    }],
    docs: "docs/tools/heroku.md",
};

fn data(obj: &Map<String, Value>) -> Result<&Map<String, Value>, Error> {
    object(obj, "data").ok_or_else(|| Error::BadRequest("the heroku body has no `data` object".into()))
}

fn nested(v: &Map<String, Value>, outer: &str, inner: &str) -> Option<String> {
    object(v, outer).and_then(|o| str_field(o, inner))
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
fn state_began(d: &Map<String, Value>, status: Status) -> Option<time::OffsetDateTime> {
    if status == Status::Running { time_field(d, "created_at") } else { time_field(d, "updated_at") }
}

impl Source for Heroku {
    fn spec(&self) -> &'static Spec {
        &SPEC
    }

    fn verify(&self, request: &Request<'_>, secret: &SecretString) -> Result<(), Error> {
        let given = required_header(request, SIGNATURE_HEADER, SPEC.credential.missing)?;
        let given = base64::engine::general_purpose::STANDARD
            .decode(given)
            .map_err(|_| Error::Unauthorized("Heroku-Webhook-Hmac-SHA256 is not base64".into()))?;
        if hmac_matches::<Hmac<Sha256>>(secret, request.body, &given) {
            Ok(())
        } else {
            Err(Error::Unauthorized(
                "Heroku-Webhook-Hmac-SHA256 does not match the body and the heroku webhook secret".into(),
            ))
        }
    }

    /// The signed time is the event's `created_at`; the delivery key its
    /// `webhook_metadata.delivery.id`, the same for every attempt at one delivery.
    fn read(&self, request: &Request<'_>, _settings: &Settings) -> Result<Reading, Error> {
        let obj = request.json_object(SPEC.name)?;
        let delivery_id = object(&obj, "webhook_metadata").and_then(|m| nested(m, "delivery", "id"));
        let reading = |read| Reading { signed_at: time_field(&obj, "created_at"), delivery_key: delivery_id.clone(), read };
        let resource = str_field(&obj, "resource").unwrap_or_default();
        if str_field(&obj, "action").as_deref() == Some("destroy") {
            return Ok(reading(Read::Ignored(format!("a deleted {resource} is not a deployment"))));
        }
        if resource != "build" && resource != "release" {
            return Ok(reading(Read::Ignored(format!(
                "Heroku {resource:?} events are not deployments; subscribe to api:build and api:release"
            ))));
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
                return Ok(reading(Read::Ignored(format!("{r} status {other:?} is not a deployment state change"))));
            }
        };
        // Builds carry the commit; releases carry their slug's, when the delivery has it (else
        // the release look-up finds it).
        let sha = if resource == "build" {
            Some(nested(d, "source_blob", "version").ok_or_else(|| {
                Error::BadRequest("`data.source_blob.version` (the commit) is missing from the Heroku build".into())
            })?)
        } else {
            nested(d, "slug", "commit")
        };
        let draft = EventDraft {
            environment: nested(d, "app", "name"),
            sha,
            status: Some(status),
            delivery_id: delivery_id.clone().or_else(|| str_field(&obj, "id")),
            occurred_at: state_began(d, status).or_else(|| time_field(&obj, "updated_at")),
            ..Default::default()
        };
        let lookup = (resource == "release").then(|| {
            Box::new(Release {
                app: nested(d, "app", "id").or_else(|| nested(d, "app", "name")).unwrap_or_default(),
                slug: nested(d, "slug", "id"),
                description: str_field(d, "description").unwrap_or_default(),
            }) as Box<dyn Enrich>
        });
        Ok(reading(Read::Draft(draft, lookup)))
    }

    fn sign(&self, body: &[u8], secret: &str) -> Vec<(&'static str, String)> {
        let mac = hmac_of::<Hmac<Sha256>>(secret, body);
        vec![(SIGNATURE_HEADER, base64::engine::general_purpose::STANDARD.encode(mac))]
    }
}

/// What ties a release to its commit, and its app to a URL, beyond the delivery, in order:
/// the slug's commit from the delivery (already in the draft); with `heroku_api_token` the
/// slug's commit from the Platform API (`GET /apps/{app}/slugs/{slug}` → `commit`) and the
/// app's `web_url`; else the short sha of a `Deploy 3f1c2b9d` description, for GitLab to
/// expand. A release naming no commit at all is ignored.
struct Release {
    app: String,
    slug: Option<String>,
    description: String,
}

impl Enrich for Release {
    fn enrich<'a>(
        self: Box<Self>,
        mut draft: EventDraft,
        settings: &'a Settings,
        lookup: &'a dyn Lookup,
    ) -> BoxFuture<'a, Result<Read, Error>> {
        Box::pin(async move {
            let Release { app, slug, description } = *self;
            let base = settings.get(API_URL).unwrap_or(API_URL_DEFAULT).trim_end_matches('/');
            if let Some(token) = lookup.secret(API_TOKEN_KEY) {
                if draft.sha.is_none()
                    && let Some(slug) = slug
                {
                    let slug_info = platform_api(lookup, base, token, &["apps", &app, "slugs", &slug]).await?;
                    match slug_info.get("commit").and_then(Value::as_str) {
                        Some(commit) if !commit.is_empty() => draft.sha = Some(commit.to_string()),
                        _ => {
                            return Ok(Read::Ignored(format!(
                                "release {description:?}: its slug has no commit (not built from git)"
                            )));
                        }
                    }
                }
                if draft.sha.is_some() {
                    let app_info = platform_api(lookup, base, token, &["apps", &app]).await?;
                    draft.external_url = app_info.get("web_url").and_then(Value::as_str).map(str::to_string);
                }
            }
            if draft.sha.is_some() {
                return Ok(Read::Draft(draft, None));
            }
            let Some(short) = described_sha(&description) else {
                return Ok(Read::Ignored(format!(
                    "release {description:?} names no commit (no `data.slug.commit`, no \"Deploy <sha>\" description); add heroku_api_token to the secret to look its slug's commit up"
                )));
            };
            // GitLab expands it when the event is delivered (now, or from the spool).
            draft.sha = Some(short.to_string());
            draft.short_sha = true;
            Ok(Read::Draft(draft, None))
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

/// One GET on the Heroku Platform API with the API token.
async fn platform_api(lookup: &dyn Lookup, base: &str, token: &SecretString, segments: &[&str]) -> Result<Value, Error> {
    let path = api_path(segments)?;
    let url = format!("{base}{path}");
    lookup
        .get_json(&url, token, &[("accept", "application/vnd.heroku+json; version=3")])
        .await
        .map_err(|message| Error::ToolApi { service: "the Heroku Platform API", message: format!("{path}: {message}; check heroku_api_token") })
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
    use axum::http::HeaderMap;

    fn read(body: &str) -> Result<Reading, Error> {
        Heroku.read(&Request::new(&HeaderMap::new(), body.as_bytes()), &Settings::default())
    }

    fn draft(body: &str) -> EventDraft {
        match read(body).unwrap().read {
            Read::Draft(d, _) => d,
            Read::Ignored(r) => panic!("ignored: {r}"),
        }
    }

    #[test]
    fn signature_is_base64_hmac_sha256_of_the_body() {
        let secret = SecretString::from("s3cret");
        let body = br#"{"resource":"build"}"#;
        let verify = |h: &HeaderMap, body: &[u8]| Heroku.verify(&Request::new(h, body), &secret);
        let mut h = HeaderMap::new();
        assert!(verify(&h, body).unwrap_err().to_string().contains("missing"));
        for (k, v) in Heroku.sign(body, "s3cret") {
            h.insert(k, v.parse().unwrap());
        }
        assert!(verify(&h, body).is_ok());
        assert!(verify(&h, br#"{"resource":"release"}"#).is_err());
        h.insert(SIGNATURE_HEADER, "not base64!".parse().unwrap());
        assert!(verify(&h, body).is_err());
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
        let build = |status: &str| {
            format!(
                r#"{{"resource":"build","action":"update","created_at":"2026-10-02T08:00:00Z","data":{{"status":"{status}","app":{{"name":"web"}},"source_blob":{{"version":"{}"}}}},"webhook_metadata":{{"delivery":{{"id":"d1"}}}}}}"#,
                "a".repeat(40)
            )
        };
        let reading = read(&build("pending")).unwrap();
        assert_eq!(reading.delivery_key.as_deref(), Some("d1"));
        assert_eq!(reading.signed_at.map(crate::model::format_time).as_deref(), Some("2026-10-02T08:00:00Z"));
        let d = draft(&build("pending"));
        assert_eq!((d.status, d.environment.as_deref(), d.delivery_id.as_deref()), (Some(Status::Running), Some("web"), Some("d1")));
        assert_eq!(draft(&build("failed")).status, Some(Status::Failed));
        let release = r#"{"resource":"release","action":"update","data":{"status":"succeeded","description":"Deploy c0ffee12","app":{"name":"web"}}}"#;
        let Read::Draft(d, lookup) = read(release).unwrap().read else { panic!() };
        assert_eq!((d.status, d.sha, lookup.is_some()), (Some(Status::Success), None, true));
        let dyno = r#"{"resource":"dyno","action":"create","data":{}}"#;
        assert!(matches!(read(dyno).unwrap().read, Read::Ignored(_)));
        let no_commit = r#"{"resource":"build","data":{"status":"pending","app":{"name":"web"},"source_blob":{}}}"#;
        assert!(read(no_commit).err().unwrap().to_string().contains("source_blob.version"));
    }

    #[tokio::test]
    async fn without_an_api_token_a_release_is_tied_by_its_description_or_ignored() {
        let release = |description: &str| {
            format!(r#"{{"resource":"release","data":{{"status":"succeeded","description":"{description}","app":{{"name":"web"}}}}}}"#)
        };
        let Read::Draft(d, Some(lookup)) = read(&release("Deploy c0ffee12")).unwrap().read else { panic!() };
        let Read::Draft(d, None) = lookup.enrich(d, &Settings::default(), &super::super::Offline).await.unwrap() else { panic!() };
        assert_eq!((d.sha.as_deref(), d.short_sha), (Some("c0ffee12"), true));
        let Read::Draft(d, Some(lookup)) = read(&release("Set FOO config vars")).unwrap().read else { panic!() };
        assert!(matches!(lookup.enrich(d, &Settings::default(), &super::super::Offline).await.unwrap(), Read::Ignored(_)));
    }
}
