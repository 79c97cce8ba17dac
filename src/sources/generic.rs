//! `generic`: a GitLab-shaped body (`environment`, `sha`, `ref`, `tag`, `status`) authenticated by
//! `Authorization: Bearer <secret>` or `PRIVATE-TOKEN: <secret>`. Also serves the
//! GitLab-compatible facade `POST /api/v4/projects/{id}/deployments`. An optional `timestamp`
//! (RFC 3339) is the tool's time of the event, which lets the bridge recognise late deliveries.

use axum::http::HeaderMap;
use secrecy::SecretString;
use serde_json::{Map, Value};

use super::{Source, json_object, str_field, token, verify_token};
use crate::error::Error;
use crate::event::{EventDraft, SourceOutput};
use crate::model::{Status, parse_time};

pub static SOURCE: &dyn Source = &Generic;

pub struct Generic;

impl Source for Generic {
    fn name(&self) -> &'static str {
        "generic"
    }

    fn credentials(&self, headers: &HeaderMap) -> Result<(), Error> {
        token(self.name(), headers).map(drop)
    }

    fn verify(&self, headers: &HeaderMap, _body: &[u8], secret: &SecretString) -> Result<(), Error> {
        verify_token(self.name(), headers, secret)
    }

    fn parse(&self, headers: &HeaderMap, body: &[u8]) -> Result<SourceOutput, Error> {
        let obj = fields(headers, body)?;
        let status = status_field(&obj)?;
        let tag = match obj.get("tag") {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(Value::String(s)) if s == "true" => Some(true),
            Some(Value::String(s)) if s == "false" || s.is_empty() => Some(false),
            Some(other) => {
                return Err(Error::BadRequest(format!("`tag` must be true or false, got {other}")));
            }
        };
        let occurred_at = match str_field(&obj, "timestamp") {
            None => None,
            Some(t) => Some(parse_time(&t).ok_or_else(|| {
                Error::BadRequest(format!("`timestamp` must be an RFC 3339 time such as 2026-10-02T11:00:00Z, got {t:?}"))
            })?),
        };
        Ok(SourceOutput::Event(EventDraft {
            environment: str_field(&obj, "environment"),
            sha: str_field(&obj, "sha"),
            git_ref: str_field(&obj, "ref"),
            tag,
            status: Some(status),
            external_url: str_field(&obj, "external_url"),
            delivery_id: str_field(&obj, "delivery_id"),
            sha_hint: None,
            occurred_at,
            short_sha: false,
            environment_by_bridge: false,
        }))
    }
}

/// The body's fields: a JSON object, or a form (`application/x-www-form-urlencoded`), as
/// GitLab's API accepts both.
fn fields(headers: &HeaderMap, body: &[u8]) -> Result<Map<String, Value>, Error> {
    let is_form = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    if is_form && body.trim_ascii_start().starts_with(b"{") {
        // curl's `-d` sends a form's content type whatever the data is.
        return Err(Error::BadRequest(
            "the body was read as a form (Content-Type: application/x-www-form-urlencoded, curl's default for -d), but it is JSON; send it with Content-Type: application/json".into(),
        ));
    }
    if is_form {
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_bytes(body).map_err(|e| Error::BadRequest(format!("the form body cannot be read: {e}")))?;
        Ok(pairs.into_iter().map(|(k, v)| (k, Value::String(v))).collect())
    } else {
        json_object("generic", body)
    }
}

fn status_field(obj: &Map<String, Value>) -> Result<Status, Error> {
    match str_field(obj, "status") {
        None => Err(Error::BadRequest("`status` is missing; use running, success, failed or canceled".into())),
        Some(s) => Status::parse(&s)
            .ok_or_else(|| Error::BadRequest(format!("`status` must be one of running, success, failed, canceled; got {s:?}"))),
    }
}

/// The body of GitLab's `PUT /projects/:id/deployments/:deployment_id`: only `status` is read
/// (GitLab ignores any other field there too).
pub fn status_update(headers: &HeaderMap, body: &[u8]) -> Result<Status, Error> {
    status_field(&fields(headers, body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gitlab_body_with_string_tag() {
        let body = br#"{"environment":"production","sha":"a91957a858320c0e17f3a0eca7cfacbff50ea29a","ref":"main","tag":"false","status":"success"}"#;
        let SourceOutput::Event(d) = Generic.parse(&HeaderMap::new(), body).unwrap() else { panic!() };
        assert_eq!(d.status, Some(Status::Success));
        assert_eq!(d.tag, Some(false));
        assert_eq!(d.git_ref.as_deref(), Some("main"));
    }

    #[test]
    fn form_body_is_accepted() {
        let mut h = HeaderMap::new();
        h.insert("content-type", "application/x-www-form-urlencoded".parse().unwrap());
        let body = b"environment=prod&sha=a91957a858320c0e17f3a0eca7cfacbff50ea29a&ref=main&tag=true&status=running";
        let SourceOutput::Event(d) = Generic.parse(&h, body).unwrap() else { panic!() };
        assert_eq!(d.tag, Some(true));
        assert_eq!(d.status, Some(Status::Running));
    }

    #[test]
    fn json_sent_as_a_form_is_named_as_such() {
        let mut h = HeaderMap::new();
        h.insert("content-type", "application/x-www-form-urlencoded".parse().unwrap());
        let e = Generic.parse(&h, br#" {"status":"running"}"#).unwrap_err().to_string();
        assert!(e.contains("read as a form") && e.contains("Content-Type: application/json"), "{e}");
    }

    #[test]
    fn bad_bodies_name_the_problem() {
        let e = |b: &[u8]| Generic.parse(&HeaderMap::new(), b).unwrap_err().to_string();
        assert!(e(b"{not json").contains("not valid JSON"));
        assert!(e(b"[]").contains("JSON object"));
        assert!(e(br#"{"sha":"x"}"#).contains("`status` is missing"));
        assert!(e(br#"{"status":"done"}"#).contains("`status` must be one of"));
        assert!(e(br#"{"status":"running","tag":3}"#).contains("`tag`"));
        assert!(e(br#"{"status":"running","timestamp":"yesterday"}"#).contains("`timestamp`"));
    }

    #[test]
    fn timestamp_is_the_tools_time_of_the_event() {
        let body = br#"{"status":"running","timestamp":"2026-10-02T13:00:00+02:00"}"#;
        let SourceOutput::Event(d) = Generic.parse(&HeaderMap::new(), body).unwrap() else { panic!() };
        assert_eq!(d.occurred_at.map(crate::model::format_time).as_deref(), Some("2026-10-02T11:00:00Z"));
    }

    #[test]
    fn credentials_are_checked() {
        let secret = SecretString::from("s3cret");
        let mut h = HeaderMap::new();
        assert!(Generic.verify(&h, b"", &secret).is_err());
        h.insert("authorization", "Bearer wrong".parse().unwrap());
        assert!(Generic.verify(&h, b"", &secret).is_err());
        h.insert("authorization", "bearer s3cret".parse().unwrap());
        assert!(Generic.verify(&h, b"", &secret).is_ok());
        let mut h = HeaderMap::new();
        h.insert("private-token", "s3cret".parse().unwrap());
        assert!(Generic.verify(&h, b"", &secret).is_ok());
    }
}
