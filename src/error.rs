//! Every error the bridge can answer with, and the one place where each becomes an HTTP status.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::time::Duration;

use crate::gitlab::GitLabError;
use crate::secrets::SecretsError;

/// An error that ends a webhook request. The `Display` text is what the caller reads in
/// `{"error": "..."}`; it never contains a secret.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Malformed JSON, a missing or invalid field. The message names the field.
    #[error("{0}")]
    BadRequest(String),
    /// Missing or wrong credentials, or no secret configured for the source (fail closed).
    #[error("{0}")]
    Unauthorized(String),
    #[error("unknown source `{name}`; this bridge knows: {known}")]
    UnknownSource { name: String, known: String },
    /// Authenticated, but asking for what its credential may not touch (a route's bounds, or
    /// an unbound hook while those are refused).
    #[error("{0}")]
    Forbidden(String),
    /// A thing the caller named does not exist.
    #[error("{0}")]
    NotFound(String),
    #[error("no route for {method} {path}")]
    NoRoute { method: String, path: String },
    #[error("method {0} is not allowed here")]
    MethodNotAllowed(String),
    #[error("request body is larger than the limit of {0} bytes")]
    PayloadTooLarge(usize),
    #[error("the request body did not arrive within {0:?}")]
    RequestTimeout(Duration),
    /// A deploy tool's own API (e.g. Heroku's) failed while completing the event; a redelivery may succeed.
    #[error("{service} is unavailable: {message}")]
    ToolApi { service: &'static str, message: String },
    #[error(transparent)]
    GitLab(#[from] GitLabError),
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    /// The event must go to the spool (GitLab cannot take it now, or events of its environment
    /// wait there), and the spool cannot keep it or cannot say (the log has why).
    #[error("the spool cannot keep the event: {0}")]
    Spool(crate::spool::SpoolError),
}

impl Error {
    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::UnknownSource { .. } | Error::NoRoute { .. } | Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Error::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Error::ToolApi { .. } => StatusCode::BAD_GATEWAY,
            Error::GitLab(e) => match e {
                // GitLab refused the data itself: a redelivery of the same body cannot succeed.
                GitLabError::Rejected { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                GitLabError::RateLimited { .. } | GitLabError::Waiting { .. } => StatusCode::SERVICE_UNAVAILABLE,
                GitLabError::Deadline(_) => StatusCode::GATEWAY_TIMEOUT,
                GitLabError::Unavailable(_)
                | GitLabError::Ambiguous { .. }
                | GitLabError::Unauthorized
                | GitLabError::Forbidden(_)
                | GitLabError::Redirect { .. }
                | GitLabError::InvalidResponse(_) => StatusCode::BAD_GATEWAY,
                GitLabError::Secrets(s) => secrets_status(s),
            },
            Error::Secrets(s) => secrets_status(s),
            Error::Spool(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// How long the caller should wait before redelivering, when we know.
    fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::GitLab(GitLabError::RateLimited { retry_after }) => *retry_after,
            _ => None,
        }
    }
}

fn secrets_status(e: &SecretsError) -> StatusCode {
    match e {
        SecretsError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl Error {
    /// The text a caller reads. The log line has the full error; the answer leaves out what an
    /// unauthenticated caller must not learn (the secret's ARN, an endpoint's address).
    pub fn public_message(&self) -> String {
        match self {
            Error::Secrets(s) | Error::GitLab(GitLabError::Secrets(s)) => s.public_message(),
            // The spool's bounds are the operator's settings: said. Its other errors stay in the
            // log (a queue's URL names the account, a path the host).
            Error::Spool(e @ crate::spool::SpoolError::Full(_)) => format!("{e}; redeliver the event later"),
            Error::Spool(_) => {
                "the event must wait in the spool, and the spool cannot be used now; redeliver it later".into()
            }
            other => other.to_string(),
        }
    }

    /// The answer of the GitLab-compatible routes: what GitLab refused keeps GitLab's own status
    /// (e.g. 404 for an unknown deployment, 400 for a status it cannot take); every error carries
    /// GitLab's `message` beside the bridge's `error`, so GitLab clients can read it.
    pub fn into_gitlab_response(self) -> Response {
        let status = match &self {
            Error::GitLab(GitLabError::Rejected { status, .. }) => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY)
            }
            other => other.status(),
        };
        let text = self.public_message();
        respond(status, json!({ "message": text, "error": text }), self.retry_after())
    }
}

/// The longest `Retry-After` a tool is told. Argo CD's notifications obey `Retry-After` with no
/// upper bound (go-retryablehttp), sleeping in its notification worker, and Flux gives the whole
/// exchange 15 s: GitLab's own minute-long `Retry-After` would stall one and outlast the other.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(5);

fn respond(status: StatusCode, body: serde_json::Value, retry_after: Option<Duration>) -> Response {
    let mut resp = (status, Json(body)).into_response();
    if let Some(d) = retry_after
        && let Ok(v) = HeaderValue::from_str(&d.as_secs().clamp(1, MAX_RETRY_AFTER.as_secs()).to_string())
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        respond(self.status(), json!({ "error": self.public_message() }), self.retry_after())
    }
}
