//! `POST /hooks/{source}/{route}` and the unbound `POST /hooks/{source}`: a tool's webhook,
//! answered with the bridge's own answer.

use axum::extract::{Request, State};
use axum::response::Response;
use std::sync::Arc;

use super::bridge_answer;
use super::request::{self, Call, Segments};
use crate::pipeline::Pipeline;

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
