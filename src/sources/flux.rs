//! `flux`: Flux notification-controller events through a `generic-hmac` Provider, signed with
//! `X-Signature: sha256=<hex HMAC(token, raw body)>` (notification-controller only ever sends
//! sha256; sha224, sha384 and sha512 are accepted too).
//!
//! Reasons map to statuses: `Progressing` → running; `ReconciliationSucceeded`,
//! `InstallSucceeded`, `UpgradeSucceeded` → success; `ReconciliationFailed`,
//! `HealthCheckFailed`, `BuildFailed`, `ArtifactFailed`, `PruneFailed`, `InstallFailed`,
//! `UpgradeFailed` → failed; anything else (`DependencyNotReady`, `ArtifactUpToDate`, tests,
//! uninstalls, ...) is ignored. Flux repeats `ReconciliationSucceeded` on every interval; the
//! lifecycle answers those `unchanged`.
//!
//! The commit, in this order: `metadata.commit` (the annotation `event.toolkit.fluxcd.io/commit`
//! on the Kustomization or HelmRelease — the way for a HelmRelease, whose `revision` is a chart
//! version, and for GitOps repositories); a git `metadata.revision` as source-controller writes it
//! (`main@sha1:<sha>`, `v1.4.0@sha1:<sha>`, `refs/heads/main@sha1:<sha>`, `sha1:<sha>` for a
//! GitRepository pinned to a commit, or the pre-2.0 `main/<sha>`); else `metadata.originRevision`
//! (kustomize-controller's copy of an OCI artifact's `org.opencontainers.image.revision`). The
//! ref is the name in the git revision the commit came from — never an OCI tag such as `latest`
//! — and a name that is a version (`v1.4.0`, `1.4.0-rc.1`) or `refs/tags/...` is sent as a tag:
//! source-controller writes a branch and a tag the same way (`<name>@sha1:<sha>`). The
//! environment is `metadata.environment` (set it with the Alert's `eventMetadata`), else the
//! object's name.

use hmac::Hmac;
use secrecy::SecretString;
use serde_json::{Map, Value};
use sha2::{Sha224, Sha256, Sha384, Sha512};
use std::time::Duration;

use super::{
    BodyAuth, Credential, Read, Reading, Replay, Request, Settings, Source, Spec, body_hash, hmac_matches, hmac_of, object,
    required_header, str_field, time_field,
};
use crate::error::Error;
use crate::event::{EventDraft, normalize_sha};
use crate::model::Status;

pub static SOURCE: &dyn Source = &Flux;

pub struct Flux;

static SPEC: Spec = Spec {
    name: "flux",
    title: "Flux notification-controller (a generic-hmac Provider)",
    credential: Credential {
        headers: &["x-signature"],
        missing: "missing X-Signature header; use a Provider of type generic-hmac",
    },
    body: BodyAuth::Signed,
    replay: Replay::SignedTime {
        window: Duration::from_secs(600),
        why: "its retries end within the Provider's `spec.timeout` (15 s by default; about a minute with the forwarder's back-off): ten minutes",
    },
    settings: &[],
    secrets: &[],
    docs: "docs/tools/flux.md",
};

/// A git revision as source-controller writes it → (ref name, sha): `main@sha1:<sha>`,
/// `refs/heads/main@sha1:<sha>`, `sha1:<sha>` (no name: pinned to a commit), `main/<sha>`, or a
/// bare sha. Anything else — an OCI `latest@sha256:<digest>`, a Bucket `sha256:<digest>`, a chart
/// version — is not a git revision: (None, None).
pub fn split_revision(rev: &str) -> (Option<String>, Option<String>) {
    let rev = rev.trim();
    if let Some((name, digest)) = rev.rsplit_once('@') {
        return match digest.strip_prefix("sha1:").and_then(normalize_sha) {
            Some(sha) => (Some(name.to_string()).filter(|n| !n.is_empty()), Some(sha)),
            None => (None, None),
        };
    }
    if let Some(sha) = rev.strip_prefix("sha1:") {
        return (None, normalize_sha(sha));
    }
    if let Some((name, sha)) = rev.rsplit_once('/')
        && let Some(sha) = normalize_sha(sha)
    {
        return (Some(name.to_string()), Some(sha));
    }
    (None, normalize_sha(rev))
}

/// Whether a revision's ref name is a tag. source-controller writes a checked-out branch and tag
/// alike (`<name>@sha1:<sha>`, fluxcd/pkg `git.Commit.String`); a `semver` ref is always a tag,
/// and so, by convention, is a name that reads as a version.
pub fn is_tag_name(name: &str) -> bool {
    if name.starts_with("refs/tags/") {
        return true;
    }
    let core = name.strip_prefix('v').unwrap_or(name);
    let core = core.split(['-', '+']).next().unwrap_or(core);
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() >= 2 && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

fn status_of(reason: &str) -> Option<Status> {
    Some(match reason {
        "Progressing" => Status::Running,
        "ReconciliationSucceeded" | "InstallSucceeded" | "UpgradeSucceeded" => Status::Success,
        "ReconciliationFailed" | "HealthCheckFailed" | "BuildFailed" | "ArtifactFailed" | "PruneFailed"
        | "InstallFailed" | "UpgradeFailed" => Status::Failed,
        _ => return None,
    })
}

impl Source for Flux {
    fn spec(&self) -> &'static Spec {
        &SPEC
    }

    fn verify(&self, request: &Request<'_>, secret: &SecretString) -> Result<(), Error> {
        let header = required_header(request, "x-signature", SPEC.credential.missing)?;
        let (alg, hex_mac) =
            header.split_once('=').ok_or_else(|| Error::Unauthorized("X-Signature must look like sha256=<hex>".into()))?;
        let mac = hex::decode(hex_mac).map_err(|_| Error::Unauthorized("X-Signature is not hexadecimal".into()))?;
        let body = request.body;
        let ok = match alg {
            "sha256" => hmac_matches::<Hmac<Sha256>>(secret, body, &mac),
            "sha224" => hmac_matches::<Hmac<Sha224>>(secret, body, &mac),
            "sha384" => hmac_matches::<Hmac<Sha384>>(secret, body, &mac),
            "sha512" => hmac_matches::<Hmac<Sha512>>(secret, body, &mac),
            other => {
                return Err(Error::Unauthorized(format!(
                    "X-Signature uses {other:?}; expected sha256, sha224, sha384 or sha512"
                )));
            }
        };
        if ok {
            Ok(())
        } else {
            Err(Error::Unauthorized("X-Signature does not match the body and the flux webhook secret".into()))
        }
    }

    /// The signed time is the event's `timestamp` (the body is signed whole); the delivery key
    /// the body's hash: notification-controller retries with the same bytes, and sends no id.
    fn read(&self, request: &Request<'_>, _settings: &Settings) -> Result<Reading, Error> {
        let obj = request.json_object(SPEC.name)?;
        let read = match draft(&obj)? {
            Some(d) => Read::Draft(d, None),
            None => {
                let reason = str_field(&obj, "reason").unwrap_or_default();
                Read::Ignored(format!("Flux reason {reason:?} is not a deployment state change"))
            }
        };
        Ok(Reading { signed_at: time_field(&obj, "timestamp"), delivery_key: Some(body_hash(request.body)), read })
    }

    fn sign(&self, body: &[u8], secret: &str) -> Vec<(&'static str, String)> {
        vec![("x-signature", format!("sha256={}", hex::encode(hmac_of::<Hmac<Sha256>>(secret, body))))]
    }
}

/// The draft of an event (`None`: its reason is not a deployment state change).
fn draft(obj: &Map<String, Value>) -> Result<Option<EventDraft>, Error> {
    let reason = str_field(obj, "reason").ok_or_else(|| Error::BadRequest("`reason` is missing from the Flux event".into()))?;
    let Some(status) = status_of(&reason) else {
        return Ok(None);
    };
    let empty = Map::new();
    let involved = object(obj, "involvedObject").unwrap_or(&empty);
    let metadata = object(obj, "metadata").unwrap_or(&empty);
    // Some controller versions prefix metadata keys with their API group.
    let meta = |key: &str| {
        str_field(metadata, key).or_else(|| {
            metadata
                .iter()
                .find(|(k, _)| k.ends_with(&format!("/{key}")))
                .and_then(|(_, v)| v.as_str().map(str::to_string))
        })
    };
    let revision = meta("revision").unwrap_or_default();
    let origin = meta("originRevision").unwrap_or_default();
    let (branch, sha) = split_revision(&revision);
    let (origin_branch, origin_sha) = split_revision(&origin);
    // GitOps mapping: an annotation `event.toolkit.fluxcd.io/commit: <application commit>` on
    // the Kustomization or HelmRelease arrives as `metadata.commit` and wins.
    let explicit = meta("commit");
    let kind = str_field(involved, "kind").unwrap_or_default();
    let name = str_field(involved, "name");
    let sha_hint = if explicit.is_some() {
        Some(format!("It was read from the {kind}'s annotation event.toolkit.fluxcd.io/commit"))
    } else {
        Some(format!(
            "It is the revision Flux applied for {kind} {}; if that comes from a separate GitOps repository, annotate the {kind} with `event.toolkit.fluxcd.io/commit: <application commit>` (docs/tools/flux.md, \"GitOps repositories\")",
            name.clone().unwrap_or_default()
        ))
    };
    // The ref comes with the commit it names: the revision's name when the commit is the
    // revision's, the origin's when it is the origin's.
    let (sha, git_ref) = match (explicit, sha, origin_sha) {
        (Some(commit), _, _) => (commit, branch.or(origin_branch)),
        (None, Some(sha), _) => (sha, branch),
        (None, None, Some(sha)) => (sha, origin_branch),
        (None, None, None) => {
            let what = if kind == "HelmRelease" {
                "a HelmRelease's revision is its chart version"
            } else {
                "not a git commit (an OCI or Bucket digest, or a SHA-256 git repository)"
            };
            let origin = if origin.is_empty() {
                "there is no `originRevision`".to_string()
            } else {
                format!("`originRevision` {origin:?} names no commit either")
            };
            return Err(Error::BadRequest(format!(
                "the Flux event names no git commit: `metadata.revision` {revision:?} is {what}, and {origin}; annotate the {kind} with `event.toolkit.fluxcd.io/commit: <the application's commit sha>` (docs/tools/flux.md, \"GitOps repositories\")"
            )));
        }
    };
    let tag = git_ref.as_deref().map(is_tag_name);
    let delivery_id = Some(format!(
        "{kind}/{}/{}@{sha}:{reason}",
        str_field(involved, "namespace").unwrap_or_default(),
        name.clone().unwrap_or_default()
    ));
    Ok(Some(EventDraft {
        environment: meta("environment").or(name),
        sha: Some(sha),
        git_ref,
        tag,
        status: Some(status),
        external_url: meta("external_url"),
        delivery_id,
        sha_hint,
        occurred_at: time_field(obj, "timestamp"),
        short_sha: false,
        environment_by_bridge: false,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    fn parse(body: &str) -> Result<Read, Error> {
        Ok(Flux.read(&Request::new(&HeaderMap::new(), body.as_bytes()), &Settings::default())?.read)
    }

    const SHA: &str = "c0ffee1234567890abcdef1234567890abcdef12";

    #[test]
    fn revisions_of_both_formats() {
        assert_eq!(split_revision(&format!("main@sha1:{SHA}")), (Some("main".into()), Some(SHA.into())));
        assert_eq!(split_revision(&format!("main/{SHA}")), (Some("main".into()), Some(SHA.into())));
        assert_eq!(split_revision(&format!("refs/heads/main@sha1:{SHA}")), (Some("refs/heads/main".into()), Some(SHA.into())));
        assert_eq!(split_revision(&format!("sha1:{SHA}")), (None, Some(SHA.into())));
        assert_eq!(split_revision(&format!("v1.4.0@sha1:{SHA}")), (Some("v1.4.0".into()), Some(SHA.into())));
        assert_eq!(split_revision("latest@sha256:5b1a0b1d0c2a3f4e5d6c7b8a9f0e1d2c3b4a5f6e7d8c9b0a1f2e3d4c5b6a7f8e"), (None, None));
        assert_eq!(split_revision("sha256:5b1a0b1d0c2a3f4e5d6c7b8a9f0e1d2c3b4a5f6e7d8c9b0a1f2e3d4c5b6a7f8e"), (None, None));
        assert_eq!(split_revision("6.2.1@sha256:abcdef").1, None);
        assert_eq!(split_revision("1.2.3"), (None, None));
    }

    #[test]
    fn version_names_are_tags() {
        for t in ["v1.4.0", "1.4.0", "v1.4", "v2.0.0-rc.1", "1.2.3+build.5", "refs/tags/release"] {
            assert!(is_tag_name(t), "{t}");
        }
        for b in ["main", "v2", "release-1.2", "1.x", "feature/v1.2.3", "v1..2", ""] {
            assert!(!is_tag_name(b), "{b}");
        }
    }

    #[test]
    fn signatures_of_every_documented_hash() {
        let secret = SecretString::from("tok");
        let body = b"{}";
        let verify = |h: &HeaderMap, body: &[u8]| Flux.verify(&Request::new(h, body), &secret);
        let mut h = HeaderMap::new();
        assert!(verify(&h, body).is_err());
        h.insert("x-signature", format!("sha512={}", hex::encode(hmac_of::<Hmac<Sha512>>("tok", body))).parse().unwrap());
        assert!(verify(&h, body).is_ok());
        assert!(verify(&h, b"{ }").is_err());
        let (k, v) = Flux.sign(body, "tok").remove(0);
        h.insert(k, v.parse().unwrap());
        assert!(verify(&h, body).is_ok(), "its own signer, sha256");
        h.insert("x-signature", "md5=00".parse().unwrap());
        assert!(verify(&h, body).is_err());
    }

    #[test]
    fn reasons_and_metadata() {
        let ev = |reason: &str, meta: &str| format!(r#"{{"involvedObject":{{"kind":"Kustomization","name":"apps","namespace":"flux-system"}},"reason":"{reason}","metadata":{meta}}}"#);
        let m = format!(r#"{{"revision":"main@sha1:{SHA}"}}"#);
        let Read::Draft(d, _) = parse(&ev("Progressing", &m)).unwrap() else { panic!() };
        assert_eq!((d.status, d.environment.as_deref(), d.git_ref.as_deref()), (Some(Status::Running), Some("apps"), Some("main")));
        let m2 = format!(r#"{{"kustomize.toolkit.fluxcd.io/revision":"main@sha1:{SHA}","environment":"production"}}"#);
        let Read::Draft(d, _) = parse(&ev("HealthCheckFailed", &m2)).unwrap() else { panic!() };
        assert_eq!((d.status, d.environment.as_deref(), d.sha.as_deref()), (Some(Status::Failed), Some("production"), Some(SHA)));
        assert!(matches!(parse(&ev("DependencyNotReady", &m)).unwrap(), Read::Ignored(_)));
        let err = parse(&ev("UpgradeSucceeded", r#"{"revision":"1.2.3"}"#)).err().unwrap();
        assert!(err.to_string().contains("event.toolkit.fluxcd.io/commit"), "{err}");
        assert!(!err.to_string().contains("sha="), "{err}");
        let origin = format!(r#"{{"revision":"1.2.3","originRevision":"main@sha1:{SHA}"}}"#);
        let Read::Draft(d, _) = parse(&ev("UpgradeSucceeded", &origin)).unwrap() else { panic!() };
        assert_eq!(d.sha.as_deref(), Some(SHA));
    }
}
