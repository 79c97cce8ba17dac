//! The one axum `Router`: the same routes and behaviour under Lambda, `serve` and `invoke`.
//! It speaks HTTP only (routes, body limit, deadline, status codes); what a webhook does is
//! [`crate::pipeline`]'s.
//!
//! - `POST /hooks/{source}/{route}?project=&environment=&ref=` — a deploy tool's webhook on a
//!   route (`ROUTES`: what the route's credential may touch); `POST /hooks/{source}` is the
//!   unbound form, served only with `UNBOUND_HOOKS=allow` (or in a dry run)
//! - `POST /routes/{route}/api/v4/projects/{id}/deployments`,
//!   `PUT /routes/{route}/api/v4/projects/{id}/deployments/{deployment_id}` (and the unbound
//!   `/api/v4/...`) — the GitLab-compatible facade (the `generic` source), answered as GitLab answers: 201 on a
//!   create and 200 on an update, with GitLab's deployment object (the bridge's answer beside it
//!   under `bridge`), and errors with GitLab's `message` beside the bridge's `error`
//! - `GET /healthz` — liveness; touches neither Secrets Manager nor GitLab

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{Extensions, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tower::ServiceExt;

use crate::config::MAX_BODY_BYTES;
use crate::error::Error;
use crate::pipeline::{Handled, Pipeline, Webhook};

/// The router's state: the pipeline, built once per process.
#[derive(Clone)]
pub struct AppState(Arc<Pipeline>);

impl AppState {
    pub fn new(pipeline: Arc<Pipeline>) -> Self {
        AppState(pipeline)
    }
}

pub fn router(state: AppState) -> Router {
    let routes = Router::new()
        .route("/healthz", get(healthz))
        .route("/hooks/{source}", post(hook))
        .route("/hooks/{source}/{route}", post(routed_hook))
        .route("/api/v4/projects/{id}/deployments", post(facade_create))
        .route("/api/v4/projects/{id}/deployments/{deployment_id}", put(facade_update))
        .route("/routes/{route}/api/v4/projects/{id}/deployments", post(routed_facade_create))
        .route("/routes/{route}/api/v4/projects/{id}/deployments/{deployment_id}", put(routed_facade_update))
        .method_not_allowed_fallback(method_not_allowed);
    let exact = routes.clone().fallback(no_route).with_state(state.clone());
    // A function URL ends in `/`, so `<function URL>/hooks/...` has a doubled slash, and a
    // pasted URL may end in one: such a path is served as the route it names.
    routes
        .fallback(move |req: Request| {
            let exact = exact.clone();
            async move {
                match lenient_path(req.uri()) {
                    Some(uri) => {
                        let (mut parts, body) = req.into_parts();
                        parts.uri = uri;
                        match exact.oneshot(Request::from_parts(parts, body)).await {
                            Ok(response) => response,
                            Err(never) => match never {},
                        }
                    }
                    None => no_route(req.method().clone(), req.uri().clone()).await.into_response(),
                }
            }
        })
        .with_state(state)
}

/// The URI with leading slashes collapsed to one and a trailing slash dropped; `None` when that
/// changes nothing (the path names no route as it is either).
fn lenient_path(uri: &Uri) -> Option<Uri> {
    let path = uri.path();
    let trimmed = format!("/{}", path.trim_start_matches('/'));
    let trimmed = match trimmed.strip_suffix('/') {
        Some(t) if !t.is_empty() => t.to_string(),
        _ => trimmed,
    };
    if trimmed == path {
        return None;
    }
    let path_and_query = match uri.query() {
        Some(q) => format!("{trimmed}?{q}"),
        None => trimmed,
    };
    Uri::try_from(path_and_query).ok()
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

/// Which answer a route gives: the bridge's own, or GitLab's (the facade).
#[derive(Clone, Copy)]
enum Answer {
    Bridge,
    GitLab { success: StatusCode },
}

/// What the URL says about a call.
struct Call<'a> {
    source: &'a str,
    route: Option<String>,
    path_project: Option<String>,
    update: Option<u64>,
}

impl Call<'_> {
    fn hook(source: &str, route: Option<String>) -> Call<'_> {
        Call { source, route, path_project: None, update: None }
    }

    fn facade(route: Option<String>, project: String, update: Option<u64>) -> Call<'static> {
        Call { source: "generic", route, path_project: Some(project), update }
    }
}

async fn hook(State(st): State<AppState>, source: Result<Path<String>, PathRejection>, req: Request) -> Response {
    match source {
        Ok(Path(source)) => st.handle(Call::hook(&source, None), Answer::Bridge, req).await,
        Err(e) => Error::BadRequest(format!("the path cannot be read: {e}")).into_response(),
    }
}

async fn routed_hook(
    State(st): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    req: Request,
) -> Response {
    match path {
        Ok(Path((source, route))) => st.handle(Call::hook(&source, Some(route)), Answer::Bridge, req).await,
        Err(e) => Error::BadRequest(format!("the path cannot be read: {e}")).into_response(),
    }
}

const CREATED: Answer = Answer::GitLab { success: StatusCode::CREATED };

async fn facade_create(
    State(st): State<AppState>,
    project: Result<Path<String>, PathRejection>,
    req: Request,
) -> Response {
    match project {
        Ok(Path(project)) => st.handle(Call::facade(None, project, None), CREATED, req).await,
        Err(e) => Error::BadRequest(format!("the path cannot be read: {e}")).into_gitlab_response(),
    }
}

async fn routed_facade_create(
    State(st): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    req: Request,
) -> Response {
    match path {
        Ok(Path((route, project))) => st.handle(Call::facade(Some(route), project, None), CREATED, req).await,
        Err(e) => Error::BadRequest(format!("the path cannot be read: {e}")).into_gitlab_response(),
    }
}

async fn facade_update(
    State(st): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    req: Request,
) -> Response {
    match path {
        Ok(Path((project, id))) => st.facade_put(None, project, id, req).await,
        Err(e) => Error::BadRequest(format!("the path cannot be read: {e}")).into_gitlab_response(),
    }
}

async fn routed_facade_update(
    State(st): State<AppState>,
    path: Result<Path<(String, String, String)>, PathRejection>,
    req: Request,
) -> Response {
    match path {
        Ok(Path((route, project, id))) => st.facade_put(Some(route), project, id, req).await,
        Err(e) => Error::BadRequest(format!("the path cannot be read: {e}")).into_gitlab_response(),
    }
}

impl AppState {
    async fn facade_put(&self, route: Option<String>, project: String, id: String, req: Request) -> Response {
        match id.parse::<u64>() {
            Ok(id) => {
                self.handle(Call::facade(route, project, Some(id)), Answer::GitLab { success: StatusCode::OK }, req)
                    .await
            }
            Err(_) => Error::NotFound(format!(
                "404 Deployment Not Found: {:?} is not a deployment id",
                id.chars().take(40).collect::<String>()
            ))
            .into_gitlab_response(),
        }
    }

    async fn handle(&self, call: Call<'_>, answer: Answer, req: Request) -> Response {
        let received = Instant::now();
        let (parts, body) = req.into_parts();
        let deadline = self.deadline(&parts.extensions);
        let body = match self.0.precheck(call.source, call.route.as_deref(), &parts.headers) {
            Ok(()) => read_body(&parts, body, self.0.config().body_timeout).await,
            Err(e) => Err(e),
        };
        let hook = Webhook {
            source: call.source,
            route: call.route.as_deref(),
            path_project: call.path_project,
            update: call.update,
            headers: &parts.headers,
            query: parts.uri.query(),
            body,
            received,
        };
        let result = self.0.handle(hook, deadline).await;
        match (answer, result) {
            (Answer::Bridge, Ok(handled)) => {
                let status = if handled.spooled { StatusCode::ACCEPTED } else { StatusCode::OK };
                (status, Json(handled.answer)).into_response()
            }
            (Answer::Bridge, Err(e)) => e.into_response(),
            (Answer::GitLab { success }, Ok(handled)) => gitlab_answer(success, handled),
            (Answer::GitLab { .. }, Err(e)) => e.into_gitlab_response(),
        }
    }

    /// The time this webhook may spend: Lambda's deadline minus a margin, or the local budget.
    fn deadline(&self, ext: &Extensions) -> Instant {
        let cfg = self.0.config();
        let budget = match ext.get::<lambda_http::Context>() {
            Some(lc) if lc.deadline > 0 => {
                let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
                Duration::from_millis(lc.deadline.saturating_sub(now_ms)).saturating_sub(cfg.deadline_margin)
            }
            _ => cfg.local_deadline,
        };
        let now = Instant::now();
        now.checked_add(budget).unwrap_or(now + Duration::from_secs(86_400))
    }
}

/// GitLab's answer to a create or update: its deployment object, with the bridge's own answer
/// beside it under `bridge`. Without a deployment (a stale or ignored delivery) there is no
/// GitLab object to give; the bridge's answer says why.
fn gitlab_answer(success: StatusCode, handled: Handled) -> Response {
    match handled.deployment.map(serde_json::to_value) {
        Some(Ok(Value::Object(mut object))) => {
            object.insert("bridge".into(), handled.answer);
            (success, Json(Value::Object(object))).into_response()
        }
        _ => (StatusCode::OK, Json(handled.answer)).into_response(),
    }
}

/// The body, at most `MAX_BODY_BYTES`, read within `timeout` (a client that sends it slowly
/// gets 408 rather than holding the request open).
async fn read_body(parts: &axum::http::request::Parts, body: Body, timeout: Duration) -> Result<bytes::Bytes, Error> {
    let declared =
        parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
        return Err(Error::PayloadTooLarge(MAX_BODY_BYTES));
    }
    let read = tokio::time::timeout(timeout, axum::body::to_bytes(body, MAX_BODY_BYTES))
        .await
        .map_err(|_| Error::RequestTimeout(timeout))?;
    read.map_err(|e| {
        let too_large = std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            || e.to_string().contains("length limit");
        if too_large {
            Error::PayloadTooLarge(MAX_BODY_BYTES)
        } else {
            Error::BadRequest(format!("the request body could not be read: {e}"))
        }
    })
}
