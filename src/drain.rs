//! Delivers spooled events to GitLab: `serve`'s background worker over the local spool, and
//! the handler of the SQS batches Lambda's event source mapping sends from the FIFO queue. Both
//! go through [`Pipeline::deliver`] (the same lifecycle as a webhook), one group's events one
//! at a time and in order, and both settle an attempt the same way ([`settle`]): delivered, a
//! dead letter (GitLab refused it for good, or it waited longer than `SPOOL_MAX_AGE_HOURS`;
//! its group moves on), or another try after a backoff with jitter.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

use crate::config::SpoolSettings;
use crate::model::format_time;
use crate::pipeline::Pipeline;
use crate::pipeline::deliver::Delivery;
use crate::spool::local::{Due, Entry, LocalSpool, Stored};
use crate::spool::sqs::SqsSpool;
use crate::spool::{SpoolError, Spooled, backoff, now_ms};

/// What to do with a spooled event after an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Settled {
    /// GitLab has it: forget it.
    Ack,
    /// Keep it, with this reason, out of the way of its group.
    DeadLetter(String),
    /// Try again after `wait` — and, where the store cannot keep a claim (SQS), not before
    /// `hold_until_ms`.
    Retry { wait: Duration, reason: String, hold_until_ms: Option<u64> },
}

/// How an attempt at an event that has waited `age` (after `attempts` earlier ones) settles:
/// the one rule of both stores.
pub fn settle(delivery: Delivery, age: Duration, attempts: u32, settings: &SpoolSettings) -> Settled {
    match delivery {
        Delivery::Delivered { .. } => Settled::Ack,
        Delivery::Dead(reason) => Settled::DeadLetter(reason),
        Delivery::Retry(reason) | Delivery::Wait { reason, .. } if age >= settings.max_age => {
            Settled::DeadLetter(format!(
                "gave up after {} h in the spool (SPOOL_MAX_AGE_HOURS); the last attempt: {reason}",
                settings.max_age.as_secs() / 3600
            ))
        }
        Delivery::Retry(reason) => {
            Settled::Retry { wait: backoff(attempts, settings.retry_max), reason, hold_until_ms: None }
        }
        Delivery::Wait { reason, until_ms } => {
            Settled::Retry { wait: backoff(attempts, settings.retry_max), reason, hold_until_ms: Some(until_ms) }
        }
    }
}

/// Time an SQS record needs at least to be tried; with less left, it waits for the next batch.
const MIN_RECORD_BUDGET: Duration = Duration::from_secs(2);

/// The longest the local worker sleeps without looking (a wake-up also comes with each enqueue;
/// a `spool replay` from another process is seen within this).
const IDLE: Duration = Duration::from_secs(5);

/// Runs `serve`'s worker until `shutdown`: delivers what is due, then sleeps until the next
/// entry is due or a new one arrives.
pub async fn run_local(
    pipeline: Arc<Pipeline>,
    spool: Arc<LocalSpool>,
    wake: Arc<Notify>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let wait = match drain_local(&pipeline, &spool).await {
            Ok(Some(next_ms)) => Duration::from_millis(next_ms.saturating_sub(now_ms())).min(IDLE),
            Ok(None) => IDLE,
            Err(e) => {
                tracing::error!(error = %e, "spool: the local spool cannot be read; trying again in 5 s");
                Duration::from_secs(5)
            }
        };
        if wait.is_zero() {
            continue;
        }
        tokio::select! {
            _ = &mut shutdown => break,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// The most heads tried in one pass (each its own group, side by side).
const HEADS_PER_PASS: usize = 64;

/// One pass: tries the head of each group that is due (groups side by side, each in order; at
/// most [`HEADS_PER_PASS`]), and returns when the next entry will be due (`None`: the spool is
/// empty). A head whose bytes cannot be read is set aside as a dead letter, and its group goes on.
pub async fn drain_local(pipeline: &Arc<Pipeline>, spool: &Arc<LocalSpool>) -> Result<Option<u64>, SpoolError> {
    let due = blocking(spool, |s| s.due(now_ms(), HEADS_PER_PASS)).await?;
    let mut tries = tokio::task::JoinSet::new();
    for head in due {
        let (pipeline, spool) = (pipeline.clone(), spool.clone());
        match head {
            Due::Entry(entry) => {
                tries.spawn(async move { deliver_entry(&pipeline, &spool, entry).await });
            }
            Due::Unreadable { id, group, reason } => {
                tracing::error!(spool = "local", spool_id = id, group = %group, reason = %reason, "spool: an entry that cannot be read was set aside as a dead letter (see `gitlab-deploy-bridge spool list`)");
                tries.spawn(async move { blocking(&spool, move |s| s.set_aside(id, &group, &reason)).await });
            }
        }
    }
    let mut unwritten = None;
    while let Some(done) = tries.join_next().await {
        if let Ok(Err(e)) = done {
            tracing::error!(error = %e, "spool: the outcome of a delivery could not be written; it will be tried again");
            unwritten = Some(e);
        }
    }
    // An outcome the spool could not write (a full disk) leaves its entry due: wait before the
    // next pass rather than deliver it again at once.
    if let Some(e) = unwritten {
        return Err(e);
    }
    blocking(spool, |s| s.next_due()).await
}

async fn deliver_entry(pipeline: &Pipeline, spool: &Arc<LocalSpool>, entry: Entry) -> Result<(), SpoolError> {
    let id = entry.id;
    let age = Duration::from_millis(now_ms().saturating_sub(entry.enqueued_ms));
    let delivery = match Spooled::decode(entry.payload.clone()) {
        Err(e) => Delivery::Dead(format!("the entry is not a spooled event: {e}")),
        Ok(item) => {
            let deadline = Instant::now() + pipeline.deadlines().local;
            pipeline.deliver(&item, entry.attempts, deadline).await
        }
    };
    match settle(delivery, age, entry.attempts, pipeline.deliverer().settings()) {
        Settled::Ack => blocking(spool, move |s| s.ack(id)).await,
        Settled::DeadLetter(reason) => {
            tracing::error!(spool = "local", spool_id = id, group = %entry.group, reason = %reason, "spool: event dead-lettered (see `gitlab-deploy-bridge spool list`)");
            blocking(spool, move |s| s.dead_letter(id, &reason)).await
        }
        // The claim is on disk here: the next attempt finds it, whenever it comes.
        Settled::Retry { wait, reason, .. } => {
            let at = now_ms() + wait.as_millis() as u64;
            tracing::info!(spool = "local", spool_id = id, group = %entry.group, retry_in_ms = wait.as_millis() as u64, "spool: next attempt scheduled");
            blocking(spool, move |s| s.retry_later(id, &reason, at)).await
        }
    }
}

async fn blocking<T: Send + 'static>(
    spool: &Arc<LocalSpool>,
    f: impl FnOnce(&LocalSpool) -> Result<T, SpoolError> + Send + 'static,
) -> Result<T, SpoolError> {
    let spool = spool.clone();
    tokio::task::spawn_blocking(move || f(&spool)).await.map_err(|e| SpoolError::other(e.to_string()))?
}

/// Handles a batch from the spool queue's event source mapping. Records come in queue order;
/// once a record of a group fails, the group's later records are reported failed untried, so
/// the group's order holds (SQS FIFO redelivers them after the failed one). A failed record is
/// kept out of sight for its backoff. What fails for good goes to the dead-letter queue with
/// its reason and counts as handled.
pub async fn sqs_batch(pipeline: &Pipeline, queue: &SqsSpool, event: SqsEvent, deadline: Instant) -> SqsBatchResponse {
    let settings = pipeline.deliverer().settings();
    let mut response = SqsBatchResponse::default();
    // Groups that failed in this batch, and how long their records stay out of sight: a FIFO
    // group is locked while any of its messages is, so every failed record of a group gets the
    // head's backoff (zero for a record left untried for lack of time).
    let mut blocked: HashMap<String, Duration> = HashMap::new();
    for record in event.records {
        let id = record.message_id.clone().unwrap_or_default();
        let group = record.attributes.get("MessageGroupId").cloned().unwrap_or_default();
        let wait = match blocked.get(&group) {
            Some(wait) => Some(*wait),
            None if deadline.saturating_duration_since(Instant::now()) < MIN_RECORD_BUDGET => Some(Duration::ZERO),
            None => None,
        };
        if let Some(wait) = wait {
            postpone(queue, &record, &id, wait).await;
            response.add_failure(id);
            blocked.insert(group, wait);
            continue;
        }
        let attempts = record
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(1)
            .saturating_sub(1);
        let body = record.body.clone().unwrap_or_default();
        let (delivery, age) = match Spooled::decode_str(&body) {
            Err(e) => (Delivery::Dead(format!("the message is not a spooled event: {e}")), Duration::ZERO),
            Ok(item) => {
                let age = time::OffsetDateTime::now_utc() - item.received_at;
                let age = Duration::from_millis(u64::try_from(age.whole_milliseconds()).unwrap_or(0));
                (pipeline.deliver(&item, attempts, deadline).await, age)
            }
        };
        let failed = match settle(delivery, age, attempts, settings) {
            Settled::Ack => None,
            Settled::DeadLetter(reason) => {
                let dead_group = if group.is_empty() { "unreadable" } else { group.as_str() };
                match queue.dead_letter(&body, dead_group, &format!("dead-{id}"), &reason, attempts + 1).await {
                    Ok(()) => {
                        tracing::error!(spool = "sqs", message_id = %id, group = %group, reason = %reason, "spool: event moved to the dead-letter queue (see `gitlab-deploy-bridge spool list`)");
                        None
                    }
                    Err(e) => {
                        tracing::error!(spool = "sqs", message_id = %id, group = %group, reason = %reason, error = %e, "spool: the event could not be dead-lettered; it stays in the queue");
                        Some(backoff(attempts, settings.retry_max))
                    }
                }
            }
            // This container's claim does not travel with the message: the next attempt (maybe
            // elsewhere) waits until GitLab can no longer commit the create it claims.
            Settled::Retry { wait, hold_until_ms, .. } => {
                let held = hold_until_ms.map(|until| Duration::from_millis(until.saturating_sub(now_ms())));
                let wait = held.map_or(wait, |held| wait.max(held));
                tracing::info!(spool = "sqs", message_id = %id, group = %group, retry_in_ms = wait.as_millis() as u64, "spool: next attempt scheduled");
                Some(wait)
            }
        };
        if let Some(wait) = failed {
            postpone(queue, &record, &id, wait).await;
            response.add_failure(id);
            blocked.insert(group, wait);
        }
    }
    response
}

/// Keeps a failed record out of sight for `wait` (else the queue's visibility timeout applies).
async fn postpone(queue: &SqsSpool, record: &aws_lambda_events::event::sqs::SqsMessage, id: &str, wait: Duration) {
    if let Some(handle) = record.receipt_handle.as_deref()
        && let Err(e) = queue.postpone(handle, wait).await
    {
        tracing::warn!(spool = "sqs", message_id = %id, error = %e, "spool: backoff not set; the queue's visibility timeout applies");
    }
}

/// One entry of the local spool as `spool list` prints it; one that cannot be read is a dead
/// letter with its bytes (base64) and why.
pub fn describe_local(stored: &Stored) -> serde_json::Value {
    use base64::Engine;
    let entry = match stored {
        Stored::Entry(entry) => entry,
        Stored::Unreadable { id, raw, reason } => {
            return serde_json::json!({
                "id": id.to_string(),
                "state": "dead",
                "last_error": reason,
                "unreadable": true,
                "raw_base64": base64::engine::general_purpose::STANDARD.encode(raw),
            });
        }
    };
    let item = Spooled::decode(entry.payload.clone()).ok();
    serde_json::json!({
        "id": entry.id.to_string(),
        "state": if entry.dead { "dead" } else { "pending" },
        "attempts": entry.attempts,
        "last_error": entry.last_error,
        "enqueued_at": time::OffsetDateTime::from_unix_timestamp_nanos(entry.enqueued_ms as i128 * 1_000_000).ok().map(format_time),
        "event": item.as_ref().map(Spooled::summary),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attempt_settles_the_same_way_for_both_stores() {
        let settings = SpoolSettings::default();
        let delivered = Delivery::Delivered { action: "created", deployment_id: Some(1) };
        assert_eq!(settle(delivered, Duration::ZERO, 0, &settings), Settled::Ack);
        let dead = settle(Delivery::Dead("422".into()), Duration::ZERO, 0, &settings);
        assert_eq!(dead, Settled::DeadLetter("422".into()));
        match settle(Delivery::Retry("503".into()), Duration::from_secs(60), 3, &settings) {
            Settled::Retry { wait, reason, hold_until_ms: None } => {
                assert!(wait <= Duration::from_secs(8) && reason == "503", "{wait:?}")
            }
            other => panic!("{other:?}"),
        }
        let old = settle(Delivery::Retry("503".into()), settings.max_age, 3, &settings);
        assert!(matches!(old, Settled::DeadLetter(r) if r.contains("gave up after 72 h") && r.contains("503")));
    }
}
