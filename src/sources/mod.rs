//! Deploy tools. Each tool is **one self-describing component**, one file of this folder:
//!
//! - its [`Spec`]: the credential (the headers it signs in, the secret keys it reads), whether
//!   the signature covers the body, its replay decision (a signed time and its window, or why
//!   there is none), its own settings, its docs page — every field required, so a tool cannot
//!   forget one;
//! - [`Source::verify`]: the tool's native authentication over the raw bytes;
//! - [`Source::read`]: the verified body decoded **once** into everything the pipeline needs
//!   ([`Reading`]: the draft event or why it is ignored, the signed time, the delivery key), and,
//!   where the payload alone cannot complete the event, the look-up that can ([`Enrich`], which
//!   sees the decoded facts and a narrow [`Lookup`], never the body again, the GitLab client or
//!   the process's configuration);
//! - [`Source::sign`]: the tool's own way of signing a body, the one signer that tests, fuzz
//!   seeds and the sample events use.
//!
//! The pipeline, `check`, `invoke --sha`, the settings reference and the test helpers learn all
//! of this from [`ALL`]. Adding a tool: write `src/sources/<tool>.rs` exposing
//! `pub static SOURCE: &dyn Source`, add its module name to the `sources!` list below, add its
//! sample events (`cargo run --example events -- new ...`), its test file and its docs page.

use axum::http::HeaderMap;
use hmac::Mac;
use hmac::digest::KeyInit;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use crate::error::Error;
use crate::event::EventDraft;
use crate::model::{BoxFuture, parse_time};

/// What a tool declares about itself.
#[derive(Debug)]
pub struct Spec {
    /// Path segment of `/hooks/{name}`; the unbound hook's secret key is `<name>_webhook_secret`.
    pub name: &'static str,
    /// What it is, in a few words (the supported-tools list, `check`).
    pub title: &'static str,
    pub credential: Credential,
    /// What the tool's credential covers.
    pub body: BodyAuth,
    /// The replay defence this tool's deliveries allow.
    pub replay: Replay,
    /// Environment variables of this tool's (read once at start, checked there).
    pub settings: &'static [Setting],
    /// Keys of the secret this tool reads besides its webhook secret (a tool's API token).
    pub secrets: &'static [SecretKey],
    /// Its page in the docs (setup, status mapping, environments, pitfalls).
    pub docs: &'static str,
}

/// Where a tool's calls carry their credential.
#[derive(Debug)]
pub struct Credential {
    /// Headers that carry it (any one of them): a call with none is refused before its body is
    /// read, so an unauthenticated caller cannot make the bridge buffer a body.
    pub headers: &'static [&'static str],
    /// The 401 of a call without them, naming the fix.
    pub missing: &'static str,
}

/// What a tool's credential covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyAuth {
    /// A signature over the raw body: a changed byte fails verification.
    Signed,
    /// A bearer secret: the body itself is not covered (`invoke --sha` may change it).
    Unsigned,
}

/// A tool's replay decision: where it signs a time into each delivery, how old one may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// [`Reading::signed_at`] is the signed time; a delivery older than `window` (longer than
    /// the tool's own redelivery horizon, `why`) or in the future changes nothing.
    SignedTime { window: Duration, why: &'static str },
    /// The tool signs no time: only its delivery key (if any) guards against a copy; `why` says so.
    NoSignedTime { why: &'static str },
}

impl Replay {
    pub fn window(&self) -> Option<Duration> {
        match self {
            Replay::SignedTime { window, .. } => Some(*window),
            Replay::NoSignedTime { .. } => None,
        }
    }
}

/// One environment variable of a tool's.
#[derive(Debug)]
pub struct Setting {
    pub var: &'static str,
    pub default: Option<&'static str>,
    pub doc: &'static str,
    /// Refuses a value the tool could not use (the start fails, naming it).
    pub check: fn(&str) -> Result<(), String>,
}

/// A key of the secret a tool reads (locally, the environment variable of its name in capitals).
#[derive(Debug)]
pub struct SecretKey {
    pub key: &'static str,
    pub doc: &'static str,
}

/// Any value is usable.
pub fn any_value(_: &str) -> Result<(), String> {
    Ok(())
}

/// An `https://` (or `http://`) base URL.
pub fn base_url(v: &str) -> Result<(), String> {
    if v.starts_with("https://") || v.starts_with("http://") {
        Ok(())
    } else {
        Err(format!("must start with https://, got {v:?}"))
    }
}

/// One verified delivery as a tool sent it: headers and raw body. The body is decoded through
/// [`Request::json_object`] or [`Request::form_or_json`] only, which count (see [`Request::decodes`]).
pub struct Request<'a> {
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    decodes: AtomicU32,
}

impl<'a> Request<'a> {
    pub fn new(headers: &'a HeaderMap, body: &'a [u8]) -> Self {
        Request { headers, body, decodes: AtomicU32::new(0) }
    }

    /// How many times the body was decoded (the pipeline and its tests hold it to one).
    pub fn decodes(&self) -> u32 {
        self.decodes.load(Ordering::Relaxed)
    }

    /// A header's value, trimmed.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
    }

    /// The body as a JSON object, with a 400 that says what is wrong.
    pub fn json_object(&self, source: &str) -> Result<Map<String, Value>, Error> {
        self.decodes.fetch_add(1, Ordering::Relaxed);
        match serde_json::from_slice::<Value>(self.body) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(_) => Err(Error::BadRequest(format!("the {source} body must be a JSON object"))),
            Err(e) => Err(Error::BadRequest(format!("the {source} body is not valid JSON: {e}"))),
        }
    }

    /// The body's fields: a JSON object, or a form (`application/x-www-form-urlencoded`), as
    /// GitLab's API accepts both.
    pub fn form_or_json(&self, source: &str) -> Result<Map<String, Value>, Error> {
        let is_form = self.header("content-type").is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
        if is_form && self.body.trim_ascii_start().starts_with(b"{") {
            // curl's `-d` sends a form's content type whatever the data is.
            return Err(Error::BadRequest(
                "the body was read as a form (Content-Type: application/x-www-form-urlencoded, curl's default for -d), but it is JSON; send it with Content-Type: application/json".into(),
            ));
        }
        if !is_form {
            return self.json_object(source);
        }
        self.decodes.fetch_add(1, Ordering::Relaxed);
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(self.body)
            .map_err(|e| Error::BadRequest(format!("the form body cannot be read: {e}")))?;
        Ok(pairs.into_iter().map(|(k, v)| (k, Value::String(v))).collect())
    }
}

/// Everything the pipeline needs of one delivery, read from its body once.
pub struct Reading {
    /// The time the tool signed into the delivery, where its [`Replay`] says it signs one.
    pub signed_at: Option<OffsetDateTime>,
    /// What identifies this delivery across the tool's redeliveries of it (an id, or the body's
    /// hash where retries are byte-identical): replay de-duplication and the spool's.
    pub delivery_key: Option<String>,
    pub read: Read,
}

/// What a delivery says.
pub enum Read {
    /// A deployment state change; the look-up that completes it, where the payload cannot.
    Draft(EventDraft, Option<Box<dyn Enrich>>),
    /// Not a deployment state change, and why.
    Ignored(String),
}

/// The part of a delivery only a tool's API can complete (a Heroku release names no commit).
/// It holds the decoded facts it needs; it never sees the body again.
pub trait Enrich: Send {
    fn enrich<'a>(
        self: Box<Self>,
        draft: EventDraft,
        settings: &'a Settings,
        lookup: &'a dyn Lookup,
    ) -> BoxFuture<'a, Result<Read, Error>>;
}

/// What an [`Enrich`] may use: keys of the secret its tool declares, and one GET on a tool's
/// API through the shared HTTP client (no redirects, within the webhook's deadline; it never
/// carries the GitLab token). A dry run's lookup holds no tool credential, so it calls no one.
pub trait Lookup: Send + Sync {
    fn secret(&self, key: &str) -> Option<&SecretString>;
    /// `GET url` with `Authorization: Bearer <token>` and `headers`; the JSON answer, or why not.
    fn get_json<'a>(
        &'a self,
        url: &'a str,
        token: &'a SecretString,
        headers: &'a [(&'static str, &'static str)],
    ) -> BoxFuture<'a, Result<Value, String>>;
}

/// The look-up of a run that calls no tool's API (a dry run): it holds no credential, so a
/// tool's look-up falls back to what the payload says.
pub struct Offline;

impl Lookup for Offline {
    fn secret(&self, _key: &str) -> Option<&SecretString> {
        None
    }

    fn get_json<'a>(
        &'a self,
        _url: &'a str,
        _token: &'a SecretString,
        _headers: &'a [(&'static str, &'static str)],
    ) -> BoxFuture<'a, Result<Value, String>> {
        Box::pin(async { Err("a dry run calls no tool's API".to_string()) })
    }
}

/// One deploy tool's webhook format.
pub trait Source: Send + Sync {
    fn spec(&self) -> &'static Spec;
    /// Checks the tool's native authentication over the raw body. `Err` is always 401.
    fn verify(&self, request: &Request<'_>, secret: &SecretString) -> Result<(), Error>;
    /// Decodes the verified body, once, into a [`Reading`]; `settings` are this tool's own.
    fn read(&self, request: &Request<'_>, settings: &Settings) -> Result<Reading, Error>;
    /// The headers the tool would send with `body`, signed with `secret`: the one signer of
    /// everything that is not the bridge (tests, fuzz seeds, sample events).
    fn sign(&self, body: &[u8], secret: &str) -> Vec<(&'static str, String)>;
}

impl dyn Source + '_ {
    pub fn name(&self) -> &'static str {
        self.spec().name
    }

    /// Whether the request carries the tool's credential at all (checked before the body is
    /// read); `Err` is the spec's 401.
    pub fn credentials(&self, headers: &HeaderMap) -> Result<(), Error> {
        let spec = self.spec();
        match spec.credential.headers.iter().any(|h| headers.contains_key(*h)) {
            true => Ok(()),
            false => Err(Error::Unauthorized(spec.credential.missing.to_string())),
        }
    }
}

macro_rules! sources {
    ($($module:ident),* $(,)?) => {
        $(pub mod $module;)*
        /// Every registered source.
        pub static ALL: &[&dyn Source] = &[$($module::SOURCE),*];
    };
}

sources![generic, argocd, heroku, flux, vercel, netlify];

pub fn find(name: &str) -> Option<&'static dyn Source> {
    ALL.iter().copied().find(|s| s.name() == name)
}

pub fn names() -> String {
    ALL.iter().map(|s| s.name()).collect::<Vec<_>>().join(", ")
}

/// The secret key of a tool's unbound hook: `<name>_webhook_secret`.
pub fn webhook_secret_key(source: &str) -> String {
    format!("{source}_webhook_secret")
}

/// Every key of the secret a tool reads besides the webhook secrets (`heroku_api_token`, ...).
pub fn declared_secret_keys() -> Vec<&'static str> {
    ALL.iter().flat_map(|s| s.spec().secrets.iter().map(|k| k.key)).collect()
}

/// One tool's settings, as read at start (defaults applied).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Settings(BTreeMap<&'static str, String>);

impl Settings {
    pub fn get(&self, var: &str) -> Option<&str> {
        self.0.get(var).map(String::as_str)
    }
}

/// Every tool's settings, by tool.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ToolSettings(HashMap<&'static str, Settings>);

impl ToolSettings {
    /// Reads each tool's settings through `get` (the environment), checking each value.
    pub fn from_lookup(get: &dyn Fn(&str) -> Option<String>) -> Result<ToolSettings, String> {
        let mut all = ToolSettings::default();
        for source in ALL {
            for setting in source.spec().settings {
                match get(setting.var) {
                    Some(v) => all.set(setting.var, &v)?,
                    None => {
                        if let Some(d) = setting.default {
                            all.set(setting.var, d)?;
                        }
                    }
                }
            }
        }
        Ok(all)
    }

    /// Sets the tool setting `var` (checked as at start).
    pub fn set(&mut self, var: &str, value: &str) -> Result<(), String> {
        for source in ALL {
            if let Some(setting) = source.spec().settings.iter().find(|s| s.var == var) {
                (setting.check)(value).map_err(|e| format!("{var} {e}"))?;
                self.0.entry(source.name()).or_default().0.insert(setting.var, value.to_string());
                return Ok(());
            }
        }
        Err(format!("{var} is no tool's setting"))
    }

    /// The settings of tool `name` (none set: empty).
    pub fn of(&self, name: &str) -> &Settings {
        static NONE: std::sync::OnceLock<Settings> = std::sync::OnceLock::new();
        self.0.get(name).unwrap_or_else(|| NONE.get_or_init(Settings::default))
    }
}

/// Whether `expected` is the HMAC of `body` under `secret` with digest `D` (constant time).
pub fn hmac_matches<M: Mac + KeyInit>(secret: &SecretString, body: &[u8], expected: &[u8]) -> bool {
    let Ok(mut mac) = <M as KeyInit>::new_from_slice(secret.expose_secret().as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(expected).is_ok()
}

/// The HMAC of `body` under `secret` (for the signers).
pub fn hmac_of<M: Mac + KeyInit>(secret: &str, body: &[u8]) -> Vec<u8> {
    match <M as KeyInit>::new_from_slice(secret.as_bytes()) {
        Ok(mut mac) => {
            mac.update(body);
            mac.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

/// Compares two secrets in time that does not depend on where they differ.
pub fn secret_eq(given: &[u8], expected: &SecretString) -> bool {
    given.ct_eq(expected.expose_secret().as_bytes()).into()
}

/// A header's value, or 401 saying it is missing.
pub fn required_header<'h>(request: &Request<'h>, name: &str, missing: &str) -> Result<&'h str, Error> {
    request.header(name).ok_or_else(|| Error::Unauthorized(missing.to_string()))
}

/// The headers of a bearer credential: `Authorization: Bearer <x>` or `PRIVATE-TOKEN: <x>`.
pub const BEARER_HEADERS: &[&str] = &["authorization", "private-token"];

/// The credential in `Authorization: Bearer <x>` or `PRIVATE-TOKEN: <x>`.
pub fn bearer_or_private_token<'h>(request: &Request<'h>) -> Option<&'h str> {
    if let Some(v) = request.header("authorization")
        && let Some((scheme, rest)) = v.split_once(' ')
        && scheme.eq_ignore_ascii_case("bearer")
    {
        return Some(rest.trim());
    }
    request.header("private-token")
}

/// Verifies a bearer/PRIVATE-TOKEN credential against the source's secret.
pub fn verify_token(source: &str, request: &Request<'_>, secret: &SecretString) -> Result<(), Error> {
    let given = bearer_or_private_token(request).ok_or_else(|| {
        Error::Unauthorized(format!("missing credentials: send `Authorization: Bearer <{source} webhook secret>`"))
    })?;
    if secret_eq(given.as_bytes(), secret) {
        Ok(())
    } else {
        Err(Error::Unauthorized(format!("the credential does not match the {source} webhook secret")))
    }
}

/// An RFC 3339 time field (`2026-10-02T11:00:00Z`); `None` when absent, blank or unreadable: a
/// tool's time of an event only protects against late deliveries, so a bad one never blocks it.
pub fn time_field(obj: &Map<String, Value>, key: &str) -> Option<OffsetDateTime> {
    str_field(obj, key).as_deref().and_then(parse_time)
}

/// The hex SHA-256 of a body: the identity of a delivery whose retries are byte-identical.
pub fn body_hash(body: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(body))
}

/// A string field (numbers are accepted and turned into text); `None` when absent, null or blank.
pub fn str_field(obj: &Map<String, Value>, key: &str) -> Option<String> {
    match obj.get(key)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A nested object field.
pub fn object<'a>(v: &'a Map<String, Value>, key: &str) -> Option<&'a Map<String, Value>> {
    v.get(key).and_then(Value::as_object)
}

#[cfg(test)]
mod tests;
