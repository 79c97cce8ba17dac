//! Deploy tools. Each tool is one module with a pure `verify` + `parse` over the raw request;
//! the transport, secrets, lifecycle and answers are shared (see [`crate::http`]).
//!
//! Adding a tool: write `src/sources/<tool>.rs` exposing `pub static SOURCE: &dyn Source`,
//! and add its module name to the `sources!` list below.

use axum::http::HeaderMap;
use hmac::Mac;
use hmac::digest::KeyInit;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use crate::config::Config;
use crate::error::Error;
use crate::event::{EventDraft, SourceOutput};
use crate::gitlab::{CallCtx, GitLabClient};
use crate::model::parse_time;
use crate::secrets::{BoxFuture, SecretBundle};

/// One deploy tool's webhook format.
pub trait Source: Send + Sync {
    /// Path segment in `/hooks/{name}`; the secret key is `<name>_webhook_secret`.
    fn name(&self) -> &'static str;
    /// Whether the request carries the tool's credential at all (its signature or token
    /// header), checked before the body is read so that an unauthenticated caller cannot make
    /// the bridge buffer a body. `Err` is always 401, worded as [`Source::verify`] words it.
    fn credentials(&self, headers: &HeaderMap) -> Result<(), Error>;
    /// Checks the tool's native authentication over the raw body. `Err` is always 401.
    fn verify(&self, headers: &HeaderMap, body: &[u8], secret: &SecretString) -> Result<(), Error>;
    /// The time the tool signed into the delivery, where it signs one (replay defence).
    fn signed_at(&self, _headers: &HeaderMap, _body: &[u8]) -> Option<OffsetDateTime> {
        None
    }
    /// What identifies one delivery across the tool's redeliveries of it, where the tool gives
    /// something (replay defence).
    fn delivery_key(&self, _headers: &HeaderMap, _body: &[u8]) -> Option<String> {
        None
    }
    /// How old a signed time may be: longer than the tool's own redelivery horizon.
    fn replay_window(&self) -> Option<std::time::Duration> {
        None
    }
    /// Reads the body into a draft event, or says why it is not a deployment state change.
    fn parse(&self, headers: &HeaderMap, body: &[u8]) -> Result<SourceOutput, Error>;
    /// Completes a draft that the payload alone cannot (e.g. a Heroku release names no commit)
    /// by asking an API. Most tools need nothing: the default returns the draft unchanged.
    fn enrich<'a>(
        &'a self,
        _headers: &'a HeaderMap,
        _body: &'a [u8],
        draft: EventDraft,
        _lookup: &'a Lookup<'a>,
    ) -> BoxFuture<'a, Result<SourceOutput, Error>> {
        Box::pin(async move { Ok(SourceOutput::Event(draft)) })
    }
}

/// What [`Source::enrich`] may use.
pub struct Lookup<'a> {
    pub config: &'a Config,
    /// The GitLab project named by the call, if any.
    pub project: Option<&'a str>,
    pub secrets: &'a SecretBundle,
    /// Read-only GitLab lookups (e.g. a short sha to a full one).
    pub gitlab: &'a GitLabClient,
    /// The shared HTTP client for a tool's own API (no redirects; never carries the GitLab token).
    pub http: &'a reqwest::Client,
    pub ctx: &'a CallCtx,
}

macro_rules! sources {
    ($($module:ident),* $(,)?) => {
        $(pub mod $module;)*
        /// Every registered source.
        pub static ALL: &[&dyn Source] = &[$($module::SOURCE),*];
    };
}

sources![generic, argocd, heroku, flux, vercel, netlify,];

pub fn find(name: &str) -> Option<&'static dyn Source> {
    ALL.iter().copied().find(|s| s.name() == name)
}

pub fn names() -> String {
    ALL.iter().map(|s| s.name()).collect::<Vec<_>>().join(", ")
}

/// A header's value, or 401 saying it is missing.
pub fn required_header<'h>(headers: &'h HeaderMap, name: &str, missing: &str) -> Result<&'h str, Error> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .ok_or_else(|| Error::Unauthorized(missing.to_string()))
}

/// Whether `expected` is the HMAC of `body` under `secret` with digest `D` (constant time).
pub fn hmac_matches<M: Mac + KeyInit>(secret: &SecretString, body: &[u8], expected: &[u8]) -> bool {
    let Ok(mut mac) = <M as KeyInit>::new_from_slice(secret.expose_secret().as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(expected).is_ok()
}

/// Compares two secrets in time that does not depend on where they differ.
pub fn secret_eq(given: &[u8], expected: &SecretString) -> bool {
    given.ct_eq(expected.expose_secret().as_bytes()).into()
}

/// The credential in `Authorization: Bearer <x>` or `PRIVATE-TOKEN: <x>`.
pub fn bearer_or_private_token(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        if let Some((scheme, rest)) = v.split_once(' ')
            && scheme.eq_ignore_ascii_case("bearer")
        {
            return Some(rest.trim());
        }
    }
    headers.get("private-token").and_then(|v| v.to_str().ok()).map(str::trim)
}

/// Verifies a bearer/PRIVATE-TOKEN credential against the source's secret.
/// The token of `Authorization: Bearer` or `PRIVATE-TOKEN`, or the 401 that names them.
pub fn token<'h>(source: &str, headers: &'h HeaderMap) -> Result<&'h str, Error> {
    bearer_or_private_token(headers).ok_or_else(|| {
        Error::Unauthorized(format!("missing credentials: send `Authorization: Bearer <{source} webhook secret>`"))
    })
}

pub fn verify_token(source: &str, headers: &HeaderMap, secret: &SecretString) -> Result<(), Error> {
    let given = token(source, headers)?;
    if secret_eq(given.as_bytes(), secret) {
        Ok(())
    } else {
        Err(Error::Unauthorized(format!("the credential does not match the {source} webhook secret")))
    }
}

/// Parses a JSON object body, with a 400 that says what is wrong.
pub fn json_object(source: &str, body: &[u8]) -> Result<serde_json::Map<String, Value>, Error> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Error::BadRequest(format!("the {source} body must be a JSON object"))),
        Err(e) => Err(Error::BadRequest(format!("the {source} body is not valid JSON: {e}"))),
    }
}

/// An RFC 3339 time field (`2026-10-02T11:00:00Z`); `None` when absent, blank or unreadable: a
/// tool's time of an event only protects against late deliveries, so a bad one never blocks it.
pub fn time_field(obj: &serde_json::Map<String, Value>, key: &str) -> Option<OffsetDateTime> {
    str_field(obj, key).as_deref().and_then(parse_time)
}

/// The hex SHA-256 of a body: the identity of a delivery whose retries are byte-identical.
pub fn body_hash(body: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(body))
}

/// A top-level field of a JSON body, if the body is a JSON object that has it.
pub fn body_field(body: &[u8], key: &str) -> Option<Value> {
    let obj: serde_json::Map<String, Value> = serde_json::from_slice(body).ok()?;
    obj.get(key).cloned()
}

/// A string field (numbers are accepted and turned into text); `None` when absent, null or blank.
pub fn str_field(obj: &serde_json::Map<String, Value>, key: &str) -> Option<String> {
    match obj.get(key)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every source answers any body and any headers with Ok or Err, never a panic.
    #[test]
    fn no_input_panics_any_source() {
        let mut bodies: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"null".to_vec(),
            b"[]".to_vec(),
            b"\"x\"".to_vec(),
            b"{}".to_vec(),
            br#"{"data": 1, "payload": [], "metadata": "x", "involvedObject": 3, "revisions": {}, "images": 1}"#.to_vec(),
            br#"{"resource":"release","action":"update","data":{"status":"succeeded","description":"Deploy \u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9"}}"#.to_vec(),
            br#"{"type":"deployment.created","payload":{"deployment":{"meta":{"githubCommitSha":7}},"target":{}}}"#.to_vec(),
            br#"{"reason":"Progressing","metadata":{"revision":"@@@sha1:"},"involvedObject":{}}"#.to_vec(),
            br#"{"state":"ready","commit_ref":[],"context":null}"#.to_vec(),
            br#"{"app":"a","phase":"Running","health":{},"revision":1e400}"#.to_vec(),
            vec![0xff, 0xfe, 0x00, b'{'],
        ];
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..200 {
            let len = rng.usize(0..300);
            bodies.push((0..len).map(|_| rng.u8(..)).collect());
        }
        let mut headers = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer"),
            ("private-token", ""),
            ("heroku-webhook-hmac-sha256", "===="),
            ("x-signature", "sha256="),
            ("x-vercel-signature", "zz"),
            ("x-webhook-signature", "a.b.c"),
            ("x-netlify-event", "deploy_created"),
            ("content-type", "application/x-www-form-urlencoded"),
        ] {
            headers.insert(k, v.parse().unwrap());
        }
        let secret = SecretString::from("s");
        for source in ALL {
            for body in &bodies {
                for h in [&HeaderMap::new(), &headers] {
                    let _ = source.verify(h, body, &secret);
                    let _ = source.parse(h, body);
                }
            }
        }
    }
}
