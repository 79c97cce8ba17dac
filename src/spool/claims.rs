//! Claims: what makes a create idempotent when GitLab keeps no idempotency key (issue 21).
//!
//! GitLab commits a `POST /deployments` that reached it even when the caller is gone (killed,
//! timed out): Rails carries a request to its end, bounded by its own request timeout
//! (`GITLAB_RAILS_RACK_TIMEOUT`, 60 s, after at most `GITLAB_RAILS_WAIT_TIMEOUT`, 90 s, in
//! Puma's queue). A second attempt that reads the environment before that commit sees nothing
//! and creates the deployment again. So before every create the bridge records a [`Claim`]: the
//! environment, the sha and status it creates, when it sent the call, and the newest deployment
//! id it saw. A later create in that environment first looks for the claimed deployment (a
//! deployment of the sha with a higher id): found, the claim is settled; not found, it waits
//! until GitLab can no longer commit it (`GITLAB_CREATE_SETTLE_SECONDS`, 150 s). A create GitLab
//! answered — or refused — settles its claim at once.
//!
//! Where claims are kept decides what they cover: `serve`'s local spool keeps them on disk
//! (they survive `kill -9`); under Lambda they are in the container's memory, and a claim
//! travels with the event when it is spooled ([`super::Spooled::claim`]) so that the container
//! that drains it honours it. What remains possible is in docs/decisions.md.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::item::SpoolError;
use super::local::LocalSpool;
use crate::model::{BoxFuture, Status};

/// A create sent to GitLab whose outcome is not known yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The commit the create names.
    pub sha: String,
    pub status: Status,
    /// When it was sent (Unix milliseconds).
    pub sent_ms: u64,
    /// The newest deployment id of the environment the create was decided on: the deployment
    /// it makes has a higher one.
    pub above: u64,
}

/// The claim of an environment, with its key, as it travels with a spooled event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Carried {
    pub key: String,
    pub claim: Claim,
}

/// Where claims are kept.
pub trait Claims: Send + Sync {
    /// The environment's claim, if one is recorded.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Claim>, SpoolError>>;
    /// Records `claim`; when this returns `Ok`, a second attempt will find it. `settle_ms`:
    /// claims older than that are over and may be forgotten.
    fn put<'a>(&'a self, key: &'a str, claim: &'a Claim, settle_ms: u64) -> BoxFuture<'a, Result<(), SpoolError>>;
    /// Forgets the environment's claim (its create was answered).
    fn clear<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), SpoolError>>;
}

/// Claims in this process's memory (Lambda, `SPOOL_MODE=off`, a dry run): bounded, cleared
/// when full.
#[derive(Default)]
pub struct MemoryClaims(Mutex<HashMap<String, Claim>>);

const MEMORY_LIMIT: usize = 10_000;

impl MemoryClaims {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Claim>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Claims for MemoryClaims {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Claim>, SpoolError>> {
        let found = self.map().get(key).cloned();
        Box::pin(async move { Ok(found) })
    }

    fn put<'a>(&'a self, key: &'a str, claim: &'a Claim, settle_ms: u64) -> BoxFuture<'a, Result<(), SpoolError>> {
        let mut map = self.map();
        if map.len() >= MEMORY_LIMIT {
            map.retain(|_, c| c.sent_ms + settle_ms > claim.sent_ms);
            if map.len() >= MEMORY_LIMIT {
                map.clear();
            }
        }
        map.insert(key.to_string(), claim.clone());
        Box::pin(async { Ok(()) })
    }

    fn clear<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), SpoolError>> {
        self.map().remove(key);
        Box::pin(async { Ok(()) })
    }
}

/// The local spool keeps claims on disk, fsync'ed before the create is sent.
pub struct DiskClaims(pub Arc<LocalSpool>);

impl DiskClaims {
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&LocalSpool) -> Result<T, SpoolError> + Send + 'static,
    ) -> Result<T, SpoolError> {
        let spool = self.0.clone();
        tokio::task::spawn_blocking(move || f(&spool)).await.map_err(|e| SpoolError::other(e.to_string()))?
    }
}

impl Claims for DiskClaims {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Claim>, SpoolError>> {
        let key = key.to_string();
        Box::pin(async move {
            let bytes = self.blocking(move |s| s.claim(&key)).await?;
            // A claim that cannot be read claims nothing.
            Ok(bytes.and_then(|b| serde_json::from_slice(&b).ok()))
        })
    }

    fn put<'a>(&'a self, key: &'a str, claim: &'a Claim, settle_ms: u64) -> BoxFuture<'a, Result<(), SpoolError>> {
        let (key, now) = (key.to_string(), claim.sent_ms);
        let bytes = serde_json::to_vec(claim).unwrap_or_default();
        Box::pin(async move {
            self.blocking(move |s| {
                s.put_claim(&key, &bytes, |old| {
                    serde_json::from_slice::<Claim>(old).map_or(true, |c| c.sent_ms + settle_ms <= now)
                })
            })
            .await
        })
    }

    fn clear<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), SpoolError>> {
        let key = key.to_string();
        Box::pin(async move { self.blocking(move |s| s.clear_claim(&key)).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(sha: &str, sent_ms: u64) -> Claim {
        Claim { sha: sha.into(), status: Status::Running, sent_ms, above: 7 }
    }

    #[tokio::test]
    async fn a_claim_on_disk_survives_reopening_and_old_ones_are_forgotten() {
        let dir = std::env::temp_dir().join(format!("claims-test-{}", fastrand::u64(..)));
        let claims = DiskClaims(Arc::new(LocalSpool::open(&dir).unwrap()));
        claims.put("42\0production", &claim("a", 1_000), 150_000).await.unwrap();
        claims.put("42\0staging", &claim("b", 2_000), 150_000).await.unwrap();
        drop(claims);
        let claims = DiskClaims(Arc::new(LocalSpool::open(&dir).unwrap()));
        assert_eq!(claims.get("42\0production").await.unwrap(), Some(claim("a", 1_000)));
        // Much later: the old ones are over and go with the next write.
        claims.put("77\0production", &claim("c", 1_000_000), 150_000).await.unwrap();
        assert_eq!(claims.get("42\0staging").await.unwrap(), None);
        claims.clear("77\0production").await.unwrap();
        assert_eq!(claims.get("77\0production").await.unwrap(), None);
        let memory = MemoryClaims::default();
        memory.put("k", &claim("a", 1), 10).await.unwrap();
        assert_eq!(memory.get("k").await.unwrap().map(|c| c.sha), Some("a".into()));
        memory.clear("k").await.unwrap();
        assert!(memory.get("k").await.unwrap().is_none());
        let _ = std::fs::remove_dir_all(dir);
    }
}
