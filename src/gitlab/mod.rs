//! GitLab as the rest of the bridge sees it: a port ([`GitLab`]) with two implementations —
//! [`http::HttpGitLab`], the REST client that calls a real GitLab, and [`memory::MemoryGitLab`],
//! the in-memory GitLab a dry run plans against. A dry run is the choice of the second, made
//! once when the bridge is assembled; nothing downstream asks whether it is one.
//!
//! Both describe every call the same way ([`Call`], built by the functions of [`calls`]): the
//! HTTP client sends it, the in-memory GitLab records it, so a dry run lists the exact calls a
//! live run would make.

pub mod calls;
pub mod http;
pub mod memory;

use serde::Serialize;
use serde_json::Value;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::model::{BoxFuture, Deployment, Environment, Status, Tier};
use crate::secrets::SecretsError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum GitLabError {
    /// GitLab refused the data (unknown commit or ref, invalid environment, unknown project).
    #[error("GitLab rejected the request ({status}): {message}")]
    Rejected { status: u16, message: String },
    #[error(
        "GitLab refused the token (401 Unauthorized) even after the secret was read again; put a valid token with the `api` scope in `gitlab_token`"
    )]
    Unauthorized,
    #[error(
        "GitLab answered 403 Forbidden ({0}); the token needs the `api` scope and at least the Developer role (and 'Allowed to deploy' on protected environments)"
    )]
    Forbidden(String),
    #[error("GitLab is rate-limiting requests (429) and the wait does not fit in this request's deadline; retry later")]
    RateLimited { retry_after: Option<Duration> },
    #[error("GitLab is unavailable: {0}")]
    Unavailable(String),
    /// A create call failed after it may have reached GitLab; the lifecycle re-checks before
    /// retrying. `in_flight`: no answer came from GitLab itself (a timeout, a broken connection,
    /// a gateway's 502/503/504), so GitLab may still be carrying it out; otherwise GitLab has
    /// finished with it, and what it did is what it shows now.
    #[error("GitLab failed while creating a deployment: {message}")]
    Ambiguous { message: String, in_flight: bool },
    /// An earlier create in the environment may still be committing in GitLab; nothing is
    /// created before GitLab shows it or `until_ms` (Unix milliseconds) has passed.
    #[error("{reason}")]
    Waiting { reason: String, until_ms: u64 },
    #[error("the deadline ran out waiting for GitLab: {0}")]
    Deadline(String),
    #[error(
        "GitLab answered with a redirect to {location:?}; set GITLAB_URL (or the project) to the final address, redirects are not followed so the token cannot leak"
    )]
    Redirect { location: String },
    #[error("GitLab sent a response the bridge cannot read: {0}")]
    InvalidResponse(String),
    #[error(transparent)]
    Secrets(#[from] SecretsError),
}

impl GitLabError {
    /// GitLab refused a status change because the deployment is not what the caller believed:
    /// it no longer exists (404) or is already in that status (`cannot transition via ...`).
    pub fn is_transition_refused(&self) -> bool {
        matches!(self, GitLabError::Rejected { status: 404, .. }) || self.is_cannot_transition()
    }

    /// GitLab's state machine refused the status (`cannot transition via "..."`).
    pub fn is_cannot_transition(&self) -> bool {
        matches!(self, GitLabError::Rejected { status: 400, message } if message.contains("cannot transition"))
    }

    /// Whether GitLab may take the same request later (it is down, slow, throttling, or the
    /// token or its rights are wrong: all fixed without the tool). What GitLab refused in the
    /// data itself (an unknown commit, a bad environment name) never will be.
    pub fn is_transient(&self) -> bool {
        !matches!(self, GitLabError::Rejected { .. })
    }
}

/// A window of an environment's newest deployments.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recent {
    /// Newest first.
    pub items: Vec<Deployment>,
    /// Older deployments exist beyond the window.
    pub more: bool,
}

/// The body of `POST /projects/:id/deployments`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewDeployment {
    pub environment: String,
    pub sha: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub tag: bool,
    pub status: Status,
}

/// One GitLab call as made (or, in a dry run, as it would be made).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Call {
    pub method: String,
    /// Path and query below the GitLab base URL, e.g. `/api/v4/projects/1/deployments`.
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
}

/// What one webhook may spend on GitLab, and the calls it made.
#[derive(Debug)]
pub struct CallCtx {
    deadline: Instant,
    calls: Mutex<Vec<Call>>,
}

impl CallCtx {
    pub fn new(deadline: Instant) -> Self {
        CallCtx { deadline, calls: Mutex::new(Vec::new()) }
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Time left before the deadline, `None` once it has passed.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())
    }

    /// A context for part of this one's work that must end by `deadline` (or this one's, if
    /// sooner); its calls are added back with [`Self::absorb`].
    pub fn narrowed(&self, deadline: Instant) -> CallCtx {
        CallCtx::new(self.deadline.min(deadline))
    }

    /// Adds the calls of a narrowed context to this one's.
    pub fn absorb(&self, other: &CallCtx) {
        for call in other.calls() {
            self.record(call);
        }
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// How many calls were made (or planned).
    pub fn count(&self) -> usize {
        self.calls.lock().map(|c| c.len()).unwrap_or(0)
    }

    pub(crate) fn record(&self, call: Call) {
        if let Ok(mut c) = self.calls.lock() {
            c.push(call);
        }
    }
}

/// What [`GitLab::warm_up`] could not do (`None`: done, or nothing to do).
#[derive(Debug, Default)]
pub struct WarmUp {
    pub secret: Option<String>,
    pub gitlab: Option<String>,
}

/// The GitLab calls the lifecycle, the environments and the facade make. Every call counts
/// against the context's deadline and is recorded in it.
pub trait GitLab: Send + Sync {
    /// The environment's newest `per_page` deployments (at most 100), newest first, optionally
    /// of one status; `more` says whether older ones exist beyond them.
    fn recent_deployments<'a>(
        &'a self,
        ctx: &'a CallCtx,
        project: &'a str,
        environment: &'a str,
        status: Option<Status>,
        per_page: u32,
    ) -> BoxFuture<'a, Result<Recent, GitLabError>>;

    /// The numeric id of a project named by its full path (`None`: GitLab gave none).
    fn project_id<'a>(&'a self, ctx: &'a CallCtx, project: &'a str) -> BoxFuture<'a, Result<Option<u64>, GitLabError>>;

    fn get_deployment<'a>(
        &'a self,
        ctx: &'a CallCtx,
        project: &'a str,
        id: u64,
    ) -> BoxFuture<'a, Result<Deployment, GitLabError>>;

    /// The full sha of a revision (a short sha, a branch, a tag), `None` if GitLab does not know it.
    fn resolve_commit<'a>(
        &'a self,
        ctx: &'a CallCtx,
        project: &'a str,
        rev: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, GitLabError>>;

    /// The environment called exactly `name`, if the project has one.
    fn find_environment<'a>(
        &'a self,
        ctx: &'a CallCtx,
        project: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Environment>, GitLabError>>;

    fn create_environment<'a>(
        &'a self,
        ctx: &'a CallCtx,
        project: &'a str,
        name: &'a str,
        settings: EnvironmentChange<'a>,
    ) -> BoxFuture<'a, Result<Environment, GitLabError>>;

    fn update_environment<'a>(
        &'a self,
        ctx: &'a CallCtx,
        project: &'a str,
        id: u64,
        settings: EnvironmentChange<'a>,
    ) -> BoxFuture<'a, Result<Environment, GitLabError>>;

    fn create_deployment<'a>(
        &'a self,
        ctx: &'a CallCtx,
        project: &'a str,
        deployment: &'a NewDeployment,
    ) -> BoxFuture<'a, Result<Deployment, GitLabError>>;

    fn update_deployment<'a>(
        &'a self,
        ctx: &'a CallCtx,
        project: &'a str,
        id: u64,
        status: Status,
    ) -> BoxFuture<'a, Result<Deployment, GitLabError>>;

    /// Readies the first webhook's work ahead of it (Lambda init); never fails, says what it
    /// could not do.
    fn warm_up(&self) -> BoxFuture<'_, WarmUp>;

    /// Whether calls are planned rather than sent (the in-memory GitLab of a dry run): answers
    /// and log lines then say what a live run would do.
    fn dry_run(&self) -> bool;

    /// What a dry run planned so far (per environment and sha, the statuses); `None` for a real GitLab.
    fn planned(&self) -> Option<Value>;
}

/// What an environment should be given: each part only when set.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EnvironmentChange<'a> {
    pub tier: Option<Tier>,
    pub external_url: Option<&'a str>,
}
