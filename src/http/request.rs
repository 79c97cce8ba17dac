//! What every route does with an HTTP request before the pipeline sees it: its path's
//! segments (one extractor per answer style, so a path that cannot be read is answered the same
//! everywhere), its deadline, and its body — read only once the call passed the pre-check, at
//! most `MAX_BODY_BYTES`, within `BODY_TIMEOUT_SECONDS`.

use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{Extensions, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::{Deadlines, MAX_BODY_BYTES};
use crate::error::Error;
use crate::pipeline::{Handled, Pipeline, Webhook};

/// A route's path segments, or the bridge's 400.
pub struct Segments<T>(pub T);

/// A facade route's path segments, or the 400 a GitLab client reads (`message`).
pub struct GitLabSegments<T>(pub T);

/// A path that cannot be read, answered as the bridge answers.
pub struct PathError(Error);

impl IntoResponse for PathError {
    fn into_response(self) -> Response {
        self.0.into_response()
    }
}

/// A path that cannot be read, answered as GitLab answers.
pub struct GitLabPathError(Error);

impl IntoResponse for GitLabPathError {
    fn into_response(self) -> Response {
        self.0.into_gitlab_response()
    }
}

async fn segments<T: DeserializeOwned + Send, S: Send + Sync>(parts: &mut Parts, state: &S) -> Result<T, Error> {
    match Path::<T>::from_request_parts(parts, state).await {
        Ok(Path(t)) => Ok(t),
        Err(e) => Err(Error::BadRequest(format!("the path cannot be read: {e}"))),
    }
}

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Segments<T> {
    type Rejection = PathError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        segments(parts, state).await.map(Segments).map_err(PathError)
    }
}

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for GitLabSegments<T> {
    type Rejection = GitLabPathError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        segments(parts, state).await.map(GitLabSegments).map_err(GitLabPathError)
    }
}

/// The call a URL names.
pub struct Call {
    pub source: String,
    pub route: Option<String>,
    /// The project of a facade path.
    pub project: Option<String>,
}

/// Runs a call through the pipeline: the pre-check before the body is read, then the body,
/// then the webhook within its deadline.
pub async fn handle(pipeline: &Pipeline, call: Call, req: Request) -> Result<Handled, Error> {
    let received = Instant::now();
    let (parts, body) = req.into_parts();
    let deadline = deadline(&parts.extensions, pipeline.deadlines());
    let body = match pipeline.precheck(&call.source, call.route.as_deref(), &parts.headers) {
        Ok(()) => read_body(&parts, body, pipeline.deadlines().body).await,
        Err(e) => Err(e),
    };
    let hook = Webhook {
        source: &call.source,
        route: call.route.as_deref(),
        path_project: call.project,
        headers: &parts.headers,
        query: parts.uri.query(),
        body,
        received,
    };
    pipeline.handle(hook, deadline).await
}

/// The time a call may spend: Lambda's deadline minus a margin, or the local budget.
pub fn deadline(ext: &Extensions, deadlines: &Deadlines) -> Instant {
    let budget = match ext.get::<lambda_http::Context>() {
        Some(lc) if lc.deadline > 0 => {
            let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
            Duration::from_millis(lc.deadline.saturating_sub(now_ms)).saturating_sub(deadlines.margin)
        }
        _ => deadlines.local,
    };
    let now = Instant::now();
    now.checked_add(budget).unwrap_or(now + Duration::from_secs(86_400))
}

/// The body, at most `MAX_BODY_BYTES`, read within `timeout` (a client that sends it slowly
/// gets 408 rather than holding the request open).
pub async fn read_body(parts: &Parts, body: Body, timeout: Duration) -> Result<bytes::Bytes, Error> {
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
