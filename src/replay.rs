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
//!   through, and so does one that was ignored — for the source's window (a day where it has
//!   none), at most 10,000 per route (the oldest forgotten first: one route's traffic never
//!   flushes another's). What the unsigned parts of the call chose (the query's project,
//!   environment, ref) is part of the delivery's identity, so a copy aimed elsewhere never
//!   makes the real one "already handled".
//!
//! Both answer 200 with `"action": "ignored"` and the reason: a 4xx would make the tool retry.
//! Another container has its own memory, so a copy sent to two containers at once can be
//! handled twice; the lifecycle then answers the second `unchanged`.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::model::format_time;
use crate::sources::{Reading, Spec};

/// Handled deliveries remembered per partition (one route, or one source's unbound hook); the
/// oldest is forgotten first.
const MEMORY_LIMIT: usize = 10_000;
const DEFAULT_MEMORY: Duration = Duration::from_secs(86_400);

pub struct Replays {
    overrides: HashMap<String, u64>,
    skew: Duration,
    /// Handled deliveries, one memory per route (and per source for unbound hooks): one route's
    /// traffic can never make another's deliveries forgotten.
    handled: Mutex<HashMap<String, Memory>>,
}

/// One partition's handled deliveries: when each was handled and for how long to remember it,
/// and their order of arrival (the oldest first), so that a full memory forgets its oldest.
#[derive(Default)]
struct Memory {
    seen: HashMap<String, (Instant, Duration)>,
    order: VecDeque<(String, Instant)>,
}

impl Memory {
    fn contains(&self, key: &str) -> bool {
        self.seen.get(key).is_some_and(|(at, keep)| at.elapsed() < *keep)
    }

    fn insert(&mut self, key: String, keep: Duration) {
        let now = Instant::now();
        while self.seen.len() >= MEMORY_LIMIT {
            let Some((oldest, at)) = self.order.pop_front() else { break };
            // A key handled again since has a newer entry in `order`: keep it.
            if self.seen.get(&oldest).is_some_and(|(a, _)| *a == at) {
                self.seen.remove(&oldest);
            }
        }
        self.order.push_back((key.clone(), now));
        self.seen.insert(key, (now, keep));
        // `order` keeps one entry per insertion; bounded at twice the memory.
        if self.order.len() > 2 * MEMORY_LIMIT {
            let seen = &self.seen;
            self.order.retain(|(k, at)| seen.get(k).is_some_and(|(a, _)| a == at));
        }
    }
}

/// A delivery that may go on, and where to remember it once handled.
pub struct Admitted {
    key: Option<(String, String, Duration)>,
}

impl Replays {
    /// `overrides`: `REPLAY_WINDOWS`; `skew`: how far in the future a signed time may be.
    pub fn new(overrides: HashMap<String, u64>, skew: Duration) -> Self {
        Replays { overrides, skew, handled: Mutex::default() }
    }

    /// Whether a verified delivery, read as `reading`, may change anything; `Err` says why not.
    /// `partition`: the route it came on (`None`: an unbound hook); `unsigned`: what the unsigned
    /// parts of the call (the query, the facade's path) chose — part of what identifies the
    /// delivery, so that a copy aimed elsewhere is another delivery and never makes the real one
    /// "already handled".
    pub fn admit(
        &self,
        spec: &Spec,
        partition: Option<&str>,
        reading: &Reading,
        unsigned: &str,
    ) -> Result<Admitted, String> {
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
        let partition = match partition {
            Some(route) => format!("route:{route}"),
            None => format!("unbound:{}", spec.name),
        };
        let key = reading.delivery_key.as_ref().map(|k| {
            (
                partition,
                format!("{}:{k}:{}", spec.name, crate::sources::body_hash(unsigned.as_bytes())),
                window.unwrap_or(DEFAULT_MEMORY),
            )
        });
        if let Some((partition, k, _)) = &key {
            let seen = self.handled.lock().ok().is_some_and(|m| m.get(partition).is_some_and(|m| m.contains(k)));
            if seen {
                return Err("this delivery was already handled here; a redelivery or a replay changes nothing".into());
            }
        }
        Ok(Admitted { key })
    }

    /// Remembers a delivery that was handled (applied or spooled; what was ignored is not
    /// remembered: ignoring it again costs nothing, and a copy sent with an unsigned header
    /// that made it "ignored" must not burn the real delivery).
    pub fn handled(&self, admitted: Admitted) {
        let Some((partition, key, keep)) = admitted.key else { return };
        if let Ok(mut m) = self.handled.lock() {
            m.entry(partition).or_default().insert(key, keep);
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
        assert!(replays.admit(flux, None, &reading(Some(now - time::Duration::minutes(5)), None), "").is_ok());
        let old = replays.admit(flux, None, &reading(Some(now - time::Duration::minutes(11)), None), "").err().unwrap();
        assert!(old.contains("flux replay window (600 s)"), "{old}");
        assert!(replays.admit(flux, None, &reading(Some(now + time::Duration::minutes(2)), None), "").is_err());
        let off = Replays::new([("flux".to_string(), 0)].into_iter().collect(), Duration::from_secs(30));
        let ancient = reading(Some(now - time::Duration::days(9)), None);
        assert!(off.admit(flux, None, &ancient, "").is_ok(), "0 turns it off");
    }

    #[test]
    fn a_delivery_is_refused_only_once_it_was_handled() {
        let netlify = sources::find("netlify").unwrap().spec();
        let replays = Replays::new(HashMap::new(), Duration::from_secs(30));
        let admit = |key: &str| replays.admit(netlify, Some("r"), &reading(None, Some(key)), "");
        let first = admit("k").unwrap();
        assert!(admit("k").is_ok(), "not handled yet: a retry goes through");
        replays.handled(first);
        assert!(admit("k").is_err());
        assert!(admit("other").is_ok());
        // Aimed elsewhere by the unsigned query, or on another route: another delivery.
        assert!(replays.admit(netlify, Some("r"), &reading(None, Some("k")), "environment=preview/x").is_ok());
        assert!(replays.admit(netlify, Some("r2"), &reading(None, Some("k")), "").is_ok());
    }

    /// Issue 21: 10,050 handled deliveries on one route cleared the memory shared by all routes.
    #[test]
    fn a_full_memory_forgets_its_own_oldest_and_never_another_routes() {
        let heroku = sources::find("heroku").unwrap().spec();
        let replays = Replays::new(HashMap::new(), Duration::from_secs(30));
        let handle = |route: &str, key: &str| {
            let fresh = replays.admit(heroku, Some(route), &reading(None, Some(key)), "").unwrap();
            replays.handled(fresh);
        };
        handle("victim", "captured");
        for i in 0..MEMORY_LIMIT + 50 {
            handle("noisy", &i.to_string());
        }
        assert!(replays.admit(heroku, Some("victim"), &reading(None, Some("captured")), "").is_err());
        let noisy = |key: &str| replays.admit(heroku, Some("noisy"), &reading(None, Some(key)), "");
        assert!(noisy("0").is_ok(), "the noisy route's oldest is forgotten first");
        assert!(noisy(&(MEMORY_LIMIT + 49).to_string()).is_err(), "its newest is remembered");
    }
}
