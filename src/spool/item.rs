//! What the spool keeps: one [`Spooled`] event, in the format both stores write (JSON, versioned),
//! and what an enqueue answers.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::time::Duration;
use time::OffsetDateTime;

use crate::event::Event;
use crate::model::format_time;

/// How long two copies of one delivery count as one (SQS FIFO's deduplication interval).
pub const DEDUP_WINDOW: Duration = Duration::from_secs(300);

/// Why the spool could not do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SpoolError {
    /// It cannot be used now (an I/O error such as a full disk, SQS unreachable); the local
    /// spool opens its file again before its next use.
    #[error("the spool cannot be used: {0}")]
    Unavailable(String),
    /// It is at its bounds (`SPOOL_MAX_ENTRIES`, `SPOOL_MAX_BYTES`): nothing more is taken
    /// until events are delivered.
    #[error("the spool is full: {0}")]
    Full(String),
}

impl SpoolError {
    pub fn other(message: impl Into<String>) -> SpoolError {
        SpoolError::Unavailable(message.into())
    }
}

impl<E: Into<redb::Error>> From<E> for SpoolError {
    fn from(e: E) -> Self {
        SpoolError::Unavailable(e.into().to_string())
    }
}

/// A spooled event: the normalized [`Event`] itself, as the pipeline built it at receipt (its
/// serialization is the spool's format: a new field of the event needs nothing here), when it
/// was received, why it was spooled, and the keys that order and deduplicate it. Versioned: an
/// entry an older bridge wrote (`v: 1`, the event's fields flat) still drains.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Spooled {
    /// Format version ([`Spooled::VERSION`]).
    pub v: u32,
    /// The route the call came on (none: an unbound hook).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// When the bridge received and verified it (freshness was judged then).
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    /// Why it went to the spool rather than to GitLab.
    pub reason: String,
    /// Events of one group are applied in order (one environment of one project).
    pub group: String,
    /// One delivery, whatever the number of copies the tool sent.
    pub dedup: String,
    pub event: Event,
    /// A create of the event's environment that may still be committing in GitLab when the
    /// event was spooled: whoever delivers it honours it ([`super::claims`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<super::claims::Carried>,
}

impl Spooled {
    /// The format this build writes.
    pub const VERSION: u32 = 2;

    /// `delivery`: what identifies the delivery (the tool's delivery key, or its body's hash).
    pub fn new(
        ev: &Event,
        route: Option<&str>,
        delivery: &str,
        received_at: OffsetDateTime,
        reason: String,
    ) -> Spooled {
        let (project, environment) = (ev.project.as_str(), ev.environment.as_str());
        let group = hash(&[&project.to_ascii_lowercase(), environment])[..40].to_string();
        let dedup = hash(&[&ev.source, route.unwrap_or(""), project, environment, delivery]);
        Spooled {
            v: Self::VERSION,
            route: route.map(str::to_string),
            received_at,
            reason,
            group,
            dedup,
            event: ev.clone(),
            claim: None,
        }
    }

    /// Reads an entry of any version this build knows.
    pub fn decode(value: serde_json::Value) -> Result<Spooled, String> {
        match value.get("v").and_then(serde_json::Value::as_u64) {
            Some(1) => serde_json::from_value::<v1::Spooled>(value).map_err(|e| e.to_string())?.upgrade(),
            Some(2) => serde_json::from_value(value).map_err(|e| e.to_string()),
            Some(v) => Err(format!(
                "it was written by a newer bridge (format {v}; this one reads up to {}): replay it with that version",
                Self::VERSION
            )),
            None => Err("it has no format version (`v`)".into()),
        }
    }

    /// [`Self::decode`] from JSON text (an SQS message body).
    pub fn decode_str(text: &str) -> Result<Spooled, String> {
        Self::decode(serde_json::from_str(text).map_err(|e| e.to_string())?)
    }

    /// The event to apply: delivered in its group's order, so judged by the tool's times only.
    pub fn event(&self) -> Event {
        Event { ordered: true, ..self.event.clone() }
    }

    /// What an operator needs to recognise it (`spool list`).
    pub fn summary(&self) -> serde_json::Value {
        let ev = &self.event;
        serde_json::json!({
            "source": ev.source,
            "route": self.route,
            "project": ev.project,
            "environment": ev.environment,
            "sha": ev.sha(),
            "status": ev.verb(),
            "occurred_at": ev.occurred_at.map(format_time),
            "received_at": format_time(self.received_at),
            "spooled_because": self.reason,
        })
    }
}

/// The first format (issue 11): the event's fields flat beside the spool's.
mod v1 {
    use serde::Deserialize;
    use time::OffsetDateTime;

    use crate::event::{Change, CommitSha, Deploy, EnvironmentName, Event, ProjectRef, RefSource};
    use crate::model::{Status, Tier};

    #[derive(Deserialize)]
    pub struct Spooled {
        source: String,
        route: Option<String>,
        project: String,
        environment: String,
        sha: String,
        #[serde(rename = "ref")]
        git_ref: String,
        ref_source: String,
        tag: bool,
        status: Status,
        #[serde(default)]
        tier: Option<Tier>,
        #[serde(default)]
        external_url: Option<String>,
        #[serde(default)]
        delivery_id: Option<String>,
        #[serde(default)]
        sha_hint: Option<String>,
        #[serde(default, with = "time::serde::rfc3339::option")]
        occurred_at: Option<OffsetDateTime>,
        #[serde(with = "time::serde::rfc3339")]
        received_at: OffsetDateTime,
        reason: String,
        group: String,
        dedup: String,
    }

    impl Spooled {
        pub fn upgrade(self) -> Result<super::Spooled, String> {
            let ref_source: RefSource =
                serde_json::from_value(serde_json::Value::String(self.ref_source)).unwrap_or(RefSource::Default);
            let event = Event {
                source: self.source,
                project: ProjectRef::parse(&self.project).map_err(|e| e.to_string())?,
                environment: EnvironmentName::parse(&self.environment).map_err(|e| e.to_string())?,
                environment_by_bridge: false,
                change: Change::Deployment(Deploy {
                    sha: CommitSha::full_or_abbreviated(&self.sha)
                        .ok_or_else(|| format!("{:?} is not a commit sha", self.sha))?,
                    git_ref: self.git_ref,
                    ref_source,
                    tag: self.tag,
                    status: self.status,
                    tier: self.tier,
                    external_url: self.external_url,
                    sha_hint: self.sha_hint,
                }),
                delivery_id: self.delivery_id,
                occurred_at: self.occurred_at,
                ordered: false,
            };
            Ok(super::Spooled {
                v: super::Spooled::VERSION,
                route: self.route,
                received_at: self.received_at,
                reason: self.reason,
                group: self.group,
                dedup: self.dedup,
                event,
                claim: None,
            })
        }
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

/// What an enqueue did: the spool's id of the event, and whether it was already there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub id: String,
    pub duplicate: bool,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry exactly as the bridge before issue 20 wrote it (`v: 1`): it still drains.
    const V1: &str = r#"{"v":1,"source":"heroku","route":"heroku","project":"group/app","environment":"example-api",
        "sha":"c0ffee12","ref":"main","ref_source":"environment config","tag":false,"status":"success","tier":"production",
        "delivery_id":"d-1","short_sha":true,"occurred_at":"2026-10-02T08:02:05Z","received_at":"2026-10-02T08:02:06Z",
        "reason":"GitLab is unavailable: cannot connect","group":"0123456789012345678901234567890123456789","dedup":"ab"}"#;

    #[test]
    fn an_entry_of_the_first_format_still_drains_as_the_same_event() {
        let item = Spooled::decode_str(V1).unwrap();
        let ev = item.event();
        let d = ev.deploy().unwrap();
        assert_eq!(
            (ev.source.as_str(), ev.project.as_str(), ev.environment.as_str()),
            ("heroku", "group/app", "example-api")
        );
        assert_eq!(
            (d.sha.as_str(), d.sha.is_abbreviated(), d.status),
            ("c0ffee12", true, crate::model::Status::Success)
        );
        assert_eq!(
            (d.ref_source, d.tier),
            (crate::event::RefSource::EnvironmentConfig, Some(crate::model::Tier::Production))
        );
        assert!(ev.ordered, "a spooled event is judged by tool times only");
        assert_eq!((item.v, item.group.len(), item.route.as_deref()), (Spooled::VERSION, 40, Some("heroku")));
        // Written again, it is the current format, and reads back the same.
        let again = Spooled::decode(serde_json::to_value(&item).unwrap()).unwrap();
        assert_eq!(again, item);
    }

    #[test]
    fn an_entry_of_an_unknown_format_says_so() {
        let newer = Spooled::decode(serde_json::json!({"v": 9})).unwrap_err();
        assert!(newer.contains("newer bridge"), "{newer}");
        assert!(Spooled::decode(serde_json::json!({"event": {}})).unwrap_err().contains("version"));
    }
}
