//! `gitlab-deploy-bridge invoke`: Lambda function-URL event files through the router, as Lambda
//! would run them, each answer printed as a JSON line; `--project`, `--sha` and `--environment`
//! aim the sample events at one's own project first.

use axum::Router;
use serde_json::{Value, json};
use std::path::PathBuf;
use tower::ServiceExt;

use crate::app::BoxError;
use crate::sources::{self, BodyAuth};

/// Runs each function-URL event file through the router, as Lambda would, and prints the
/// answers as JSON lines. Returns whether every answer was a success.
pub async fn invoke(app: Router, files: &[PathBuf]) -> Result<bool, BoxError> {
    invoke_retargeted(app, files, &Retarget::default()).await
}

/// What `invoke` changes in each event before running it, to try the sample events on one's
/// own project: the project (in the query, or the facade's path), and the commit in bodies that
/// are not signed (a tool whose spec says [`BodyAuth::Unsigned`], such as `generic` and Argo CD,
/// and the facade; a signed body cannot be changed without its signature failing, so it is left
/// as it is).
#[derive(Debug, Default, Clone)]
pub struct Retarget {
    pub project: Option<String>,
    pub sha: Option<String>,
    /// The environment, through the query (which wins over the payload's).
    pub environment: Option<String>,
}

impl Retarget {
    fn apply(&self, text: &str) -> Result<String, BoxError> {
        if self.project.is_none() && self.sha.is_none() && self.environment.is_none() {
            return Ok(text.to_string());
        }
        let mut ev: Value = serde_json::from_str(text)?;
        let path = ev["rawPath"].as_str().unwrap_or("").to_string();
        if let Some(project) = &self.project {
            if let Some((before, after)) = path.split_once("/api/v4/projects/") {
                let rest = after.split_once('/').map(|(_, r)| r).unwrap_or("");
                let encoded = percent_encoding::utf8_percent_encode(project, percent_encoding::NON_ALPHANUMERIC);
                let new_path = format!("{before}/api/v4/projects/{encoded}/{rest}");
                ev["rawPath"] = json!(new_path);
                ev["requestContext"]["http"]["path"] = json!(new_path);
            } else {
                set_query(&mut ev, "project", project)?;
            }
        }
        if let Some(environment) = &self.environment {
            set_query(&mut ev, "environment", environment)?;
        }
        if let Some(sha) = &self.sha {
            let unsigned =
                path.contains("/api/v4/") || hook_source(&path).is_some_and(|s| s.spec().body == BodyAuth::Unsigned);
            if unsigned
                && ev["isBase64Encoded"] != json!(true)
                && let Some(body) = ev["body"].as_str()
            {
                let any_sha = regex_lite::Regex::new(r"\b[0-9a-fA-F]{40}\b")?;
                ev["body"] = json!(any_sha.replace_all(body, sha.as_str()).into_owned());
            }
        }
        Ok(serde_json::to_string(&ev)?)
    }
}

/// The source of a `/hooks/{source}[/{route}]` path.
fn hook_source(path: &str) -> Option<&'static dyn sources::Source> {
    let rest = path.trim_start_matches('/').strip_prefix("hooks/")?;
    sources::find(rest.split('/').next()?)
}

/// Sets (or replaces) one parameter of a function-URL event's query.
fn set_query(ev: &mut Value, key: &str, value: &str) -> Result<(), BoxError> {
    let query = ev["rawQueryString"].as_str().unwrap_or("");
    let mut pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
    pairs.retain(|(k, _)| k != key);
    pairs.push((key.to_string(), value.to_string()));
    ev["rawQueryString"] = json!(serde_urlencoded::to_string(&pairs)?);
    Ok(())
}

/// [`invoke`], each event changed by `retarget` first.
pub async fn invoke_retargeted(app: Router, files: &[PathBuf], retarget: &Retarget) -> Result<bool, BoxError> {
    let mut all_ok = true;
    for file in files {
        let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let text = retarget.apply(&text).map_err(|e| format!("{}: {e}", file.display()))?;
        let request = crate::lambda::request_from_str(&text)
            .map_err(|e| format!("{}: not a Lambda function URL / HTTP API v2 event: {e}", file.display()))?;
        let response = app.clone().oneshot(request).await?;
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await?;
        let body: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes)));
        all_ok &= status.is_success();
        println!("{}", json!({ "event": file.display().to_string(), "statusCode": status.as_u16(), "body": body }));
    }
    Ok(all_ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(path: &str, body: &str) -> String {
        json!({"rawPath": path, "rawQueryString": "project=42", "body": body, "isBase64Encoded": false}).to_string()
    }

    #[test]
    fn only_unsigned_bodies_get_the_new_commit() {
        let old = "c0ffee1234567890abcdef1234567890abcdef12";
        let retarget = Retarget { sha: Some("b".repeat(40)), project: Some("g/a".into()), environment: None };
        let changed = |path: &str| {
            let out: Value =
                serde_json::from_str(&retarget.apply(&event(path, &format!(r#"{{"sha":"{old}"}}"#))).unwrap()).unwrap();
            (
                out["body"].as_str().unwrap().contains(&"b".repeat(40)),
                out["rawQueryString"].as_str().unwrap().to_string(),
            )
        };
        assert_eq!(changed("/hooks/generic/ci"), (true, "project=g%2Fa".to_string()));
        assert!(changed("/hooks/argocd").0, "Argo CD's bearer secret covers no body");
        assert!(!changed("/hooks/heroku/h").0, "a signed body is left as it is");
        assert!(!changed("/hooks/flux").0);
    }
}
