//! `netlify`: Netlify outgoing deploy webhooks, signed with `X-Webhook-Signature`: a JWS (HS256)
//! made with the webhook's JWS secret whose claims are `iss: "netlify"` and
//! `sha256: <hex SHA-256 of the raw body>`. The signature, the issuer (required) and the body
//! hash are all checked; `exp` and `nbf`, which Netlify does not send, are enforced when present.
//!
//! The status comes from what the JWS covers — the deploy's `state` (`building` → running,
//! `ready` → success, `error` → failed) — never from the unsigned `X-Netlify-Event` header, which
//! may only make the bridge ignore a delivery (`deploy_locked`, `deploy_request_*`, ...). The
//! commit is `commit_ref`, which Netlify leaves null for deploys not built from git (CLI or
//! drag-and-drop): those get a 400 naming it.
//!
//! Environments: `context: production` → `production`; `deploy-preview` → `preview/<branch>`;
//! `branch-deploy` → `branch-deploy/<branch>`; any other context → its name.

use axum::http::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{Source, json_object, required_header, str_field, time_field};
use crate::error::Error;
use crate::event::{EventDraft, SourceOutput};
use crate::model::Status;

pub static SOURCE: &dyn Source = &Netlify;

pub struct Netlify;

#[derive(Deserialize)]
struct Claims {
    sha256: String,
}

fn signature(headers: &HeaderMap) -> Result<&str, Error> {
    required_header(headers, "x-webhook-signature", "missing X-Webhook-Signature header; set a JWS secret on the Netlify webhook")
}

impl Source for Netlify {
    fn name(&self) -> &'static str {
        "netlify"
    }

    fn credentials(&self, headers: &HeaderMap) -> Result<(), Error> {
        signature(headers).map(drop)
    }

    /// Netlify signs no time (the JWS has `iss` and `sha256` only): the signed body's hash is
    /// what identifies a delivery.
    fn delivery_key(&self, _headers: &HeaderMap, body: &[u8]) -> Option<String> {
        Some(super::body_hash(body))
    }

    fn verify(&self, headers: &HeaderMap, body: &[u8], secret: &SecretString) -> Result<(), Error> {
        let token = signature(headers)?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.required_spec_claims = ["iss".to_string()].into_iter().collect();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.set_issuer(&["netlify"]);
        let claims = jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(secret.expose_secret().as_bytes()), &validation)
            .map_err(|e| Error::Unauthorized(format!("X-Webhook-Signature is not a valid netlify JWS for this secret ({e})")))?
            .claims;
        let actual = hex::encode(Sha256::digest(body));
        if bool::from(actual.as_bytes().ct_eq(claims.sha256.to_ascii_lowercase().as_bytes())) {
            Ok(())
        } else {
            Err(Error::Unauthorized("the body's SHA-256 does not match the signed `sha256` claim".into()))
        }
    }

    fn parse(&self, headers: &HeaderMap, body: &[u8]) -> Result<SourceOutput, Error> {
        let obj = json_object("netlify", body)?;
        let state = str_field(&obj, "state").unwrap_or_default();
        // The unsigned event header may only make the bridge ignore a delivery, never choose a status.
        let event = headers.get("x-netlify-event").and_then(|v| v.to_str().ok());
        if let Some(other) = event.filter(|e| !matches!(*e, "deploy_building" | "deploy_created" | "deploy_failed")) {
            return Ok(SourceOutput::Ignored(format!("Netlify event {other:?} is not a deployment state change")));
        }
        let status = match state.as_str() {
            "building" => Status::Running,
            "ready" => Status::Success,
            "error" => Status::Failed,
            other => return Ok(SourceOutput::Ignored(format!("deploy state {other:?} is not a deployment state change"))),
        };
        let sha = str_field(&obj, "commit_ref").ok_or_else(|| {
            Error::BadRequest("`commit_ref` is missing (null) in the Netlify deploy: deploys not built from git cannot be recorded".into())
        })?;
        let branch = str_field(&obj, "branch");
        let context = str_field(&obj, "context").unwrap_or_else(|| "production".into());
        let environment_by_bridge = matches!(context.as_str(), "deploy-preview" | "branch-deploy");
        let environment = match context.as_str() {
            "production" => "production".to_string(),
            "deploy-preview" => format!("preview/{}", branch.clone().unwrap_or_else(|| "unknown".into())),
            "branch-deploy" => format!("branch-deploy/{}", branch.clone().unwrap_or_else(|| "unknown".into())),
            other => other.to_string(),
        };
        let external_url = if context == "production" {
            str_field(&obj, "ssl_url").or_else(|| str_field(&obj, "url"))
        } else {
            str_field(&obj, "deploy_ssl_url").or_else(|| str_field(&obj, "deploy_url"))
        };
        let delivery_id = str_field(&obj, "id").map(|id| format!("{id}:{state}"));
        Ok(SourceOutput::Event(EventDraft {
            environment: Some(environment),
            sha: Some(sha),
            git_ref: branch,
            tag: None,
            status: Some(status),
            external_url,
            delivery_id,
            sha_hint: None,
            occurred_at: time_field(&obj, "updated_at"),
            short_sha: false,
            environment_by_bridge,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    const SHA: &str = "c0ffee1234567890abcdef1234567890abcdef12";

    fn sign(secret: &str, iss: &str, body: &[u8]) -> String {
        sign_claims(secret, json!({"iss": iss, "sha256": hex::encode(Sha256::digest(body))}))
    }

    fn sign_claims(secret: &str, claims: serde_json::Value) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
    }

    #[test]
    fn the_issuer_is_required_and_exp_and_nbf_are_enforced_when_present() {
        let secret = SecretString::from("jws");
        let body = br#"{"state":"ready"}"#;
        let hash = hex::encode(Sha256::digest(body));
        let check = |claims: serde_json::Value| {
            let mut h = HeaderMap::new();
            h.insert("x-webhook-signature", sign_claims("jws", claims).parse().unwrap());
            Netlify.verify(&h, body, &secret)
        };
        assert!(check(json!({"sha256": hash})).is_err(), "no iss");
        assert!(check(json!({"iss": "netlify", "sha256": hash, "exp": 978307200})).is_err(), "expired in 2001");
        let later = time::OffsetDateTime::now_utc().unix_timestamp() + 3600;
        assert!(check(json!({"iss": "netlify", "sha256": hash, "nbf": later})).is_err(), "not yet valid");
        assert!(check(json!({"iss": "netlify", "sha256": hash, "exp": later})).is_ok());
    }

    #[test]
    fn jws_signature_issuer_and_body_hash_are_all_checked() {
        let secret = SecretString::from("jws");
        let body = br#"{"state":"ready"}"#;
        let mut h = HeaderMap::new();
        assert!(Netlify.verify(&h, body, &secret).unwrap_err().to_string().contains("missing"));
        h.insert("x-webhook-signature", sign("jws", "netlify", body).parse().unwrap());
        assert!(Netlify.verify(&h, body, &secret).is_ok());
        assert!(Netlify.verify(&h, br#"{"state":"error"}"#, &secret).unwrap_err().to_string().contains("SHA-256"));
        h.insert("x-webhook-signature", sign("other", "netlify", body).parse().unwrap());
        assert!(Netlify.verify(&h, body, &secret).is_err());
        h.insert("x-webhook-signature", sign("jws", "someone-else", body).parse().unwrap());
        assert!(Netlify.verify(&h, body, &secret).is_err());
    }

    #[test]
    fn states_contexts_and_events() {
        let b = |state: &str, context: &str| {
            json!({"id": "d1", "state": state, "commit_ref": SHA, "branch": "feat", "context": context,
                   "ssl_url": "https://docs.example.com", "deploy_ssl_url": "https://d1--docs.netlify.app"})
            .to_string()
        };
        let SourceOutput::Event(d) = Netlify.parse(&HeaderMap::new(), b("building", "deploy-preview").as_bytes()).unwrap() else { panic!() };
        assert_eq!((d.status, d.environment.as_deref()), (Some(Status::Running), Some("preview/feat")));
        assert_eq!(d.external_url.as_deref(), Some("https://d1--docs.netlify.app"));
        let SourceOutput::Event(d) = Netlify.parse(&HeaderMap::new(), b("ready", "production").as_bytes()).unwrap() else { panic!() };
        assert_eq!((d.status, d.environment.as_deref(), d.external_url.as_deref()), (Some(Status::Success), Some("production"), Some("https://docs.example.com")));
        let mut h = HeaderMap::new();
        h.insert("x-netlify-event", "deploy_failed".parse().unwrap());
        let SourceOutput::Event(d) = Netlify.parse(&h, b("error", "branch-deploy").as_bytes()).unwrap() else { panic!() };
        assert_eq!((d.status, d.environment.as_deref()), (Some(Status::Failed), Some("branch-deploy/feat")));
        // The header is not signed: it cannot turn a signed "building" into a failure.
        let SourceOutput::Event(d) = Netlify.parse(&h, b("building", "production").as_bytes()).unwrap() else { panic!() };
        assert_eq!(d.status, Some(Status::Running));
        h.insert("x-netlify-event", "deploy_locked".parse().unwrap());
        assert!(matches!(Netlify.parse(&h, b("ready", "production").as_bytes()).unwrap(), SourceOutput::Ignored(_)));
        let no_commit = json!({"state": "building", "commit_ref": null}).to_string();
        assert!(Netlify.parse(&HeaderMap::new(), no_commit.as_bytes()).unwrap_err().to_string().contains("commit_ref"));
    }
}
