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

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{BodyAuth, Credential, Read, Reading, Replay, Request, Settings, Source, Spec, body_hash, required_header, str_field, time_field};
use crate::error::Error;
use crate::event::EventDraft;
use crate::model::Status;

pub static SOURCE: &dyn Source = &Netlify;

pub struct Netlify;

const SIGNATURE_HEADER: &str = "x-webhook-signature";

static SPEC: Spec = Spec {
    name: "netlify",
    title: "Netlify outgoing deploy webhooks (with a JWS secret)",
    credential: Credential {
        headers: &[SIGNATURE_HEADER],
        missing: "missing X-Webhook-Signature header; set a JWS secret on the Netlify webhook",
    },
    body: BodyAuth::Signed,
    replay: Replay::NoSignedTime {
        why: "the JWS carries `iss` and `sha256` only: the signed body's hash is what identifies a delivery",
    },
    settings: &[],
    secrets: &[],
    docs: "docs/tools/netlify.md",
};

#[derive(Deserialize)]
struct Claims {
    sha256: String,
}

impl Source for Netlify {
    fn spec(&self) -> &'static Spec {
        &SPEC
    }

    fn verify(&self, request: &Request<'_>, secret: &SecretString) -> Result<(), Error> {
        let token = required_header(request, SIGNATURE_HEADER, SPEC.credential.missing)?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.required_spec_claims = ["iss".to_string()].into_iter().collect();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.set_issuer(&["netlify"]);
        let key = DecodingKey::from_secret(secret.expose_secret().as_bytes());
        let claims = jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .map_err(|e| Error::Unauthorized(format!("X-Webhook-Signature is not a valid netlify JWS for this secret ({e})")))?
            .claims;
        let actual = hex::encode(Sha256::digest(request.body));
        if bool::from(actual.as_bytes().ct_eq(claims.sha256.to_ascii_lowercase().as_bytes())) {
            Ok(())
        } else {
            Err(Error::Unauthorized("the body's SHA-256 does not match the signed `sha256` claim".into()))
        }
    }

    /// No signed time; the delivery key is the signed body's hash.
    fn read(&self, request: &Request<'_>, _settings: &Settings) -> Result<Reading, Error> {
        let obj = request.json_object(SPEC.name)?;
        let state = str_field(&obj, "state").unwrap_or_default();
        let reading = |read| Reading { signed_at: None, delivery_key: Some(body_hash(request.body)), read };
        // The unsigned event header may only make the bridge ignore a delivery, never choose a status.
        let event = request.header("x-netlify-event");
        if let Some(other) = event.filter(|e| !matches!(*e, "deploy_building" | "deploy_created" | "deploy_failed")) {
            return Ok(reading(Read::Ignored(format!("Netlify event {other:?} is not a deployment state change"))));
        }
        let status = match state.as_str() {
            "building" => Status::Running,
            "ready" => Status::Success,
            "error" => Status::Failed,
            other => return Ok(reading(Read::Ignored(format!("deploy state {other:?} is not a deployment state change")))),
        };
        let sha = str_field(&obj, "commit_ref").ok_or_else(|| {
            Error::BadRequest(
                "`commit_ref` is missing (null) in the Netlify deploy: deploys not built from git cannot be recorded".into(),
            )
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
        Ok(reading(Read::Draft(
            EventDraft {
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
            },
            None,
        )))
    }

    fn sign(&self, body: &[u8], secret: &str) -> Vec<(&'static str, String)> {
        let claims = serde_json::json!({"iss": "netlify", "sha256": hex::encode(Sha256::digest(body))});
        let jws = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret.as_bytes()));
        vec![(SIGNATURE_HEADER, jws.unwrap_or_default())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;
    use serde_json::json;

    fn verify(h: &HeaderMap, body: &[u8], secret: &SecretString) -> Result<(), Error> {
        Netlify.verify(&Request::new(h, body), secret)
    }

    fn parse(h: &HeaderMap, body: &str) -> Result<Read, Error> {
        Ok(Netlify.read(&Request::new(h, body.as_bytes()), &Settings::default())?.read)
    }

    const SHA: &str = "c0ffee1234567890abcdef1234567890abcdef12";

    fn sign(secret: &str, iss: &str, body: &[u8]) -> String {
        if iss == "netlify" {
            return Netlify.sign(body, secret).remove(0).1;
        }
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
            verify(&h, body, &secret)
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
        assert!(verify(&h, body, &secret).unwrap_err().to_string().contains("missing"));
        h.insert("x-webhook-signature", sign("jws", "netlify", body).parse().unwrap());
        assert!(verify(&h, body, &secret).is_ok());
        assert!(verify(&h, br#"{"state":"error"}"#, &secret).unwrap_err().to_string().contains("SHA-256"));
        h.insert("x-webhook-signature", sign("other", "netlify", body).parse().unwrap());
        assert!(verify(&h, body, &secret).is_err());
        h.insert("x-webhook-signature", sign("jws", "someone-else", body).parse().unwrap());
        assert!(verify(&h, body, &secret).is_err());
    }

    #[test]
    fn states_contexts_and_events() {
        let b = |state: &str, context: &str| {
            json!({"id": "d1", "state": state, "commit_ref": SHA, "branch": "feat", "context": context,
                   "ssl_url": "https://docs.example.com", "deploy_ssl_url": "https://d1--docs.netlify.app"})
            .to_string()
        };
        let Read::Draft(d, _) = parse(&HeaderMap::new(), &b("building", "deploy-preview")).unwrap() else { panic!() };
        assert_eq!((d.status, d.environment.as_deref()), (Some(Status::Running), Some("preview/feat")));
        assert_eq!(d.external_url.as_deref(), Some("https://d1--docs.netlify.app"));
        let Read::Draft(d, _) = parse(&HeaderMap::new(), &b("ready", "production")).unwrap() else { panic!() };
        assert_eq!((d.status, d.environment.as_deref(), d.external_url.as_deref()), (Some(Status::Success), Some("production"), Some("https://docs.example.com")));
        let mut h = HeaderMap::new();
        h.insert("x-netlify-event", "deploy_failed".parse().unwrap());
        let Read::Draft(d, _) = parse(&h, &b("error", "branch-deploy")).unwrap() else { panic!() };
        assert_eq!((d.status, d.environment.as_deref()), (Some(Status::Failed), Some("branch-deploy/feat")));
        // The header is not signed: it cannot turn a signed "building" into a failure.
        let Read::Draft(d, _) = parse(&h, &b("building", "production")).unwrap() else { panic!() };
        assert_eq!(d.status, Some(Status::Running));
        h.insert("x-netlify-event", "deploy_locked".parse().unwrap());
        assert!(matches!(parse(&h, &b("ready", "production")).unwrap(), Read::Ignored(_)));
        let no_commit = json!({"state": "building", "commit_ref": null}).to_string();
        assert!(parse(&HeaderMap::new(), &no_commit).err().unwrap().to_string().contains("commit_ref"));
    }
}
