//! Where the GitLab token and the per-source webhook secrets come from.
//!
//! One interface, [`SecretProvider`], with two implementations: [`SecretsManager`] (Lambda: a
//! JSON secret read lazily, cached with a TTL, re-read when GitLab says the token is no longer
//! valid) and [`StaticSecrets`] (local runs: environment variables). Values are
//! [`SecretString`]s, whose `Debug` prints nothing of them.

use secrecy::SecretString;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

use crate::model::BoxFuture;

/// Key of the GitLab token in the secret.
pub const GITLAB_TOKEN_KEY: &str = "gitlab_token";

#[derive(Debug, Clone, thiserror::Error)]
pub enum SecretsError {
    /// The function is not set up to read secrets at all.
    #[error("secrets are not configured: {0}")]
    NotConfigured(String),
    #[error("Secrets Manager has no secret {0:?} (check SECRET_ID and the function's region)")]
    NotFound(String),
    #[error("secret {secret:?} is unusable: {reason}")]
    Invalid { secret: String, reason: String },
    #[error("{}", missing_key(secret, key))]
    MissingKey { secret: String, key: String },
    /// Secrets Manager could not be reached or refused us; a redelivery may succeed.
    #[error("Secrets Manager is unavailable: {0}")]
    Unavailable(String),
}

impl SecretsError {
    /// What an (unauthenticated) caller may read: the kind of problem, without the secret's
    /// name or ARN (account id, region) or the endpoint's address; the log has those.
    pub fn public_message(&self) -> String {
        match self {
            SecretsError::NotConfigured(m) => format!("secrets are not configured: {m}"),
            SecretsError::NotFound(_) => {
                "Secrets Manager has no secret named by SECRET_ID (check SECRET_ID and the function's region)".into()
            }
            SecretsError::Invalid { reason, .. } => format!("the secret named by SECRET_ID is unusable: {reason}"),
            SecretsError::MissingKey { secret, key } if secret == ENV_ORIGIN => missing_key(secret, key),
            SecretsError::MissingKey { key, .. } => {
                format!("the secret named by SECRET_ID has no key {key:?}; add it to the secret's JSON object")
            }
            SecretsError::Unavailable(_) => {
                "Secrets Manager is unavailable; a redelivery may succeed (the function's log has the cause)".into()
            }
        }
    }
}

/// One consistent set of secret values, as read at one moment.
#[derive(Debug)]
pub struct SecretBundle {
    origin: String,
    generation: u64,
    values: HashMap<String, SecretString>,
}

impl SecretBundle {
    pub fn new(origin: impl Into<String>, generation: u64, values: HashMap<String, SecretString>) -> Self {
        SecretBundle { origin: origin.into(), generation, values }
    }

    /// Parses a Secrets Manager secret string: a JSON object of string values.
    pub fn from_json(origin: &str, generation: u64, text: &str) -> Result<Self, SecretsError> {
        let invalid = |reason: String| SecretsError::Invalid { secret: origin.to_string(), reason };
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|_| invalid("its value is not JSON; store a JSON object such as {\"gitlab_token\": \"...\", \"generic_webhook_secret\": \"...\"}".into()))?;
        let obj = value.as_object().ok_or_else(|| invalid("its value is JSON but not an object".into()))?;
        let mut values = HashMap::new();
        for (k, v) in obj {
            let s = v.as_str().ok_or_else(|| invalid(format!("the value of key {k:?} is not a string")))?;
            values.insert(k.clone(), SecretString::from(s.to_string()));
        }
        Ok(SecretBundle::new(origin, generation, values))
    }

    pub fn get(&self, key: &str) -> Option<&SecretString> {
        self.values.get(key)
    }

    pub fn gitlab_token(&self) -> Result<&SecretString, SecretsError> {
        self.get(GITLAB_TOKEN_KEY)
            .ok_or_else(|| SecretsError::MissingKey { secret: self.origin.clone(), key: GITLAB_TOKEN_KEY.into() })
    }

    /// The keys the secret holds (never the values).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }
}

/// Where [`StaticSecrets`] come from: environment variables (no `SECRET_ID`).
const ENV_ORIGIN: &str = "environment";

/// What is missing, in the words of where it must be put: a key of the Secrets Manager secret,
/// or, without `SECRET_ID`, an environment variable.
fn missing_key(secret: &str, key: &str) -> String {
    if secret == ENV_ORIGIN {
        format!(
            "set the environment variable {} (without SECRET_ID the bridge reads its secrets from environment variables)",
            key.to_ascii_uppercase()
        )
    } else {
        format!("secret {secret:?} has no key {key:?}; add it to the secret's JSON object")
    }
}

/// Gives the current secrets; `invalidate` drops a bundle that GitLab refused.
pub trait SecretProvider: Send + Sync {
    fn current(&self) -> BoxFuture<'_, Result<Arc<SecretBundle>, SecretsError>>;
    /// Forget `stale` so that the next `current()` reads the secret again (token rotation).
    fn invalidate<'a>(&'a self, stale: &'a SecretBundle) -> BoxFuture<'a, ()>;
}

/// Fixed values: environment variables for local runs, or a map in tests.
pub struct StaticSecrets(Arc<SecretBundle>);

impl StaticSecrets {
    pub fn new(values: HashMap<String, SecretString>) -> Self {
        StaticSecrets(Arc::new(SecretBundle::new(ENV_ORIGIN, 0, values)))
    }

    /// `GITLAB_TOKEN` → `gitlab_token`, `<SOURCE>_WEBHOOK_SECRET` → `<source>_webhook_secret`,
    /// `ROUTE_<NAME>_SECRET` → `route_<name>_secret`, and each of `declared` (the keys tools
    /// declare, such as `heroku_api_token`) from its name in capitals; every other variable is
    /// ignored.
    pub fn from_env_vars(vars: impl IntoIterator<Item = (String, String)>, declared: &[&str]) -> Self {
        let values = vars
            .into_iter()
            .filter(|(k, v)| {
                !v.is_empty()
                    && (k == "GITLAB_TOKEN"
                        || k.ends_with("_WEBHOOK_SECRET")
                        || (k.starts_with("ROUTE_") && k.ends_with("_SECRET"))
                        || declared.iter().any(|d| d.eq_ignore_ascii_case(k)))
            })
            .map(|(k, v)| (k.to_ascii_lowercase(), SecretString::from(v)))
            .collect();
        StaticSecrets::new(values)
    }
}

impl StaticSecrets {
    pub fn is_empty(&self) -> bool {
        self.0.values.is_empty()
    }
}

impl SecretProvider for StaticSecrets {
    fn current(&self) -> BoxFuture<'_, Result<Arc<SecretBundle>, SecretsError>> {
        let b = self.0.clone();
        Box::pin(async move { Ok(b) })
    }
    fn invalidate<'a>(&'a self, _stale: &'a SecretBundle) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
}

/// Always fails with a configuration error: keeps a misconfigured Lambda answering 5xx
/// (and logging why) instead of crash-looping.
pub struct Unconfigured(pub String);

impl SecretProvider for Unconfigured {
    fn current(&self) -> BoxFuture<'_, Result<Arc<SecretBundle>, SecretsError>> {
        let msg = self.0.clone();
        Box::pin(async move { Err(SecretsError::NotConfigured(msg)) })
    }
    fn invalidate<'a>(&'a self, _stale: &'a SecretBundle) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
}

struct Cached {
    bundle: Arc<SecretBundle>,
    fetched: Instant,
    /// GitLab refused its token: read again before using it as current.
    refused: bool,
}

/// What the reads so far left.
#[derive(Default)]
struct CacheState {
    /// The last bundle read.
    ok: Option<Cached>,
    /// How the last read ended, if it failed, and which read that was ([`SecretsManager::reads`]).
    failed: Option<(u64, SecretsError)>,
    /// While a stale bundle is served, the next re-read is not tried before this.
    retry_at: Option<Instant>,
}

/// While Secrets Manager cannot be read and a stale bundle is served, how often one request
/// tries to read again (the others meanwhile are served the stale bundle at once).
const STALE_RETRY: Duration = Duration::from_secs(5);

/// AWS Secrets Manager, read on first use and cached for `ttl`. A read that fails leaves no
/// hold behind: the requests that waited for it share its outcome, and the next request after
/// it reads again, so a recovered Secrets Manager is used at once. While re-reads fail because
/// Secrets Manager is unavailable, the bundle read last keeps serving, with a warning, up to
/// `stale_limit` past its TTL (a rotated webhook secret or token takes effect once a read
/// succeeds; a secret deleted or made unreadable is not served stale).
pub struct SecretsManager {
    client: aws_sdk_secretsmanager::Client,
    secret_id: String,
    ttl: Duration,
    stale_limit: Duration,
    state: std::sync::Mutex<CacheState>,
    /// Held by the one request reading the secret (concurrent first requests share one read).
    reading: Mutex<()>,
    /// Reads finished so far.
    reads: AtomicU64,
    generation: AtomicU64,
}

/// How long past its TTL a bundle is served while Secrets Manager is unavailable, by default.
pub const STALE_LIMIT: Duration = Duration::from_secs(3600);

impl SecretsManager {
    pub fn new(client: aws_sdk_secretsmanager::Client, secret_id: impl Into<String>, ttl: Duration) -> Self {
        SecretsManager {
            client,
            secret_id: secret_id.into(),
            ttl,
            stale_limit: STALE_LIMIT,
            state: std::sync::Mutex::new(CacheState::default()),
            reading: Mutex::new(()),
            reads: AtomicU64::new(0),
            generation: AtomicU64::new(0),
        }
    }

    /// How long past its TTL the last bundle read keeps serving while re-reads fail
    /// (`SECRET_STALE_MAX_SECONDS`; zero: never).
    pub fn with_stale_limit(self, stale_limit: Duration) -> Self {
        SecretsManager { stale_limit, ..self }
    }

    async fn fetch(&self) -> Result<Arc<SecretBundle>, SecretsError> {
        use aws_sdk_secretsmanager::error::SdkError;
        let out = self.client.get_secret_value().secret_id(&self.secret_id).send().await.map_err(|e| {
            match &e {
                SdkError::ServiceError(se) if se.err().is_resource_not_found_exception() => {
                    SecretsError::NotFound(self.secret_id.clone())
                }
                SdkError::ServiceError(se) => {
                    let code = aws_sdk_secretsmanager::error::ProvideErrorMetadata::code(se.err()).unwrap_or("error");
                    if code.contains("AccessDenied") || code.contains("Decryption") {
                        SecretsError::Invalid {
                            secret: self.secret_id.clone(),
                            reason: format!("Secrets Manager answered {code}; the function's role needs secretsmanager:GetSecretValue (and kms:Decrypt for a customer key)"),
                        }
                    } else {
                        SecretsError::Unavailable(format!("Secrets Manager answered {code}"))
                    }
                }
                other => SecretsError::Unavailable(format!("{}", aws_sdk_secretsmanager::error::DisplayErrorContext(other))),
            }
        })?;
        let text = out.secret_string().ok_or_else(|| SecretsError::Invalid {
            secret: self.secret_id.clone(),
            reason: "it has no SecretString (binary secrets are not supported)".into(),
        })?;
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let bundle = SecretBundle::from_json(&self.secret_id, generation, text)?;
        tracing::info!(secret_id = %self.secret_id, generation, keys = bundle.values.len(), "read secret from Secrets Manager");
        Ok(Arc::new(bundle))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, CacheState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The bundle within its TTL, if there is one.
    fn fresh(&self) -> Option<Arc<SecretBundle>> {
        let state = self.state();
        state.ok.as_ref().filter(|c| !c.refused && c.fetched.elapsed() < self.ttl).map(|c| c.bundle.clone())
    }

    /// The bundle past its TTL that may still serve while Secrets Manager is unavailable.
    fn stale(&self) -> Option<Arc<SecretBundle>> {
        let state = self.state();
        state.ok.as_ref().filter(|c| c.fetched.elapsed() < self.ttl + self.stale_limit).map(|c| c.bundle.clone())
    }

    /// A failed read's answer: the stale bundle where Secrets Manager was merely unavailable
    /// and one may serve, else the error.
    fn after_failure(&self, e: SecretsError) -> Result<Arc<SecretBundle>, SecretsError> {
        match (&e, self.stale()) {
            (SecretsError::Unavailable(_), Some(stale)) => Ok(stale),
            _ => Err(e),
        }
    }

    async fn read(&self) -> Result<Arc<SecretBundle>, SecretsError> {
        if let Some(b) = self.fresh() {
            return Ok(b);
        }
        // Reads finished before this request began waiting: one that ends while it waits is
        // the read it waited for.
        let seen = self.reads.load(Ordering::Acquire);
        let _reading = match self.reading.try_lock() {
            Ok(guard) => guard,
            // Another request is reading: a stale bundle serves at once rather than waiting.
            Err(_) => match self.stale() {
                Some(stale) => return Ok(stale),
                None => self.reading.lock().await,
            },
        };
        if let Some(b) = self.fresh() {
            return Ok(b);
        }
        let shared = self.state().failed.clone().filter(|(read, _)| *read > seen);
        if let Some((_, e)) = shared {
            return self.after_failure(e);
        }
        // Serving a stale bundle: one re-read per STALE_RETRY, not one per request.
        let held = self.state().retry_at.is_some_and(|at| Instant::now() < at);
        if held && let Some(stale) = self.stale() {
            return Ok(stale);
        }
        let result = self.fetch().await;
        let read = self.reads.fetch_add(1, Ordering::AcqRel) + 1;
        let mut state = self.state();
        match result {
            Ok(bundle) => {
                *state = CacheState {
                    ok: Some(Cached { bundle: bundle.clone(), fetched: Instant::now(), refused: false }),
                    failed: None,
                    retry_at: None,
                };
                Ok(bundle)
            }
            Err(e) => {
                state.failed = Some((read, e.clone()));
                drop(state);
                let answer = self.after_failure(e.clone());
                if answer.is_ok() {
                    self.state().retry_at = Some(Instant::now() + STALE_RETRY);
                    tracing::warn!(
                        secret_id = %self.secret_id,
                        error = %e,
                        stale_limit_s = self.stale_limit.as_secs(),
                        "the secret cannot be read again; serving the one read last, past its TTL (up to SECRET_STALE_MAX_SECONDS)"
                    );
                }
                answer
            }
        }
    }
}

impl SecretProvider for SecretsManager {
    fn current(&self) -> BoxFuture<'_, Result<Arc<SecretBundle>, SecretsError>> {
        Box::pin(self.read())
    }

    fn invalidate<'a>(&'a self, stale: &'a SecretBundle) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let mut state = self.state();
            if let Some(c) = state.ok.as_mut().filter(|c| c.bundle.generation == stale.generation) {
                c.refused = true;
                state.retry_at = None;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn json_secret_parses_and_debug_hides_values() {
        let b = SecretBundle::from_json("s", 1, r#"{"gitlab_token":"glpat-xyz","argocd_webhook_secret":"a"}"#).unwrap();
        assert_eq!(b.gitlab_token().unwrap().expose_secret(), "glpat-xyz");
        assert_eq!(b.get("argocd_webhook_secret").unwrap().expose_secret(), "a");
        assert!(b.get("generic_webhook_secret").is_none());
        assert!(!format!("{b:?}").contains("glpat-xyz"));
    }

    #[test]
    fn bad_secrets_say_why() {
        assert!(SecretBundle::from_json("s", 1, "glpat-plain").unwrap_err().to_string().contains("not JSON"));
        assert!(SecretBundle::from_json("s", 1, "[1]").unwrap_err().to_string().contains("not an object"));
        assert!(
            SecretBundle::from_json("s", 1, r#"{"gitlab_token":1}"#).unwrap_err().to_string().contains("gitlab_token")
        );
        let b = SecretBundle::from_json("s", 1, "{}").unwrap();
        assert!(b.gitlab_token().unwrap_err().to_string().contains("no key \"gitlab_token\""));
    }

    #[test]
    fn env_vars_map_to_secret_keys() {
        let s = StaticSecrets::from_env_vars(
            [
                ("GITLAB_TOKEN".to_string(), "t".to_string()),
                ("ARGOCD_WEBHOOK_SECRET".to_string(), "a".to_string()),
                ("HEROKU_API_TOKEN".to_string(), "h".to_string()),
                ("RENDER_API_KEY".to_string(), "r".to_string()),
                ("PATH".to_string(), "/bin".to_string()),
            ],
            &["render_api_key"],
        );
        assert!(s.0.gitlab_token().is_ok());
        assert!(s.0.get("argocd_webhook_secret").is_some());
        assert!(s.0.get("render_api_key").is_some(), "a declared key");
        assert!(s.0.get("heroku_api_token").is_none() && s.0.get("path").is_none(), "undeclared keys are not read");
    }
}
