//! Carries out an [`Event`]'s change in GitLab: the rules are [`plan`]'s (pure), the I/O is
//! here, against the [`GitLab`] port — the HTTP client, or the in-memory GitLab of a dry run.
//!
//! Per event: expand an abbreviated sha (GitLab's commits API), then plan from what GitLab
//! shows (one read of the environment's newest deployments) and what this container remembers
//! of its own last write there, and take the step (at most one write). Events for one
//! (project, environment) are serialized within the process, keyed by the numeric project id so
//! that the id and the path of one project share the lock. After the deployment, the
//! environment's tier and URL (never before: a call GitLab refuses changes nothing).

pub mod plan;

#[cfg(test)]
mod model;

use serde::Serialize;
use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

use crate::environment::{self, Environments};
use crate::event::{Change, Deploy, Event};
use crate::gitlab::{CallCtx, GitLab, GitLabError, NewDeployment, Recent};
use crate::model::{Deployment, Status};
use crate::spool::claims::{Carried, Claim, Claims, MemoryClaims};
use crate::spool::now_ms;
use plan::{Attempt, Memory, Step, Written};

const LOCK_STRIPES: usize = 64;
/// Bound of the per-container memories (projects, last writes, warnings); cleared when full.
const MEMORY_LIMIT: usize = 10_000;

/// What an event did in GitLab.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Created,
    Updated,
    Unchanged,
    /// The delivery is older than what GitLab already shows; nothing was changed.
    Stale,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::Updated => "updated",
            Action::Unchanged => "unchanged",
            Action::Stale => "stale",
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

type EnvKey = (String, String);

/// A map that forgets everything once it holds [`MEMORY_LIMIT`] entries.
struct Bounded<K, V>(std::sync::Mutex<HashMap<K, V>>);

impl<K: Hash + Eq, V: Clone> Bounded<K, V> {
    fn new() -> Self {
        Bounded(std::sync::Mutex::new(HashMap::new()))
    }

    fn get(&self, k: &K) -> Option<V> {
        self.0.lock().ok()?.get(k).cloned()
    }

    fn insert(&self, k: K, v: V) {
        if let Ok(mut m) = self.0.lock() {
            if m.len() >= MEMORY_LIMIT {
                m.clear();
            }
            m.insert(k, v);
        }
    }

    fn remove(&self, k: &K) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(k);
        }
    }
}

pub struct Lifecycle {
    gitlab: Arc<dyn GitLab>,
    clock_skew: Duration,
    /// Creates whose outcome is not known yet, by environment ([`crate::spool::claims`]).
    claims: Arc<dyn Claims>,
    /// How long after it was sent a create may still be committed by GitLab.
    settle: Duration,
    locks: Vec<Mutex<()>>,
    environments: Environments,
    /// Full project paths (lower case) to numeric ids.
    projects: Bounded<String, String>,
    written: Bounded<EnvKey, Written>,
    warned: std::sync::Mutex<HashSet<(String, String)>>,
}

impl Lifecycle {
    /// `clock_skew`: how much later than the tool's time of an event GitLab's clock may show a
    /// change before the event counts as older than it.
    pub fn new(gitlab: Arc<dyn GitLab>, clock_skew: Duration) -> Self {
        Lifecycle {
            gitlab,
            clock_skew,
            claims: Arc::new(MemoryClaims::default()),
            settle: CREATE_SETTLE,
            locks: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            environments: Environments::default(),
            projects: Bounded::new(),
            written: Bounded::new(),
            warned: Default::default(),
        }
    }

    /// Where claims are kept (by default, this process's memory), and how long a create may
    /// still be committed after it was sent (`GITLAB_CREATE_SETTLE_SECONDS`).
    pub fn with_claims(self, claims: Arc<dyn Claims>, settle: Duration) -> Self {
        Lifecycle { claims, settle, ..self }
    }

    pub fn gitlab(&self) -> &dyn GitLab {
        self.gitlab.as_ref()
    }

    /// The claim of the event's environment, to travel with it into the spool (so that the
    /// container that drains it honours it). Only from what this container knows already: the
    /// project's id as it resolved it, its claims.
    pub async fn carried_claim(&self, ev: &Event) -> Option<Carried> {
        let project = ev.project.as_str();
        let id = match project.bytes().all(|b| b.is_ascii_digit()) {
            true => project.to_string(),
            false => self.projects.get(&project.to_ascii_lowercase())?,
        };
        let key = claim_key(&(id, ev.environment.to_string()));
        let claim = self.claims.get(&key).await.ok()??;
        Some(Carried { key, claim })
    }

    /// Takes on a claim that came with a spooled event, unless a newer one is known here.
    pub async fn adopt_claim(&self, carried: &Carried) {
        let known = self.claims.get(&carried.key).await.ok().flatten();
        if known.is_none_or(|k| k.sent_ms < carried.claim.sent_ms)
            && let Err(e) = self.claims.put(&carried.key, &carried.claim, self.settle.as_millis() as u64).await
        {
            tracing::warn!(error = %e, "the claim that came with a spooled event could not be recorded");
        }
    }

    /// How GitLab will treat the event's environment for DORA and MR linking; each warning is
    /// logged once per environment per container and returned with every answer.
    pub fn warnings(&self, ev: &Event) -> Vec<String> {
        let tier = ev.deploy().and_then(|d| d.tier);
        let warnings = environment::warnings(ev.environment.as_str(), tier, !ev.environment_by_bridge);
        if !warnings.is_empty() {
            let first = self
                .warned
                .lock()
                .map(|mut w| {
                    if w.len() >= MEMORY_LIMIT {
                        w.clear();
                    }
                    w.insert((ev.project.to_string(), ev.environment.to_string()))
                })
                .unwrap_or(false);
            if first {
                for w in &warnings {
                    tracing::warn!(project = %ev.project, environment = %ev.environment, "{w}");
                }
            }
        }
        warnings
    }

    /// Brings GitLab to the state the event describes. An abbreviated sha is expanded first
    /// (in `ev`, so the caller sees the commit GitLab knows); an unknown commit is GitLab's
    /// refusal, explained where the source knows the sha may be a GitOps revision.
    pub async fn apply(&self, ev: &mut Event, ctx: &CallCtx) -> Result<Outcome, GitLabError> {
        let Event { project, source, .. } = &*ev;
        let (project, source) = (project.to_string(), source.clone());
        let result = match &mut ev.change {
            Change::Deployment(d) => match self.expand_sha(&project, &source, d, ctx).await {
                Ok(()) => {
                    let (environment, at, ordered) = (ev.environment.to_string(), ev.occurred_at, ev.ordered);
                    let d = &*d;
                    let attempt = Attempt { sha: d.sha.as_str(), status: d.status, occurred_at: at, ordered };
                    self.deploy(&project, &environment, d, &attempt, ctx).await
                }
                Err(e) => Err(e),
            },
        };
        result.map_err(|e| explain_unknown_commit(e, ev))
    }

    /// The numeric id of a project (asked of GitLab once per container for a path), so that
    /// every name of one project leads to the same lock, memory and API path. Where GitLab
    /// gives none (a dry run), a path stays a path.
    async fn project_id(&self, ctx: &CallCtx, project: &str) -> Result<String, GitLabError> {
        if project.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(project.to_string());
        }
        let key = project.to_ascii_lowercase();
        if let Some(id) = self.projects.get(&key) {
            return Ok(id);
        }
        let Some(id) = self.gitlab.project_id(ctx, project).await? else {
            return Ok(project.to_string());
        };
        self.projects.insert(key, id.to_string());
        Ok(id.to_string())
    }

    fn lock_for(&self, key: &EnvKey) -> &Mutex<()> {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        &self.locks[(h.finish() as usize) % LOCK_STRIPES]
    }

    /// Expands an abbreviated sha to the full one GitLab knows; a commit GitLab does not have
    /// is refused like an unknown full sha.
    async fn expand_sha(&self, project: &str, source: &str, d: &mut Deploy, ctx: &CallCtx) -> Result<(), GitLabError> {
        if !d.sha.is_abbreviated() {
            return Ok(());
        }
        let full = self.gitlab.resolve_commit(ctx, project, d.sha.as_str()).await?;
        match full.as_deref().and_then(crate::event::CommitSha::full) {
            Some(full) => {
                d.sha = full;
                Ok(())
            }
            None => Err(GitLabError::Rejected {
                status: 404,
                message: format!(
                    "the {source} event names commit {}, which GitLab project {project} does not have",
                    d.sha
                ),
            }),
        }
    }

    /// The deployment, then the environment's tier and URL — changed only once the deployment
    /// call succeeded, so a call GitLab refuses (an unknown commit) changes nothing. GitLab's
    /// work on the transition to `success` (merge request linking in a folder, the
    /// first-deployed-to-production metric) reads the tier then, so a `success` that must
    /// change the tier opens the deployment as `running`, sets the tier, and finishes it.
    async fn deploy(
        &self,
        project: &str,
        environment: &str,
        d: &Deploy,
        ev: &Attempt<'_>,
        ctx: &CallCtx,
    ) -> Result<Outcome, GitLabError> {
        let key = (self.project_id(ctx, project).await?, environment.to_string());
        let _guard = self.lock_for(&key).lock().await;
        let mut notes = Vec::new();
        let tier_first = match d.tier.filter(|_| d.status == Status::Success) {
            Some(tier) => match self.environments.tier_differs(self.gitlab(), ctx, &key.0, environment, tier).await {
                Ok(differs) => differs,
                Err(e) => {
                    notes.push(format!("the environment's tier could not be read: {e}"));
                    false
                }
            },
            None => false,
        };
        let mut environment_done = false;
        let mut opened = None;
        if tier_first {
            let start = Attempt { status: Status::Running, ..*ev };
            let first = self.rollout(&start, d, &key, ctx).await?;
            if first.action == Action::Created {
                self.set_environment(d, &key, ctx, &mut notes).await;
                environment_done = true;
                opened = first.deployment.map(|d| d.id);
            }
        }
        let mut outcome = self.rollout(ev, d, &key, ctx).await?;
        if outcome.deployment.is_some() && !environment_done {
            self.set_environment(d, &key, ctx, &mut notes).await;
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
    async fn set_environment(&self, d: &Deploy, key: &EnvKey, ctx: &CallCtx, notes: &mut Vec<String>) {
        let ensured =
            self.environments.ensure(self.gitlab(), ctx, &key.0, &key.1, d.tier, d.external_url.as_deref()).await;
        if let Err(e) = ensured {
            tracing::warn!(project = %key.0, environment = %key.1, error = %e, "could not set the environment's tier or URL");
            notes.push(format!("the environment's tier or external URL could not be set: {e}"));
        }
    }

    /// One rollout step, looking again when a create failed ambiguously: a create that failed
    /// after reaching GitLab may or may not have happened, so a retry never makes a second
    /// deployment.
    async fn rollout(&self, ev: &Attempt<'_>, d: &Deploy, key: &EnvKey, ctx: &CallCtx) -> Result<Outcome, GitLabError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.rollout_once(ev, d, key, ctx).await {
                Ok(outcome) => return Ok(outcome),
                Err(GitLabError::Ambiguous { message: msg, .. }) if attempt < 3 => {
                    let wait = Duration::from_millis(200 * attempt);
                    match ctx.remaining() {
                        Some(rem) if wait < rem => {
                            tracing::warn!(attempt, error = %msg, "create failed ambiguously; re-checking GitLab");
                            tokio::time::sleep(wait).await;
                        }
                        _ => return Err(GitLabError::Unavailable(msg)),
                    }
                }
                Err(GitLabError::Ambiguous { message, .. }) => return Err(GitLabError::Unavailable(message)),
                Err(e) => return Err(e),
            }
        }
    }

    async fn rollout_once(
        &self,
        ev: &Attempt<'_>,
        d: &Deploy,
        key: &EnvKey,
        ctx: &CallCtx,
    ) -> Result<Outcome, GitLabError> {
        let (project, environment) = (key.0.as_str(), key.1.as_str());
        // The end of a rollout this container started: one call. If GitLab says the remembered
        // deployment is gone or already has the status, look it up.
        match plan::without_reading(ev, self.written.get(key).as_ref(), Instant::now()) {
            Some(Step::Stale(reason)) => return Ok(Outcome::stale(reason)),
            Some(Step::Finish(running)) => {
                match self.gitlab.update_deployment(ctx, project, running.id, ev.status).await {
                    Ok(done) => return Ok(self.wrote(key, Action::Updated, done, ev)),
                    Err(e) if e.is_transition_refused() => self.written.remove(key),
                    Err(e) => return Err(e),
                }
            }
            _ => {}
        }

        let recent = self.gitlab.recent_deployments(ctx, project, environment, None, plan::WINDOW).await?;
        let decided = plan::plan(ev, &recent, self.written.get(key).as_ref(), self.clock_skew, Instant::now());
        match decided.memory {
            Memory::Keep => {}
            Memory::Forget => self.written.remove(key),
            Memory::Set(w) => self.written.insert(key.clone(), *w),
        }
        let step = match decided.step {
            Step::LookBeyondWindow => {
                let running = self
                    .gitlab
                    .recent_deployments(ctx, project, environment, Some(Status::Running), plan::BEYOND)
                    .await?;
                plan::beyond_window(ev, &running)
            }
            step => step,
        };
        match step {
            Step::Unchanged(found) => Ok(Outcome::of(Action::Unchanged, found)),
            Step::Stale(reason) => Ok(Outcome::stale(reason)),
            Step::Finish(running) => self.finish(ev, key, &running, ctx).await,
            Step::Create => self.create(ev, d, key, &recent, ctx).await,
            // Decided above; a second look is never asked for.
            Step::LookBeyondWindow => Err(GitLabError::InvalidResponse("the rollout was not decided".into())),
        }
    }

    /// Moves a running deployment to the event's final status.
    async fn finish(
        &self,
        ev: &Attempt<'_>,
        key: &EnvKey,
        running: &Deployment,
        ctx: &CallCtx,
    ) -> Result<Outcome, GitLabError> {
        match self.gitlab.update_deployment(ctx, &key.0, running.id, ev.status).await {
            Ok(done) => Ok(self.wrote(key, Action::Updated, done, ev)),
            // Someone else finished it between our look and our update.
            Err(e) if e.is_cannot_transition() => {
                let now = self.gitlab.get_deployment(ctx, &key.0, running.id).await?;
                if now.status() == Some(ev.status) { Ok(Outcome::of(Action::Unchanged, now)) } else { Err(e) }
            }
            Err(e) => Err(e),
        }
    }

    async fn create(
        &self,
        ev: &Attempt<'_>,
        d: &Deploy,
        key: &EnvKey,
        recent: &Recent,
        ctx: &CallCtx,
    ) -> Result<Outcome, GitLabError> {
        let new = NewDeployment {
            environment: key.1.clone(),
            sha: d.sha.to_string(),
            git_ref: d.git_ref.clone(),
            tag: d.tag,
            status: ev.status,
        };
        // An earlier create here whose answer never came may still be committed by GitLab:
        // look for it, and wait for it, before creating again.
        let (claim_key, now, settle_ms) = (claim_key(key), now_ms(), self.settle.as_millis() as u64);
        if let Some(earlier) = self.claims.get(&claim_key).await.map_err(unclaimed)?
            && let Some(reason) = plan::claim_blocks(&earlier, recent, now, self.settle)
        {
            return Err(GitLabError::Waiting { reason, until_ms: earlier.sent_ms.saturating_add(settle_ms) });
        }
        // Recorded before the call is sent: a second attempt (after `kill -9`, from the spool,
        // in another container) finds it.
        let above = recent.items.iter().map(|d| d.id).max().unwrap_or(0);
        let claim = Claim { sha: new.sha.clone(), status: ev.status, sent_ms: now, above };
        self.claims.put(&claim_key, &claim, settle_ms).await.map_err(unclaimed)?;
        let created = self.gitlab.create_deployment(ctx, &key.0, &new).await;
        // Unless the call went out and no answer of GitLab's own came back (a timeout, a broken
        // connection, a gateway's 502/503/504), GitLab is done with it — created, refused,
        // failed in itself, or never reached — and what it did it shows now.
        let in_flight =
            matches!(&created, Err(GitLabError::Ambiguous { in_flight: true, .. } | GitLabError::Deadline(_)));
        if !in_flight && let Err(e) = self.claims.clear(&claim_key).await {
            tracing::warn!(error = %e, "the claim of an answered create could not be cleared; it settles by itself");
        }
        let created = created?;
        if !plan::created_new(&created, recent) {
            return Ok(Outcome::of(Action::Unchanged, created));
        }
        Ok(self.wrote(key, Action::Created, created, ev))
    }

    /// Remembers a write of this container.
    fn wrote(&self, key: &EnvKey, action: Action, d: Deployment, ev: &Attempt<'_>) -> Outcome {
        self.written
            .insert(key.clone(), Written { deployment: d.clone(), occurred_at: ev.occurred_at, at: Instant::now() });
        Outcome::of(action, d)
    }

    /// Deployment `id` of `project` as GitLab has it (a read).
    pub async fn find_deployment(&self, project: &str, id: u64, ctx: &CallCtx) -> Result<Deployment, GitLabError> {
        let project = self.project_id(ctx, project).await?;
        self.gitlab.get_deployment(ctx, &project, id).await
    }

    /// The GitLab-compatible `PUT /projects/:id/deployments/:deployment_id` ([`plan::status_change`]).
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
        let current = match self.written.get(&key) {
            Some(w) if w.deployment.id == id && w.deployment.changed_at() >= found.changed_at() => w.deployment,
            _ => found,
        };
        if !plan::status_change(&current, status)? {
            return Ok(Outcome::of(Action::Unchanged, current));
        }
        let done = self.gitlab.update_deployment(ctx, &key.0, id, status).await?;
        self.written.insert(key, Written { deployment: done.clone(), occurred_at: None, at: Instant::now() });
        Ok(Outcome::of(Action::Updated, done))
    }
}

/// How long after it was sent GitLab may still commit a create, by default: its request
/// timeout (`GITLAB_RAILS_RACK_TIMEOUT`, 60 s) after its queue's (`GITLAB_RAILS_WAIT_TIMEOUT`,
/// 90 s), config/initializers/rack_timeout.rb.
pub const CREATE_SETTLE: Duration = Duration::from_secs(150);

/// The key of an environment's claim.
fn claim_key(key: &EnvKey) -> String {
    format!("{}\u{0}{}", key.0, key.1)
}

/// A claim that cannot be recorded: nothing is created without one.
fn unclaimed(e: crate::spool::SpoolError) -> GitLabError {
    GitLabError::Unavailable(format!("the create's claim cannot be recorded ({e}); nothing is created without it"))
}

/// GitLab's "The commit does not exist" names neither the sha nor where it came from; when the
/// source knows the sha may be a GitOps revision, say so and how to map it.
fn explain_unknown_commit(e: GitLabError, ev: &Event) -> GitLabError {
    match (e, ev.deploy()) {
        (GitLabError::Rejected { status, message }, Some(d)) if message.contains("The commit does not exist") => {
            let mut message = format!("{message}: GitLab project {} has no commit {}", ev.project, d.sha);
            if let Some(hint) = &d.sha_hint {
                message.push_str(&format!(". {hint}"));
            }
            GitLabError::Rejected { status, message }
        }
        (other, _) => other,
    }
}

#[cfg(test)]
mod tests {
    //! The lifecycle's own behaviour against the in-memory GitLab: what it reads and writes,
    //! in which order, and what it remembers (the rules themselves are `plan`'s tests).
    use super::*;
    use crate::event::{Defaults, EventDraft, Overrides};
    use crate::gitlab::memory::MemoryGitLab;

    const X: &str = "a91957a858320c0e17f3a0eca7cfacbff50ea29a";
    const Y: &str = "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0";

    fn lifecycle() -> (Arc<MemoryGitLab>, Lifecycle) {
        let gitlab = Arc::new(MemoryGitLab::default());
        (gitlab.clone(), Lifecycle::new(gitlab, Duration::from_secs(30)))
    }

    fn event(sha: &str, status: Status) -> Event {
        let draft = EventDraft {
            environment: Some("production".into()),
            sha: Some(sha.into()),
            status: Some(status),
            short_sha: true,
            ..Default::default()
        };
        let overrides = Overrides { project: Some("42".into()), ..Default::default() };
        Event::from_draft("generic", draft, &overrides, &Defaults::default()).unwrap()
    }

    fn ctx() -> CallCtx {
        CallCtx::new(Instant::now() + Duration::from_secs(5))
    }

    fn calls(ctx: &CallCtx) -> Vec<String> {
        ctx.calls()
            .into_iter()
            .map(|c| format!("{} {}", c.method, c.path.split('?').next().unwrap_or_default()))
            .collect()
    }

    #[tokio::test]
    async fn a_rollout_is_one_deployment_and_its_end_costs_one_call() {
        let (gitlab, lc) = lifecycle();
        let c = ctx();
        let started = lc.apply(&mut event(X, Status::Running), &c).await.unwrap();
        assert_eq!(started.action, Action::Created);
        assert_eq!(calls(&c), ["GET /api/v4/projects/42/deployments", "POST /api/v4/projects/42/deployments"]);
        let c = ctx();
        let ended = lc.apply(&mut event(X, Status::Success), &c).await.unwrap();
        assert_eq!((ended.action, ended.deployment.map(|d| d.id)), (Action::Updated, started.deployment.map(|d| d.id)));
        assert_eq!(calls(&c).len(), 1, "{:?}", calls(&c));
        let c = ctx();
        assert_eq!(lc.apply(&mut event(X, Status::Success), &c).await.unwrap().action, Action::Unchanged);
        assert_eq!(gitlab.summary()[0]["statuses"], serde_json::json!(["running", "success"]));
    }

    /// A create claimed by an earlier attempt (whose answer never came) holds the environment
    /// until GitLab shows it; found, nothing is created again. Every create records its claim
    /// before it is sent, and an answered one clears it.
    #[tokio::test]
    async fn a_create_whose_answer_never_came_is_waited_for_not_made_again() {
        let (gitlab, lc) = lifecycle();
        let claims = Arc::new(MemoryClaims::default());
        let lc = lc.with_claims(claims.clone(), Duration::from_secs(150));
        let key = claim_key(&("42".into(), "production".into()));
        let claim = Claim { sha: X.into(), status: Status::Running, sent_ms: now_ms(), above: 0 };
        claims.put(&key, &claim, 150_000).await.unwrap();
        let waiting = lc.apply(&mut event(X, Status::Running), &ctx()).await.unwrap_err();
        assert!(
            matches!(&waiting, GitLabError::Waiting { reason, .. } if reason.contains("may still be committing")),
            "{waiting}"
        );
        assert!(waiting.is_transient());
        assert!(gitlab.summary().as_array().unwrap().is_empty(), "nothing created");
        // The earlier create shows up in GitLab: it is that deployment.
        claims.clear(&key).await.unwrap();
        let first = lc.apply(&mut event(X, Status::Running), &ctx()).await.unwrap();
        assert_eq!(first.action, Action::Created);
        assert!(claims.get(&key).await.unwrap().is_none(), "an answered create leaves no claim");
        claims.put(&key, &claim, 150_000).await.unwrap();
        let again = lc.apply(&mut event(X, Status::Running), &ctx()).await.unwrap();
        assert_eq!(again.action, Action::Unchanged);
        // Another rollout's create goes ahead once the claimed one is shown (id above the claim's).
        let next = lc.apply(&mut event(Y, Status::Running), &ctx()).await.unwrap();
        assert_eq!(next.action, Action::Created);
        assert_eq!(gitlab.summary().as_array().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_rollback_is_a_new_deployment() {
        let (gitlab, lc) = lifecycle();
        for sha in [X, Y, X] {
            lc.apply(&mut event(sha, Status::Running), &ctx()).await.unwrap();
            lc.apply(&mut event(sha, Status::Success), &ctx()).await.unwrap();
        }
        let shas: Vec<String> = gitlab.summary().as_array().unwrap().iter().map(|d| d["sha"].to_string()).collect();
        assert_eq!(shas.len(), 3, "{shas:?}");
    }

    #[tokio::test]
    async fn an_abbreviated_sha_is_expanded_before_anything_is_decided() {
        let (_, lc) = lifecycle();
        let mut ev = event("c0ffee12", Status::Running);
        let c = ctx();
        lc.apply(&mut ev, &c).await.unwrap();
        assert_eq!(ev.sha().unwrap().as_str(), format!("{:0<40}", "c0ffee12"), "the dry run's GitLab pads it");
        assert_eq!(calls(&c)[0], "GET /api/v4/projects/42/repository/commits/c0ffee12");
    }

    #[tokio::test]
    async fn the_facade_moves_a_running_deployment_once_and_never_a_finished_one() {
        let (_, lc) = lifecycle();
        let id = lc.apply(&mut event(X, Status::Running), &ctx()).await.unwrap().deployment.unwrap().id;
        assert_eq!(lc.set_status("42", id, Status::Failed, &ctx()).await.unwrap().action, Action::Updated);
        assert_eq!(lc.set_status("42", id, Status::Failed, &ctx()).await.unwrap().action, Action::Unchanged);
        assert!(lc.set_status("42", id, Status::Success, &ctx()).await.unwrap_err().is_cannot_transition());
    }

    #[tokio::test]
    async fn a_success_that_sets_the_tier_opens_the_deployment_first() {
        let (gitlab, lc) = lifecycle();
        let mut ev = event(X, Status::Success);
        let Change::Deployment(d) = &mut ev.change;
        // GitLab guesses `production` for this name: the tier differs.
        d.tier = Some(crate::model::Tier::Staging);
        let c = ctx();
        assert_eq!(lc.apply(&mut ev, &c).await.unwrap().action, Action::Created);
        let calls = calls(&c);
        let post = calls.iter().position(|c| c == "POST /api/v4/projects/42/deployments").unwrap();
        assert!(calls[post + 1..].iter().any(|c| c.starts_with("PUT /api/v4/projects/42/environments")), "{calls:?}");
        assert_eq!(gitlab.summary()[0]["statuses"], serde_json::json!(["running", "success"]));
    }
}
