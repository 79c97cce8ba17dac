//! `POST /hooks/{source}/{route}` and the unbound `POST /hooks/{source}`: a tool's webhook,
//! answered with the bridge's own answer.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

use super::request::{self, Call, Segments};
use crate::error::Error;
use crate::pipeline::{Handled, Pipeline};

pub async fn unbound(
    State(pipeline): State<Arc<Pipeline>>,
    Segments(source): Segments<String>,
    req: Request,
) -> Response {
    bridge_answer(request::handle(&pipeline, Call { source, route: None, project: None }, req).await)
}

pub async fn routed(
    State(pipeline): State<Arc<Pipeline>>,
    Segments((source, route)): Segments<(String, String)>,
    req: Request,
) -> Response {
    bridge_answer(request::handle(&pipeline, Call { source, route: Some(route), project: None }, req).await)
}

/// The bridge's own answer: 200, or 202 when the event waits in the spool.
fn bridge_answer(result: Result<Handled, Error>) -> Response {
    match result {
        Ok(handled) => {
            let status = if handled.spooled { StatusCode::ACCEPTED } else { StatusCode::OK };
            (status, Json(handled.answer)).into_response()
        }
        Err(e) => e.into_response(),
    }
}
