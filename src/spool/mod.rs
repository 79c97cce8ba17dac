//! The spool: where a verified event waits when GitLab cannot take it now, so that a tool's
//! 2xx always means "durable — in GitLab, or here" (issue 11). Two stores behind one face:
//! SQS FIFO under Lambda ([`sqs`]), an embedded redb database under `serve` ([`local`]).
//!
//! What is kept is the normalized event ([`Spooled`]) with its original times — never the tool's
//! body or credential. Events of one group (one environment of one project) are delivered one
//! at a time, in the order they were spooled; a tool's retry of the same delivery within five
//! minutes is one event (SQS FIFO's deduplication window, kept the same locally). Delivering
//! spooled events is [`crate::drain`]'s.

pub mod claims;
mod item;
pub mod local;
pub mod sqs;

use std::sync::Arc;
use std::time::Duration;

pub use item::{DEDUP_WINDOW, Receipt, SpoolError, Spooled, now_ms};

/// `serve`'s spool, and the worker to wake when an event arrives.
pub type LocalHandle = (Arc<local::LocalSpool>, Arc<tokio::sync::Notify>);

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
                let payload = serde_json::to_value(&item).map_err(|e| SpoolError::other(e.to_string()))?;
                let enqueued =
                    tokio::task::spawn_blocking(move || spool.enqueue(&item.group, &item.dedup, payload, now_ms()))
                        .await
                        .map_err(|e| SpoolError::other(e.to_string()))??;
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
                    .map_err(|e| SpoolError::other(e.to_string()))?
            }
            Spool::Sqs(queue) => queue.pending().await,
        }
    }
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
