//! What happens to one webhook, whatever carried it (function URL, `serve`, `invoke`):
//! verify → parse → enrich → normalize → apply → answer, and the one log line that says so.

use axum::http::HeaderMap;
use bytes::Bytes;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Instant;

use crate::config::Config;
use crate::error::Error;
use crate::event::{DeploymentEvent, Overrides, SourceOutput, validate_project};
use crate::gitlab::{CallCtx, GitLabError};
use crate::lifecycle::{Action, Lifecycle};
use crate::model::{Deployment, format_time};
use crate::replay::Replays;
use crate::secrets::{SecretProvider, SecretsError};
use crate::sources::{self, generic};

/// One webhook as the transport received it.
pub struct Webhook<'a> {
    /// The `{source}` of `/hooks/{source}`.
    pub source: &'a str,
    /// The project named by the path (the GitLab-compatible facade); it wins over the query's.
    pub path_project: Option<String>,
    /// The deployment a GitLab-compatible `PUT .../deployments/:id` names: the webhook asks for
    /// that deployment's status to change, not for an event's lifecycle.
    pub update: Option<u64>,
    pub headers: &'a HeaderMap,
    pub query: Option<&'a str>,
    /// The body as the transport read it; a failure to read it is answered and logged like any other.
    pub body: Result<Bytes, Error>,
    /// When the transport received the request (the log line's `latency_ms` counts from here).
    pub received: Instant,
}

/// What a handled webhook answers: the bridge's JSON answer, and the GitLab deployment it
/// created, updated or found (the GitLab-compatible routes answer with that).
#[derive(Debug)]
pub struct Handled {
    pub answer: Value,
    pub deployment: Option<Deployment>,
}

/// Everything a webhook needs, built once per process.
pub struct Pipeline {
    config: Config,
    secrets: Arc<dyn SecretProvider>,
    lifecycle: Lifecycle,
    replays: Replays,
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

impl Pipeline {
    pub fn new(config: Config, secrets: Arc<dyn SecretProvider>, lifecycle: Lifecycle) -> Self {
        let replays = Replays::new(&config);
        Pipeline { config, secrets, lifecycle, replays }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// What can be refused before the body is read: an unknown source, and a request without
    /// the source's credential header — so an unauthenticated caller cannot make the bridge
    /// buffer a body. The refusal is answered and logged as the webhook's (through its body).
    pub fn precheck(&self, source: &str, headers: &HeaderMap) -> Result<(), Error> {
        let source = sources::find(source).ok_or_else(|| Error::UnknownSource { name: printable(source), known: sources::names() })?;
        source.credentials(headers)
    }

    /// Handles one webhook within `deadline` and logs one line for it; returns the answer (and
    /// the GitLab deployment, for the routes that answer as GitLab does).
    pub async fn handle(&self, hook: Webhook<'_>, deadline: Instant) -> Result<Handled, Error> {
        let started = hook.received;
        // The path is the caller's: an unknown name is logged escaped and shortened, so `%0A`
        // in it cannot forge a line in a text log.
        let source_name: std::borrow::Cow<'static, str> = match sources::find(hook.source) {
            Some(s) => s.name().into(),
            None => printable(hook.source).into(),
        };
        let source_name = source_name.as_ref();
        let ctx = CallCtx::new(deadline);
        let mut log = HookLog::default();
        let result = self.process(hook, &ctx, &mut log).await;

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
                    dry_run = self.config.dry_run,
                    gitlab_calls,
                    latency_ms,
                    $($rest)*
                )
            };
        }
        match &result {
            Ok(_) => line!(info, http_status = 200u16, outcome = "ok", "webhook handled"),
            Err(e) => {
                let status = e.status().as_u16();
                if e.status().is_server_error() {
                    line!(error, http_status = status, outcome = "error", error = %e, "webhook refused");
                } else {
                    line!(warn, http_status = status, outcome = "error", error = %e, "webhook refused");
                }
            }
        }
        if self.config.dry_run && result.is_ok() {
            for call in ctx.calls() {
                let body = call.body.as_ref().map(|b| b.to_string()).unwrap_or_default();
                tracing::info!(method = %call.method, path = %call.path, body = %body, "dry run: would call GitLab");
            }
        }
        result
    }

    async fn process(&self, hook: Webhook<'_>, ctx: &CallCtx, log: &mut HookLog) -> Result<Handled, Error> {
        let source = sources::find(hook.source)
            .ok_or_else(|| Error::UnknownSource { name: printable(hook.source), known: sources::names() })?;
        let body = hook.body?;
        let headers = hook.headers;

        // The read is bounded by this request's deadline: a slow Secrets Manager, or requests
        // queued behind its read, answer in time instead of minutes later.
        let secrets = match ctx.remaining() {
            Some(left) => tokio::time::timeout(left, self.secrets.current()).await.ok(),
            None => None,
        }
        .unwrap_or_else(|| Err(SecretsError::Unavailable("the secret could not be read before this request's deadline".into())))?;
        match secrets.webhook_secret(source.name()) {
            Some(secret) => source.verify(headers, &body, secret)?,
            // Refused whatever the call carries, in the words the source uses for a wrong
            // credential (it is checked against a secret nobody holds), so the answer does not
            // tell which sources are configured. The log says why.
            None => {
                tracing::warn!(source = source.name(), "no webhook secret configured for this source; refusing all its calls");
                let refusal = source.verify(headers, &body, &unknowable_secret());
                return Err(refusal.err().unwrap_or_else(|| Error::Unauthorized("the credentials do not match".into())));
            }
        }

        // A dry run plans what a live run would do with the delivery, so it only says when a live
        // run would refuse it as a replay.
        let (admitted, replay_note) = match self.replays.admit(source, headers, &body) {
            Ok(admitted) => (Some(admitted), None),
            Err(reason) if self.config.dry_run => (None, Some(format!("a live run would change nothing: {reason}"))),
            Err(reason) => {
                log.action = Some(Action::Ignored.as_str());
                return Ok(Handled { answer: json!({ "action": Action::Ignored, "reason": reason }), deployment: None });
            }
        };
        let mut result = self.process_verified(source, hook.query, hook.path_project, hook.update, headers, &body, &secrets, ctx, log).await;
        if let Ok(handled) = &mut result {
            if let Some(admitted) = admitted.filter(|_| !self.config.dry_run) {
                self.replays.handled(admitted);
            }
            if let Some(note) = replay_note {
                handled.answer["replay"] = json!(note);
            }
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn process_verified(
        &self,
        source: &'static dyn sources::Source,
        query: Option<&str>,
        path_project: Option<String>,
        update: Option<u64>,
        headers: &HeaderMap,
        body: &[u8],
        secrets: &crate::secrets::SecretBundle,
        ctx: &CallCtx,
        log: &mut HookLog,
    ) -> Result<Handled, Error> {
        let mut overrides: Overrides = serde_urlencoded::from_str(query.unwrap_or(""))
            .map_err(|e| Error::BadRequest(format!("the query string cannot be read: {e}")))?;
        if path_project.is_some() {
            overrides.project = path_project;
        }
        log.project = overrides.project.clone();

        if let Some(id) = update {
            return self.set_status(id, headers, body, &overrides, ctx, log).await;
        }

        let mut output = source.parse(headers, body)?;
        if let SourceOutput::Event(draft) = output {
            let lookup = sources::Lookup {
                config: &self.config,
                project: overrides.project.as_deref(),
                secrets,
                gitlab: self.lifecycle.gitlab(),
                http: self.lifecycle.gitlab().http(),
                ctx,
            };
            output = source.enrich(headers, body, draft, &lookup).await?;
        }
        let draft = match output {
            SourceOutput::Ignored(reason) => {
                log.action = Some(Action::Ignored.as_str());
                return Ok(Handled { answer: json!({ "action": Action::Ignored, "reason": reason }), deployment: None });
            }
            SourceOutput::Event(d) => d,
        };
        log.status = draft.status.map(|s| s.as_str());
        log.environment = overrides.environment.clone().or(draft.environment.clone());
        log.sha = draft.sha.clone();
        log.delivery_id = draft.delivery_id.clone();

        let ev = DeploymentEvent::from_draft(source.name(), draft, &overrides, &self.config)?;
        log.environment = Some(ev.environment.clone());
        log.sha = Some(ev.sha.clone());

        let mut warnings = self.lifecycle.warnings(&ev);
        let outcome = self.lifecycle.apply(&ev, ctx).await.map_err(|e| explain_unknown_commit(e, &ev))?;
        log.action = Some(outcome.action.as_str());
        log.deployment_id = outcome.deployment.as_ref().map(|d| d.id);
        warnings.extend(outcome.notes.iter().cloned());

        let mut answer = json!({
            "action": outcome.action,
            "deployment": {
                "environment": ev.environment,
                "sha": ev.sha,
                "ref": ev.git_ref,
                "ref_source": ev.ref_source,
                "tag": ev.tag,
            },
            "source": ev.source,
        });
        if let Some(d) = &outcome.deployment {
            answer["deployment"]["id"] = json!(d.id);
            answer["deployment"]["status"] = json!(d.status);
        }
        if let Some(tier) = ev.tier {
            answer["deployment"]["tier"] = json!(tier);
        }
        if let Some(url) = &ev.external_url {
            answer["deployment"]["external_url"] = json!(url);
        }
        if let Some(t) = ev.occurred_at {
            answer["deployment"]["occurred_at"] = json!(format_time(t));
        }
        if let Some(reason) = &outcome.reason {
            answer["reason"] = json!(reason);
        }
        if !warnings.is_empty() {
            answer["warnings"] = json!(warnings);
        }
        self.add_dry_run(&mut answer, ctx);
        Ok(Handled { answer, deployment: outcome.deployment })
    }

    /// The GitLab-compatible status change of one deployment (`PUT .../deployments/:id`).
    async fn set_status(
        &self,
        id: u64,
        headers: &HeaderMap,
        body: &[u8],
        overrides: &Overrides,
        ctx: &CallCtx,
        log: &mut HookLog,
    ) -> Result<Handled, Error> {
        let status = generic::status_update(headers, body)?;
        log.status = Some(status.as_str());
        log.deployment_id = Some(id);
        let project = overrides.project.as_deref().map(str::trim).filter(|p| !p.is_empty());
        let project = project.ok_or_else(|| Error::BadRequest("the path names no project".into()))?;
        validate_project(project)?;
        let outcome = self.lifecycle.set_status(project, id, status, ctx).await?;
        log.action = Some(outcome.action.as_str());
        let mut answer = json!({ "action": outcome.action, "source": "generic" });
        if let Some(d) = &outcome.deployment {
            log.environment = d.environment.as_ref().map(|e| e.name.clone());
            log.sha = Some(d.sha.clone()).filter(|s| !s.is_empty());
            answer["deployment"] = json!({
                "id": d.id,
                "environment": d.environment.as_ref().map(|e| e.name.as_str()),
                "sha": d.sha,
                "ref": d.git_ref,
                "status": d.status,
            });
        }
        self.add_dry_run(&mut answer, ctx);
        Ok(Handled { answer, deployment: outcome.deployment })
    }

    fn add_dry_run(&self, answer: &mut Value, ctx: &CallCtx) {
        if self.config.dry_run {
            answer["dry_run"] = json!(true);
            answer["gitlab_calls"] = json!(ctx.calls());
        }
    }
}

/// A caller's text as it may appear in a log line or an answer: at most 64 characters, control
/// characters (and quotes, backslashes) escaped.
fn printable(text: &str) -> String {
    text.chars().take(64).flat_map(char::escape_debug).collect()
}

/// A secret to check an unconfigured source's credentials against (the call is refused even
/// if they match it).
fn unknowable_secret() -> secrecy::SecretString {
    secrecy::SecretString::from((0..48).map(|_| fastrand::alphanumeric()).collect::<String>())
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
