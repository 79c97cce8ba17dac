//! The local spool of `serve`: events that could not be delivered to GitLab yet, kept on
//! local disk until they are, in order per group (project + environment), with a dead letter
//! for those that failed for good.
//!
//! Stored with redb (pure Rust, ACID; every commit is fsync'ed before it returns —
//! `Durability::Immediate`, the default), so an event the spool accepted survives `kill -9`
//! and a power cut. Opened multi-writer, so the operator's `spool` command works beside a
//! running `serve`.
//!
//! What the spool must survive (issue 21):
//! - **I/O errors.** redb refuses every operation on a handle after an I/O error (a full disk:
//!   `Previous I/O error occurred`), so the handle is dropped and the file opened again before
//!   the next operation (at most once per [`REOPEN_EVERY`]): once the disk has room, the spool
//!   works again without a restart. Until then every operation fails, and the pipeline answers
//!   5xx rather than deliver an event ahead of those waiting.
//! - **An entry that cannot be read** is set aside as a dead letter, its raw bytes kept and the
//!   reason recorded; its group moves on, and `spool list`/`drop` work on it.
//! - **Size.** At most `SPOOL_MAX_ENTRIES` entries and `SPOOL_MAX_BYTES` bytes (dead letters
//!   included: they are on disk too); beyond, an enqueue is refused ([`SpoolError::Full`]).
//!   Every read a webhook or the worker makes is indexed: whether a group has events waiting
//!   is one look-up, the due heads a range, whatever the spool holds.
//!
//! Tables: `entries` (id → the entry's JSON), `queue` ((group, id) of every live entry),
//! `heads` (group → its oldest live entry and when it is due), `due` ((when, id) → group, one
//! per head), `dedup` (delivery → id), `unreadable` (id → why it could not be read), `claims`
//! (an environment's create that may still be in flight, see [`super::claims`]),
//! `meta` (the next id, counts, the schema). A spool of the first schema (entries, dedup and
//! meta only) gets its indexes built once when opened.

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::item::{DEDUP_WINDOW, SpoolError};

/// id → entry (JSON).
const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");
/// deduplication key → id, for as long as the entry is kept.
const DEDUP: TableDefinition<&str, u64> = TableDefinition::new("dedup");
/// `next_id`, `entries`, `bytes`, `schema`.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// (group, id) of every entry still to deliver, in delivery order.
const QUEUE: TableDefinition<(&str, u64), ()> = TableDefinition::new("queue");
/// group → (id, not before) of its head, the oldest entry still to deliver.
const HEADS: TableDefinition<&str, (u64, u64)> = TableDefinition::new("heads");
/// (not before, id) → group, one row per head: what is due is a range.
const DUE: TableDefinition<(u64, u64), &str> = TableDefinition::new("due");
/// id → why the entry's bytes cannot be read (the bytes stay in `entries`).
const UNREADABLE: TableDefinition<u64, &str> = TableDefinition::new("unreadable");
/// environment → a claim (JSON): a create that may still be committing in GitLab.
const CLAIMS: TableDefinition<&str, &[u8]> = TableDefinition::new("claims");

/// The schema this build writes (1: entries, dedup and meta only).
const SCHEMA: u64 = 2;

/// How often a spool whose file failed is opened again.
pub const REOPEN_EVERY: Duration = Duration::from_secs(1);

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

/// An entry as `spool list` and the worker meet it.
#[derive(Clone, Debug, PartialEq)]
pub enum Stored {
    Entry(Entry),
    /// Its bytes are not an entry: a dead letter, kept as it is until dropped.
    Unreadable {
        id: u64,
        raw: Vec<u8>,
        reason: String,
    },
}

impl Stored {
    pub fn id(&self) -> u64 {
        match self {
            Stored::Entry(e) => e.id,
            Stored::Unreadable { id, .. } => *id,
        }
    }
}

/// A head that is due: its entry, or the id and group of one that cannot be read (for
/// [`LocalSpool::set_aside`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Due {
    Entry(Entry),
    Unreadable { id: u64, group: String, reason: String },
}

/// How much the spool may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Entries, dead letters included (`SPOOL_MAX_ENTRIES`).
    pub entries: u64,
    /// Bytes of the entries as stored (`SPOOL_MAX_BYTES`).
    pub bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { entries: 10_000, bytes: 64 * 1024 * 1024 }
    }
}

/// What a `spool replay` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Replayed {
    Replayed,
    NoSuchEntry,
    /// It cannot be read: there is nothing to deliver (drop it).
    Unreadable,
}

/// The open file, and when it failed last.
struct Handle {
    db: Option<Arc<redb::Database>>,
    failed_at: Option<Instant>,
}

pub struct LocalSpool {
    path: PathBuf,
    handle: RwLock<Handle>,
    limits: Limits,
    /// Serializes the reopening.
    reopening: Mutex<()>,
    /// Held by the one process that delivers from this spool (see [`LocalSpool::open_for_worker`]).
    _worker_lock: Option<std::fs::File>,
}

/// Whether a redb error means the handle is unusable until opened again (I/O failed).
fn is_io(e: &redb::Error) -> bool {
    matches!(e, redb::Error::Io(_) | redb::Error::PreviousIo)
}

fn open_file(path: &Path) -> Result<redb::Database, SpoolError> {
    // Multi-writer: `gitlab-deploy-bridge spool ...` may list, replay and drop while `serve`
    // runs (redb lets one write transaction run at a time across processes).
    let db = redb::Builder::new()
        .set_concurrency_mode(redb::ConcurrencyMode::MultiWriter)
        .create(path)
        .map_err(|e| SpoolError::Unavailable(format!("{}: {e}", path.display())))?;
    migrate(&db)?;
    Ok(db)
}

impl LocalSpool {
    /// Opens (or creates) the spool in `dir` (`spool.redb`).
    pub fn open(dir: &Path) -> Result<LocalSpool, SpoolError> {
        std::fs::create_dir_all(dir).map_err(|e| SpoolError::Unavailable(format!("{}: {e}", dir.display())))?;
        let path = dir.join("spool.redb");
        let db = open_file(&path)?;
        Ok(LocalSpool {
            path,
            handle: RwLock::new(Handle { db: Some(Arc::new(db)), failed_at: None }),
            limits: Limits::default(),
            reopening: Mutex::new(()),
            _worker_lock: None,
        })
    }

    /// Opens the spool for the process that delivers from it: a second one on the same
    /// directory would deliver the same events twice, so it is refused (an exclusive lock on
    /// `worker.lock`, released when the process ends, however it ends).
    pub fn open_for_worker(dir: &Path) -> Result<LocalSpool, SpoolError> {
        std::fs::create_dir_all(dir).map_err(|e| SpoolError::Unavailable(format!("{}: {e}", dir.display())))?;
        let path = dir.join("worker.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| SpoolError::Unavailable(format!("{}: {e}", path.display())))?;
        lock.try_lock()
            .map_err(|_| SpoolError::Unavailable(format!("another `serve` delivers from {}", dir.display())))?;
        Ok(LocalSpool { _worker_lock: Some(lock), ..LocalSpool::open(dir)? })
    }

    /// The spool with these bounds (the defaults: [`Limits::default`]).
    pub fn with_limits(self, limits: Limits) -> LocalSpool {
        LocalSpool { limits, ..self }
    }

    /// The open database, opened again if it failed (at most once per [`REOPEN_EVERY`]).
    fn db(&self) -> Result<Arc<redb::Database>, SpoolError> {
        {
            let handle = self.handle.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(db) = &handle.db {
                return Ok(db.clone());
            }
        }
        let _one = self.reopening.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut handle = self.handle.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(db) = &handle.db {
            return Ok(db.clone());
        }
        if let Some(at) = handle.failed_at
            && at.elapsed() < REOPEN_EVERY
        {
            return Err(SpoolError::Unavailable(format!(
                "{} failed; it is opened again within a second",
                self.path.display()
            )));
        }
        match open_file(&self.path) {
            Ok(db) => {
                tracing::info!(path = %self.path.display(), "spool: opened again after an I/O error");
                let db = Arc::new(db);
                *handle = Handle { db: Some(db.clone()), failed_at: None };
                Ok(db)
            }
            Err(e) => {
                handle.failed_at = Some(Instant::now());
                Err(e)
            }
        }
    }

    /// Runs `op` on the database; an I/O error drops the handle, so that the next operation
    /// opens the file again.
    fn with<T>(&self, op: impl FnOnce(&redb::Database) -> Result<T, redb::Error>) -> Result<T, SpoolError> {
        let db = self.db()?;
        op(&db).map_err(|e| {
            if is_io(&e) {
                let mut handle = self.handle.write().unwrap_or_else(std::sync::PoisonError::into_inner);
                if handle.db.as_ref().is_some_and(|current| Arc::ptr_eq(current, &db)) {
                    tracing::error!(path = %self.path.display(), error = %e, "spool: I/O error; the spool is opened again before its next use");
                    *handle = Handle { db: None, failed_at: None };
                }
            }
            SpoolError::from(e)
        })
    }

    /// Adds an event at the end of its group, unless a copy of the same delivery was spooled
    /// less than [`DEDUP_WINDOW`] ago, or the spool is at its bounds. Durable when this returns `Ok`.
    pub fn enqueue(
        &self,
        group: &str,
        dedup: &str,
        payload: serde_json::Value,
        now_ms: u64,
    ) -> Result<Enqueued, SpoolError> {
        let limits = self.limits;
        let outcome = self.with(|db| {
            let tx = db.begin_write()?;
            let outcome = {
                let mut dedups = tx.open_table(DEDUP)?;
                let mut entries = tx.open_table(ENTRIES)?;
                let earlier = dedups.get(dedup)?.map(|v| v.value());
                let copy = match earlier {
                    Some(id) => entries.get(id)?.and_then(|v| decode(v.value()).ok()),
                    None => None,
                };
                let mut meta = tx.open_table(META)?;
                let (count, bytes) = (counter(&meta, "entries")?, counter(&meta, "bytes")?);
                let id = meta.get("next_id")?.map(|v| v.value()).unwrap_or(1);
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
                let record = encode(&entry);
                match copy.filter(|c| now_ms.saturating_sub(c.enqueued_ms) < DEDUP_WINDOW.as_millis() as u64) {
                    Some(copy) => Ok(Enqueued::Duplicate(copy.id)),
                    None if count >= limits.entries || bytes + record.len() as u64 > limits.bytes => {
                        Err((count, bytes))
                    }
                    None => {
                        meta.insert("next_id", id + 1)?;
                        meta.insert("entries", count + 1)?;
                        meta.insert("bytes", bytes + record.len() as u64)?;
                        entries.insert(id, record.as_slice())?;
                        dedups.insert(dedup, id)?;
                        tx.open_table(QUEUE)?.insert((group, id), ())?;
                        let mut heads = tx.open_table(HEADS)?;
                        if heads.get(group)?.is_none() {
                            heads.insert(group, (id, 0))?;
                            tx.open_table(DUE)?.insert((0, id), group)?;
                        }
                        Ok(Enqueued::New(id))
                    }
                }
            };
            match outcome {
                Ok(Enqueued::New(_)) => tx.commit()?,
                _ => tx.abort()?,
            }
            Ok(outcome)
        })?;
        outcome.map_err(|(count, bytes)| {
            SpoolError::Full(format!(
                "it holds {count} events in {bytes} bytes (SPOOL_MAX_ENTRIES={}, SPOOL_MAX_BYTES={}); nothing more is taken until GitLab has taken some, or dead letters are dropped (`spool list`)",
                limits.entries, limits.bytes
            ))
        })
    }

    /// Whether `group` has an entry still to deliver (a new event of the group must then queue
    /// behind it, so that order holds). One look-up.
    pub fn has_pending(&self, group: &str) -> Result<bool, SpoolError> {
        self.with(|db| {
            let tx = db.begin_read()?;
            Ok(tx.open_table(HEADS)?.get(group)?.is_some())
        })
    }

    /// Up to `max` heads due at `now_ms` (groups side by side, each by its oldest entry), the
    /// soonest due first.
    pub fn due(&self, now_ms: u64, max: usize) -> Result<Vec<Due>, SpoolError> {
        self.with(|db| {
            let tx = db.begin_read()?;
            let due = tx.open_table(DUE)?;
            let entries = tx.open_table(ENTRIES)?;
            let mut out = Vec::new();
            for row in due.range((0, 0)..=(now_ms, u64::MAX))?.take(max) {
                let (key, group) = row?;
                let ((_, id), group) = (key.value(), group.value().to_string());
                let head = match entries.get(id)? {
                    Some(bytes) => match decode(bytes.value()) {
                        Ok(entry) => Due::Entry(entry),
                        Err(reason) => Due::Unreadable { id, group, reason },
                    },
                    None => Due::Unreadable { id, group, reason: "the entry is missing".into() },
                };
                out.push(head);
            }
            Ok(out)
        })
    }

    /// When the earliest head will be due (`None`: nothing to deliver).
    pub fn next_due(&self) -> Result<Option<u64>, SpoolError> {
        self.with(|db| {
            let tx = db.begin_read()?;
            Ok(tx.open_table(DUE)?.first()?.map(|(k, _)| k.value().0))
        })
    }

    /// How many entries (dead letters included) and bytes the spool holds.
    pub fn size(&self) -> Result<(u64, u64), SpoolError> {
        self.with(|db| {
            let tx = db.begin_read()?;
            let meta = tx.open_table(META)?;
            Ok((counter(&meta, "entries")?, counter(&meta, "bytes")?))
        })
    }

    /// Delivered: forget it.
    pub fn ack(&self, id: u64) -> Result<(), SpoolError> {
        self.drop_entry(id).map(|_| ())
    }

    /// Not delivered this time: try again at `not_before_ms`.
    pub fn retry_later(&self, id: u64, error: &str, not_before_ms: u64) -> Result<(), SpoolError> {
        self.update(id, |tx, e| {
            e.attempts += 1;
            e.last_error = Some(error.to_string());
            e.not_before_ms = not_before_ms;
            let mut heads = tx.open_table(HEADS)?;
            let head = heads.get(e.group.as_str())?.map(|v| v.value());
            if let Some((head, at)) = head.filter(|(head, _)| *head == id) {
                heads.insert(e.group.as_str(), (head, not_before_ms))?;
                let mut due = tx.open_table(DUE)?;
                due.remove((at, id))?;
                due.insert((not_before_ms, id), e.group.as_str())?;
            }
            Ok(())
        })
    }

    /// Failed for good: kept with `reason`; its group moves on.
    pub fn dead_letter(&self, id: u64, reason: &str) -> Result<(), SpoolError> {
        self.update(id, |tx, e| {
            e.attempts += 1;
            e.last_error = Some(reason.to_string());
            e.dead = true;
            tx.open_table(QUEUE)?.remove((e.group.as_str(), id))?;
            reseat(tx, &e.group)
        })
    }

    /// An entry that cannot be read, met as its group's head: set aside as a dead letter with
    /// `reason`, its bytes kept; its group moves on.
    pub fn set_aside(&self, id: u64, group: &str, reason: &str) -> Result<(), SpoolError> {
        self.with(|db| {
            let tx = db.begin_write()?;
            tx.open_table(QUEUE)?.remove((group, id))?;
            tx.open_table(UNREADABLE)?.insert(id, reason)?;
            reseat(&tx, group)?;
            tx.commit()?;
            Ok(())
        })
    }

    /// A dead-lettered entry goes back to its group's queue, to be tried at once (before the
    /// group's newer entries: the group is delivered in id order).
    pub fn replay(&self, id: u64) -> Result<Replayed, SpoolError> {
        let mut found = Replayed::NoSuchEntry;
        self.with(|db| {
            let tx = db.begin_write()?;
            {
                if tx.open_table(UNREADABLE)?.get(id)?.is_some() {
                    found = Replayed::Unreadable;
                } else {
                    let mut entries = tx.open_table(ENTRIES)?;
                    let current = entries.get(id)?.map(|v| decode(v.value()));
                    match current {
                        None => {}
                        Some(Err(_)) => found = Replayed::Unreadable,
                        Some(Ok(mut e)) => {
                            found = Replayed::Replayed;
                            let before = encode(&e).len() as u64;
                            e.dead = false;
                            e.not_before_ms = 0;
                            let record = encode(&e);
                            entries.insert(id, record.as_slice())?;
                            drop(entries);
                            adjust_bytes(&tx, before, record.len() as u64)?;
                            tx.open_table(QUEUE)?.insert((e.group.as_str(), id), ())?;
                            reseat(&tx, &e.group)?;
                        }
                    }
                }
            }
            tx.commit()?;
            Ok(())
        })?;
        Ok(found)
    }

    /// Removes an entry for good (readable or not). `false` if there is no such entry.
    pub fn drop_entry(&self, id: u64) -> Result<bool, SpoolError> {
        self.with(|db| {
            let tx = db.begin_write()?;
            let found = {
                let removed = tx.open_table(ENTRIES)?.remove(id)?.map(|v| v.value().to_vec());
                match removed {
                    None => false,
                    Some(bytes) => {
                        let mut meta = tx.open_table(META)?;
                        let (count, total) = (counter(&meta, "entries")?, counter(&meta, "bytes")?);
                        meta.insert("entries", count.saturating_sub(1))?;
                        meta.insert("bytes", total.saturating_sub(bytes.len() as u64))?;
                        drop(meta);
                        tx.open_table(UNREADABLE)?.remove(id)?;
                        let group = match decode(&bytes) {
                            Ok(entry) => {
                                let mut dedups = tx.open_table(DEDUP)?;
                                if dedups.get(entry.dedup.as_str())?.map(|v| v.value()) == Some(id) {
                                    dedups.remove(entry.dedup.as_str())?;
                                }
                                Some(entry.group)
                            }
                            // Unreadable: its group, if it is still queued, is in the queue's key.
                            Err(_) => group_in_queue(&tx, id)?,
                        };
                        if let Some(group) = group {
                            tx.open_table(QUEUE)?.remove((group.as_str(), id))?;
                            reseat(&tx, &group)?;
                        }
                        true
                    }
                }
            };
            tx.commit()?;
            Ok(found)
        })
    }

    /// Visits every entry in id order, dead letters and unreadable ones included, one at a
    /// time (the spool is never held in memory whole).
    pub fn for_each(&self, mut visit: impl FnMut(Stored)) -> Result<(), SpoolError> {
        self.with(|db| {
            let tx = db.begin_read()?;
            let entries = tx.open_table(ENTRIES)?;
            let unreadable = tx.open_table(UNREADABLE)?;
            for row in entries.iter()? {
                let (id, bytes) = row?;
                let id = id.value();
                let stored = match decode(bytes.value()) {
                    Ok(entry) => Stored::Entry(entry),
                    Err(reason) => {
                        let recorded = unreadable.get(id)?.map(|r| r.value().to_string());
                        Stored::Unreadable { id, raw: bytes.value().to_vec(), reason: recorded.unwrap_or(reason) }
                    }
                };
                visit(stored);
            }
            Ok(())
        })
    }

    /// Every entry, in id order (for tests and small spools; `spool list` visits them).
    pub fn list(&self) -> Result<Vec<Stored>, SpoolError> {
        let mut out = Vec::new();
        self.for_each(|s| out.push(s))?;
        Ok(out)
    }

    /// A claim recorded for `key`, if any ([`super::claims`]).
    pub fn claim(&self, key: &str) -> Result<Option<Vec<u8>>, SpoolError> {
        self.with(|db| {
            let tx = db.begin_read()?;
            Ok(tx.open_table(CLAIMS)?.get(key)?.map(|v| v.value().to_vec()))
        })
    }

    /// Records a claim for `key` (durable when this returns), replacing any other; the claims
    /// `forget` says are over are forgotten in the same commit (the table stays small).
    pub fn put_claim(&self, key: &str, claim: &[u8], forget: impl Fn(&[u8]) -> bool) -> Result<(), SpoolError> {
        self.with(|db| {
            let tx = db.begin_write()?;
            {
                let mut claims = tx.open_table(CLAIMS)?;
                claims.retain(|_, v| !forget(v))?;
                claims.insert(key, claim)?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// Forgets the claim for `key`.
    pub fn clear_claim(&self, key: &str) -> Result<(), SpoolError> {
        self.with(|db| {
            let tx = db.begin_write()?;
            tx.open_table(CLAIMS)?.remove(key)?;
            tx.commit()?;
            Ok(())
        })
    }

    /// Changes a readable entry (and the indexes, in the same commit).
    fn update(
        &self,
        id: u64,
        change: impl FnOnce(&redb::WriteTransaction, &mut Entry) -> Result<(), redb::Error>,
    ) -> Result<(), SpoolError> {
        let mut missing = false;
        self.with(|db| {
            let tx = db.begin_write()?;
            let current = tx.open_table(ENTRIES)?.get(id)?.map(|v| decode(v.value()));
            match current {
                Some(Ok(mut entry)) => {
                    let before = encode(&entry).len() as u64;
                    change(&tx, &mut entry)?;
                    let record = encode(&entry);
                    tx.open_table(ENTRIES)?.insert(id, record.as_slice())?;
                    adjust_bytes(&tx, before, record.len() as u64)?;
                }
                _ => missing = true,
            }
            tx.commit()?;
            Ok(())
        })?;
        match missing {
            true => Err(SpoolError::Unavailable(format!("no readable entry {id}"))),
            false => Ok(()),
        }
    }
}

fn counter(meta: &impl ReadableTable<&'static str, u64>, key: &str) -> Result<u64, redb::Error> {
    Ok(meta.get(key)?.map(|v| v.value()).unwrap_or(0))
}

fn adjust_bytes(tx: &redb::WriteTransaction, before: u64, after: u64) -> Result<(), redb::Error> {
    let mut meta = tx.open_table(META)?;
    let total = counter(&meta, "bytes")?;
    meta.insert("bytes", (total + after).saturating_sub(before))?;
    Ok(())
}

/// Makes `group`'s head its oldest queued entry (or none), with its one `due` row.
fn reseat(tx: &redb::WriteTransaction, group: &str) -> Result<(), redb::Error> {
    let first =
        tx.open_table(QUEUE)?.range((group, 0)..=(group, u64::MAX))?.next().transpose()?.map(|(k, _)| k.value().1);
    let mut heads = tx.open_table(HEADS)?;
    let old = heads.get(group)?.map(|v| v.value());
    if old.map(|(id, _)| id) == first {
        return Ok(());
    }
    let mut due = tx.open_table(DUE)?;
    if let Some((id, at)) = old {
        due.remove((at, id))?;
    }
    match first {
        Some(id) => {
            let at = tx.open_table(ENTRIES)?.get(id)?.and_then(|v| decode(v.value()).ok()).map(|e| e.not_before_ms);
            let at = at.unwrap_or(0);
            heads.insert(group, (id, at))?;
            due.insert((at, id), group)?;
        }
        None => {
            heads.remove(group)?;
        }
    }
    Ok(())
}

/// The group whose queue holds `id` (a scan: only for an entry that cannot be read).
fn group_in_queue(tx: &redb::WriteTransaction, id: u64) -> Result<Option<String>, redb::Error> {
    let queue = tx.open_table(QUEUE)?;
    for row in queue.iter()? {
        let (key, _) = row?;
        let (group, queued) = key.value();
        if queued == id {
            return Ok(Some(group.to_string()));
        }
    }
    Ok(None)
}

/// Creates the tables; builds the indexes of a spool of the first schema.
fn migrate(db: &redb::Database) -> Result<(), SpoolError> {
    let tx = db.begin_write()?;
    {
        let entries = tx.open_table(ENTRIES)?;
        tx.open_table(DEDUP)?;
        let mut meta = tx.open_table(META)?;
        let mut queue = tx.open_table(QUEUE)?;
        let mut heads = tx.open_table(HEADS)?;
        let mut due = tx.open_table(DUE)?;
        let mut unreadable = tx.open_table(UNREADABLE)?;
        tx.open_table(CLAIMS)?;
        if counter(&meta, "schema")? < SCHEMA {
            let (mut count, mut bytes) = (0u64, 0u64);
            for row in entries.iter()? {
                let (id, value) = row?;
                let (id, value) = (id.value(), value.value());
                count += 1;
                bytes += value.len() as u64;
                match decode(value) {
                    Ok(e) if e.dead => {}
                    Ok(e) => {
                        queue.insert((e.group.as_str(), id), ())?;
                        if heads.get(e.group.as_str())?.is_none() {
                            heads.insert(e.group.as_str(), (id, e.not_before_ms))?;
                            due.insert((e.not_before_ms, id), e.group.as_str())?;
                        }
                    }
                    Err(reason) => {
                        unreadable.insert(id, reason.as_str())?;
                    }
                }
            }
            meta.insert("entries", count)?;
            meta.insert("bytes", bytes)?;
            meta.insert("schema", SCHEMA)?;
            if count > 0 {
                tracing::info!(entries = count, "spool: indexes built for the spool of an earlier version");
            }
        }
    }
    tx.commit()?;
    Ok(())
}

fn encode(entry: &Entry) -> Vec<u8> {
    // An `Entry` is strings, numbers and a JSON value: it always serializes.
    serde_json::to_vec(entry).unwrap_or_default()
}

fn decode(bytes: &[u8]) -> Result<Entry, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("the entry's bytes cannot be read ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spool() -> (LocalSpool, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("spool-test-{}", fastrand::u64(..)));
        (LocalSpool::open(&dir).unwrap(), dir)
    }

    fn ids(due: Vec<Due>) -> Vec<u64> {
        due.into_iter()
            .map(|d| match d {
                Due::Entry(e) => e.id,
                Due::Unreadable { id, .. } => id,
            })
            .collect()
    }

    fn entry(d: Due) -> Entry {
        match d {
            Due::Entry(e) => e,
            other => panic!("{other:?}"),
        }
    }

    fn entries(s: &LocalSpool) -> Vec<Entry> {
        s.list()
            .unwrap()
            .into_iter()
            .filter_map(|s| match s {
                Stored::Entry(e) => Some(e),
                _ => None,
            })
            .collect()
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
        assert_eq!(ids(s.due(100, 10).unwrap()), vec![1, 3]);
        // A head waiting for its retry time holds its group back (order), not the others.
        s.retry_later(1, "GitLab answered 503", 1_000).unwrap();
        assert_eq!(ids(s.due(100, 10).unwrap()), vec![3]);
        assert_eq!(s.next_due().unwrap(), Some(0));
        assert!(s.has_pending("42/production").unwrap());
        s.ack(3).unwrap();
        assert!(!s.has_pending("42/staging").unwrap());
        assert_eq!(s.next_due().unwrap(), Some(1_000));
        let head = entry(s.due(1_000, 10).unwrap().remove(0));
        assert_eq!((head.id, head.attempts, head.last_error.as_deref()), (1, 1, Some("GitLab answered 503")));
        s.ack(1).unwrap();
        assert_eq!(ids(s.due(1_000, 10).unwrap()), vec![2]);
        // Acknowledged, a delivery may be spooled again (a later, real redelivery).
        assert_eq!(s.enqueue("42/production", "d1", json!({"n": 1}), 14).unwrap(), Enqueued::New(5));
        assert_eq!(s.size().unwrap().0, 2);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_dead_letter_lets_its_group_move_on_and_can_be_replayed_or_dropped() {
        let (s, dir) = spool();
        s.enqueue("g", "a", json!(1), 0).unwrap();
        s.enqueue("g", "b", json!(2), 0).unwrap();
        s.dead_letter(1, "GitLab answered 422: the commit does not exist").unwrap();
        assert_eq!(ids(s.due(0, 10).unwrap()), vec![2]);
        let dead: Vec<Entry> = entries(&s).into_iter().filter(|e| e.dead).collect();
        assert_eq!(
            (dead.len(), dead[0].last_error.as_deref()),
            (1, Some("GitLab answered 422: the commit does not exist"))
        );
        assert_eq!(s.replay(1).unwrap(), Replayed::Replayed);
        assert_eq!(ids(s.due(0, 10).unwrap()), vec![1], "replayed, it is its group's head again");
        assert!(s.drop_entry(1).unwrap() && !s.drop_entry(1).unwrap());
        assert_eq!(s.replay(99).unwrap(), Replayed::NoSuchEntry);
        assert_eq!(ids(s.due(0, 10).unwrap()), vec![2], "dropped, the next one is the head");
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
        let all = entries(&s);
        assert_eq!((all.len(), all[0].attempts, all[0].payload["sha"].as_str()), (1, 1, Some("x")));
        assert_eq!(s.enqueue("g", "b", json!(2), 6).unwrap(), Enqueued::New(2), "ids go on after a restart");
        assert_eq!(s.next_due().unwrap(), Some(9));
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Issue 21: one undecodable entry halted the whole spool, and `spool list`/`drop` failed
    /// on it. It is set aside as a dead letter with its bytes; its group and the others go on.
    #[test]
    fn an_entry_that_cannot_be_read_is_set_aside_and_can_be_listed_and_dropped() {
        let (s, dir) = spool();
        for (n, group) in ["g", "g", "h"].iter().enumerate() {
            s.enqueue(group, &format!("d{n}"), json!(n), 0).unwrap();
        }
        // Entry 1's bytes damaged (as by another program writing the file).
        s.with(|db| {
            let tx = db.begin_write()?;
            tx.open_table(ENTRIES)?.insert(1, b"\xff\x00 not an entry".as_slice())?;
            tx.commit()?;
            Ok(())
        })
        .unwrap();
        let due = s.due(0, 10).unwrap();
        assert!(matches!(&due[0], Due::Unreadable { id: 1, group, .. } if group == "g"), "{due:?}");
        assert_eq!(ids(due), vec![1, 3]);
        s.set_aside(1, "g", "the entry's bytes cannot be read").unwrap();
        assert_eq!(ids(s.due(0, 10).unwrap()), vec![2, 3], "its group moved on");
        let listed = s.list().unwrap();
        assert!(
            matches!(&listed[0], Stored::Unreadable { id: 1, raw, reason } if raw.starts_with(b"\xff") && reason.contains("cannot be read")),
            "{listed:?}"
        );
        assert_eq!(s.replay(1).unwrap(), Replayed::Unreadable);
        assert!(s.drop_entry(1).unwrap());
        assert_eq!(s.list().unwrap().len(), 2);
        assert_eq!(s.size().unwrap().0, 2);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn an_unreadable_entry_can_be_dropped_before_the_worker_meets_it() {
        let (s, dir) = spool();
        s.enqueue("g", "a", json!(1), 0).unwrap();
        s.enqueue("g", "b", json!(2), 0).unwrap();
        s.with(|db| {
            let tx = db.begin_write()?;
            tx.open_table(ENTRIES)?.insert(1, b"garbage".as_slice())?;
            tx.commit()?;
            Ok(())
        })
        .unwrap();
        assert!(s.drop_entry(1).unwrap());
        assert_eq!(ids(s.due(0, 10).unwrap()), vec![2]);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Issue 21: the spool had no bound. At its bounds an enqueue is refused, saying which.
    #[test]
    fn the_spool_refuses_events_beyond_its_bounds() {
        let (s, dir) = spool();
        let s = s.with_limits(Limits { entries: 3, bytes: 1_000_000 });
        for n in 0..3 {
            s.enqueue("g", &format!("d{n}"), json!(n), 0).unwrap();
        }
        let full = s.enqueue("g", "d3", json!(3), 0).unwrap_err();
        assert!(matches!(&full, SpoolError::Full(m) if m.contains("SPOOL_MAX_ENTRIES=3")), "{full}");
        assert_eq!(s.enqueue("g", "d0", json!(0), 1).unwrap(), Enqueued::Duplicate(1), "a retry is still answered");
        s.ack(1).unwrap();
        assert!(s.enqueue("g", "d3", json!(3), 0).is_ok(), "room again once one is delivered");
        let bytes = s.size().unwrap().1;
        let s = s.with_limits(Limits { entries: 100, bytes: bytes + 10 });
        let full = s.enqueue("g", "big", json!("x".repeat(100)), 0).unwrap_err();
        assert!(matches!(&full, SpoolError::Full(m) if m.contains("SPOOL_MAX_BYTES")), "{full}");
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A spool written by the bridge before issue 21 (entries, dedup and meta only) gets its
    /// indexes when opened, and drains as it did.
    #[test]
    fn a_spool_of_the_first_schema_is_indexed_when_opened() {
        let dir = std::env::temp_dir().join(format!("spool-test-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        {
            let db = redb::Database::create(dir.join("spool.redb")).unwrap();
            let tx = db.begin_write().unwrap();
            {
                let mut entries = tx.open_table(ENTRIES).unwrap();
                for (id, group, dead) in [(1u64, "g", true), (2, "g", false), (3, "h", false), (4, "g", false)] {
                    let e = Entry {
                        id,
                        group: group.into(),
                        dedup: format!("d{id}"),
                        payload: json!(id),
                        attempts: 0,
                        not_before_ms: 0,
                        enqueued_ms: 0,
                        last_error: None,
                        dead,
                    };
                    entries.insert(id, encode(&e).as_slice()).unwrap();
                }
                tx.open_table(META).unwrap().insert("next_id", 5).unwrap();
                tx.open_table(DEDUP).unwrap();
            }
            tx.commit().unwrap();
        }
        let s = LocalSpool::open(&dir).unwrap();
        assert_eq!(ids(s.due(0, 10).unwrap()), vec![2, 3]);
        assert!(s.has_pending("g").unwrap() && s.has_pending("h").unwrap());
        assert_eq!(s.size().unwrap().0, 4);
        assert_eq!(s.enqueue("h", "d5", json!(5), 0).unwrap(), Enqueued::New(5));
        let _ = std::fs::remove_dir_all(dir);
    }
}
