//! The one axum `Router`: the same routes and behaviour under Lambda, `serve` and `invoke`.
//! It speaks HTTP only (routes, body limit, deadline, status codes); what a call does is
//! [`crate::pipeline`]'s.
//!
//! - `POST /hooks/{source}/{route}?project=&environment=&ref=` — a deploy tool's webhook on a
//!   route (`ROUTES`: what the route's credential may touch); `POST /hooks/{source}` is the
//!   unbound form, served only with `UNBOUND_HOOKS=allow` (or in a dry run) — [`hooks`]
//! - `POST /routes/{route}/api/v4/projects/{id}/deployments`,
//!   `PUT /routes/{route}/api/v4/projects/{id}/deployments/{deployment_id}` (and the unbound
//!   `/api/v4/...`) — the GitLab-compatible facade, answered as GitLab answers — [`facade`]
//! - `GET /healthz` — liveness; touches neither Secrets Manager nor GitLab

pub mod facade;
pub mod hooks;
pub mod request;

use axum::extract::Request;
use axum::http::{Method, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::{Value, json};
use std::sync::Arc;
use tower::ServiceExt;

use crate::error::Error;
use crate::pipeline::Pipeline;

pub fn router(pipeline: Arc<Pipeline>) -> Router {
    let routes = Router::new()
        .route("/healthz", get(healthz))
        .route("/hooks/{source}", post(hooks::unbound))
        .route("/hooks/{source}/{route}", post(hooks::routed))
        .route("/api/v4/projects/{id}/deployments", post(facade::create))
        .route("/api/v4/projects/{id}/deployments/{deployment_id}", put(facade::update))
        .route("/routes/{route}/api/v4/projects/{id}/deployments", post(facade::routed_create))
        .route("/routes/{route}/api/v4/projects/{id}/deployments/{deployment_id}", put(facade::routed_update))
        .method_not_allowed_fallback(method_not_allowed);
    let exact = routes.clone().fallback(no_route).with_state(pipeline.clone());
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
        .with_state(pipeline)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubled_and_trailing_slashes_name_the_route_they_mean() {
        let uri = |s: &str| s.parse::<Uri>().unwrap();
        assert_eq!(lenient_path(&uri("//hooks/generic/ci?project=42")).unwrap(), uri("/hooks/generic/ci?project=42"));
        assert_eq!(lenient_path(&uri("/hooks/generic/ci/")).unwrap(), uri("/hooks/generic/ci"));
        assert_eq!(lenient_path(&uri("/hooks/generic/ci")), None, "nothing to change");
        assert_eq!(lenient_path(&uri("/")), None);
    }
}
