//! The one axum `Router`: the same routes and behaviour under Lambda, `serve` and `invoke`.
//! It speaks HTTP only (routes, body limit, deadline, status codes); what a webhook does is
//! [`crate::pipeline`]'s.
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

use crate::config::MAX_BODY_BYTES;
use crate::error::Error;
use crate::pipeline::{Pipeline, Webhook};

/// The router's state: the pipeline, built once per process.
#[derive(Clone)]
pub struct AppState(Arc<Pipeline>);

impl AppState {
    pub fn new(pipeline: Pipeline) -> Self {
        AppState(Arc::new(pipeline))
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

impl AppState {
    async fn handle(&self, source: &str, path_project: Option<String>, req: Request) -> Response {
        let received = Instant::now();
        let (parts, body) = req.into_parts();
        let deadline = self.deadline(&parts.extensions);
        let body = read_body(&parts, body).await;
        let hook = Webhook { source, path_project, headers: &parts.headers, query: parts.uri.query(), body, received };
        match self.0.handle(hook, deadline).await {
            Ok(answer) => (StatusCode::OK, Json(answer)).into_response(),
            Err(e) => e.into_response(),
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
        Instant::now() + budget
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
