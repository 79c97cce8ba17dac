//! `generic`: a GitLab-shaped body (`environment`, `sha`, `ref`, `tag`, `status`) authenticated by
//! `Authorization: Bearer <secret>` or `PRIVATE-TOKEN: <secret>`. Also serves the
//! GitLab-compatible facade `POST /api/v4/projects/{id}/deployments` (and its `PUT`, whose body
//! [`read_status`] reads). An optional `timestamp` (RFC 3339) is the tool's time of the event,
//! which lets the bridge recognise late deliveries; an optional `delivery_id` is logged.

use secrecy::SecretString;
use serde_json::{Map, Value};

use super::{BEARER_HEADERS, BodyAuth, Credential, Read, Reading, Replay, Request, Settings, Source, Spec, str_field, verify_token};
use crate::error::Error;
use crate::event::EventDraft;
use crate::model::{Status, parse_time};

pub static SOURCE: &dyn Source = &Generic;

pub struct Generic;

static SPEC: Spec = Spec {
    name: "generic",
    title: "any tool or script that can send GitLab's own deployment body",
    credential: Credential {
        headers: BEARER_HEADERS,
        missing: "missing credentials: send `Authorization: Bearer <generic webhook secret>`",
    },
    body: BodyAuth::Unsigned,
    replay: Replay::NoSignedTime {
        why: "a bearer secret signs nothing: the body's optional `timestamp` orders deliveries (the lifecycle), it cannot prove their age",
    },
    settings: &[],
    secrets: &[],
    docs: "docs/tools/generic.md",
};

impl Source for Generic {
    fn spec(&self) -> &'static Spec {
        &SPEC
    }

    fn verify(&self, request: &Request<'_>, secret: &SecretString) -> Result<(), Error> {
        verify_token(SPEC.name, request, secret)
    }

    fn read(&self, request: &Request<'_>, _settings: &Settings) -> Result<Reading, Error> {
        let obj = request.form_or_json(SPEC.name)?;
        let status = status_field(&obj)?;
        let tag = match obj.get("tag") {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(Value::String(s)) if s == "true" => Some(true),
            Some(Value::String(s)) if s == "false" || s.is_empty() => Some(false),
            Some(other) => return Err(Error::BadRequest(format!("`tag` must be true or false, got {other}"))),
        };
        let occurred_at = match str_field(&obj, "timestamp") {
            None => None,
            Some(t) => Some(parse_time(&t).ok_or_else(|| {
                Error::BadRequest(format!("`timestamp` must be an RFC 3339 time such as 2026-10-02T11:00:00Z, got {t:?}"))
            })?),
        };
        let draft = EventDraft {
            environment: str_field(&obj, "environment"),
            sha: str_field(&obj, "sha"),
            git_ref: str_field(&obj, "ref"),
            tag,
            status: Some(status),
            external_url: str_field(&obj, "external_url"),
            delivery_id: str_field(&obj, "delivery_id"),
            occurred_at,
            ..EventDraft::default()
        };
        // No delivery key: `delivery_id` is the caller's to reuse as it likes (it is logged).
        Ok(Reading { signed_at: None, delivery_key: None, read: Read::Draft(draft, None) })
    }

    fn sign(&self, _body: &[u8], secret: &str) -> Vec<(&'static str, String)> {
        vec![("authorization", format!("Bearer {secret}"))]
    }
}

fn status_field(obj: &Map<String, Value>) -> Result<Status, Error> {
    match str_field(obj, "status") {
        None => Err(Error::BadRequest("`status` is missing; use running, success, failed or canceled".into())),
        Some(s) => Status::parse(&s).ok_or_else(|| {
            Error::BadRequest(format!("`status` must be one of running, success, failed, canceled; got {s:?}"))
        }),
    }
}

/// The body of GitLab's `PUT /projects/:id/deployments/:deployment_id`: only `status` is read
/// (GitLab ignores any other field there too).
pub fn read_status(request: &Request<'_>) -> Result<Status, Error> {
    status_field(&request.form_or_json(SPEC.name)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    fn read(headers: &HeaderMap, body: &[u8]) -> Result<EventDraft, Error> {
        match Generic.read(&Request::new(headers, body), &Settings::default())?.read {
            Read::Draft(d, _) => Ok(d),
            Read::Ignored(r) => panic!("ignored: {r}"),
        }
    }

    #[test]
    fn gitlab_body_with_string_tag() {
        let body = br#"{"environment":"production","sha":"a91957a858320c0e17f3a0eca7cfacbff50ea29a","ref":"main","tag":"false","status":"success"}"#;
        let d = read(&HeaderMap::new(), body).unwrap();
        assert_eq!(d.status, Some(Status::Success));
        assert_eq!(d.tag, Some(false));
        assert_eq!(d.git_ref.as_deref(), Some("main"));
    }

    #[test]
    fn form_body_is_accepted() {
        let mut h = HeaderMap::new();
        h.insert("content-type", "application/x-www-form-urlencoded".parse().unwrap());
        let body = b"environment=prod&sha=a91957a858320c0e17f3a0eca7cfacbff50ea29a&ref=main&tag=true&status=running";
        let d = read(&h, body).unwrap();
        assert_eq!(d.tag, Some(true));
        assert_eq!(d.status, Some(Status::Running));
    }

    #[test]
    fn json_sent_as_a_form_is_named_as_such() {
        let mut h = HeaderMap::new();
        h.insert("content-type", "application/x-www-form-urlencoded".parse().unwrap());
        let e = read(&h, br#" {"status":"running"}"#).unwrap_err().to_string();
        assert!(e.contains("read as a form") && e.contains("Content-Type: application/json"), "{e}");
    }

    #[test]
    fn bad_bodies_name_the_problem() {
        let e = |b: &[u8]| read(&HeaderMap::new(), b).unwrap_err().to_string();
        assert!(e(b"{not json").contains("not valid JSON"));
        assert!(e(b"[]").contains("JSON object"));
        assert!(e(br#"{"sha":"x"}"#).contains("`status` is missing"));
        assert!(e(br#"{"status":"done"}"#).contains("`status` must be one of"));
        assert!(e(br#"{"status":"running","tag":3}"#).contains("`tag`"));
        assert!(e(br#"{"status":"running","timestamp":"yesterday"}"#).contains("`timestamp`"));
    }

    #[test]
    fn timestamp_is_the_tools_time_of_the_event() {
        let body = br#"{"status":"running","timestamp":"2026-10-02T13:00:00+02:00","delivery_id":"d-7"}"#;
        let d = read(&HeaderMap::new(), body).unwrap();
        assert_eq!(d.occurred_at.map(crate::model::format_time).as_deref(), Some("2026-10-02T11:00:00Z"));
        assert_eq!(d.delivery_id.as_deref(), Some("d-7"));
    }

    #[test]
    fn credentials_are_checked() {
        let secret = SecretString::from("s3cret");
        let verify = |pairs: &[(&'static str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, v.parse().unwrap());
            }
            Generic.verify(&Request::new(&h, b""), &secret).is_ok()
        };
        assert!(!verify(&[]));
        assert!(!verify(&[("authorization", "Bearer wrong")]));
        assert!(verify(&[("authorization", "bearer s3cret")]));
        assert!(verify(&[("private-token", "s3cret")]));
        let signed = Generic.sign(b"", "s3cret");
        assert!(verify(&[(signed[0].0, &signed[0].1)]));
    }
}
