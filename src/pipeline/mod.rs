//! What happens to one delivery, whatever carried it (function URL, `serve`, `invoke`), stage by
//! stage, each its own module:
//!
//! 1. [`admit`]: the source, the route and its secret, the tool's verification of the raw
//!    bytes, the body read once, the replay defence;
//! 2. [`normalize`]: the URL's overrides bound to the route, the tool's look-up where its
//!    payload lacks something, the validated [`Event`](crate::event::Event), the route's bounds;
//! 3. [`deliver`]: the lifecycle now, or the spool;
//! 4. [`answer`]: one typed answer;
//!
//! and [`log`]: the webhook's span, whose fields the stages record, and its one line. The
//! GitLab-compatible facade's status change is [`crate::http::facade`]'s, on the same stages.

pub mod admit;
pub mod answer;
pub mod deliver;
pub mod log;
pub mod normalize;

use axum::http::HeaderMap;
use bytes::Bytes;
use std::time::Instant;
use tracing::Instrument;

use crate::config::Deadlines;
use crate::error::Error;
use crate::event::Defaults;
use crate::gitlab::{CallCtx, WarmUp};
use crate::lifecycle::Lifecycle;
use crate::model::Deployment;
use crate::sources::{Read, Request, body_hash};
use crate::spool::Spooled;
use admit::{Gate, Replayed};
use answer::Answer;
use deliver::{Delivered, Deliverer, Delivery};
use normalize::ToolApis;

/// One webhook as the transport received it.
pub struct Webhook<'a> {
    /// The `{source}` of `/hooks/{source}`.
    pub source: &'a str,
    /// The route the URL names (`/hooks/{source}/{route}`, `/routes/{route}/api/v4/...`); `None`
    /// for an unbound hook.
    pub route: Option<&'a str>,
    /// The project named by the path (the GitLab-compatible facade); it wins over the query's.
    pub path_project: Option<String>,
    pub headers: &'a HeaderMap,
    pub query: Option<&'a str>,
    /// The body as the transport read it; a failure to read it is answered and logged like any other.
    pub body: Result<Bytes, Error>,
    /// When the transport received the request (the log line's `latency_ms` counts from here).
    pub received: Instant,
}

/// What a handled webhook answers: the bridge's answer, and the GitLab deployment it created,
/// updated or found (the GitLab-compatible routes answer with that).
#[derive(Debug)]
pub struct Handled {
    pub answer: Answer,
    pub deployment: Option<Deployment>,
    /// The event is in the spool, not yet in GitLab (answered 202).
    pub spooled: bool,
}

impl Handled {
    fn answer(answer: Answer) -> Handled {
        Handled { answer, deployment: None, spooled: false }
    }
}

/// What normalization and delivery need of the webhook beyond admission.
struct Call<'a> {
    /// The URL's overrides, bound to the route.
    overrides: crate::event::Overrides,
    /// Whether the caller can take a 202 (not the facade, which needs GitLab's deployment back).
    spoolable: bool,
    received: Instant,
    body: &'a [u8],
}

/// Everything a delivery needs, built once per process.
pub struct Pipeline {
    gate: Gate,
    defaults: Defaults,
    apis: ToolApis,
    deliverer: Deliverer,
    deadlines: Deadlines,
}

impl Pipeline {
    pub fn new(gate: Gate, defaults: Defaults, apis: ToolApis, deliverer: Deliverer, deadlines: Deadlines) -> Self {
        Pipeline { gate, defaults, apis, deliverer, deadlines }
    }

    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    pub fn lifecycle(&self) -> &Lifecycle {
        self.deliverer.lifecycle()
    }

    pub fn deliverer(&self) -> &Deliverer {
        &self.deliverer
    }

    pub fn deadlines(&self) -> &Deadlines {
        &self.deadlines
    }

    /// Whether GitLab calls are planned, not sent (the in-memory GitLab of a dry run).
    pub fn dry_run(&self) -> bool {
        self.lifecycle().gitlab().dry_run()
    }

    /// Readies the first webhook's work (Lambda init): the secret read, GitLab's connection open.
    pub async fn warm_up(&self) -> WarmUp {
        self.lifecycle().gitlab().warm_up().await
    }

    /// In a dry run, what the run planned so far (per environment and sha, the statuses).
    pub fn planned(&self) -> Option<serde_json::Value> {
        self.lifecycle().gitlab().planned()
    }

    /// What can be refused before the body is read ([`Gate::precheck`]); the refusal is answered
    /// and logged as the webhook's (through its body).
    pub fn precheck(&self, source: &str, route: Option<&str>, headers: &HeaderMap) -> Result<(), Error> {
        self.gate.precheck(source, route, headers)
    }

    /// Handles one webhook within `deadline`, in its span, ending with its one log line.
    pub async fn handle(&self, hook: Webhook<'_>, deadline: Instant) -> Result<Handled, Error> {
        let span = log::webhook(&source_name(hook.source), hook.route.map(admit::printable).as_deref());
        async {
            let ctx = CallCtx::new(deadline);
            let received = hook.received;
            let result = self.process(hook, &ctx).await;
            log::finish(result.as_ref().map(|h| h.spooled), &ctx, received, self.dry_run());
            result
        }
        .instrument(span)
        .await
    }

    async fn process(&self, hook: Webhook<'_>, ctx: &CallCtx) -> Result<Handled, Error> {
        let Webhook { source, route, path_project, headers, query, body, received } = hook;
        let source = self.gate.source(source)?;
        let body = body?;
        let request = Request::new(headers, &body);
        let admitted = self.gate.authenticate(source, route, &request, ctx).await?;
        let spoolable = path_project.is_none();
        let overrides = normalize::overrides(query, path_project, admitted.route.as_ref())?;
        log::record_project(overrides.project.as_deref());
        let delivery = self.gate.read(&admitted, &request, &overrides.unsigned_choice())?;
        let replay_note = match &delivery.replay {
            Replayed::Refused(reason) => {
                log::record_outcome(answer::Action::Ignored.as_str(), None, false);
                return Ok(Handled::answer(Answer::ignored(reason.clone())));
            }
            Replayed::Noted(note) => Some(note.clone()),
            Replayed::Fresh(_) => None,
        };
        let call = Call { overrides, spoolable, received, body: &body };
        let mut handled = self.normalize_and_deliver(call, &admitted, delivery.reading, ctx).await?;
        handled.answer.unbound = admitted.unbound_note;
        handled.answer.replay = replay_note;
        // What was ignored is not remembered (an unsigned header may have made it so).
        if handled.answer.action != answer::Action::Ignored {
            self.gate.handled(delivery.replay);
        }
        Ok(handled)
    }

    async fn normalize_and_deliver(
        &self,
        call: Call<'_>,
        admitted: &admit::Admitted,
        reading: crate::sources::Reading,
        ctx: &CallCtx,
    ) -> Result<Handled, Error> {
        let source = admitted.source;
        let route = admitted.route.as_ref();
        let (spoolable, mut overrides) = (call.spoolable, call.overrides);

        let settings = self.gate.tool_settings(source);
        let lookup = self.apis.lookup(source.spec(), &admitted.secrets, ctx.deadline());
        let draft = match normalize::complete(reading.read, settings, lookup.as_ref()).await? {
            Read::Draft(draft, _) => draft,
            Read::Ignored(reason) => {
                log::record_outcome(answer::Action::Ignored.as_str(), None, self.dry_run());
                return Ok(Handled::answer(Answer::ignored(reason)));
            }
        };
        let (ev, mut warnings) = normalize::event(source.name(), draft, &mut overrides, &self.defaults, route)?;
        log::record_event(&ev);
        warnings.extend(self.lifecycle().warnings(&ev));

        // What identifies the delivery in the spool: the tool's key, else the body's hash.
        let key = reading.delivery_key.unwrap_or_else(|| body_hash(call.body));
        let route_name = route.map(|b| b.name.as_str());
        let delivered = self.deliverer.now_or_spool(ev, route_name, &key, call.received, spoolable, ctx).await?;
        Ok(self.answered(delivered, warnings, ctx))
    }

    /// The answer to what delivery did, recorded in the span.
    fn answered(&self, delivered: Delivered, warnings: Vec<String>, ctx: &CallCtx) -> Handled {
        match delivered {
            Delivered::Applied(ev, outcome) => {
                log::record_event(&ev);
                log::record_outcome(outcome.action.as_str(), outcome.deployment.as_ref().map(|d| d.id), self.dry_run());
                let mut answer = Answer::applied(&ev, &outcome).with_warnings(warnings);
                if self.dry_run() {
                    answer = answer.planned(ctx.calls());
                }
                Handled { answer, deployment: outcome.deployment, spooled: false }
            }
            Delivered::Spooled { event, kind, receipt, reason } => {
                log::record_outcome(answer::Action::Spooled.as_str(), None, false);
                let answer = Answer::spooled(&event, kind, receipt, reason).with_warnings(warnings);
                Handled { answer, deployment: None, spooled: true }
            }
        }
    }

    /// Delivers one spooled event to GitLab within `deadline`, in its span, and logs one line.
    pub async fn deliver(&self, item: &Spooled, attempts: u32, deadline: Instant) -> Delivery {
        let started = Instant::now();
        async {
            let ctx = CallCtx::new(deadline);
            let delivery = self.deliverer.spooled(item, &self.gate, &ctx).await;
            let (gitlab_calls, latency_ms) = (ctx.count(), started.elapsed().as_millis() as u64);
            match &delivery {
                Delivery::Delivered { action, deployment_id } => {
                    log::record_outcome(action, *deployment_id, false);
                    tracing::info!(outcome = "delivered", gitlab_calls, latency_ms, "spool: event delivered");
                }
                Delivery::Retry(e) => {
                    tracing::warn!(outcome = "retry", error = %e, gitlab_calls, latency_ms, "spool: delivery failed, will retry");
                }
                Delivery::Wait { reason, .. } => {
                    tracing::warn!(outcome = "wait", error = %reason, gitlab_calls, latency_ms, "spool: an earlier create may still be committing; will retry");
                }
                Delivery::Dead(e) => {
                    tracing::error!(outcome = "dead-letter", error = %e, gitlab_calls, latency_ms, "spool: GitLab refused the event for good");
                }
            }
            delivery
        }
        .instrument(log::delivery(item, attempts))
        .await
    }
}

/// The source's name as it may be logged: a known one as it is, the caller's text escaped and
/// shortened, so `%0A` in the path cannot forge a line in a text log.
fn source_name(name: &str) -> String {
    match crate::sources::find(name) {
        Some(s) => s.name().to_string(),
        None => admit::printable(name),
    }
}

#[cfg(test)]
mod tests;
