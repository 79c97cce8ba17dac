//! The spool: where a verified event waits when GitLab cannot take it now, so that a tool's
//! 2xx always means "durable — in GitLab, or here" (issue 11). Two stores behind one face:
//! SQS FIFO under Lambda ([`sqs`]), an embedded redb database under `serve` ([`local`]).
//!
//! What is kept is the normalized event ([`Spooled`]) with its original times — never the tool's
//! body or credential. Events of one group (one environment of one project) are delivered one
//! at a time, in the order they were spooled; a tool's retry of the same delivery within five
//! minutes is one event (SQS FIFO's deduplication window, kept the same locally). Delivering
//! spooled events is [`crate::drain`]'s.

pub mod local;
pub mod sqs;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

use crate::event::DeploymentEvent;
use crate::model::{Status, Tier};

/// How long two copies of one delivery count as one (SQS FIFO's deduplication interval).
pub const DEDUP_WINDOW: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
#[error("the spool cannot be used: {0}")]
pub struct SpoolError(pub String);

impl<E: Into<redb::Error>> From<E> for SpoolError {
    fn from(e: E) -> Self {
        SpoolError(e.into().to_string())
    }
}

/// A spooled event: the normalized event as the pipeline built it at receipt, when it was
/// received, why it was spooled, and the keys that order and deduplicate it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Spooled {
    /// Format version.
    pub v: u32,
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    pub project: String,
    pub environment: String,
    pub sha: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub ref_source: String,
    pub tag: bool,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<Tier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha_hint: Option<String>,
    /// `sha` is an abbreviation GitLab expands on delivery.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub short_sha: bool,
    /// The tool's own time of the event, kept for the lifecycle's ordering rules.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub occurred_at: Option<OffsetDateTime>,
    /// When the bridge received and verified it (freshness was judged then).
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    /// Why it went to the spool rather than to GitLab.
    pub reason: String,
    /// Events of one group are applied in order (one environment of one project).
    pub group: String,
    /// One delivery, whatever the number of copies the tool sent.
    pub dedup: String,
}

impl Spooled {
    /// `delivery`: what identifies the delivery (the tool's delivery id, or its body's hash).
    pub fn new(
        ev: &DeploymentEvent,
        route: Option<&str>,
        delivery: &str,
        received_at: OffsetDateTime,
        reason: String,
    ) -> Spooled {
        let group = hash(&[&ev.project.to_ascii_lowercase(), &ev.environment])[..40].to_string();
        let dedup = hash(&[ev.source, route.unwrap_or(""), &ev.project, &ev.environment, delivery]);
        Spooled {
            v: 1,
            source: ev.source.to_string(),
            route: route.map(str::to_string),
            project: ev.project.clone(),
            environment: ev.environment.clone(),
            sha: ev.sha.clone(),
            git_ref: ev.git_ref.clone(),
            ref_source: ev.ref_source.to_string(),
            tag: ev.tag,
            status: ev.status,
            tier: ev.tier,
            external_url: ev.external_url.clone(),
            delivery_id: ev.delivery_id.clone(),
            sha_hint: ev.sha_hint.clone(),
            short_sha: ev.short_sha,
            occurred_at: ev.occurred_at,
            received_at,
            reason,
            group,
            dedup,
        }
    }

    /// The event to apply. `None` for a source this build does not know (a spool written by
    /// another version).
    pub fn event(&self) -> Option<DeploymentEvent> {
        let source = crate::sources::find(&self.source)?.name();
        Some(DeploymentEvent {
            source,
            project: self.project.clone(),
            environment: self.environment.clone(),
            sha: self.sha.clone(),
            git_ref: self.git_ref.clone(),
            ref_source: crate::event::ref_source_name(&self.ref_source),
            tag: self.tag,
            status: self.status,
            tier: self.tier,
            external_url: self.external_url.clone(),
            delivery_id: self.delivery_id.clone(),
            sha_hint: self.sha_hint.clone(),
            occurred_at: self.occurred_at,
            ordered: true,
            short_sha: self.short_sha,
            environment_by_bridge: false,
        })
    }
}

fn hash(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    hex::encode(h.finalize())
}

/// `serve`'s spool, and the worker to wake when an event arrives.
pub type LocalHandle = (Arc<local::LocalSpool>, Arc<tokio::sync::Notify>);

/// What an enqueue did: the spool's id of the event, and whether it was already there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub id: String,
    pub duplicate: bool,
}

/// Where spooled events are kept.
#[derive(Clone)]
pub enum Spool {
    /// `serve`: a redb file, and the worker to wake when an event arrives.
    Local(Arc<local::LocalSpool>, Arc<tokio::sync::Notify>),
    /// Lambda: the SQS FIFO queue (and its dead-letter queue).
    Sqs(Arc<sqs::SqsSpool>),
}

impl Spool {
    pub fn kind(&self) -> &'static str {
        match self {
            Spool::Local(..) => "local",
            Spool::Sqs(_) => "sqs",
        }
    }

    /// Durable when this returns `Ok`.
    pub async fn enqueue(&self, item: &Spooled) -> Result<Receipt, SpoolError> {
        match self {
            Spool::Local(spool, wake) => {
                let (spool, item) = (spool.clone(), item.clone());
                let payload = serde_json::to_value(&item).map_err(|e| SpoolError(e.to_string()))?;
                let enqueued =
                    tokio::task::spawn_blocking(move || spool.enqueue(&item.group, &item.dedup, payload, now_ms()))
                        .await
                        .map_err(|e| SpoolError(e.to_string()))??;
                wake.notify_one();
                Ok(match enqueued {
                    local::Enqueued::New(id) => Receipt { id: id.to_string(), duplicate: false },
                    local::Enqueued::Duplicate(id) => Receipt { id: id.to_string(), duplicate: true },
                })
            }
            Spool::Sqs(queue) => queue.enqueue(item).await,
        }
    }

    /// Whether events of `group` are waiting (a new one must then queue behind them). The SQS
    /// queue cannot be asked about one group: any event waiting in it counts.
    pub async fn pending(&self, group: &str) -> Result<bool, SpoolError> {
        match self {
            Spool::Local(spool, _) => {
                let (spool, group) = (spool.clone(), group.to_string());
                tokio::task::spawn_blocking(move || spool.has_pending(&group))
                    .await
                    .map_err(|e| SpoolError(e.to_string()))?
            }
            Spool::Sqs(queue) => queue.pending().await,
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The wait before the next attempt after `attempts` failed ones: 1 s doubling up to `max`,
/// with jitter (between half and all of it), so that a recovering GitLab is not met by every
/// waiting event at once.
pub fn backoff(attempts: u32, max: Duration) -> Duration {
    let full = Duration::from_secs(1).saturating_mul(1u32 << attempts.min(20)).min(max);
    let half = full / 2;
    half + Duration::from_millis(fastrand::u64(..=half.as_millis() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let max = Duration::from_secs(300);
        for attempts in 0..40 {
            let d = backoff(attempts, max);
            let full = Duration::from_secs(1u64 << attempts.min(20)).min(max);
            assert!(d >= full / 2 && d <= full, "{attempts}: {d:?}");
        }
    }
}
