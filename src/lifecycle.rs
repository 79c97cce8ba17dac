//! The deployment lifecycle by **rollout**: one attempt by a tool to make an environment run
//! one sha is one GitLab deployment, moved `running` → `success` / `failed` / `canceled`.
//!
//! Decided from what GitLab shows — the environment's newest few deployments, one read — and,
//! in a warm container, from what this container last wrote there (README, "Lifecycle"):
//! - `running X`: a running deployment of X among them, or X being what runs (the success that
//!   finished last, no newer rollout running), means nothing changes (a redelivery, or a re-sync
//!   of what already runs); a delivery older than the environment's latest change is stale;
//!   otherwise a new `running` deployment — also for a rollback to X and for a retry after X
//!   failed.
//! - `success`/`failed`/`canceled` for X: the running deployment of X is updated; else, if X
//!   with this status is already what GitLab shows (for `success`, what runs; otherwise the
//!   latest change), nothing changes; else a stale delivery changes nothing; else one is
//!   created with the status (a rollback reported only as "it worked").
//!
//! Events for one (project, environment) are serialized within the process, keyed by the
//! numeric project id so that the id and the path of one project share the lock.

use serde::Serialize;
use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use tokio::sync::Mutex;

use crate::environment::{self, Environments};
use crate::event::DeploymentEvent;
use crate::gitlab::{CallCtx, GitLabClient, GitLabError, NewDeployment, Recent};
use crate::model::{Deployment, Status, format_time};

/// How many of an environment's newest deployments one look-up reads. Rollouts in flight are
/// among them; a running deployment older than that is looked for only when it matters.
pub const WINDOW: u32 = 20;
const LOCK_STRIPES: usize = 64;
/// Bound of the per-container memories (projects, last writes); they are cleared when full.
const MEMORY_LIMIT: usize = 10_000;
/// How long a running deployment this container created is updated without a look-up first.
/// GitLab lets a finished deployment change to another final status, so a deployment that
/// another container finished meanwhile could be changed by mistake; the older the memory, the
/// likelier that is (docs/decisions.md).
const TRUST_RUNNING_FOR: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Created,
    Updated,
    Unchanged,
    /// The delivery is older than what GitLab already shows; nothing was changed.
    Stale,
    Ignored,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::Updated => "updated",
            Action::Unchanged => "unchanged",
            Action::Stale => "stale",
            Action::Ignored => "ignored",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub action: Action,
    /// The deployment created, updated or found unchanged; none for a stale delivery.
    pub deployment: Option<Deployment>,
    /// Why nothing changed, for a stale delivery.
    pub reason: Option<String>,
    /// Problems that did not stop the deployment from being recorded.
    pub notes: Vec<String>,
}

impl Outcome {
    fn of(action: Action, deployment: Deployment) -> Self {
        Outcome { action, deployment: Some(deployment), reason: None, notes: Vec::new() }
    }

    fn stale(reason: String) -> Self {
        Outcome { action: Action::Stale, deployment: None, reason: Some(reason), notes: Vec::new() }
    }
}

/// The name GitLab's state machine gives the change to `status` (its error messages use it).
fn transition_event(status: Status) -> &'static str {
    match status {
        Status::Running => "run",
        Status::Success => "succeed",
        Status::Failed => "drop",
        Status::Canceled => "cancel",
    }
}

/// An end whose tool time is before the start of the running deployment it would finish (as
/// this container saw that start) belongs to an earlier attempt.
fn ends_before_start(ev: &DeploymentEvent, running: &Written) -> Option<String> {
    let (at, start) = (ev.occurred_at?, running.occurred_at?);
    (at < start).then(|| {
        format!(
            "the event happened at {}, before the running deployment #{} of this sha started ({}); it belongs to an earlier attempt and changes nothing",
            format_time(at),
            running.deployment.id,
            format_time(start)
        )
    })
}

/// The state of an environment's deployment that this container last wrote, and the latest
/// tool time of an event that wrote or confirmed it. Dropped once GitLab shows that deployment
/// changed.
#[derive(Debug, Clone)]
struct Written {
    deployment: Deployment,
    occurred_at: Option<OffsetDateTime>,
    at: Instant,
}

impl Written {
    /// Whether `d` is still exactly what this container wrote (same id, status and change time).
    fn describes(&self, d: &Deployment) -> bool {
        self.deployment.id == d.id
            && self.deployment.status == d.status
            && self.deployment.changed_at() == d.changed_at()
    }
}

type EnvKey = (String, String);

pub struct Lifecycle {
    gitlab: GitLabClient,
    clock_skew: Duration,
    locks: Vec<Mutex<()>>,
    environments: Environments,
    /// Full project paths (lower case) to numeric ids.
    projects: std::sync::Mutex<HashMap<String, String>>,
    written: std::sync::Mutex<HashMap<EnvKey, Written>>,
    warned: std::sync::Mutex<HashSet<(String, String)>>,
}

impl Lifecycle {
    /// `clock_skew`: how much later than the tool's time of an event GitLab's clock may show a
    /// change before the event counts as older than it.
    pub fn new(gitlab: GitLabClient, clock_skew: Duration) -> Self {
        Lifecycle {
            gitlab,
            clock_skew,
            locks: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            environments: Environments::default(),
            projects: Default::default(),
            written: Default::default(),
            warned: Default::default(),
        }
    }

    /// How GitLab will treat the event's environment for DORA and MR linking; each warning is
    /// logged once per environment per container and returned with every answer.
    pub fn warnings(&self, ev: &DeploymentEvent) -> Vec<String> {
        let warnings = environment::warnings(&ev.environment, ev.tier, !ev.environment_by_bridge);
        if !warnings.is_empty() {
            let first =
                self.warned.lock().map(|mut w| w.insert((ev.project.clone(), ev.environment.clone()))).unwrap_or(false);
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

    fn lock_for(&self, key: &EnvKey) -> &Mutex<()> {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        &self.locks[(h.finish() as usize) % LOCK_STRIPES]
    }

    /// The project's numeric id (asked of GitLab once per container for a path), so that
    /// every name of one project leads to the same lock, memory and API path. In a dry run a
    /// path stays a path.
    async fn project_id(&self, ctx: &CallCtx, project: &str) -> Result<String, GitLabError> {
        if let Ok(id) = project.parse::<u64>() {
            return Ok(id.to_string());
        }
        let key = project.to_ascii_lowercase();
        if let Some(id) = self.projects.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(id);
        }
        let Some(id) = self.gitlab.project_id(ctx, project).await? else {
            return Ok(project.to_string());
        };
        if let Ok(mut m) = self.projects.lock() {
            if m.len() >= MEMORY_LIMIT {
                m.clear();
            }
            m.insert(key, id.to_string());
        }
        Ok(id.to_string())
    }

    /// Brings GitLab to the state the event describes: the deployment, then the environment's
    /// tier and URL — changed only once the deployment call succeeded, so a call GitLab refuses
    /// (an unknown commit) changes nothing. GitLab's work on the transition to `success` (merge
    /// request linking in a folder, the first-deployed-to-production metric) reads the tier
    /// then, so a `success` event that must change the tier opens the deployment as `running`,
    /// sets the tier, and finishes it.
    pub async fn apply(&self, ev: &DeploymentEvent, ctx: &CallCtx) -> Result<Outcome, GitLabError> {
        let project = self.project_id(ctx, &ev.project).await?;
        let key = (project, ev.environment.clone());
        let _guard = self.lock_for(&key).lock().await;
        let mut notes = Vec::new();
        let tier_first = match ev.tier.filter(|_| ev.status == Status::Success) {
            Some(tier) => {
                match self.environments.tier_differs(&self.gitlab, ctx, &key.0, &ev.environment, tier).await {
                    Ok(differs) => differs,
                    Err(e) => {
                        notes.push(format!("the environment's tier could not be read: {e}"));
                        false
                    }
                }
            }
            None => false,
        };
        let mut environment_done = false;
        let mut opened = None;
        if tier_first {
            let running = DeploymentEvent { status: Status::Running, ..ev.clone() };
            let first = self.apply_retrying(&running, &key, ctx).await?;
            if first.action == Action::Created {
                self.set_environment(ev, &key, ctx, &mut notes).await;
                environment_done = true;
                opened = first.deployment.map(|d| d.id);
            }
        }
        let mut outcome = self.apply_retrying(ev, &key, ctx).await?;
        if outcome.deployment.is_some() && !environment_done {
            self.set_environment(ev, &key, ctx, &mut notes).await;
        }
        // The deployment this webhook opened and finished was created by it.
        if opened.is_some() && opened == outcome.deployment.as_ref().map(|d| d.id) {
            outcome.action = Action::Created;
        }
        Ok(Outcome { notes, ..outcome })
    }

    /// The environment's tier and URL. The deployment matters more than the environment's
    /// settings: if they cannot be set now, the deployment stands; the next event tries again
    /// (nothing was cached).
    async fn set_environment(&self, ev: &DeploymentEvent, key: &EnvKey, ctx: &CallCtx, notes: &mut Vec<String>) {
        if let Err(e) = self
            .environments
            .ensure(&self.gitlab, ctx, &key.0, &ev.environment, ev.tier, ev.external_url.as_deref())
            .await
        {
            tracing::warn!(project = %ev.project, environment = %ev.environment, error = %e, "could not set the environment's tier or URL");
            notes.push(format!("the environment's tier or external URL could not be set: {e}"));
        }
    }

    /// [`Self::apply_once`], looking again when a create failed ambiguously.
    async fn apply_retrying(&self, ev: &DeploymentEvent, key: &EnvKey, ctx: &CallCtx) -> Result<Outcome, GitLabError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.apply_once(ev, key, ctx).await {
                Ok(outcome) => return Ok(outcome),
                // A create that failed after reaching GitLab may or may not have happened:
                // look again before trying again, so a retry never makes a second deployment.
                Err(GitLabError::Ambiguous(msg)) if attempt < 3 => {
                    let wait = Duration::from_millis(200 * attempt);
                    match ctx.remaining() {
                        Some(rem) if wait < rem => {
                            tracing::warn!(attempt, error = %msg, "create failed ambiguously; re-checking GitLab");
                            tokio::time::sleep(wait).await;
                        }
                        _ => return Err(GitLabError::Unavailable(msg)),
                    }
                }
                Err(GitLabError::Ambiguous(msg)) => return Err(GitLabError::Unavailable(msg)),
                Err(e) => return Err(e),
            }
        }
    }

    /// Expands an abbreviated sha ([`DeploymentEvent::short_sha`]) to the full one GitLab knows;
    /// a commit GitLab does not have is refused like an unknown full sha.
    pub async fn expand_sha(&self, ev: &mut DeploymentEvent, ctx: &CallCtx) -> Result<(), GitLabError> {
        if !ev.short_sha {
            return Ok(());
        }
        match self.gitlab.resolve_commit(ctx, &ev.project, &ev.sha).await? {
            Some(full) => {
                ev.sha = full;
                ev.short_sha = false;
                Ok(())
            }
            None => Err(GitLabError::Rejected {
                status: 404,
                message: format!(
                    "the {} event names commit {}, which GitLab project {} does not have",
                    ev.source, ev.sha, ev.project
                ),
            }),
        }
    }

    /// Deployment `id` of `project` as GitLab has it (a read).
    pub async fn find_deployment(&self, project: &str, id: u64, ctx: &CallCtx) -> Result<Deployment, GitLabError> {
        let project = self.project_id(ctx, project).await?;
        self.gitlab.get_deployment(ctx, &project, id).await
    }

    /// The GitLab-compatible `PUT /projects/:id/deployments/:deployment_id`: moves deployment
    /// `id` to `status` as GitLab would, except that a finished deployment never changes (GitLab
    /// itself lets `success` become `failed` and back); asking for the status it already has is
    /// answered with it unchanged, so a tool's retry is harmless.
    pub async fn set_status(
        &self,
        project: &str,
        id: u64,
        status: Status,
        ctx: &CallCtx,
    ) -> Result<Outcome, GitLabError> {
        let project = self.project_id(ctx, project).await?;
        let found = self.gitlab.get_deployment(ctx, &project, id).await?;
        let environment = found.environment.as_ref().map(|e| e.name.clone()).unwrap_or_default();
        let key = (project, environment);
        let _guard = self.lock_for(&key).lock().await;
        // A write of this container to the deployment, made while we waited for the lock, is newer.
        let current = match self.written(&key) {
            Some(w) if w.deployment.id == id && w.deployment.changed_at() >= found.changed_at() => w.deployment,
            _ => found,
        };
        match current.status() {
            Some(s) if s == status => return Ok(Outcome::of(Action::Unchanged, current)),
            Some(s @ (Status::Success | Status::Failed | Status::Canceled)) => {
                return Err(GitLabError::Rejected {
                    status: 400,
                    message: format!(
                        "status cannot transition via \"{}\": deployment {id} already finished as {s}, and the bridge never changes a finished deployment",
                        transition_event(status)
                    ),
                });
            }
            _ => {}
        }
        let d = self.gitlab.update_deployment(ctx, &key.0, id, status).await?;
        self.remember(&key, Written { deployment: d.clone(), occurred_at: None, at: Instant::now() });
        Ok(Outcome::of(Action::Updated, d))
    }

    async fn apply_once(&self, ev: &DeploymentEvent, key: &EnvKey, ctx: &CallCtx) -> Result<Outcome, GitLabError> {
        let project = key.0.as_str();
        // The end of a rollout whose running deployment this container created: one call. If
        // GitLab says the remembered deployment is gone or already has the status, look it up.
        if ev.status != Status::Running {
            let remembered = self.written(key).filter(|w| {
                w.deployment.is_of(&ev.sha)
                    && w.deployment.status() == Some(Status::Running)
                    && w.at.elapsed() < TRUST_RUNNING_FOR
            });
            if let Some(w) = remembered {
                if let Some(reason) = ends_before_start(ev, &w) {
                    return Ok(Outcome::stale(reason));
                }
                match self.gitlab.update_deployment(ctx, project, w.deployment.id, ev.status).await {
                    Ok(d) => return Ok(self.wrote(key, Action::Updated, d, ev)),
                    Err(e) if e.is_transition_refused() => self.forget(key),
                    Err(e) => return Err(e),
                }
            }
        }

        let recent = self.gitlab.recent_deployments(ctx, project, &ev.environment, None, WINDOW).await?;
        let items = &recent.items;
        // What this container remembers of a deployment that has changed since is no longer true.
        if let Some(w) = self.written(key)
            && items.iter().any(|d| d.id == w.deployment.id && !w.describes(d))
        {
            self.forget(key);
        }
        let running = items.iter().find(|d| d.is_of(&ev.sha) && d.status() == Some(Status::Running));
        // The environment's latest change, and what runs: the success that finished last (as
        // GitLab's `last_deployment`, by `finished_at`, which a success's `updated_at` is),
        // unless a newer rollout is still running.
        let latest = items.iter().max_by_key(|d| (d.changed_at(), d.id));
        let live = items
            .iter()
            .filter(|d| d.status() == Some(Status::Success))
            .max_by_key(|d| (d.changed_at(), d.id))
            .filter(|l| !items.iter().any(|d| d.id > l.id && d.status() == Some(Status::Running)));
        let live_is_this = live.filter(|d| d.is_of(&ev.sha));

        if ev.status == Status::Running {
            if let Some(d) = running.or(live_is_this) {
                return Ok(self.confirmed(key, d, ev));
            }
            if let Some(reason) = self.stale(ev, key, latest) {
                return Ok(Outcome::stale(reason));
            }
            return self.create(ev, key, &recent, ctx).await;
        }

        if let Some(d) = running {
            // Known to this container: the rollout's start. An end older than it is a late
            // redelivery from an earlier attempt of the same sha.
            if let Some(reason) = self.written(key).filter(|w| w.describes(d)).and_then(|w| ends_before_start(ev, &w)) {
                return Ok(Outcome::stale(reason));
            }
            return self.finish(ev, key, d, ctx).await;
        }
        let same = match ev.status {
            Status::Success => live_is_this,
            status => latest.filter(|n| n.is_of(&ev.sha) && n.status() == Some(status)),
        };
        if let Some(d) = same {
            return Ok(self.confirmed(key, d, ev));
        }
        if let Some(reason) = self.stale(ev, key, latest) {
            return Ok(Outcome::stale(reason));
        }
        // Before creating, make sure no running deployment of the sha hides beyond the window.
        if recent.more {
            let running =
                self.gitlab.recent_deployments(ctx, project, &ev.environment, Some(Status::Running), 100).await?;
            if let Some(d) = running.items.iter().find(|d| d.is_of(&ev.sha)) {
                return self.finish(ev, key, d, ctx).await;
            }
        }
        self.create(ev, key, &recent, ctx).await
    }

    /// Moves a running deployment to the event's final status.
    async fn finish(
        &self,
        ev: &DeploymentEvent,
        key: &EnvKey,
        running: &Deployment,
        ctx: &CallCtx,
    ) -> Result<Outcome, GitLabError> {
        match self.gitlab.update_deployment(ctx, &key.0, running.id, ev.status).await {
            Ok(d) => Ok(self.wrote(key, Action::Updated, d, ev)),
            // Someone else finished it between our look and our update.
            Err(GitLabError::Rejected { status: 400, message }) if message.contains("cannot transition") => {
                let d = self.gitlab.get_deployment(ctx, &key.0, running.id).await?;
                if d.status() == Some(ev.status) {
                    Ok(Outcome::of(Action::Unchanged, d))
                } else {
                    Err(GitLabError::Rejected { status: 400, message })
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn create(
        &self,
        ev: &DeploymentEvent,
        key: &EnvKey,
        recent: &Recent,
        ctx: &CallCtx,
    ) -> Result<Outcome, GitLabError> {
        let new = NewDeployment {
            environment: &ev.environment,
            sha: &ev.sha,
            git_ref: &ev.git_ref,
            tag: ev.tag,
            status: ev.status,
        };
        let d = self.gitlab.create_deployment(ctx, &key.0, &new).await?;
        // GitLab answers a success equal to the environment's last successful deployment with
        // that deployment (Deployments::CreateService): nothing new was made.
        if recent.items.iter().any(|n| d.id <= n.id) {
            return Ok(Outcome::of(Action::Unchanged, d));
        }
        Ok(self.wrote(key, Action::Created, d, ev))
    }

    /// Whether the event happened before the environment's latest change in GitLab: judged
    /// against the tool's own time of the event that made (or confirmed) that change when this
    /// container saw it, else against GitLab's clock with the skew.
    fn stale(&self, ev: &DeploymentEvent, key: &EnvKey, latest: Option<&Deployment>) -> Option<String> {
        let (at, latest) = (ev.occurred_at?, latest?);
        let by_tool = self.written(key).filter(|w| w.describes(latest)).and_then(|w| w.occurred_at);
        let (reference, allowance, whose) = match by_tool {
            Some(t) => (t, Duration::ZERO, "by the tool's own clock"),
            // The spool delivers an environment's events in order, later than they happened:
            // GitLab's clock then shows when the drain wrote, not when the tool acted.
            None if ev.ordered => return None,
            None => (latest.changed_at()?, self.clock_skew, "by GitLab's clock"),
        };
        // Checked: a time near the end of the calendar, or a huge skew, must not overflow.
        let limit = time::Duration::try_from(allowance).ok().and_then(|a| at.checked_add(a));
        if limit.is_none_or(|l| l >= reference) {
            return None;
        }
        Some(format!(
            "the event happened at {}, older than the environment's latest change (deployment #{}, {} {}, at {} {whose}); a delivery that old changes nothing",
            format_time(at),
            latest.id,
            latest.sha,
            latest.status,
            format_time(reference),
        ))
    }

    fn written(&self, key: &EnvKey) -> Option<Written> {
        self.written.lock().ok()?.get(key).cloned()
    }

    fn forget(&self, key: &EnvKey) {
        if let Ok(mut m) = self.written.lock() {
            m.remove(key);
        }
    }

    /// Remembers a write of this container (never in a dry run, whose ids are made up).
    fn wrote(&self, key: &EnvKey, action: Action, d: Deployment, ev: &DeploymentEvent) -> Outcome {
        self.remember(key, Written { deployment: d.clone(), occurred_at: ev.occurred_at, at: Instant::now() });
        Outcome::of(action, d)
    }

    /// An event that finds its state already in GitLab still says, by its time, that the state
    /// held then: an end delivered before its start makes that start stale, not a retry. A
    /// state this container knows the time of is moved forward. A finished state it did not
    /// write (another container did, or its own create's answer was lost) is remembered with
    /// the event's time only when that time is after GitLab's record of the change: the
    /// event's time says nothing of when that state began, but it does say the environment was
    /// in it then, which is newer than what GitLab's clock tells. A running one is never
    /// adopted: the one-call finish trusts only running deployments this container created.
    fn confirmed(&self, key: &EnvKey, d: &Deployment, ev: &DeploymentEvent) -> Outcome {
        match self.written(key).filter(|w| w.describes(d)) {
            Some(w) => {
                let occurred_at = w.occurred_at.max(ev.occurred_at);
                if occurred_at != w.occurred_at {
                    self.remember(key, Written { occurred_at, ..w });
                }
            }
            None if d.status != Status::Running.as_str()
                && ev.occurred_at.zip(d.changed_at()).is_some_and(|(at, changed)| at >= changed) =>
            {
                self.remember(key, Written { deployment: d.clone(), occurred_at: ev.occurred_at, at: Instant::now() });
            }
            None => {}
        }
        Outcome::of(Action::Unchanged, d.clone())
    }

    fn remember(&self, key: &EnvKey, w: Written) {
        if self.gitlab.dry_run() {
            return;
        }
        if let Ok(mut m) = self.written.lock() {
            if m.len() >= MEMORY_LIMIT {
                m.clear();
            }
            m.insert(key.clone(), w);
        }
    }
}
