//! The one log line of a webhook: the facts of the call are fields of its span, recorded by the
//! stages as they learn them ([`record_event`], [`record_outcome`]); the line that ends the span
//! ([`finish`]) carries them all (the JSON format writes the span's fields flat beside the
//! line's, [`crate::telemetry::FlatJson`]). Every line has the same fields whatever the outcome.

use std::time::Instant;
use tracing::Span;

use crate::error::Error;
use crate::event::Event;
use crate::gitlab::CallCtx;

/// The span of one webhook: every field present from the start (empty until known).
pub fn webhook(source: &str, route: Option<&str>) -> Span {
    tracing::info_span!(
        "webhook",
        source = source,
        route = route.unwrap_or(""),
        project = "",
        environment = "",
        sha = "",
        status = "",
        delivery_id = "",
        action = "",
        deployment_id = tracing::field::Empty,
        dry_run = false,
    )
}

/// The span of one spooled event's delivery.
pub fn delivery(item: &crate::spool::Spooled, attempts: u32) -> Span {
    let span = tracing::info_span!(
        "delivery",
        source = %item.event.source,
        route = item.route.as_deref().unwrap_or(""),
        project = "",
        environment = "",
        sha = "",
        status = "",
        delivery_id = "",
        action = "",
        deployment_id = tracing::field::Empty,
        attempts = attempts + 1,
        received_at = %crate::model::format_time(item.received_at),
        group = %item.group,
    );
    record_event_in(&span, &item.event);
    span
}

pub fn record_project(project: Option<&str>) {
    if let Some(p) = project {
        Span::current().record("project", p);
    }
}

/// What the event is: where, which commit, which verb.
pub fn record_event(ev: &Event) {
    record_event_in(&Span::current(), ev);
}

fn record_event_in(span: &Span, ev: &Event) {
    span.record("project", ev.project.as_str());
    span.record("environment", ev.environment.as_str());
    span.record("status", ev.verb());
    if let Some(sha) = ev.sha() {
        span.record("sha", sha.as_str());
    }
    if let Some(id) = &ev.delivery_id {
        span.record("delivery_id", id.as_str());
    }
}

/// What the call did (a dry run's line says what a live run would do).
pub fn record_outcome(action: &str, deployment_id: Option<u64>, dry_run: bool) {
    let span = Span::current();
    let action = match (dry_run, action) {
        (true, "created") => "would create",
        (true, "updated") => "would update",
        (_, action) => action,
    };
    span.record("action", action);
    span.record("dry_run", dry_run);
    if let Some(id) = deployment_id {
        span.record("deployment_id", id);
    }
}

/// The line that ends a webhook's span; `result`: whether it was spooled (answered 202), or why
/// it was refused.
pub fn finish(result: Result<bool, &Error>, ctx: &CallCtx, received: Instant, dry_run: bool) {
    let latency_ms = received.elapsed().as_millis() as u64;
    let gitlab_calls = ctx.count();
    match result {
        Ok(_) if dry_run => {
            tracing::info!(http_status = 200u16, outcome = "ok", gitlab_calls, latency_ms, "webhook planned (dry run)")
        }
        Ok(spooled) => {
            let http_status: u16 = if spooled { 202 } else { 200 };
            tracing::info!(http_status, outcome = "ok", gitlab_calls, latency_ms, "webhook handled");
        }
        Err(e) => {
            let http_status = e.status().as_u16();
            if e.status().is_server_error() {
                tracing::error!(http_status, outcome = "error", error = %e, gitlab_calls, latency_ms, "webhook refused");
            } else {
                tracing::warn!(http_status, outcome = "error", error = %e, gitlab_calls, latency_ms, "webhook refused");
            }
        }
    }
    if dry_run && result.is_ok() {
        for call in ctx.calls() {
            let body = call.body.as_ref().map(|b| b.to_string()).unwrap_or_default();
            tracing::info!(method = %call.method, path = %call.path, body = %body, "dry run: would call GitLab");
        }
    }
}
