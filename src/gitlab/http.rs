//! The REST client of a real GitLab: every [`Call`] sent with the token from the
//! [`SecretProvider`] in a `PRIVATE-TOKEN` header, retried with backoff and jitter within the
//! webhook's deadline, redirects never followed, answers decoded straight into lean types.

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{Call, CallCtx, EnvironmentChange, GitLab, GitLabError, NewDeployment, Recent, WarmUp, calls};
use crate::model::{BoxFuture, Deployment, Environment, Status};
use crate::secrets::{SecretProvider, SecretsError};

/// The host (and port, when not the scheme's) a GitLab URL names: failures say where they
/// happened, never the path or the token.
fn host(url: &Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => "GITLAB_URL".into(),
    }
}

enum Failure {
    Retry(String),
    RateLimited(Option<Duration>),
}

/// What the client needs to know of the configuration (`GITLAB_*`).
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Base URL of the GitLab instance, without `/api/v4` (`GITLAB_URL`).
    pub base_url: String,
    /// TCP+TLS connect timeout (`GITLAB_CONNECT_TIMEOUT_MS`; the shared client's, for every host).
    pub connect_timeout: Duration,
    /// Timeout of one request (`GITLAB_REQUEST_TIMEOUT_MS`).
    pub request_timeout: Duration,
    /// Attempts per call, the first included (`GITLAB_MAX_ATTEMPTS`).
    pub max_attempts: u32,
    /// First backoff step; doubles per attempt, with jitter, up to `retry_max` (`GITLAB_RETRY_BASE_MS`).
    pub retry_base: Duration,
    /// Upper bound of one backoff step (`GITLAB_RETRY_MAX_MS`).
    pub retry_max: Duration,
    /// The largest answer read (`GITLAB_MAX_ANSWER_BYTES`); a larger one is an error, unread.
    pub max_answer_bytes: usize,
}

/// The largest GitLab answer read by default: a page of 100 deployments with their jobs is
/// well under 1 MiB.
pub const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

impl Default for Settings {
    fn default() -> Self {
        Settings {
            base_url: "https://gitlab.com".into(),
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(10),
            max_attempts: 5,
            retry_base: Duration::from_millis(250),
            retry_max: Duration::from_secs(5),
            max_answer_bytes: MAX_ANSWER_BYTES,
        }
    }
}

pub struct HttpGitLab {
    http: reqwest::Client,
    settings: Settings,
    secrets: Arc<dyn SecretProvider>,
}

impl HttpGitLab {
    /// `http` must be built with redirects disabled; [`crate::transport::http_client`] does that.
    pub fn new(settings: &Settings, http: reqwest::Client, secrets: Arc<dyn SecretProvider>) -> Self {
        let settings = Settings { max_attempts: settings.max_attempts.max(1), ..settings.clone() };
        HttpGitLab { http, settings, secrets }
    }

    /// The project as GitLab shows it to this token (`permissions` included), for `check`.
    pub async fn project(&self, ctx: &CallCtx, project: &str) -> Result<Value, GitLabError> {
        self.execute(ctx, calls::project(project)?, true).await
    }

    /// `GET /api/v4/<path>` outside any project (`personal_access_tokens/self`), for `check`.
    pub async fn get_api(&self, ctx: &CallCtx, path: &str) -> Result<Value, GitLabError> {
        self.execute(ctx, calls::api(path)?, true).await
    }

    async fn warm(&self) -> WarmUp {
        let secret = async { self.secrets.current().await.map(|_| ()).map_err(|e| e.to_string()) };
        let connect = async {
            let url = Url::parse(&format!("{}/api/v4/version", self.settings.base_url))
                .map_err(|e| format!("GITLAB_URL: {e}"))?;
            match self.http.head(url.clone()).timeout(self.settings.request_timeout).send().await {
                Ok(_) => Ok(()),
                Err(e) => Err(format!("{}: {}", host(&url), e.without_url())),
            }
        };
        let (secret, gitlab) = tokio::join!(secret, connect);
        WarmUp { secret: secret.err(), gitlab: gitlab.err() }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self.settings.retry_base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let step = exp.min(self.settings.retry_max);
        // "Equal jitter": half fixed, half random, so retries from many callers spread out.
        step / 2 + step.mul_f64(fastrand::f64() / 2.0)
    }

    /// Sends one call, its answer decoded straight from the bytes into `T` (a lean struct: the
    /// fields GitLab sends beyond it are skipped, not built). `idempotent`: a failure after the
    /// call may have reached GitLab can be repeated as is (else it is [`GitLabError::Ambiguous`]).
    async fn execute<T: DeserializeOwned>(
        &self,
        ctx: &CallCtx,
        call: Call,
        idempotent: bool,
    ) -> Result<T, GitLabError> {
        let method = Method::from_bytes(call.method.as_bytes())
            .map_err(|e| GitLabError::InvalidResponse(format!("{}: {e}", call.method)))?;
        let url = Url::parse(&format!("{}{}", self.settings.base_url, call.path))
            .map_err(|e| GitLabError::InvalidResponse(format!("cannot build a URL from GITLAB_URL: {e}")))?;
        let body = call.body.clone();
        let mut attempt = 0u32;
        let mut refreshed = false;
        let mut recorded = false;
        loop {
            attempt += 1;
            let secrets = self.secrets.current().await?;
            let token = secrets.gitlab_token()?;
            // Counted once it is really sent (a missing token sends nothing).
            if !std::mem::replace(&mut recorded, true) {
                ctx.record(call.clone());
            }
            let Some(remaining) = ctx.remaining() else {
                return Err(GitLabError::Deadline(format!("no time left for {method} {}", url.path())));
            };
            let mut token_header = HeaderValue::from_str(token.expose_secret()).map_err(|_| SecretsError::Invalid {
                secret: secrets.origin().to_string(),
                reason: "gitlab_token contains characters that cannot be sent in an HTTP header".into(),
            })?;
            token_header.set_sensitive(true);
            let mut rb = self
                .http
                .request(method.clone(), url.clone())
                .header("PRIVATE-TOKEN", token_header)
                .timeout(remaining.min(self.settings.request_timeout));
            if let Some(b) = &body {
                rb = rb.json(b);
            }

            let failure = match rb.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let headers = resp.headers().clone();
                    let bytes = match crate::transport::read_capped(resp, self.settings.max_answer_bytes).await {
                        Ok(b) => b,
                        // Too large to read: repeating the call would fetch the same.
                        Err(crate::transport::ReadError::TooLarge(cap)) => {
                            let message = format!(
                                "{} answered {method} {} ({status}) with more than {cap} bytes (GITLAB_MAX_ANSWER_BYTES); the answer was not read",
                                host(&url),
                                url.path()
                            );
                            // A create GitLab answered may have happened.
                            return Err(match idempotent {
                                true => GitLabError::InvalidResponse(message),
                                false => GitLabError::Ambiguous { message, in_flight: false },
                            });
                        }
                        // The connection broke mid-answer: an idempotent call is simply repeated.
                        Err(crate::transport::ReadError::Body(e)) if idempotent => {
                            let failure =
                                Failure::Retry(format!("{status} with an unreadable body: {}", e.without_url()));
                            self.wait_before_retry(ctx, attempt, failure).await?;
                            continue;
                        }
                        Err(crate::transport::ReadError::Body(e)) => {
                            return Err(GitLabError::Ambiguous {
                                message: format!("reading the answer failed: {}", e.without_url()),
                                in_flight: false,
                            });
                        }
                    };
                    if status.is_success() {
                        return serde_json::from_slice(&bytes).map_err(|e| {
                            let message = format!("{status} with a body that is not the JSON expected ({e})");
                            // A create GitLab answered 2xx happened, whatever its body says.
                            match idempotent {
                                true => GitLabError::InvalidResponse(message),
                                false => GitLabError::Ambiguous { message, in_flight: false },
                            }
                        });
                    }
                    let message = error_message(&bytes);
                    match status {
                        StatusCode::UNAUTHORIZED if !refreshed => {
                            // The token may have been rotated: read the secret again, once.
                            tracing::warn!("GitLab answered 401; reading the secret again");
                            refreshed = true;
                            attempt -= 1;
                            self.secrets.invalidate(&secrets).await;
                            continue;
                        }
                        StatusCode::UNAUTHORIZED => return Err(GitLabError::Unauthorized),
                        StatusCode::FORBIDDEN => return Err(GitLabError::Forbidden(message)),
                        StatusCode::TOO_MANY_REQUESTS => Failure::RateLimited(retry_after(&headers)),
                        StatusCode::CONFLICT => Failure::Retry(format!("409 {message}")),
                        s if s.is_redirection() => {
                            let location = header_str(&headers, "location").unwrap_or_default().to_string();
                            return Err(GitLabError::Redirect { location });
                        }
                        s if s.is_server_error() && idempotent => {
                            Failure::Retry(format!("{} answered {} {message}", host(&url), s.as_u16()))
                        }
                        // A gateway's 502/503/504: GitLab itself may still be carrying it out.
                        s if s.is_server_error() => {
                            let gateway = matches!(s.as_u16(), 502..=504);
                            return Err(GitLabError::Ambiguous {
                                message: format!("{} answered {} {message}", host(&url), s.as_u16()),
                                in_flight: gateway,
                            });
                        }
                        s => return Err(GitLabError::Rejected { status: s.as_u16(), message }),
                    }
                }
                Err(e) if e.is_connect() => {
                    Failure::Retry(format!("cannot connect to {}: {}", host(&url), e.without_url()))
                }
                Err(e) if e.is_timeout() && ctx.remaining().is_none() => {
                    return Err(GitLabError::Deadline(format!("{method} {} timed out", url.path())));
                }
                Err(e) if idempotent => Failure::Retry(format!("{}: {}", host(&url), e.without_url())),
                Err(e) => {
                    return Err(GitLabError::Ambiguous {
                        message: format!("{}: {}", host(&url), e.without_url()),
                        in_flight: true,
                    });
                }
            };

            self.wait_before_retry(ctx, attempt, failure).await?;
        }
    }

    /// Sleeps before the next attempt (`Retry-After`, else backoff), or gives up with the
    /// failure's error when attempts or the deadline run out.
    async fn wait_before_retry(&self, ctx: &CallCtx, attempt: u32, failure: Failure) -> Result<(), GitLabError> {
        let (wait, give_up) = match failure {
            Failure::Retry(msg) => (self.backoff(attempt), GitLabError::Unavailable(msg)),
            Failure::RateLimited(after) => {
                (after.unwrap_or_else(|| self.backoff(attempt)), GitLabError::RateLimited { retry_after: after })
            }
        };
        match ctx.remaining() {
            Some(rem) if attempt < self.settings.max_attempts && wait < rem => {
                tracing::warn!(attempt, wait_ms = wait.as_millis() as u64, error = %give_up, "retrying GitLab call");
                tokio::time::sleep(wait).await;
                Ok(())
            }
            _ => Err(give_up),
        }
    }
}

impl GitLab for HttpGitLab {
    fn recent_deployments<'a>(
        &'a self,
        ctx: &'a CallCtx,
        project: &'a str,
        environment: &'a str,
        status: Option<Status>,
        per_page: u32,
    ) -> BoxFuture<'a, Result<Recent, GitLabError>> {
        Box::pin(async move {
            let per_page = per_page.clamp(1, 100);
            let call = calls::list_deployments(project, environment, status, per_page)?;
            let items: Vec<Deployment> = self.execute(ctx, call, true).await?;
            Ok(Recent { more: items.len() >= per_page as usize, items })
        })
    }

    fn project_id<'a>(&'a self, ctx: &'a CallCtx, project: &'a str) -> BoxFuture<'a, Result<Option<u64>, GitLabError>> {
        Box::pin(async move {
            let reply: IdOnly<u64> = self.execute(ctx, calls::project(project)?, true).await?;
            Ok(reply.id)
        })
    }

    fn get_deployment<'a>(
        &'a self,
        ctx: &'a CallCtx,
        project: &'a str,
        id: u64,
    ) -> BoxFuture<'a, Result<Deployment, GitLabError>> {
        Box::pin(async move { self.execute(ctx, calls::get_deployment(project, id)?, true).await })
    }

    fn resolve_commit<'a>(
        &'a self,
        ctx: &'a CallCtx,
        project: &'a str,
        rev: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, GitLabError>> {
        Box::pin(async move {
            match self.execute::<IdOnly<String>>(ctx, calls::commit(project, rev)?, true).await {
                Ok(reply) => Ok(reply.id.map(|id| id.to_ascii_lowercase())),
                Err(GitLabError::Rejected { status: 404, .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    fn find_environment<'a>(
        &'a self,
        ctx: &'a CallCtx,
        project: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Environment>, GitLabError>> {
        Box::pin(async move {
            let all: Vec<Environment> = self.execute(ctx, calls::find_environment(project, name)?, true).await?;
            Ok(all.into_iter().find(|e| e.name == name))
        })
    }

    fn create_environment<'a>(
        &'a self,
        ctx: &'a CallCtx,
        project: &'a str,
        name: &'a str,
        settings: EnvironmentChange<'a>,
    ) -> BoxFuture<'a, Result<Environment, GitLabError>> {
        // Creating an environment twice fails on the unique name: retrying is safe.
        Box::pin(async move { self.execute(ctx, calls::create_environment(project, name, settings)?, true).await })
    }

    fn update_environment<'a>(
        &'a self,
        ctx: &'a CallCtx,
        project: &'a str,
        id: u64,
        settings: EnvironmentChange<'a>,
    ) -> BoxFuture<'a, Result<Environment, GitLabError>> {
        Box::pin(async move { self.execute(ctx, calls::update_environment(project, id, settings)?, true).await })
    }

    fn create_deployment<'a>(
        &'a self,
        ctx: &'a CallCtx,
        project: &'a str,
        deployment: &'a NewDeployment,
    ) -> BoxFuture<'a, Result<Deployment, GitLabError>> {
        // Not idempotent: a create whose answer was lost may have happened (the lifecycle looks again).
        Box::pin(async move { self.execute(ctx, calls::create_deployment(project, deployment)?, false).await })
    }

    fn update_deployment<'a>(
        &'a self,
        ctx: &'a CallCtx,
        project: &'a str,
        id: u64,
        status: Status,
    ) -> BoxFuture<'a, Result<Deployment, GitLabError>> {
        Box::pin(async move { self.execute(ctx, calls::update_deployment(project, id, status)?, true).await })
    }

    /// Lambda init's warm-up: reads the secret and, at the same time, opens the connection to
    /// GitLab (TCP and TLS handshake) with an unauthenticated `HEAD /api/v4/version`, whose
    /// answer (401 on a real GitLab) does not matter: the kept-alive connection and the cached
    /// secret are what the first webhook then finds ready. Sends no token.
    fn warm_up(&self) -> BoxFuture<'_, WarmUp> {
        Box::pin(self.warm())
    }

    fn dry_run(&self) -> bool {
        false
    }

    fn planned(&self) -> Option<Value> {
        None
    }
}

/// An answer of which only the `id` is read (a project's, a commit's).
#[derive(serde::Deserialize)]
struct IdOnly<T> {
    id: Option<T>,
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// `Retry-After` (seconds or HTTP date), else `RateLimit-Reset` (Unix time).
pub fn retry_after(h: &HeaderMap) -> Option<Duration> {
    if let Some(v) = header_str(h, "retry-after") {
        if let Ok(secs) = v.parse::<u64>() {
            return Some(Duration::from_secs(secs));
        }
        if let Ok(at) = httpdate::parse_http_date(v) {
            return Some(at.duration_since(SystemTime::now()).unwrap_or_default());
        }
    }
    let reset: u64 = header_str(h, "ratelimit-reset")?.parse().ok()?;
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(reset.saturating_sub(now)))
}

/// GitLab's error text from any of its body shapes: `{"message": "..."}`,
/// `{"message": {"field": ["..."]}}`, `{"error": "..."}`, or plain text.
pub fn error_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return if text.is_empty() { "(empty body)".into() } else { text.chars().take(300).collect() };
    };
    let flatten = |m: &Value| -> String {
        match m {
            Value::String(s) => s.clone(),
            Value::Object(map) => map
                .iter()
                .map(|(field, msgs)| {
                    let msgs = match msgs {
                        Value::Array(a) => a
                            .iter()
                            .map(|x| x.as_str().map(str::to_string).unwrap_or_else(|| x.to_string()))
                            .collect::<Vec<_>>()
                            .join(", "),
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    format!("{field}: {msgs}")
                })
                .collect::<Vec<_>>()
                .join("; "),
            other => other.to_string(),
        }
    };
    if let Some(m) = v.get("message") {
        return flatten(m);
    }
    if let Some(e) = v.get("error") {
        let mut s = flatten(e);
        if let Some(d) = v.get("error_description").and_then(Value::as_str) {
            s = format!("{s}: {d}");
        }
        return s;
    }
    text.chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_error_shapes_are_read() {
        assert_eq!(error_message(br#"{"message":"404 Project Not Found"}"#), "404 Project Not Found");
        assert_eq!(
            error_message(br#"{"message":{"sha":["The commit does not exist"]}}"#),
            "sha: The commit does not exist"
        );
        assert_eq!(
            error_message(br#"{"error":"status does not have a valid value"}"#),
            "status does not have a valid value"
        );
        assert_eq!(error_message(b"Retry later\n"), "Retry later");
        assert_eq!(error_message(b""), "(empty body)");
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
        h.insert("retry-after", HeaderValue::from_str(&later).unwrap());
        let d = retry_after(&h).unwrap();
        assert!(d <= Duration::from_secs(30) && d >= Duration::from_secs(28), "{d:?}");
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }

    fn client() -> HttpGitLab {
        let secrets = Arc::new(crate::secrets::StaticSecrets::new(Default::default()));
        HttpGitLab::new(&Settings::default(), reqwest::Client::new(), secrets)
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let c = client();
        let (base, max) = (c.settings.retry_base, c.settings.retry_max);
        for attempt in 1..10 {
            let d = c.backoff(attempt);
            assert!(d <= max, "{d:?}");
            assert!(d >= (base * 2u32.pow(attempt - 1)).min(max) / 2, "{attempt} {d:?}");
        }
    }
}
