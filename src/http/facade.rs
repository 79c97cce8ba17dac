//! The GitLab-compatible facade: GitLab's own `POST /projects/:id/deployments` and
//! `PUT /projects/:id/deployments/:deployment_id`, on a route (`/routes/{route}/api/v4/...`,
//! whose secret is the client's token) or unbound (`/api/v4/...`), authenticated like the
//! `generic` source and answered as GitLab answers: 201 on a create and 200 on an update, with
//! GitLab's deployment object (the bridge's answer beside it under `bridge`), and errors with
//! GitLab's `message` beside the bridge's `error`. A create is a `generic` webhook whose project
//! is the path's; an update moves one deployment, never a finished one.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

use super::request::{self, Call, GitLabSegments};
use crate::error::Error;
use crate::event::ProjectRef;
use crate::gitlab::CallCtx;
use crate::pipeline::answer::Answer;
use crate::pipeline::{Handled, Pipeline, log, normalize};
use crate::sources::Request as Delivery;
use crate::sources::generic;

const SOURCE: &str = "generic";

pub async fn create(
    State(pipeline): State<Arc<Pipeline>>,
    GitLabSegments(project): GitLabSegments<String>,
    req: Request,
) -> Response {
    created(request::handle(&pipeline, Call { source: SOURCE.into(), route: None, project: Some(project) }, req).await)
}

pub async fn routed_create(
    State(pipeline): State<Arc<Pipeline>>,
    GitLabSegments((route, project)): GitLabSegments<(String, String)>,
    req: Request,
) -> Response {
    let call = Call { source: SOURCE.into(), route: Some(route), project: Some(project) };
    created(request::handle(&pipeline, call, req).await)
}

pub async fn update(
    State(pipeline): State<Arc<Pipeline>>,
    GitLabSegments((project, id)): GitLabSegments<(String, String)>,
    req: Request,
) -> Response {
    status_change(&pipeline, None, project, id, req).await
}

pub async fn routed_update(
    State(pipeline): State<Arc<Pipeline>>,
    GitLabSegments((route, project, id)): GitLabSegments<(String, String, String)>,
    req: Request,
) -> Response {
    status_change(&pipeline, Some(route), project, id, req).await
}

fn created(result: Result<Handled, Error>) -> Response {
    match result {
        Ok(handled) => gitlab_answer(StatusCode::CREATED, handled),
        Err(e) => e.into_gitlab_response(),
    }
}

/// GitLab's answer: its deployment object, with the bridge's own answer beside it under
/// `bridge`. Without a deployment (a stale or ignored delivery) there is no GitLab object to
/// give; the bridge's answer says why.
fn gitlab_answer(success: StatusCode, handled: Handled) -> Response {
    let bridge = serde_json::to_value(&handled.answer).unwrap_or(Value::Null);
    match handled.deployment.map(serde_json::to_value) {
        Some(Ok(Value::Object(mut object))) => {
            object.insert("bridge".into(), bridge);
            (success, Json(Value::Object(object))).into_response()
        }
        _ => (StatusCode::OK, Json(bridge)).into_response(),
    }
}

async fn status_change(
    pipeline: &Pipeline,
    route: Option<String>,
    project: String,
    id: String,
    req: Request,
) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        let shown = id.chars().take(40).collect::<String>();
        return Error::NotFound(format!("404 Deployment Not Found: {shown:?} is not a deployment id"))
            .into_gitlab_response();
    };
    let received = Instant::now();
    let (parts, body) = req.into_parts();
    let deadline = request::deadline(&parts.extensions, pipeline.deadlines());
    let route = route.as_deref();
    let span = log::webhook(SOURCE, route.map(crate::pipeline::admit::printable).as_deref());
    let result = async {
        let ctx = CallCtx::new(deadline);
        let body = match pipeline.precheck(SOURCE, route, &parts.headers) {
            Ok(()) => request::read_body(&parts, body, pipeline.deadlines().body).await,
            Err(e) => Err(e),
        };
        let result = match body {
            Ok(body) => set_status(pipeline, route, project, id, &parts, &body, &ctx).await,
            Err(e) => Err(e),
        };
        log::finish(result.as_ref().map(|h| h.spooled), &ctx, received, pipeline.dry_run());
        result
    }
    .instrument(span)
    .await;
    match result {
        Ok(handled) => gitlab_answer(StatusCode::OK, handled),
        Err(e) => e.into_gitlab_response(),
    }
}

/// `PUT .../deployments/:id`: the route's secret (or the generic one), the status the body
/// asks for, the deployment in an environment the route may write in (read first: a GitLab
/// read changes nothing), then the lifecycle's status change.
async fn set_status(
    pipeline: &Pipeline,
    route: Option<&str>,
    project: String,
    id: u64,
    parts: &axum::http::request::Parts,
    body: &[u8],
    ctx: &CallCtx,
) -> Result<Handled, Error> {
    let gate = pipeline.gate();
    let source = gate.source(SOURCE)?;
    let delivery = Delivery::new(&parts.headers, body);
    let admitted = gate.authenticate(source, route, &delivery, ctx).await?;
    let status = generic::read_status(&delivery)?;
    tracing::Span::current().record("status", status.as_str());
    let overrides = normalize::overrides(parts.uri.query(), Some(project), admitted.route.as_ref())?;
    let project = ProjectRef::parse(overrides.project.as_deref().unwrap_or_default())?;
    log::record_project(Some(project.as_str()));
    let lifecycle = pipeline.lifecycle();
    if let Some(bound) = &admitted.route {
        let found = lifecycle.find_deployment(project.as_str(), id, ctx).await?;
        let environment = found.environment.as_ref().map(|e| e.name.as_str()).unwrap_or("");
        if !bound.route.allows_environment(environment) {
            return Err(Error::Forbidden(format!(
                "route {:?} may not write in environment {environment:?}",
                bound.name
            )));
        }
    }
    let outcome = lifecycle.set_status(project.as_str(), id, status, ctx).await?;
    if let Some(d) = &outcome.deployment {
        let span = tracing::Span::current();
        span.record("environment", d.environment.as_ref().map(|e| e.name.as_str()).unwrap_or(""));
        span.record("sha", d.sha.as_str());
    }
    log::record_outcome(outcome.action.as_str(), Some(id), pipeline.dry_run());
    let mut answer = Answer::status_changed(&outcome);
    if pipeline.dry_run() {
        answer = answer.planned(ctx.calls());
    }
    Ok(Handled { answer, deployment: outcome.deployment, spooled: false })
}
