//! Replay defence: a delivery whose signature is good can still be old, or a copy of one already
//! handled. Checked after the signature (so it only ever concerns the tool's own bytes):
//! - where the tool signs a time ([`Source::signed_at`]), a delivery older than the source's
//!   window, or later than `CLOCK_SKEW_SECONDS` from now, changes nothing. Each window is longer
//!   than the tool's own redelivery horizon (docs/decisions.md), so a tool's retry of a failed
//!   delivery is never refused; `REPLAY_WINDOWS` overrides them (`{"flux": 600}`; 0 turns a
//!   source's replay defence off, de-duplication included; `"*"` sets every source);
//! - where the tool identifies a delivery ([`Source::delivery_key`]: an id, or the body's hash
//!   where its retries are byte-identical), a delivery this container has already handled
//!   changes nothing. Only handled deliveries are remembered — a retry after a 5xx goes
//!   through — for the source's window (a day where it has none), at most 10,000 at a time.
//!
//! Both answer 200 with `"action": "ignored"` and the reason: a 4xx would make the tool retry.
//! Another container has its own memory, so a copy sent to two containers at once can be
//! handled twice; the lifecycle then answers the second `unchanged`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use time::OffsetDateTime;

use crate::config::Config;
use crate::model::format_time;
use crate::sources::Source;

const MEMORY_LIMIT: usize = 10_000;
const DEFAULT_MEMORY: Duration = Duration::from_secs(86_400);

pub struct Replays {
    overrides: HashMap<String, u64>,
    skew: Duration,
    /// Handled deliveries: when, and for how long to remember them.
    handled: Mutex<HashMap<String, (Instant, Duration)>>,
}

/// A delivery that may go on, and the key to remember it by once handled.
pub struct Admitted {
    key: Option<(String, Duration)>,
}

impl Replays {
    pub fn new(config: &Config) -> Self {
        Replays { overrides: config.replay_windows.clone(), skew: config.clock_skew, handled: Mutex::default() }
    }

    /// Whether a verified delivery may change anything; `Err` says why not.
    pub fn admit(&self, source: &dyn Source, headers: &HeaderMap, body: &[u8]) -> Result<Admitted, String> {
        // The window of `source`: configured (0: no defence at all), else the source's own.
        let window = match self.overrides.get(source.name()).or_else(|| self.overrides.get("*")) {
            Some(0) => return Ok(Admitted { key: None }),
            Some(seconds) => Some(Duration::from_secs(*seconds)),
            None => source.replay_window(),
        };
        if let (Some(window), Some(at)) = (window, source.signed_at(headers, body)) {
            let now = OffsetDateTime::now_utc();
            let age = now - at;
            if age > window {
                return Err(format!(
                    "the delivery was signed at {}, longer ago than the {} replay window ({} s); a replay changes nothing",
                    format_time(at),
                    source.name(),
                    window.as_secs()
                ));
            }
            if -age > self.skew {
                return Err(format!(
                    "the delivery is signed with a time in the future ({}); it changes nothing",
                    format_time(at)
                ));
            }
        }
        let key = source
            .delivery_key(headers, body)
            .map(|k| (format!("{}:{k}", source.name()), window.unwrap_or(DEFAULT_MEMORY)));
        if let Some((k, keep)) = &key {
            let seen = self.handled.lock().ok().and_then(|m| m.get(k).copied());
            if seen.is_some_and(|(at, _)| at.elapsed() < *keep) {
                return Err("this delivery was already handled here; a redelivery or a replay changes nothing".into());
            }
        }
        Ok(Admitted { key })
    }

    /// Remembers a delivery that was handled.
    pub fn handled(&self, admitted: Admitted) {
        let Some((key, keep)) = admitted.key else { return };
        if let Ok(mut m) = self.handled.lock() {
            if m.len() >= MEMORY_LIMIT {
                m.retain(|_, (at, keep)| at.elapsed() < *keep);
                if m.len() >= MEMORY_LIMIT {
                    m.clear();
                }
            }
            m.insert(key, (Instant::now(), keep));
        }
    }
}
