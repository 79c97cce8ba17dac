//! The GitLab REST client: Deployments API calls with the token from the [`SecretProvider`],
//! retries with backoff and jitter bounded by the webhook's deadline, no redirects, and the
//! dry-run mode that records calls instead of sending them.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use secrecy::ExposeSecret;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::model::{Deployment, Environment, Status, Tier};
use crate::secrets::{SecretProvider, SecretsError};

/// Characters left as they are in a project path; everything else (`/` included) is %-encoded.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

#[derive(Debug, Clone, thiserror::Error)]
pub enum GitLabError {
    /// GitLab refused the data (unknown commit or ref, invalid environment, unknown project).
    #[error("GitLab rejected the request ({status}): {message}")]
    Rejected { status: u16, message: String },
    #[error(
        "GitLab refused the token (401 Unauthorized) even after the secret was read again; put a valid token with the `api` scope in `gitlab_token`"
    )]
    Unauthorized,
    #[error(
        "GitLab answered 403 Forbidden ({0}); the token needs the `api` scope and at least the Developer role (and 'Allowed to deploy' on protected environments)"
    )]
    Forbidden(String),
    #[error("GitLab is rate-limiting requests (429) and the wait does not fit in this request's deadline; retry later")]
    RateLimited { retry_after: Option<Duration> },
    #[error("GitLab is unavailable: {0}")]
    Unavailable(String),
    /// A create call failed after it may have reached GitLab; the lifecycle re-checks before retrying.
    #[error("GitLab failed while creating a deployment: {0}")]
    Ambiguous(String),
    #[error("the deadline ran out waiting for GitLab: {0}")]
    Deadline(String),
    #[error(
        "GitLab answered with a redirect to {location:?}; set GITLAB_URL (or the project) to the final address, redirects are not followed so the token cannot leak"
    )]
    Redirect { location: String },
    #[error("GitLab sent a response the bridge cannot read: {0}")]
    InvalidResponse(String),
    #[error(transparent)]
    Secrets(#[from] SecretsError),
}

impl GitLabError {
    /// GitLab refused a status change because the deployment is not what the caller believed:
    /// it no longer exists (404) or is already in that status (`cannot transition via ...`).
    pub fn is_transition_refused(&self) -> bool {
        matches!(self, GitLabError::Rejected { status: 404, .. })
            || matches!(self, GitLabError::Rejected { status: 400, message } if message.contains("cannot transition"))
    }
}

/// A window of an environment's newest deployments.
#[derive(Debug, Clone)]
pub struct Recent {
    /// Newest first.
    pub items: Vec<Deployment>,
    /// Older deployments exist beyond the window.
    pub more: bool,
}

/// The body of `POST /projects/:id/deployments`.
#[derive(Debug, Clone, Serialize)]
pub struct NewDeployment<'a> {
    pub environment: &'a str,
    pub sha: &'a str,
    #[serde(rename = "ref")]
    pub git_ref: &'a str,
    pub tag: bool,
    pub status: Status,
}

/// The host (and port, when not the scheme's) a GitLab URL names: failures say where they
/// happened, never the path or the token.
fn host(url: &Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => "GITLAB_URL".into(),
    }
}

/// One GitLab call as made (or, in dry-run, as it would be made).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Call {
    pub method: String,
    /// Path and query below the GitLab base URL, e.g. `/api/v4/projects/1/deployments`.
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
}

/// What one webhook may spend on GitLab, and the calls it made.
#[derive(Debug)]
pub struct CallCtx {
    deadline: Instant,
    calls: Mutex<Vec<Call>>,
}

impl CallCtx {
    pub fn new(deadline: Instant) -> Self {
        CallCtx { deadline, calls: Mutex::new(Vec::new()) }
    }

    /// Time left before the deadline, `None` once it has passed.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())
    }

    /// A context for part of this one's work that must end by `deadline` (or this one's, if
    /// sooner); its calls are added back with [`Self::absorb`].
    pub fn narrowed(&self, deadline: Instant) -> CallCtx {
        CallCtx::new(self.deadline.min(deadline))
    }

    /// Adds the calls of a narrowed context to this one's.
    pub fn absorb(&self, other: &CallCtx) {
        for call in other.calls() {
            self.record(call);
        }
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    fn record(&self, call: Call) {
        if let Ok(mut c) = self.calls.lock() {
            c.push(call);
        }
    }
}

enum Failure {
    Retry(String),
    RateLimited(Option<Duration>),
}

/// What [`GitLabClient::warm_up`] could not do (`None`: done, or nothing to do).
#[derive(Debug, Default)]
pub struct WarmUp {
    pub secret: Option<String>,
    pub gitlab: Option<String>,
}

/// What the client needs to know of the configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Base URL of the GitLab instance, without `/api/v4`.
    pub base_url: String,
    /// Record every call, send none.
    pub dry_run: bool,
    pub request_timeout: Duration,
    /// Attempts per call, the first included.
    pub max_attempts: u32,
    /// First backoff step; doubles per attempt, with jitter, up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
}

pub struct GitLabClient {
    http: reqwest::Client,
    base: String,
    secrets: Arc<dyn SecretProvider>,
    dry_run: bool,
    /// In a dry run: the in-memory GitLab the run plans against.
    dry: Option<crate::dry_gitlab::DryGitLab>,
    request_timeout: Duration,
    max_attempts: u32,
    retry_base: Duration,
    retry_max: Duration,
}

impl GitLabClient {
    /// `http` must be built with redirects disabled; [`crate::transport::http_client`] does that.
    pub fn new(settings: &Settings, http: reqwest::Client, secrets: Arc<dyn SecretProvider>) -> Self {
        GitLabClient {
            http,
            base: settings.base_url.clone(),
            secrets,
            dry_run: settings.dry_run,
            dry: settings.dry_run.then(Default::default),
            request_timeout: settings.request_timeout,
            max_attempts: settings.max_attempts.max(1),
            retry_base: settings.retry_base,
            retry_max: settings.retry_max,
        }
    }

    /// Whether calls are only recorded (dry run).
    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    /// What a dry run planned so far (see [`crate::dry_gitlab::DryGitLab::summary`]).
    pub fn planned(&self) -> Option<Value> {
        self.dry.as_ref().map(|d| d.summary())
    }

    /// Lambda init's warm-up: reads the secret and, at the same time, opens the connection to
    /// GitLab (TCP and TLS handshake) with an unauthenticated `HEAD /api/v4/version`, whose
    /// answer (401 on a real GitLab) does not matter: the kept-alive connection and the cached
    /// secret are what the first webhook then finds ready. Sends no token; in a dry run it does
    /// nothing. What failed is returned for the log; the first webhook does it again.
    pub async fn warm_up(&self) -> WarmUp {
        if self.dry_run {
            return WarmUp::default();
        }
        let secret = async { self.secrets.current().await.map(|_| ()).map_err(|e| e.to_string()) };
        let connect = async {
            let url = Url::parse(&format!("{}/api/v4/version", self.base)).map_err(|e| format!("GITLAB_URL: {e}"))?;
            match self.http.head(url.clone()).timeout(self.request_timeout).send().await {
                Ok(_) => Ok(()),
                Err(e) => Err(format!("{}: {}", host(&url), e.without_url())),
            }
        };
        let (secret, gitlab) = tokio::join!(secret, connect);
        WarmUp { secret: secret.err(), gitlab: gitlab.err() }
    }

    /// The shared HTTP client (also used for deploy tools' own APIs: it follows no redirects,
    /// and the GitLab token is only ever added per request by this client).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `<GITLAB_URL>/api/v4/projects/<project>/<rest>`, and nothing else: a `.` or `..` segment
    /// (a project or a revision named so) would be resolved away by URL parsing and aim the
    /// token at another endpoint, so it is refused.
    fn url(&self, project: &str, rest: &str) -> Result<Url, GitLabError> {
        let p = utf8_percent_encode(project, PATH_SEGMENT).to_string();
        // The project is one segment (its `/` encoded); `rest` is ours, with encoded values.
        let dot = |seg: &str| seg == "." || seg == "..";
        if dot(&p) || rest.split('/').any(dot) {
            return Err(GitLabError::Rejected {
                status: 400,
                message: format!("{project:?} / {rest:?} cannot be part of a GitLab API path (a `.` or `..` segment)"),
            });
        }
        Url::parse(&format!("{}/api/v4/projects/{p}{rest}", self.base))
            .map_err(|e| GitLabError::InvalidResponse(format!("cannot build a URL from GITLAB_URL: {e}")))
    }

    /// The environment's newest `per_page` deployments (at most 100), newest first, optionally of
    /// one status. `more` says whether older ones exist beyond them.
    pub async fn recent_deployments(
        &self,
        ctx: &CallCtx,
        project: &str,
        environment: &str,
        status: Option<Status>,
        per_page: u32,
    ) -> Result<Recent, GitLabError> {
        let per_page = per_page.clamp(1, 100);
        let mut url = self.url(project, "/deployments")?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("environment", environment);
            if let Some(s) = status {
                q.append_pair("status", s.as_str());
            }
            q.append_pair("order_by", "id").append_pair("sort", "desc").append_pair("per_page", &per_page.to_string());
        }
        let items: Vec<Deployment> = self.execute(ctx, Method::GET, url, None, true, || json!([])).await?;
        Ok(Recent { more: items.len() >= per_page as usize, items })
    }

    /// The numeric id of a project named by its full path; `None` in a dry run.
    pub async fn project_id(&self, ctx: &CallCtx, project: &str) -> Result<Option<u64>, GitLabError> {
        let url = self.url(project, "")?;
        let reply: IdOnly<u64> = self.execute(ctx, Method::GET, url, None, true, || json!({})).await?;
        Ok(reply.id)
    }

    /// The project as GitLab shows it to this token (`permissions` included).
    pub async fn project(&self, ctx: &CallCtx, project: &str) -> Result<Value, GitLabError> {
        let url = self.url(project, "")?;
        self.execute(ctx, Method::GET, url, None, true, || json!({})).await
    }

    /// `GET /api/v4/<path>` outside any project (`personal_access_tokens/self`), for `check`.
    pub async fn get_api(&self, ctx: &CallCtx, path: &str) -> Result<Value, GitLabError> {
        let url = Url::parse(&format!("{}/api/v4/{path}", self.base))
            .map_err(|e| GitLabError::InvalidResponse(format!("cannot build a URL from GITLAB_URL: {e}")))?;
        self.execute(ctx, Method::GET, url, None, true, || json!({})).await
    }

    pub async fn get_deployment(&self, ctx: &CallCtx, project: &str, id: u64) -> Result<Deployment, GitLabError> {
        let url = self.url(project, &format!("/deployments/{id}"))?;
        self.execute(ctx, Method::GET, url, None, true, || json!({"id": id, "status": "", "sha": "", "ref": ""})).await
    }

    /// The full sha of a revision (a short sha, a branch, a tag) in the project, `None` if
    /// GitLab does not know it. In dry-run the answer is the revision padded with zeros.
    pub async fn resolve_commit(&self, ctx: &CallCtx, project: &str, rev: &str) -> Result<Option<String>, GitLabError> {
        let rev_enc = utf8_percent_encode(rev, PATH_SEGMENT);
        let url = self.url(project, &format!("/repository/commits/{rev_enc}"))?;
        let dry = || json!({"id": format!("{rev:0<40}")});
        match self.execute::<IdOnly<String>>(ctx, Method::GET, url, None, true, dry).await {
            Ok(reply) => Ok(reply.id.map(|id| id.to_ascii_lowercase())),
            Err(GitLabError::Rejected { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The environment called exactly `name`, if the project has one.
    pub async fn find_environment(
        &self,
        ctx: &CallCtx,
        project: &str,
        name: &str,
    ) -> Result<Option<Environment>, GitLabError> {
        let mut url = self.url(project, "/environments")?;
        url.query_pairs_mut().append_pair("name", name);
        let all: Vec<Environment> = self.execute(ctx, Method::GET, url, None, true, || json!([])).await?;
        Ok(all.into_iter().find(|e| e.name == name))
    }

    pub async fn create_environment(
        &self,
        ctx: &CallCtx,
        project: &str,
        name: &str,
        tier: Option<Tier>,
        external_url: Option<&str>,
    ) -> Result<Environment, GitLabError> {
        let url = self.url(project, "/environments")?;
        let mut body = json!({ "name": name });
        if let Some(t) = tier {
            body["tier"] = json!(t);
        }
        if let Some(u) = external_url {
            body["external_url"] = json!(u);
        }
        let dry = || json!({"id": 0, "name": name, "tier": tier, "external_url": external_url});
        // Creating an environment twice fails on the unique name: retrying is safe.
        self.execute(ctx, Method::POST, url, Some(body), true, dry).await
    }

    pub async fn update_environment(
        &self,
        ctx: &CallCtx,
        project: &str,
        id: u64,
        tier: Option<Tier>,
        external_url: Option<&str>,
    ) -> Result<Environment, GitLabError> {
        let url = self.url(project, &format!("/environments/{id}"))?;
        let mut body = json!({});
        if let Some(t) = tier {
            body["tier"] = json!(t);
        }
        if let Some(u) = external_url {
            body["external_url"] = json!(u);
        }
        let dry = || json!({"id": id, "name": "", "tier": tier, "external_url": external_url});
        self.execute(ctx, Method::PUT, url, Some(body), true, dry).await
    }

    pub async fn create_deployment(
        &self,
        ctx: &CallCtx,
        project: &str,
        d: &NewDeployment<'_>,
    ) -> Result<Deployment, GitLabError> {
        let url = self.url(project, "/deployments")?;
        let body = serde_json::to_value(d).map_err(|e| GitLabError::InvalidResponse(e.to_string()))?;
        let dry = || json!({"id": 0, "status": d.status, "sha": d.sha, "ref": d.git_ref, "environment": {"name": d.environment}});
        self.execute(ctx, Method::POST, url, Some(body), false, dry).await
    }

    pub async fn update_deployment(
        &self,
        ctx: &CallCtx,
        project: &str,
        id: u64,
        status: Status,
    ) -> Result<Deployment, GitLabError> {
        let url = self.url(project, &format!("/deployments/{id}"))?;
        let dry = || json!({"id": id, "status": status, "sha": "", "ref": ""});
        self.execute(ctx, Method::PUT, url, Some(json!({ "status": status })), true, dry).await
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self.retry_base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let step = exp.min(self.retry_max);
        // "Equal jitter": half fixed, half random, so retries from many callers spread out.
        step / 2 + step.mul_f64(fastrand::f64() / 2.0)
    }

    /// One call, its answer decoded straight from the bytes into `T` (a lean struct: the
    /// fields GitLab sends beyond it are skipped, not built).
    async fn execute<T: DeserializeOwned>(
        &self,
        ctx: &CallCtx,
        method: Method,
        url: Url,
        body: Option<Value>,
        idempotent: bool,
        dry_answer: impl FnOnce() -> Value,
    ) -> Result<T, GitLabError> {
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        let call = Call { method: method.to_string(), path, body: body.clone() };
        if self.dry_run {
            ctx.record(call);
            let planned = self.dry.as_ref().and_then(|d| d.answer(&method, &url, body.as_ref()));
            return decode(planned.unwrap_or_else(dry_answer));
        }

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
                .timeout(remaining.min(self.request_timeout));
            if let Some(b) = &body {
                rb = rb.json(b);
            }

            let failure = match rb.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let headers = resp.headers().clone();
                    let bytes = match resp.bytes().await {
                        Ok(b) => b,
                        // The connection broke mid-answer: an idempotent call is simply repeated.
                        Err(e) if idempotent => {
                            let failure =
                                Failure::Retry(format!("{status} with an unreadable body: {}", e.without_url()));
                            self.wait_before_retry(ctx, attempt, failure).await?;
                            continue;
                        }
                        Err(e) => {
                            return Err(GitLabError::Ambiguous(format!(
                                "reading the answer failed: {}",
                                e.without_url()
                            )));
                        }
                    };
                    if status.is_success() {
                        return serde_json::from_slice(&bytes).map_err(|e| {
                            GitLabError::InvalidResponse(format!(
                                "{status} with a body that is not the JSON expected ({e})"
                            ))
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
                        s if s.is_server_error() => {
                            return Err(GitLabError::Ambiguous(format!(
                                "{} answered {} {message}",
                                host(&url),
                                s.as_u16()
                            )));
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
                Err(e) => return Err(GitLabError::Ambiguous(format!("{}: {}", host(&url), e.without_url()))),
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
            Some(rem) if attempt < self.max_attempts && wait < rem => {
                tracing::warn!(attempt, wait_ms = wait.as_millis() as u64, error = %give_up, "retrying GitLab call");
                tokio::time::sleep(wait).await;
                Ok(())
            }
            _ => Err(give_up),
        }
    }
}

/// An answer of which only the `id` is read (a project's, a commit's).
#[derive(serde::Deserialize)]
struct IdOnly<T> {
    id: Option<T>,
}

fn decode<T: DeserializeOwned>(v: Value) -> Result<T, GitLabError> {
    serde_json::from_value(v).map_err(|e| GitLabError::InvalidResponse(e.to_string()))
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

    fn client() -> GitLabClient {
        let secrets = Arc::new(crate::secrets::StaticSecrets::new(Default::default()));
        let settings = Settings {
            base_url: "https://gitlab.example.com".into(),
            dry_run: false,
            request_timeout: Duration::from_secs(10),
            max_attempts: 5,
            retry_base: Duration::from_millis(250),
            retry_max: Duration::from_secs(5),
        };
        GitLabClient::new(&settings, reqwest::Client::new(), secrets)
    }

    #[test]
    fn project_paths_are_encoded() {
        let c = client();
        assert_eq!(
            c.url("group/sub/app", "/deployments").unwrap().path(),
            "/api/v4/projects/group%2Fsub%2Fapp/deployments"
        );
        assert_eq!(c.url("42", "").unwrap().path(), "/api/v4/projects/42");
        assert_eq!(c.url("group/my.app", "").unwrap().path(), "/api/v4/projects/group%2Fmy.app");
    }

    /// Every call stays under `/api/v4/projects/<one segment>/`: dot segments, which URL parsing
    /// resolves away, are refused wherever they come from.
    #[test]
    fn dot_segments_never_leave_the_project() {
        let c = client();
        for project in [".", ".."] {
            assert!(c.url(project, "/deployments").is_err(), "{project}");
        }
        let rev = utf8_percent_encode("..", PATH_SEGMENT).to_string();
        assert!(c.url("42", &format!("/repository/commits/{rev}")).is_err());
        assert!(c.url("group/..", "").is_ok(), "one segment, %2F-encoded: stays under projects/");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let c = client();
        for attempt in 1..10 {
            let d = c.backoff(attempt);
            assert!(d <= c.retry_max, "{d:?}");
            assert!(d >= (c.retry_base * 2u32.pow(attempt - 1)).min(c.retry_max) / 2, "{attempt} {d:?}");
        }
    }
}
