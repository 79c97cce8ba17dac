//! The local spool of `serve`: events that could not be delivered to GitLab yet, kept on
//! local disk until they are, in order per group (project + environment), with a dead letter
//! for those that failed for good.
//!
//! Stored with redb (pure Rust, ACID; every commit is fsync'ed before it returns —
//! `Durability::Immediate`, the default), so an event the spool accepted survives `kill -9`
//! and a power cut. Opened multi-writer, so the operator's `spool` command works beside a
//! running `serve`; the spool is small (an outage's worth of deployments), so the head of each group
//! is found by a scan in id order.

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// id → entry (JSON).
const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");
/// deduplication key → id, for as long as the entry is kept.
const DEDUP: TableDefinition<&str, u64> = TableDefinition::new("dedup");
/// `next_id` → the next id to give.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

use super::item::{DEDUP_WINDOW, SpoolError};

/// What [`LocalSpool::enqueue`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Enqueued {
    New(u64),
    /// The same delivery is already spooled (a tool's retry): nothing was added.
    Duplicate(u64),
}

/// One spooled event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub id: u64,
    /// Events of one group are delivered one at a time, in id order (project + environment).
    pub group: String,
    /// What identifies the delivery (the tool's delivery id, or the body's hash).
    pub dedup: String,
    /// The event, as the pipeline serialized it.
    pub payload: serde_json::Value,
    pub attempts: u32,
    /// Unix milliseconds before which the entry is not tried again.
    pub not_before_ms: u64,
    pub enqueued_ms: u64,
    pub last_error: Option<String>,
    /// Failed for good: kept with its reason until replayed or dropped; its group moves on.
    pub dead: bool,
}

pub struct LocalSpool {
    db: redb::Database,
    /// Held by the one process that delivers from this spool (see [`LocalSpool::open_for_worker`]).
    _worker_lock: Option<std::fs::File>,
}

impl LocalSpool {
    /// Opens (or creates) the spool in `dir` (`spool.redb`).
    pub fn open(dir: &Path) -> Result<LocalSpool, SpoolError> {
        std::fs::create_dir_all(dir).map_err(|e| SpoolError(format!("{}: {e}", dir.display())))?;
        // Multi-writer: `gitlab-deploy-bridge spool ...` may list, replay and drop while
        // `serve` runs (redb lets one write transaction run at a time across processes).
        let db = redb::Builder::new()
            .set_concurrency_mode(redb::ConcurrencyMode::MultiWriter)
            .create(dir.join("spool.redb"))?;
        let tx = db.begin_write()?;
        tx.open_table(ENTRIES)?;
        tx.open_table(DEDUP)?;
        tx.open_table(META)?;
        tx.commit()?;
        Ok(LocalSpool { db, _worker_lock: None })
    }

    /// Opens the spool for the process that delivers from it: a second one on the same
    /// directory would deliver the same events twice, so it is refused (an exclusive lock on
    /// `worker.lock`, released when the process ends, however it ends).
    pub fn open_for_worker(dir: &Path) -> Result<LocalSpool, SpoolError> {
        std::fs::create_dir_all(dir).map_err(|e| SpoolError(format!("{}: {e}", dir.display())))?;
        let path = dir.join("worker.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| SpoolError(format!("{}: {e}", path.display())))?;
        lock.try_lock().map_err(|_| SpoolError(format!("another `serve` delivers from {}", dir.display())))?;
        Ok(LocalSpool { _worker_lock: Some(lock), ..LocalSpool::open(dir)? })
    }

    /// Adds an event at the end of its group, unless a copy of the same delivery was spooled
    /// less than [`DEDUP_WINDOW`] ago. Durable when this returns `Ok`.
    pub fn enqueue(
        &self,
        group: &str,
        dedup: &str,
        payload: serde_json::Value,
        now_ms: u64,
    ) -> Result<Enqueued, SpoolError> {
        let tx = self.db.begin_write()?;
        let result = {
            let mut dedups = tx.open_table(DEDUP)?;
            let earlier = dedups.get(dedup)?.map(|v| v.value());
            let entries = tx.open_table(ENTRIES)?;
            let copy = match earlier {
                Some(id) => entries.get(id)?.map(|v| decode(v.value())).transpose()?,
                None => None,
            };
            drop(entries);
            if let Some(copy) = copy.filter(|c| now_ms.saturating_sub(c.enqueued_ms) < DEDUP_WINDOW.as_millis() as u64)
            {
                Enqueued::Duplicate(copy.id)
            } else {
                let mut meta = tx.open_table(META)?;
                let id = meta.get("next_id")?.map(|v| v.value()).unwrap_or(1);
                meta.insert("next_id", id + 1)?;
                let entry = Entry {
                    id,
                    group: group.to_string(),
                    dedup: dedup.to_string(),
                    payload,
                    attempts: 0,
                    not_before_ms: 0,
                    enqueued_ms: now_ms,
                    last_error: None,
                    dead: false,
                };
                tx.open_table(ENTRIES)?.insert(id, encode(&entry)?.as_slice())?;
                dedups.insert(dedup, id)?;
                Enqueued::New(id)
            }
        };
        tx.commit()?;
        Ok(result)
    }

    /// Every entry, in id order (dead ones included).
    pub fn list(&self) -> Result<Vec<Entry>, SpoolError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(ENTRIES)?;
        let mut out = Vec::new();
        for item in table.iter()? {
            let (_, v) = item?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    /// Whether `group` has an entry still to deliver (a new event of the group must then queue
    /// behind it, so that order holds).
    pub fn has_pending(&self, group: &str) -> Result<bool, SpoolError> {
        Ok(self.list()?.iter().any(|e| !e.dead && e.group == group))
    }

    /// The head of each group: its oldest live entry.
    fn heads(&self) -> Result<Vec<Entry>, SpoolError> {
        let mut seen = std::collections::HashSet::new();
        Ok(self.list()?.into_iter().filter(|e| !e.dead && seen.insert(e.group.clone())).collect())
    }

    /// The head of each group that may be tried at `now_ms`.
    pub fn due(&self, now_ms: u64) -> Result<Vec<Entry>, SpoolError> {
        Ok(self.heads()?.into_iter().filter(|e| e.not_before_ms <= now_ms).collect())
    }

    /// When the earliest head of a group will be due (`None`: nothing to deliver).
    pub fn next_due(&self) -> Result<Option<u64>, SpoolError> {
        Ok(self.heads()?.iter().map(|e| e.not_before_ms).min())
    }

    /// Delivered: forget it.
    pub fn ack(&self, id: u64) -> Result<(), SpoolError> {
        self.remove(id)
    }

    /// Not delivered this time: try again at `not_before_ms`.
    pub fn retry_later(&self, id: u64, error: &str, not_before_ms: u64) -> Result<(), SpoolError> {
        self.update(id, |e| {
            e.attempts += 1;
            e.last_error = Some(error.to_string());
            e.not_before_ms = not_before_ms;
        })
    }

    /// Failed for good: kept with `reason`; its group moves on.
    pub fn dead_letter(&self, id: u64, reason: &str) -> Result<(), SpoolError> {
        self.update(id, |e| {
            e.attempts += 1;
            e.last_error = Some(reason.to_string());
            e.dead = true;
        })
    }

    /// A dead-lettered entry goes back to its group's queue, to be tried at once. `false` if
    /// there is no such entry.
    pub fn replay(&self, id: u64) -> Result<bool, SpoolError> {
        match self.get(id)? {
            Some(_) => self
                .update(id, |e| {
                    e.dead = false;
                    e.not_before_ms = 0;
                })
                .map(|_| true),
            None => Ok(false),
        }
    }

    /// Removes an entry for good. `false` if there is no such entry.
    pub fn drop_entry(&self, id: u64) -> Result<bool, SpoolError> {
        let found = self.get(id)?.is_some();
        if found {
            self.remove(id)?;
        }
        Ok(found)
    }

    fn get(&self, id: u64) -> Result<Option<Entry>, SpoolError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(ENTRIES)?;
        let value = table.get(id)?;
        value.map(|v| decode(v.value())).transpose()
    }

    fn update(&self, id: u64, change: impl FnOnce(&mut Entry)) -> Result<(), SpoolError> {
        let tx = self.db.begin_write()?;
        {
            let mut table = tx.open_table(ENTRIES)?;
            let current = table.get(id)?.map(|v| decode(v.value())).transpose()?;
            let mut entry = current.ok_or_else(|| SpoolError(format!("no entry {id}")))?;
            change(&mut entry);
            table.insert(id, encode(&entry)?.as_slice())?;
        }
        tx.commit()?;
        Ok(())
    }

    fn remove(&self, id: u64) -> Result<(), SpoolError> {
        let tx = self.db.begin_write()?;
        {
            let mut table = tx.open_table(ENTRIES)?;
            let removed = table.remove(id)?.map(|v| decode(v.value())).transpose()?;
            if let Some(entry) = removed {
                let mut dedups = tx.open_table(DEDUP)?;
                if dedups.get(entry.dedup.as_str())?.map(|v| v.value()) == Some(id) {
                    dedups.remove(entry.dedup.as_str())?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }
}

fn encode(entry: &Entry) -> Result<Vec<u8>, SpoolError> {
    serde_json::to_vec(entry).map_err(|e| SpoolError(format!("an entry cannot be written: {e}")))
}

fn decode(bytes: &[u8]) -> Result<Entry, SpoolError> {
    serde_json::from_slice(bytes).map_err(|e| SpoolError(format!("an entry cannot be read: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spool() -> (LocalSpool, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("spool-test-{}", fastrand::u64(..)));
        (LocalSpool::open(&dir).unwrap(), dir)
    }

    #[test]
    fn groups_are_delivered_in_order_one_head_at_a_time() {
        let (s, dir) = spool();
        assert_eq!(s.enqueue("42/production", "d1", json!({"n": 1}), 10).unwrap(), Enqueued::New(1));
        assert_eq!(s.enqueue("42/production", "d2", json!({"n": 2}), 11).unwrap(), Enqueued::New(2));
        assert_eq!(s.enqueue("42/staging", "d3", json!({"n": 3}), 12).unwrap(), Enqueued::New(3));
        assert_eq!(
            s.enqueue("42/production", "d1", json!({"n": 1}), 13).unwrap(),
            Enqueued::Duplicate(1),
            "a tool's retry"
        );
        let later = 10 + super::DEDUP_WINDOW.as_millis() as u64;
        assert_eq!(
            s.enqueue("42/production", "d1", json!({"n": 1}), later).unwrap(),
            Enqueued::New(4),
            "the same body much later is a new event"
        );
        s.ack(4).unwrap();
        let heads: Vec<u64> = s.due(100).unwrap().iter().map(|e| e.id).collect();
        assert_eq!(heads, vec![1, 3]);
        // A head waiting for its retry time holds its group back (order), not the others.
        s.retry_later(1, "GitLab answered 503", 1_000).unwrap();
        assert_eq!(s.due(100).unwrap().iter().map(|e| e.id).collect::<Vec<_>>(), vec![3]);
        assert!(s.has_pending("42/production").unwrap());
        s.ack(3).unwrap();
        assert!(!s.has_pending("42/staging").unwrap());
        let head = &s.due(1_000).unwrap()[0];
        assert_eq!((head.id, head.attempts, head.last_error.as_deref()), (1, 1, Some("GitLab answered 503")));
        s.ack(1).unwrap();
        assert_eq!(s.due(1_000).unwrap().iter().map(|e| e.id).collect::<Vec<_>>(), vec![2]);
        // Acknowledged, a delivery may be spooled again (a later, real redelivery).
        assert_eq!(s.enqueue("42/production", "d1", json!({"n": 1}), 14).unwrap(), Enqueued::New(5));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_dead_letter_lets_its_group_move_on_and_can_be_replayed_or_dropped() {
        let (s, dir) = spool();
        s.enqueue("g", "a", json!(1), 0).unwrap();
        s.enqueue("g", "b", json!(2), 0).unwrap();
        s.dead_letter(1, "GitLab answered 422: the commit does not exist").unwrap();
        assert_eq!(s.due(0).unwrap().iter().map(|e| e.id).collect::<Vec<_>>(), vec![2]);
        let dead: Vec<Entry> = s.list().unwrap().into_iter().filter(|e| e.dead).collect();
        assert_eq!(
            (dead.len(), dead[0].last_error.as_deref()),
            (1, Some("GitLab answered 422: the commit does not exist"))
        );
        assert!(s.replay(1).unwrap());
        assert_eq!(s.due(0).unwrap()[0].id, 1, "replayed, it is its group's head again");
        assert!(s.drop_entry(1).unwrap() && !s.drop_entry(1).unwrap() && !s.replay(99).unwrap());
        assert_eq!(s.list().unwrap().len(), 1);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn what_was_accepted_survives_reopening() {
        let (s, dir) = spool();
        s.enqueue("g", "a", json!({"sha": "x"}), 5).unwrap();
        s.retry_later(1, "down", 9).unwrap();
        drop(s);
        let s = LocalSpool::open(&dir).unwrap();
        let all = s.list().unwrap();
        assert_eq!((all.len(), all[0].attempts, all[0].payload["sha"].as_str()), (1, 1, Some("x")));
        assert_eq!(s.enqueue("g", "b", json!(2), 6).unwrap(), Enqueued::New(2), "ids go on after a restart");
        let _ = std::fs::remove_dir_all(dir);
    }
}
