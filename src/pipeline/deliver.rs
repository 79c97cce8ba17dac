//! Delivery: an event to GitLab now, or to the spool — the promise "a 2xx means durable, in
//! GitLab or in the spool". GitLab gets `SPOOL_AFTER_SECONDS` from receipt; when it cannot take
//! the event by then (down, slow, throttling, refusing the token), or the environment already
//! has events waiting, the event is spooled and the tool is answered 202. What GitLab refused in
//! the data itself (an unknown commit) is answered at once: no later attempt can succeed.
//! A spooled event comes back here to be delivered ([`Deliverer::spooled`]), through the same
//! lifecycle.

use std::time::Instant;

use crate::config::{SpoolMode, SpoolSettings};
use crate::error::Error;
use crate::event::Event;
use crate::gitlab::{CallCtx, GitLabError};
use crate::lifecycle::{Lifecycle, Outcome};
use crate::spool::{Receipt, Spool, SpoolError, Spooled};

/// What became of an event that came with a webhook.
pub enum Delivered {
    /// GitLab has it (the event's abbreviated sha, if any, expanded).
    Applied(Event, Outcome),
    /// It waits in the spool.
    Spooled { event: Event, kind: &'static str, receipt: Receipt, reason: String },
}

/// What became of one attempt to deliver a spooled event.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// GitLab has it (or already had it): the spool may forget it.
    Delivered { action: &'static str, deployment_id: Option<u64> },
    /// GitLab cannot take it now: try again later.
    Retry(String),
    /// An earlier create in its environment may still be committing in GitLab: try again later,
    /// and where that create's claim cannot travel (SQS), not before `until_ms`.
    Wait { reason: String, until_ms: u64 },
    /// GitLab refused it for good: a dead letter, with this reason.
    Dead(String),
}

/// Where a webhook's event may wait, and when it must.
pub struct Deliverer {
    lifecycle: Lifecycle,
    spool: Option<Spool>,
    settings: SpoolSettings,
}

impl Deliverer {
    /// `spool`: none under `SPOOL_MODE=off`, in a dry run, or without a store (a 5xx then,
    /// and the tool redelivers).
    pub fn new(lifecycle: Lifecycle, spool: Option<Spool>, settings: SpoolSettings) -> Self {
        let spool = spool.filter(|_| settings.mode != SpoolMode::Off);
        Deliverer { lifecycle, spool, settings }
    }

    pub fn lifecycle(&self) -> &Lifecycle {
        &self.lifecycle
    }

    pub fn settings(&self) -> &SpoolSettings {
        &self.settings
    }

    /// Delivers a webhook's event now, or spools it. `delivery`: what identifies the delivery
    /// (the spool's de-duplication); `spoolable`: whether the caller can take a 202 (the
    /// GitLab-compatible facade needs GitLab's deployment back, so it is delivered now or fails).
    pub async fn now_or_spool(
        &self,
        mut ev: Event,
        route: Option<&str>,
        delivery: &str,
        received: Instant,
        spoolable: bool,
        ctx: &CallCtx,
    ) -> Result<Delivered, Error> {
        let Some(spool) = self.spool.as_ref().filter(|_| spoolable) else {
            let outcome = self.lifecycle.apply(&mut ev, ctx).await?;
            return Ok(Delivered::Applied(ev, outcome));
        };
        let item = Spooled::new(&ev, route, delivery, time::OffsetDateTime::now_utc(), String::new());
        if let Some(reason) = self.must_queue(spool, &item.group).await? {
            return enqueue(spool, Spooled { reason, ..item }, None).await;
        }
        // GitLab gets SPOOL_AFTER_SECONDS from receipt; then the spool takes the event.
        let attempt = ctx.narrowed(received + self.settings.after);
        let result = self.lifecycle.apply(&mut ev, &attempt).await;
        ctx.absorb(&attempt);
        match result {
            Ok(outcome) => Ok(Delivered::Applied(ev, outcome)),
            Err(e) if e.is_transient() => {
                // The event as it is now (an abbreviated sha GitLab already expanded stays
                // expanded), with the claim of a create whose answer never came, if there is one.
                let item = Spooled {
                    reason: e.to_string(),
                    claim: self.lifecycle.carried_claim(&ev).await,
                    ..Spooled::new(&ev, route, delivery, item.received_at, String::new())
                };
                enqueue(spool, item, Some(e)).await
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Why a new event must go to the spool without trying GitLab first, if it must: every
    /// event does under `SPOOL_MODE=always`; otherwise one whose group has events waiting, so
    /// that an environment's events reach GitLab in order. A spool that cannot say is a 5xx
    /// (the tool redelivers): delivering the event now could overtake the events waiting.
    async fn must_queue(&self, spool: &Spool, group: &str) -> Result<Option<String>, Error> {
        if self.settings.mode == SpoolMode::Always {
            return Ok(Some("SPOOL_MODE=always: every event goes through the spool".into()));
        }
        match spool.pending(group).await {
            Ok(true) => Ok(Some(
                "earlier events of this environment are waiting in the spool; this one queues behind them".into(),
            )),
            Ok(false) => Ok(None),
            Err(e) => {
                tracing::error!(spool = spool.kind(), error = %e, "the spool cannot say whether events of this environment are waiting; refusing the event rather than letting it overtake them");
                Err(Error::Spool(e))
            }
        }
    }

    /// Delivers one spooled event, as `ROUTES` let it be now ([`Gate::recheck`](super::admit::Gate::recheck)),
    /// within `ctx`'s deadline.
    pub async fn spooled(&self, item: &Spooled, gate: &super::admit::Gate, ctx: &CallCtx) -> Delivery {
        let mut ev = item.event();
        if let Err(why) = gate.recheck(item.route.as_deref(), &mut ev) {
            return Delivery::Dead(format!("not delivered: {why}"));
        }
        if let Some(carried) = &item.claim {
            self.lifecycle.adopt_claim(carried).await;
        }
        match self.lifecycle.apply(&mut ev, ctx).await {
            Ok(o) => Delivery::Delivered { action: o.action.as_str(), deployment_id: o.deployment.map(|d| d.id) },
            Err(GitLabError::Waiting { reason, until_ms }) => Delivery::Wait { reason, until_ms },
            Err(e) if e.is_transient() => Delivery::Retry(e.to_string()),
            Err(e) => Delivery::Dead(e.to_string()),
        }
    }
}

/// Puts the event in the spool. If the spool cannot take it either, the answer is the error
/// that sent it there (or the spool's), a 5xx the tool may redeliver.
async fn enqueue(spool: &Spool, item: Spooled, cause: Option<GitLabError>) -> Result<Delivered, Error> {
    let receipt = match spool.enqueue(&item).await {
        Ok(receipt) => receipt,
        Err(e) => {
            tracing::error!(spool = spool.kind(), error = %e, reason = %item.reason, "the event could not be spooled either");
            // A full spool says so; otherwise the answer is what sent the event to the spool.
            return Err(match (cause, e) {
                (_, e @ SpoolError::Full(_)) | (None, e) => Error::Spool(e),
                (Some(cause), _) => cause.into(),
            });
        }
    };
    tracing::info!(
        spool = spool.kind(),
        spool_id = %receipt.id,
        duplicate = receipt.duplicate,
        group = %item.group,
        reason = %item.reason,
        "spool: event enqueued"
    );
    Ok(Delivered::Spooled { kind: spool.kind(), receipt, reason: item.reason, event: item.event })
}
