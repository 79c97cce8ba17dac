//! The one axum `Router`: the same routes and behaviour under Lambda, `serve` and `invoke`.
//!
//! - `POST /hooks/{source}?project=&environment=&ref=` — a deploy tool's webhook
//! - `POST /api/v4/projects/{id}/deployments` — GitLab-compatible facade (the `generic` source)
//! - `GET /healthz` — liveness; touches neither Secrets Manager nor GitLab

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{Extensions, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::{Config, MAX_BODY_BYTES};
use crate::error::Error;
use crate::event::{DeploymentEvent, Overrides, SourceOutput};
use crate::gitlab::{CallCtx, GitLabError};
use crate::lifecycle::{Action, Lifecycle};
use crate::secrets::SecretProvider;
use crate::sources;

struct Inner {
    config: Config,
    secrets: Arc<dyn SecretProvider>,
    lifecycle: Lifecycle,
}

/// Everything a request needs, built once per process.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl AppState {
    pub fn new(config: Config, secrets: Arc<dyn SecretProvider>, lifecycle: Lifecycle) -> Self {
        AppState(Arc::new(Inner { config, secrets, lifecycle }))
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/hooks/{source}", post(hook))
        .route("/api/v4/projects/{id}/deployments", post(facade))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// A router for a function whose configuration cannot be read: every call but `/healthz`
/// answers 500 with the reason, so the function keeps running and tells the caller why.
pub fn misconfigured_router(reason: String) -> Router {
    let reason = Arc::new(reason);
    Router::new().route("/healthz", get(healthz)).fallback(move || {
        let reason = reason.clone();
        async move {
            tracing::error!(outcome = "error", http_status = 500u16, error = %reason, "webhook refused: bridge is misconfigured");
            (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({ "error": *reason }))).into_response()
        }
    })
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn no_route(method: Method, uri: Uri) -> Error {
    Error::NoRoute { method: method.to_string(), path: uri.path().to_string() }
}

async fn method_not_allowed(method: Method) -> Error {
    Error::MethodNotAllowed(method.to_string())
}

async fn hook(State(st): State<AppState>, source: Result<Path<String>, PathRejection>, req: Request) -> Response {
    match source {
        Ok(Path(source)) => st.handle(&source, None, req).await,
        Err(e) => Error::BadRequest(format!("the path cannot be read: {e}")).into_response(),
    }
}

async fn facade(State(st): State<AppState>, project: Result<Path<String>, PathRejection>, req: Request) -> Response {
    match project {
        Ok(Path(project)) => st.handle("generic", Some(project), req).await,
        Err(e) => Error::BadRequest(format!("the path cannot be read: {e}")).into_response(),
    }
}

/// What the one log line of a webhook carries.
#[derive(Default)]
struct HookLog {
    project: Option<String>,
    environment: Option<String>,
    sha: Option<String>,
    status: Option<&'static str>,
    delivery_id: Option<String>,
    action: Option<&'static str>,
    deployment_id: Option<u64>,
}

impl AppState {
    async fn handle(&self, source_name: &str, path_project: Option<String>, req: Request) -> Response {
        let started = Instant::now();
        let (parts, body) = req.into_parts();
        let ctx = CallCtx::new(self.deadline(&parts.extensions));
        let mut log = HookLog::default();
        let result = self.process(source_name, path_project, &parts, body, &ctx, &mut log).await;

        let latency_ms = started.elapsed().as_millis() as u64;
        let gitlab_calls = ctx.calls().len();
        // One line per webhook, with the same fields whatever the outcome.
        macro_rules! line {
            ($lvl:ident, $($rest:tt)*) => {
                tracing::$lvl!(
                    source = source_name,
                    project = log.project.as_deref().unwrap_or(""),
                    environment = log.environment.as_deref().unwrap_or(""),
                    sha = log.sha.as_deref().unwrap_or(""),
                    status = log.status.unwrap_or(""),
                    delivery_id = log.delivery_id.as_deref().unwrap_or(""),
                    action = log.action.unwrap_or(""),
                    deployment_id = log.deployment_id,
                    dry_run = self.0.config.dry_run,
                    gitlab_calls,
                    latency_ms,
                    $($rest)*
                )
            };
        }
        let response = match result {
            Ok(body) => {
                line!(info, http_status = 200u16, outcome = "ok", "webhook handled");
                (StatusCode::OK, Json(body)).into_response()
            }
            Err(e) => {
                let status = e.status().as_u16();
                let msg = e.to_string();
                if e.status().is_server_error() {
                    line!(error, http_status = status, outcome = "error", error = %msg, "webhook refused");
                } else {
                    line!(warn, http_status = status, outcome = "error", error = %msg, "webhook refused");
                }
                return e.into_response();
            }
        };
        if self.0.config.dry_run {
            for call in ctx.calls() {
                let body = call.body.as_ref().map(|b| b.to_string()).unwrap_or_default();
                tracing::info!(method = %call.method, path = %call.path, body = %body, "dry run: would call GitLab");
            }
        }
        response
    }

    /// The time this webhook may spend: Lambda's deadline minus a margin, or the local budget.
    fn deadline(&self, ext: &Extensions) -> Instant {
        let cfg = &self.0.config;
        let budget = match ext.get::<lambda_http::Context>() {
            Some(lc) if lc.deadline > 0 => {
                let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
                Duration::from_millis(lc.deadline.saturating_sub(now_ms)).saturating_sub(cfg.deadline_margin)
            }
            _ => cfg.local_deadline,
        };
        Instant::now() + budget
    }

    async fn process(
        &self,
        source_name: &str,
        path_project: Option<String>,
        parts: &axum::http::request::Parts,
        body: Body,
        ctx: &CallCtx,
        log: &mut HookLog,
    ) -> Result<Value, Error> {
        let source = sources::find(source_name)
            .ok_or_else(|| Error::UnknownSource { name: source_name.chars().take(64).collect(), known: sources::names() })?;
        let body = read_body(parts, body).await?;

        let secrets = self.0.secrets.current().await?;
        let Some(secret) = secrets.webhook_secret(source.name()) else {
            tracing::warn!(source = source.name(), "no webhook secret configured for this source; refusing all its calls");
            return Err(Error::Unauthorized(format!(
                "the {} source has no webhook secret configured, so every call is refused",
                source.name()
            )));
        };
        source.verify(&parts.headers, &body, secret)?;

        let mut overrides: Overrides = serde_urlencoded::from_str(parts.uri.query().unwrap_or(""))
            .map_err(|e| Error::BadRequest(format!("the query string cannot be read: {e}")))?;
        if path_project.is_some() {
            overrides.project = path_project;
        }
        log.project = overrides.project.clone();

        let mut output = source.parse(&parts.headers, &body)?;
        if let SourceOutput::Event(draft) = output {
            let lookup = sources::Lookup {
                config: &self.0.config,
                project: overrides.project.as_deref(),
                secrets: &secrets,
                gitlab: self.0.lifecycle.gitlab(),
                http: self.0.lifecycle.gitlab().http(),
                ctx,
            };
            output = source.enrich(&parts.headers, &body, draft, &lookup).await?;
        }
        let draft = match output {
            SourceOutput::Ignored(reason) => {
                log.action = Some(Action::Ignored.as_str());
                return Ok(json!({ "action": Action::Ignored, "reason": reason }));
            }
            SourceOutput::Event(d) => d,
        };
        log.status = draft.status.map(|s| s.as_str());
        log.environment = overrides.environment.clone().or(draft.environment.clone());
        log.sha = draft.sha.clone();
        log.delivery_id = draft.delivery_id.clone();

        let ev = DeploymentEvent::from_draft(source.name(), draft, &overrides, &self.0.config)?;
        log.environment = Some(ev.environment.clone());
        log.sha = Some(ev.sha.clone());

        let mut warnings = self.0.lifecycle.warnings(&ev);
        let outcome = self.0.lifecycle.apply(&ev, ctx).await.map_err(|e| explain_unknown_commit(e, &ev))?;
        log.action = Some(outcome.action.as_str());
        log.deployment_id = Some(outcome.deployment.id);
        warnings.extend(outcome.notes.iter().cloned());

        let d = &outcome.deployment;
        let mut answer = json!({
            "action": outcome.action,
            "deployment": {
                "id": d.id,
                "status": d.status,
                "environment": ev.environment,
                "sha": ev.sha,
                "ref": ev.git_ref,
                "ref_source": ev.ref_source,
                "tag": ev.tag,
            },
            "source": ev.source,
        });
        if let Some(tier) = ev.tier {
            answer["deployment"]["tier"] = json!(tier);
        }
        if !warnings.is_empty() {
            answer["warnings"] = json!(warnings);
        }
        if let Some(url) = &ev.external_url {
            answer["deployment"]["external_url"] = json!(url);
        }
        if self.0.config.dry_run {
            answer["dry_run"] = json!(true);
            answer["gitlab_calls"] = json!(ctx.calls());
        }
        Ok(answer)
    }
}

/// GitLab's "The commit does not exist" names neither the sha nor where it came from; when the
/// source knows the sha may be a GitOps revision, say so and how to map it.
fn explain_unknown_commit(e: GitLabError, ev: &DeploymentEvent) -> GitLabError {
    match e {
        GitLabError::Rejected { status, message } if message.contains("The commit does not exist") => {
            let mut message = format!("{message}: GitLab project {} has no commit {}", ev.project, ev.sha);
            if let Some(hint) = &ev.sha_hint {
                message.push_str(&format!(". {hint}"));
            }
            GitLabError::Rejected { status, message }
        }
        other => other,
    }
}

async fn read_body(parts: &axum::http::request::Parts, body: Body) -> Result<bytes::Bytes, Error> {
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
        return Err(Error::PayloadTooLarge(MAX_BODY_BYTES));
    }
    axum::body::to_bytes(body, MAX_BODY_BYTES).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            || e.to_string().contains("length limit");
        if too_large {
            Error::PayloadTooLarge(MAX_BODY_BYTES)
        } else {
            Error::BadRequest(format!("the request body could not be read: {e}"))
        }
    })
}
