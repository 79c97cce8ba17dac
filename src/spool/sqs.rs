//! The Lambda spool: an SQS FIFO queue (`SPOOL_QUEUE_URL`) whose message group is the event's
//! group, so each environment's events are applied in order across every instance, and whose
//! deduplication id is the delivery's; and its FIFO dead-letter queue (`SPOOL_DLQ_URL`), where
//! the function itself puts an event GitLab refused for good, or gave up on, with the reason
//! as a message attribute. The same function consumes the queue ([`crate::drain`]); the
//! operator's `spool` command reads the dead letters ([`SqsSpool::dead_letters`]).

use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName};
use std::time::Duration;

use super::item::{Receipt, SpoolError, Spooled, now_ms};

/// The message attribute holding why an event is a dead letter.
pub const REASON: &str = "reason";
/// The message attribute holding how many times delivery was tried.
pub const ATTEMPTS: &str = "attempts";

pub struct SqsSpool {
    client: aws_sdk_sqs::Client,
    queue_url: String,
    dlq_url: Option<String>,
    /// The most messages the queue may hold before events are refused (`SPOOL_MAX_ENTRIES`).
    max_entries: u64,
}

/// A dead letter as the operator's command sees it.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    pub group: Option<String>,
    pub reason: Option<String>,
    pub attempts: Option<String>,
    pub sent_ms: Option<u64>,
}

fn sqs_error(what: &str, e: impl std::fmt::Display) -> SpoolError {
    SpoolError::other(format!("SQS {what}: {e}"))
}

impl SqsSpool {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: String, dlq_url: Option<String>, max_entries: u64) -> SqsSpool {
        SqsSpool { client, queue_url, dlq_url, max_entries }
    }

    /// Sends the event to the queue, in its group, deduplicated by its delivery. SQS answers a
    /// copy within its five-minute window as it answers the first, and delivers one.
    pub async fn enqueue(&self, item: &Spooled) -> Result<Receipt, SpoolError> {
        let body = serde_json::to_string(item).map_err(|e| SpoolError::other(e.to_string()))?;
        let sent = self
            .client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .message_group_id(&item.group)
            .message_deduplication_id(&item.dedup)
            .send()
            .await
            .map_err(|e| sqs_error("SendMessage", aws_sdk_sqs::error::DisplayErrorContext(e)))?;
        Ok(Receipt { id: sent.message_id().unwrap_or_default().to_string(), duplicate: false })
    }

    /// Whether any event waits in the queue, received or not (one group cannot be asked about);
    /// a queue holding `SPOOL_MAX_ENTRIES` is full.
    pub async fn pending(&self) -> Result<bool, SpoolError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(|e| sqs_error("GetQueueAttributes", aws_sdk_sqs::error::DisplayErrorContext(e)))?;
        let count = |name: QueueAttributeName| -> u64 {
            out.attributes().and_then(|a| a.get(&name)).and_then(|v| v.parse().ok()).unwrap_or(0)
        };
        let waiting = count(QueueAttributeName::ApproximateNumberOfMessages)
            + count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible);
        if waiting >= self.max_entries {
            return Err(SpoolError::Full(format!(
                "the queue holds about {waiting} events (SPOOL_MAX_ENTRIES={}); nothing more is taken until GitLab has taken some",
                self.max_entries
            )));
        }
        Ok(waiting > 0)
    }

    /// Puts a message's body in the dead-letter queue with `reason`. Without a dead-letter
    /// queue configured this fails, and the message stays where it is.
    pub async fn dead_letter(
        &self,
        body: &str,
        group: &str,
        dedup: &str,
        reason: &str,
        attempts: u32,
    ) -> Result<(), SpoolError> {
        let dlq = self
            .dlq_url
            .as_deref()
            .ok_or_else(|| SpoolError::other("SPOOL_DLQ_URL is not set: no dead-letter queue"))?;
        let text = |v: &str| MessageAttributeValue::builder().data_type("String").string_value(v).build();
        let number = |v: u32| MessageAttributeValue::builder().data_type("Number").string_value(v.to_string()).build();
        self.client
            .send_message()
            .queue_url(dlq)
            .message_body(body)
            .message_group_id(group)
            .message_deduplication_id(dedup)
            // SQS limits a message to 256 KiB in all; a reason is a line, not a dump.
            .message_attributes(
                REASON,
                text(&reason.chars().take(2000).collect::<String>()).map_err(|e| sqs_error("attribute", e))?,
            )
            .message_attributes(ATTEMPTS, number(attempts).map_err(|e| sqs_error("attribute", e))?)
            .send()
            .await
            .map_err(|e| sqs_error("SendMessage (dead-letter queue)", aws_sdk_sqs::error::DisplayErrorContext(e)))?;
        Ok(())
    }

    /// Keeps a received message out of sight for `delay`: its group waits that long (backoff).
    pub async fn postpone(&self, receipt_handle: &str, delay: Duration) -> Result<(), SpoolError> {
        // SQS allows at most 12 hours.
        let seconds = delay.as_secs().min(43_200) as i32;
        self.client
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(seconds)
            .send()
            .await
            .map_err(|e| sqs_error("ChangeMessageVisibility", aws_sdk_sqs::error::DisplayErrorContext(e)))?;
        Ok(())
    }

    fn dlq(&self) -> Result<&str, SpoolError> {
        self.dlq_url.as_deref().ok_or_else(|| SpoolError::other("set SPOOL_DLQ_URL to the dead-letter queue's URL"))
    }

    /// Every message of the dead-letter queue, each held out of sight for `hold` (the caller
    /// deletes what it replays or drops, and [`Self::release`]s the rest).
    pub async fn dead_letters(&self, hold: Duration) -> Result<Vec<DeadLetter>, SpoolError> {
        let dlq = self.dlq()?.to_string();
        let mut out: Vec<DeadLetter> = Vec::new();
        loop {
            let got = self
                .client
                .receive_message()
                .queue_url(&dlq)
                .max_number_of_messages(10)
                .visibility_timeout(hold.as_secs() as i32)
                .wait_time_seconds(1)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .message_attribute_names("All")
                .send()
                .await
                .map_err(|e| {
                    sqs_error("ReceiveMessage (dead-letter queue)", aws_sdk_sqs::error::DisplayErrorContext(e))
                })?;
            let messages = got.messages();
            if messages.is_empty() {
                break;
            }
            for m in messages {
                let system = |name: MessageSystemAttributeName| m.attributes().and_then(|a| a.get(&name)).cloned();
                let attribute = |name: &str| {
                    m.message_attributes().and_then(|a| a.get(name)).and_then(|v| v.string_value()).map(str::to_string)
                };
                let id = m.message_id().unwrap_or_default().to_string();
                if out.iter().any(|d| d.message_id == id) {
                    continue;
                }
                out.push(DeadLetter {
                    message_id: id,
                    receipt_handle: m.receipt_handle().unwrap_or_default().to_string(),
                    body: m.body().unwrap_or_default().to_string(),
                    group: system(MessageSystemAttributeName::MessageGroupId),
                    reason: attribute(REASON),
                    attempts: attribute(ATTEMPTS)
                        .or_else(|| system(MessageSystemAttributeName::ApproximateReceiveCount)),
                    sent_ms: system(MessageSystemAttributeName::SentTimestamp).and_then(|v| v.parse().ok()),
                });
            }
        }
        Ok(out)
    }

    /// Makes held dead letters visible again.
    pub async fn release(&self, letters: &[DeadLetter]) -> Result<(), SpoolError> {
        let dlq = self.dlq()?;
        for letter in letters {
            self.client
                .change_message_visibility()
                .queue_url(dlq)
                .receipt_handle(&letter.receipt_handle)
                .visibility_timeout(0)
                .send()
                .await
                .map_err(|e| {
                    sqs_error("ChangeMessageVisibility (dead-letter queue)", aws_sdk_sqs::error::DisplayErrorContext(e))
                })?;
        }
        Ok(())
    }

    /// Deletes a held dead letter for good.
    pub async fn delete_dead(&self, letter: &DeadLetter) -> Result<(), SpoolError> {
        self.client
            .delete_message()
            .queue_url(self.dlq()?)
            .receipt_handle(&letter.receipt_handle)
            .send()
            .await
            .map_err(|e| sqs_error("DeleteMessage (dead-letter queue)", aws_sdk_sqs::error::DisplayErrorContext(e)))?;
        Ok(())
    }

    /// Sends a dead letter's event back to the queue, behind its group's waiting events; the
    /// deduplication id is new, so SQS does not take it for the copy it saw before.
    pub async fn requeue(&self, letter: &DeadLetter) -> Result<(), SpoolError> {
        let group = letter.group.clone().unwrap_or_else(|| "replayed".into());
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(&letter.body)
            .message_group_id(group)
            .message_deduplication_id(format!("replay-{}-{}", letter.message_id, now_ms()))
            .send()
            .await
            .map_err(|e| sqs_error("SendMessage", aws_sdk_sqs::error::DisplayErrorContext(e)))?;
        Ok(())
    }
}
