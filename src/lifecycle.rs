//! Stateless deployment lifecycle: decide, from what GitLab already holds, whether an event
//! creates a deployment, moves an existing one to a finished status, or changes nothing.
//!
//! Rules (README, "Lifecycle"):
//! - `running`: if (environment, sha) already has a running or finished deployment, nothing
//!   changes; otherwise one is created `running`.
//! - `success`/`failed`/`canceled`: the newest running deployment of (environment, sha) is
//!   updated; else, if the newest deployment of that sha already has the status, nothing
//!   changes; else one is created directly with the status.
//!
//! Events for the same (project, environment, sha) are serialized within the process.

use serde::Serialize;
use std::collections::HashSet;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use tokio::sync::Mutex;

use crate::environment::{self, Environments};
use crate::event::DeploymentEvent;
use crate::gitlab::{CallCtx, GitLabClient, GitLabError, NewDeployment};
use crate::model::{Deployment, Status};

/// How many pages of 100 deployments are searched for an earlier deployment of a sha.
const MAX_SCAN_PAGES: u32 = 3;
const LOCK_STRIPES: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Created,
    Updated,
    Unchanged,
    Ignored,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::Updated => "updated",
            Action::Unchanged => "unchanged",
            Action::Ignored => "ignored",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub action: Action,
    pub deployment: Deployment,
    /// Problems that did not stop the deployment from being recorded.
    pub notes: Vec<String>,
}

pub struct Lifecycle {
    gitlab: GitLabClient,
    locks: Vec<Mutex<()>>,
    environments: Environments,
    warned: std::sync::Mutex<HashSet<(String, String)>>,
}

impl Lifecycle {
    pub fn new(gitlab: GitLabClient) -> Self {
        Lifecycle {
            gitlab,
            locks: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            environments: Environments::default(),
            warned: Default::default(),
        }
    }

    /// How GitLab will treat the event's environment for DORA and MR linking; each warning is
    /// logged once per environment per container and returned with every answer.
    pub fn warnings(&self, ev: &DeploymentEvent) -> Vec<String> {
        let warnings = environment::warnings(&ev.environment, ev.tier);
        if !warnings.is_empty() {
            let first = self
                .warned
                .lock()
                .map(|mut w| w.insert((ev.project.clone(), ev.environment.clone())))
                .unwrap_or(false);
            if first {
                for w in &warnings {
                    tracing::warn!(project = %ev.project, environment = %ev.environment, "{w}");
                }
            }
        }
        warnings
    }

    pub fn gitlab(&self) -> &GitLabClient {
        &self.gitlab
    }

    fn lock_for(&self, ev: &DeploymentEvent) -> &Mutex<()> {
        let mut h = DefaultHasher::new();
        (&ev.project, &ev.environment, &ev.sha).hash(&mut h);
        &self.locks[(h.finish() as usize) % LOCK_STRIPES]
    }

    /// Brings GitLab to the state the event describes: first the environment (tier, URL), then
    /// the deployment.
    pub async fn apply(&self, ev: &DeploymentEvent, ctx: &CallCtx) -> Result<Outcome, GitLabError> {
        let _guard = self.lock_for(ev).lock().await;
        // The deployment matters more than the environment's settings: if they cannot be set
        // now, record the deployment anyway; the next event tries again (nothing was cached).
        let mut notes = Vec::new();
        if let Err(e) = self
            .environments
            .ensure(&self.gitlab, ctx, &ev.project, &ev.environment, ev.tier, ev.external_url.as_deref())
            .await
        {
            tracing::warn!(project = %ev.project, environment = %ev.environment, error = %e, "could not set the environment's tier or URL");
            notes.push(format!("the environment's tier or external URL could not be set: {e}"));
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.apply_once(ev, ctx).await.map(|o| Outcome { notes: notes.clone(), ..o }) {
                // A create that failed after reaching GitLab may or may not have happened:
                // look again before trying again, so a retry never makes a second deployment.
                Err(GitLabError::Ambiguous(msg)) if attempt < 3 => {
                    let wait = std::time::Duration::from_millis(200 * attempt);
                    match ctx.remaining() {
                        Some(rem) if wait < rem => {
                            tracing::warn!(attempt, error = %msg, "create failed ambiguously; re-checking GitLab");
                            tokio::time::sleep(wait).await;
                        }
                        _ => return Err(GitLabError::Unavailable(msg)),
                    }
                }
                Err(GitLabError::Ambiguous(msg)) => return Err(GitLabError::Unavailable(msg)),
                other => return other,
            }
        }
    }

    async fn apply_once(&self, ev: &DeploymentEvent, ctx: &CallCtx) -> Result<Outcome, GitLabError> {
        if ev.status == Status::Running {
            if let Some(d) = self.newest_for_sha(ev, ctx, None).await? {
                if Status::parse(&d.status).is_some() {
                    return Ok(Outcome { action: Action::Unchanged, deployment: d, notes: Vec::new() });
                }
            }
            return self.create(ev, ctx).await;
        }

        if let Some(running) = self.newest_for_sha(ev, ctx, Some(Status::Running)).await? {
            return match self.gitlab.update_deployment(ctx, &ev.project, running.id, ev.status).await {
                Ok(d) => Ok(Outcome { action: Action::Updated, deployment: d, notes: Vec::new() }),
                // Someone else finished it between our look and our update.
                Err(GitLabError::Rejected { status: 400, message }) if message.contains("cannot transition") => {
                    let d = self.gitlab.get_deployment(ctx, &ev.project, running.id).await?;
                    if d.status == ev.status.as_str() {
                        Ok(Outcome { action: Action::Unchanged, deployment: d, notes: Vec::new() })
                    } else {
                        Err(GitLabError::Rejected { status: 400, message })
                    }
                }
                Err(e) => Err(e),
            };
        }
        if let Some(d) = self.newest_for_sha(ev, ctx, None).await? {
            if d.status == ev.status.as_str() {
                return Ok(Outcome { action: Action::Unchanged, deployment: d, notes: Vec::new() });
            }
        }
        self.create(ev, ctx).await
    }

    async fn create(&self, ev: &DeploymentEvent, ctx: &CallCtx) -> Result<Outcome, GitLabError> {
        let new = NewDeployment {
            environment: &ev.environment,
            sha: &ev.sha,
            git_ref: &ev.git_ref,
            tag: ev.tag,
            status: ev.status,
        };
        let d = self.gitlab.create_deployment(ctx, &ev.project, &new).await?;
        Ok(Outcome { action: Action::Created, deployment: d, notes: Vec::new() })
    }

    /// The newest deployment of the event's (environment, sha), optionally of one status.
    /// GitLab cannot filter by sha, so pages are scanned newest first.
    async fn newest_for_sha(
        &self,
        ev: &DeploymentEvent,
        ctx: &CallCtx,
        status: Option<Status>,
    ) -> Result<Option<Deployment>, GitLabError> {
        let mut page = 1;
        loop {
            let (items, next) = self.gitlab.list_deployments(ctx, &ev.project, &ev.environment, status, page).await?;
            if let Some(d) = items.into_iter().find(|d| d.sha.eq_ignore_ascii_case(&ev.sha)) {
                return Ok(Some(d));
            }
            match next {
                Some(n) if n > page && n <= MAX_SCAN_PAGES => page = n,
                _ => return Ok(None),
            }
        }
    }
}
