//! Replay defence: a delivery whose signature is good can still be old, or a copy of one already
//! handled. Checked after the signature (so it only ever concerns the tool's own bytes):
//! - where the tool signs a time ([`Replay::SignedTime`](crate::sources::Replay::SignedTime), [`Reading::signed_at`]), a delivery older than the source's
//!   window, or later than `CLOCK_SKEW_SECONDS` from now, changes nothing. Each window is longer
//!   than the tool's own redelivery horizon (docs/decisions.md), so a tool's retry of a failed
//!   delivery is never refused; `REPLAY_WINDOWS` overrides them (`{"flux": 600}`; 0 turns a
//!   source's replay defence off, de-duplication included; `"*"` sets every source);
//! - where the tool identifies a delivery ([`Reading::delivery_key`]: an id, or the body's hash
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

use time::OffsetDateTime;

use crate::model::format_time;
use crate::sources::{Reading, Spec};

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
    /// `overrides`: `REPLAY_WINDOWS`; `skew`: how far in the future a signed time may be.
    pub fn new(overrides: HashMap<String, u64>, skew: Duration) -> Self {
        Replays { overrides, skew, handled: Mutex::default() }
    }

    /// Whether a verified delivery, read as `reading`, may change anything; `Err` says why not.
    pub fn admit(&self, spec: &Spec, reading: &Reading) -> Result<Admitted, String> {
        // The window of the source: configured (0: no defence at all), else the source's own.
        let window = match self.overrides.get(spec.name).or_else(|| self.overrides.get("*")) {
            Some(0) => return Ok(Admitted { key: None }),
            Some(seconds) => Some(Duration::from_secs(*seconds)),
            None => spec.replay.window(),
        };
        if let (Some(window), Some(at)) = (window, reading.signed_at) {
            let now = OffsetDateTime::now_utc();
            let age = now - at;
            if age > window {
                return Err(format!(
                    "the delivery was signed at {}, longer ago than the {} replay window ({} s); a replay changes nothing",
                    format_time(at),
                    spec.name,
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
        let key =
            reading.delivery_key.as_ref().map(|k| (format!("{}:{k}", spec.name), window.unwrap_or(DEFAULT_MEMORY)));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::{self, Read};

    fn reading(signed_at: Option<OffsetDateTime>, key: Option<&str>) -> Reading {
        Reading { signed_at, delivery_key: key.map(str::to_string), read: Read::Ignored(String::new()) }
    }

    #[test]
    fn a_signed_time_outside_the_window_or_in_the_future_is_refused() {
        let flux = sources::find("flux").unwrap().spec();
        let replays = Replays::new(HashMap::new(), Duration::from_secs(30));
        let now = OffsetDateTime::now_utc();
        assert!(replays.admit(flux, &reading(Some(now - time::Duration::minutes(5)), None)).is_ok());
        let old = replays.admit(flux, &reading(Some(now - time::Duration::minutes(11)), None)).err().unwrap();
        assert!(old.contains("flux replay window (600 s)"), "{old}");
        assert!(replays.admit(flux, &reading(Some(now + time::Duration::minutes(2)), None)).is_err());
        let off = Replays::new([("flux".to_string(), 0)].into_iter().collect(), Duration::from_secs(30));
        assert!(off.admit(flux, &reading(Some(now - time::Duration::days(9)), None)).is_ok(), "0 turns it off");
    }

    #[test]
    fn a_delivery_is_refused_only_once_it_was_handled() {
        let netlify = sources::find("netlify").unwrap().spec();
        let replays = Replays::new(HashMap::new(), Duration::from_secs(30));
        let first = replays.admit(netlify, &reading(None, Some("k"))).unwrap();
        assert!(replays.admit(netlify, &reading(None, Some("k"))).is_ok(), "not handled yet: a retry goes through");
        replays.handled(first);
        assert!(replays.admit(netlify, &reading(None, Some("k"))).is_err());
        assert!(replays.admit(netlify, &reading(None, Some("other"))).is_ok());
    }
}
