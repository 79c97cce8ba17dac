//! What happens to one webhook, whatever carried it (function URL, `serve`, `invoke`):
//! verify → parse → enrich → normalize → apply → answer, and the one log line that says so.

use axum::http::HeaderMap;
use bytes::Bytes;
use serde_json::{Value, json};
use sha2::Digest;
use std::sync::Arc;
use std::time::Instant;

use crate::config::{Config, SpoolMode};
use crate::error::Error;
use crate::event::{DeploymentEvent, Overrides, SourceOutput, validate_project};
use crate::gitlab::{CallCtx, GitLabError};
use crate::lifecycle::{Action, Lifecycle};
use crate::model::{Deployment, format_time};
use crate::replay::Replays;
use crate::routes::{self, Route};
use crate::secrets::{SecretProvider, SecretsError};
use crate::sources::{self, generic};
use crate::spool::{Spool, Spooled};

/// One webhook as the transport received it.
pub struct Webhook<'a> {
    /// The `{source}` of `/hooks/{source}`.
    pub source: &'a str,
    /// The route the URL names (`/hooks/{source}/{route}`, `/routes/{route}/api/v4/...`); `None`
    /// for an unbound hook.
    pub route: Option<&'a str>,
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
    /// The event is in the spool, not yet in GitLab (answered 202).
    pub spooled: bool,
}

impl Handled {
    fn new(answer: Value, deployment: Option<Deployment>) -> Handled {
        Handled { answer, deployment, spooled: false }
    }
}

/// What became of one attempt to deliver a spooled event.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// GitLab has it (or already had it): the spool may forget it.
    Delivered { action: &'static str, deployment_id: Option<u64> },
    /// GitLab cannot take it now: try again later.
    Retry(String),
    /// GitLab refused it for good: a dead letter, with this reason.
    Dead(String),
}

/// Everything a webhook needs, built once per process.
pub struct Pipeline {
    config: Config,
    secrets: Arc<dyn SecretProvider>,
    lifecycle: Lifecycle,
    replays: Replays,
    spool: Option<Spool>,
}

/// What the one log line of a webhook carries.
#[derive(Default)]
struct HookLog {
    route: Option<String>,
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
        Pipeline { config, secrets, lifecycle, replays, spool: None }
    }

    /// Where events wait when GitLab cannot take them now (none: a 5xx, the tool redelivers).
    pub fn with_spool(mut self, spool: Option<Spool>) -> Self {
        self.spool = spool;
        self
    }

    /// Reads the secret and opens the connection to GitLab ahead of the first webhook
    /// ([`crate::gitlab::GitLabClient::warm_up`]).
    pub async fn warm_up(&self) -> crate::gitlab::WarmUp {
        self.lifecycle.gitlab().warm_up().await
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// In a dry run, what the run planned so far (per environment and sha, the statuses).
    pub fn planned(&self) -> Option<Value> {
        self.lifecycle.gitlab().planned()
    }

    /// What can be refused before the body is read: an unknown source, and a request without
    /// the source's credential header — so an unauthenticated caller cannot make the bridge
    /// buffer a body. The refusal is answered and logged as the webhook's (through its body).
    pub fn precheck(&self, source: &str, route: Option<&str>, headers: &HeaderMap) -> Result<(), Error> {
        let source = sources::find(source)
            .ok_or_else(|| Error::UnknownSource { name: printable(source), known: sources::names() })?;
        self.admit_unbound(source, route)?;
        source.credentials(headers)
    }

    /// A call without a route is taken only with `UNBOUND_HOOKS=allow`, or in a dry run (which
    /// writes nothing and says a live run would refuse it).
    fn admit_unbound(&self, source: &dyn sources::Source, route: Option<&str>) -> Result<(), Error> {
        match route {
            None if !self.config.unbound_hooks && !self.config.dry_run => Err(unbound_refused(source.name())),
            _ => Ok(()),
        }
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
        let mut log = HookLog { route: hook.route.map(printable), ..HookLog::default() };
        let result = self.process(hook, &ctx, &mut log).await;

        let latency_ms = started.elapsed().as_millis() as u64;
        let gitlab_calls = ctx.calls().len();
        // One line per webhook, with the same fields whatever the outcome.
        macro_rules! line {
            ($lvl:ident, $($rest:tt)*) => {
                tracing::$lvl!(
                    source = source_name,
                    route = log.route.as_deref().unwrap_or(""),
                    project = log.project.as_deref().unwrap_or(""),
                    environment = log.environment.as_deref().unwrap_or(""),
                    sha = log.sha.as_deref().unwrap_or(""),
                    status = log.status.unwrap_or(""),
                    delivery_id = log.delivery_id.as_deref().unwrap_or(""),
                    // A dry run changes nothing: its line says what a live run would do.
                    action = match (self.config.dry_run, log.action) {
                        (true, Some("created")) => "would create",
                        (true, Some("updated")) => "would update",
                        (_, action) => action.unwrap_or(""),
                    },
                    deployment_id = log.deployment_id,
                    dry_run = self.config.dry_run,
                    gitlab_calls,
                    latency_ms,
                    $($rest)*
                )
            };
        }
        match &result {
            Ok(_) if self.config.dry_run => {
                line!(info, http_status = 200u16, outcome = "ok", "webhook planned (dry run)")
            }
            Ok(h) => line!(info, http_status = if h.spooled { 202u16 } else { 200 }, outcome = "ok", "webhook handled"),
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
        .unwrap_or_else(|| {
            Err(SecretsError::Unavailable("the secret could not be read before this request's deadline".into()))
        })?;
        // A route's calls verify with the route's own secret, an unbound hook's with the source's.
        let route = match hook.route {
            Some(name) => match self.config.routes.get(name).filter(|r| r.source == source.name()) {
                Some(route) => Some((name, route)),
                None => {
                    tracing::warn!(source = source.name(), route = %printable(name), "no such route for this source in ROUTES; refusing the call");
                    return Err(refuse(source, headers, &body));
                }
            },
            None => {
                self.admit_unbound(source, None)?;
                None
            }
        };
        let (secret, missing) = match route {
            Some((name, _)) => (secrets.get(&routes::secret_key(name)), routes::secret_key(name)),
            None => (secrets.webhook_secret(source.name()), crate::secrets::webhook_secret_key(source.name())),
        };
        match secret {
            Some(secret) => source.verify(headers, &body, secret)?,
            // Refused whatever the call carries, in the words the source uses for a wrong
            // credential (it is checked against a secret nobody holds), so the answer does not
            // tell which sources or routes are configured. The log says why.
            None => {
                tracing::warn!(source = source.name(), key = %missing, "the secret has no such key; refusing every call that needs it");
                return Err(refuse(source, headers, &body));
            }
        }

        // A dry run plans what a live run would do with the delivery, so it only says when a live
        // run would refuse it as a replay.
        let (admitted, replay_note) = match self.replays.admit(source, headers, &body) {
            Ok(admitted) => (Some(admitted), None),
            Err(reason) if self.config.dry_run => (None, Some(format!("a live run would change nothing: {reason}"))),
            Err(reason) => {
                log.action = Some(Action::Ignored.as_str());
                return Ok(Handled::new(json!({ "action": Action::Ignored, "reason": reason }), None));
            }
        };
        let target = Target {
            route,
            query: hook.query,
            path_project: hook.path_project,
            update: hook.update,
            received: hook.received,
        };
        let mut result = self.process_verified(source, target, headers, &body, &secrets, ctx, log).await;
        if let Ok(handled) = &mut result {
            if hook.route.is_none() && !self.config.unbound_hooks {
                handled.answer["unbound"] =
                    json!(format!("a live run would refuse this call: {}", unbound_refused(source.name())));
            }
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
        target: Target<'_>,
        headers: &HeaderMap,
        body: &[u8],
        secrets: &crate::secrets::SecretBundle,
        ctx: &CallCtx,
        log: &mut HookLog,
    ) -> Result<Handled, Error> {
        let Target { route, query, path_project, update, received } = target;
        // The GitLab-compatible facade answers with GitLab's deployment (its id is the one a
        // later PUT names): only the tools' own hooks can be answered from the spool.
        let spool = self
            .spool
            .as_ref()
            .filter(|_| path_project.is_none() && !self.config.dry_run && self.config.spool.mode != SpoolMode::Off);
        let mut overrides: Overrides = serde_urlencoded::from_str(query.unwrap_or(""))
            .map_err(|e| Error::BadRequest(format!("the query string cannot be read: {e}")))?;
        if path_project.is_some() {
            overrides.project = path_project;
        }
        log.project = overrides.project.clone();
        if let Some((name, route)) = route {
            bind_project(name, route, &mut overrides)?;
            log.project = overrides.project.clone();
        }

        if let Some(id) = update {
            return self.set_status(id, headers, body, &overrides, route, ctx, log).await;
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
                return Ok(Handled::new(json!({ "action": Action::Ignored, "reason": reason }), None));
            }
            SourceOutput::Event(d) => d,
        };
        if let Some((_, route)) = route
            && overrides.environment.is_none()
            && draft.environment.as_deref().is_none_or(|e| e.trim().is_empty())
        {
            overrides.environment = route.default_environment().map(str::to_string);
        }
        log.status = draft.status.map(|s| s.as_str());
        log.environment = overrides.environment.clone().or(draft.environment.clone());
        log.sha = draft.sha.clone();
        log.delivery_id = draft.delivery_id.clone();

        let mut ev = DeploymentEvent::from_draft(source.name(), draft, &overrides, &self.config)?;
        log.environment = Some(ev.environment.clone());
        log.sha = Some(ev.sha.clone());
        let mut warnings = Vec::new();
        if let Some((name, route)) = route {
            if !route.allows_environment(&ev.environment) {
                return Err(Error::Forbidden(format!(
                    "route {name:?} may not write in environment {:?}",
                    ev.environment
                )));
            }
            if !route.set_environment && (ev.tier.is_some() || ev.external_url.is_some()) {
                ev.tier = None;
                ev.external_url = None;
                warnings.push(format!("route {name:?} does not change environments (set_environment: false): tier and external URL left as they are"));
            }
        }

        warnings.extend(self.lifecycle.warnings(&ev));
        let outcome = match spool {
            None => {
                self.lifecycle.expand_sha(&mut ev, ctx).await?;
                self.lifecycle.apply(&ev, ctx).await.map_err(|e| explain_unknown_commit(e, &ev))?
            }
            Some(spool) => {
                let delivery =
                    source.delivery_key(headers, body).unwrap_or_else(|| hex::encode(sha2::Sha256::digest(body)));
                let item =
                    Spooled::new(&ev, route.map(|r| r.0), &delivery, time::OffsetDateTime::now_utc(), String::new());
                if let Some(reason) = self.must_queue(spool, &item.group).await {
                    return self.spool_event(spool, Spooled { reason, ..item }, &ev, warnings, None, log).await;
                }
                // GitLab gets SPOOL_AFTER_SECONDS from receipt; then the spool takes the event.
                let attempt = ctx.narrowed(received + self.config.spool.after);
                let result = self.expand_and_apply(&mut ev, &attempt).await;
                ctx.absorb(&attempt);
                match result {
                    Ok(outcome) => outcome,
                    Err(e) if transient(&e) => {
                        let reason = e.to_string();
                        let item = Spooled { reason, sha: ev.sha.clone(), short_sha: ev.short_sha, ..item };
                        return self.spool_event(spool, item, &ev, warnings, Some(e), log).await;
                    }
                    Err(e) => return Err(explain_unknown_commit(e, &ev).into()),
                }
            }
        };
        log.sha = Some(ev.sha.clone());
        log.action = Some(outcome.action.as_str());
        log.deployment_id = outcome.deployment.as_ref().map(|d| d.id);
        warnings.extend(outcome.notes.iter().cloned());

        let mut answer = json!({ "action": outcome.action, "deployment": deployment_answer(&ev), "source": ev.source });
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
        Ok(Handled::new(answer, outcome.deployment))
    }

    /// The GitLab-compatible status change of one deployment (`PUT .../deployments/:id`).
    #[allow(clippy::too_many_arguments)]
    async fn set_status(
        &self,
        id: u64,
        headers: &HeaderMap,
        body: &[u8],
        overrides: &Overrides,
        route: Option<(&str, &Route)>,
        ctx: &CallCtx,
        log: &mut HookLog,
    ) -> Result<Handled, Error> {
        let status = generic::status_update(headers, body)?;
        log.status = Some(status.as_str());
        log.deployment_id = Some(id);
        let project = overrides.project.as_deref().map(str::trim).filter(|p| !p.is_empty());
        let project = project.ok_or_else(|| Error::BadRequest("the path names no project".into()))?;
        validate_project(project)?;
        if let Some((name, route)) = route {
            // The deployment must be in an environment the route may write in (read first: a
            // GitLab read changes nothing).
            let found = self.lifecycle.find_deployment(project, id, ctx).await?;
            let environment = found.environment.as_ref().map(|e| e.name.as_str()).unwrap_or("");
            if !route.allows_environment(environment) {
                return Err(Error::Forbidden(format!("route {name:?} may not write in environment {environment:?}")));
            }
        }
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
        Ok(Handled::new(answer, outcome.deployment))
    }

    /// Why a new event must go to the spool without trying GitLab first, if it must: every
    /// event does under `SPOOL_MODE=always`; otherwise one whose group has events waiting, so
    /// that an environment's events reach GitLab in order.
    async fn must_queue(&self, spool: &Spool, group: &str) -> Option<String> {
        if self.config.spool.mode == SpoolMode::Always {
            return Some("SPOOL_MODE=always: every event goes through the spool".into());
        }
        match spool.pending(group).await {
            Ok(true) => {
                Some("earlier events of this environment are waiting in the spool; this one queues behind them".into())
            }
            Ok(false) => None,
            Err(e) => {
                tracing::warn!(error = %e, "the spool cannot say whether events are waiting; delivering this one now");
                None
            }
        }
    }

    /// Puts the event in the spool and answers 202. If the spool cannot take it either, the
    /// answer is the error that sent it there (or the spool's), a 5xx the tool may redeliver.
    #[allow(clippy::too_many_arguments)]
    async fn spool_event(
        &self,
        spool: &Spool,
        item: Spooled,
        ev: &DeploymentEvent,
        warnings: Vec<String>,
        cause: Option<GitLabError>,
        log: &mut HookLog,
    ) -> Result<Handled, Error> {
        let receipt = match spool.enqueue(&item).await {
            Ok(receipt) => receipt,
            Err(e) => {
                tracing::error!(spool = spool.kind(), project = %ev.project, environment = %ev.environment, sha = %ev.sha, error = %e, reason = %item.reason, "the event could not be spooled either");
                return Err(match cause {
                    Some(cause) => cause.into(),
                    None => Error::Spool(e.to_string()),
                });
            }
        };
        log.action = Some("spooled");
        tracing::info!(
            spool = spool.kind(),
            spool_id = %receipt.id,
            duplicate = receipt.duplicate,
            group = %item.group,
            source = %item.source,
            project = %item.project,
            environment = %item.environment,
            sha = %item.sha,
            status = item.status.as_str(),
            reason = %item.reason,
            "spool: event enqueued"
        );
        let mut deployment = deployment_answer(ev);
        deployment["status"] = json!(ev.status);
        let mut answer = json!({
            "action": "spooled",
            "deployment": deployment,
            "source": ev.source,
            "spool": { "kind": spool.kind(), "id": receipt.id, "duplicate": receipt.duplicate, "reason": item.reason },
        });
        if !warnings.is_empty() {
            answer["warnings"] = json!(warnings);
        }
        Ok(Handled { answer, deployment: None, spooled: true })
    }

    /// Delivers one spooled event to GitLab within `deadline`, and logs one line for it.
    pub async fn deliver(&self, item: &Spooled, attempts: u32, deadline: Instant) -> Delivery {
        let started = Instant::now();
        let ctx = CallCtx::new(deadline);
        let delivery = match item.event() {
            None => Delivery::Dead(format!("this build knows no source {:?}", item.source)),
            Some(mut ev) => match self.expand_and_apply(&mut ev, &ctx).await {
                Ok(o) => Delivery::Delivered { action: o.action.as_str(), deployment_id: o.deployment.map(|d| d.id) },
                Err(e) if transient(&e) => Delivery::Retry(e.to_string()),
                Err(e) => Delivery::Dead(explain_unknown_commit(e, &ev).to_string()),
            },
        };
        let (outcome, action, deployment_id, error) = match &delivery {
            Delivery::Delivered { action, deployment_id } => ("delivered", *action, *deployment_id, None),
            Delivery::Retry(e) => ("retry", "", None, Some(e.as_str())),
            Delivery::Dead(e) => ("dead-letter", "", None, Some(e.as_str())),
        };
        macro_rules! line {
            ($lvl:ident, $msg:literal) => {
                tracing::$lvl!(
                    source = %item.source,
                    route = item.route.as_deref().unwrap_or(""),
                    project = %item.project,
                    environment = %item.environment,
                    sha = %item.sha,
                    status = item.status.as_str(),
                    delivery_id = item.delivery_id.as_deref().unwrap_or(""),
                    action,
                    deployment_id,
                    outcome,
                    error,
                    attempts = attempts + 1,
                    received_at = %format_time(item.received_at),
                    group = %item.group,
                    gitlab_calls = ctx.calls().len(),
                    latency_ms = started.elapsed().as_millis() as u64,
                    $msg
                )
            };
        }
        match &delivery {
            Delivery::Delivered { .. } => line!(info, "spool: event delivered"),
            Delivery::Retry(_) => line!(warn, "spool: delivery failed, will retry"),
            Delivery::Dead(_) => line!(error, "spool: GitLab refused the event for good"),
        }
        delivery
    }

    async fn expand_and_apply(
        &self,
        ev: &mut DeploymentEvent,
        ctx: &CallCtx,
    ) -> Result<crate::lifecycle::Outcome, GitLabError> {
        self.lifecycle.expand_sha(ev, ctx).await?;
        self.lifecycle.apply(ev, ctx).await
    }

    fn add_dry_run(&self, answer: &mut Value, ctx: &CallCtx) {
        if self.config.dry_run {
            answer["dry_run"] = json!(true);
            answer["gitlab_calls"] = json!(ctx.calls());
        }
    }
}

/// The event as an answer's `deployment` says it (GitLab's id and status are added once known).
fn deployment_answer(ev: &DeploymentEvent) -> Value {
    json!({ "environment": ev.environment, "sha": ev.sha, "ref": ev.git_ref, "ref_source": ev.ref_source, "tag": ev.tag })
}

/// Where a verified call may write, as its URL says.
struct Target<'a> {
    route: Option<(&'a str, &'a Route)>,
    query: Option<&'a str>,
    path_project: Option<String>,
    update: Option<u64>,
    received: Instant,
}

/// The project of a routed call: the one its URL names or the route's only one, and one the
/// route allows. The unsigned query can never set a routed call's tier.
fn bind_project(name: &str, route: &Route, overrides: &mut Overrides) -> Result<(), Error> {
    if overrides.tier.is_some() {
        return Err(Error::BadRequest(format!(
            "route {name:?} takes no `tier` from the URL (the query is not signed); set `tier` in the route in ROUTES"
        )));
    }
    overrides.tier = route.tier.map(|t| t.as_str().to_string());
    overrides.route_ref = route.git_ref.clone();
    let project = overrides.project.as_deref().map(str::trim).filter(|p| !p.is_empty()).or(route.default_project());
    let project = project.ok_or_else(|| {
        Error::BadRequest(format!("route {name:?} allows several projects; name one with `project=<id or full path>`"))
    })?;
    validate_project(project)?;
    if !route.allows_project(project) {
        return Err(Error::Forbidden(format!("route {name:?} may not write to project {project:?}")));
    }
    overrides.project = Some(project.to_string());
    Ok(())
}

/// The answer to an unbound hook while those are refused.
fn unbound_refused(source: &str) -> Error {
    Error::Forbidden(format!(
        "this bridge takes calls on routes only: POST /hooks/{source}/<route> with a route in ROUTES (UNBOUND_HOOKS=allow serves /hooks/{source} while you move to routes; see docs/security.md)"
    ))
}

/// A refusal in the words the source uses for a wrong credential.
fn refuse(source: &dyn sources::Source, headers: &HeaderMap, body: &[u8]) -> Error {
    let refusal = source.verify(headers, body, &unknowable_secret());
    refusal.err().unwrap_or_else(|| Error::Unauthorized("the credentials do not match".into()))
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

/// Whether GitLab may take the event later (it is down, slow, throttling, or the token or its
/// rights are wrong: all fixed without the tool): such an event is spooled. What GitLab refused
/// in the data itself (an unknown commit, a bad environment name) never will be.
fn transient(e: &GitLabError) -> bool {
    !matches!(e, GitLabError::Rejected { .. })
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
