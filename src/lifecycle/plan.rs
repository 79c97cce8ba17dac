//! The rollout rules, as pure functions: given one deployment state change, what GitLab shows
//! (the environment's newest deployments, one read) and what this container remembers of its own
//! last write there, they return the step to take — and what to remember. No I/O, no clock
//! but the one passed in: every row of the README's Lifecycle table, and every history the model
//! test found, is a unit test here (see `tests` below).
//!
//! The unit is a **rollout**: one attempt by a tool to make an environment run one sha, one
//! GitLab deployment moved `running` → `success` / `failed` / `canceled`.
//! - `running X`: a running deployment of X among them, or X being what runs (the success that
//!   finished last, no newer rollout running), means nothing changes (a redelivery, or a
//!   re-sync of what already runs); a delivery older than the environment's latest change is
//!   stale; otherwise a new `running` deployment — also for a rollback to X and for a retry
//!   after X failed.
//! - `success`/`failed`/`canceled` for X: the running deployment of X is finished; else, if X
//!   with this status is already what GitLab shows (for `success`, what runs; otherwise the
//!   latest change), nothing changes; else a stale delivery changes nothing; else one is created
//!   with the status (a rollback reported only as "it worked").

use std::time::{Duration, Instant};
use time::OffsetDateTime;

use crate::gitlab::{GitLabError, Recent};
use crate::model::{Deployment, Status, format_time};
use crate::spool::claims::Claim;

/// How many of an environment's newest deployments one look-up reads. Rollouts in flight are
/// among them; a running deployment older than that is looked for only when it matters.
pub const WINDOW: u32 = 20;
/// How many running deployments the look beyond the window reads.
pub const BEYOND: u32 = 100;
/// How long a running deployment this container created is finished without a look-up first.
/// GitLab lets a finished deployment change to another final status, so a deployment that
/// another container finished meanwhile could be changed by mistake; the older the memory, the
/// likelier that is (docs/decisions.md).
pub const TRUST_RUNNING_FOR: Duration = Duration::from_secs(3600);

/// The state change a planner decides on: one rollout's status for one sha.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    pub sha: &'a str,
    pub status: Status,
    /// The tool's own time of the event, when it has one.
    pub occurred_at: Option<OffsetDateTime>,
    /// Delivered from the spool in its environment's order: judged by tool times only.
    pub ordered: bool,
}

/// The state of an environment's deployment that this container last wrote, and the latest
/// tool time of an event that wrote or confirmed it. Dropped once GitLab shows that deployment
/// changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    pub deployment: Deployment,
    pub occurred_at: Option<OffsetDateTime>,
    /// When this container wrote (or adopted) it.
    pub at: Instant,
}

impl Written {
    /// Whether `d` is still exactly what this container wrote (same id, status and change time).
    pub fn describes(&self, d: &Deployment) -> bool {
        self.deployment.id == d.id
            && self.deployment.status == d.status
            && self.deployment.changed_at() == d.changed_at()
    }
}

/// What to do in GitLab.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Nothing to change: GitLab already shows this state (a redelivery, a re-sync).
    Unchanged(Deployment),
    /// The delivery is older than what GitLab shows (or ends an earlier attempt): nothing changes.
    Stale(String),
    /// Move this running deployment of the sha to the end status.
    Finish(Deployment),
    /// A new deployment of the sha with the event's status.
    Create,
    /// Read the environment's running deployments beyond the window first (a long rollout may
    /// hide there), then decide with [`beyond_window`].
    LookBeyondWindow,
}

/// What this container should remember of the environment afterwards (writes are remembered
/// by whoever makes them, once GitLab has answered).
#[derive(Debug, Clone, PartialEq)]
pub enum Memory {
    Keep,
    Forget,
    Set(Box<Written>),
}

/// A step, and the memory it leaves.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub step: Step,
    pub memory: Memory,
}

/// Before any read: the end of a rollout whose running deployment this container created (and
/// trusts still) is finished in one call; an end older than that rollout's start is the end of
/// an earlier attempt. `None`: read first.
pub fn without_reading(ev: &Attempt, memory: Option<&Written>, now: Instant) -> Option<Step> {
    if ev.status == Status::Running {
        return None;
    }
    let w = memory.filter(|w| {
        w.deployment.is_of(ev.sha)
            && w.deployment.status() == Some(Status::Running)
            && now.saturating_duration_since(w.at) < TRUST_RUNNING_FOR
    })?;
    Some(match ends_before_start(ev, w) {
        Some(reason) => Step::Stale(reason),
        None => Step::Finish(w.deployment.clone()),
    })
}

/// The step for `ev` given the environment's newest deployments (`recent`) and this
/// container's memory of it. `skew`: how much later than the tool's time GitLab's clock may
/// record a change before the event counts as older than it.
pub fn plan(ev: &Attempt, recent: &Recent, memory: Option<&Written>, skew: Duration, now: Instant) -> Plan {
    let items = &recent.items;
    // What this container remembers of a deployment that has changed since is no longer true.
    let changed = memory.is_some_and(|w| items.iter().any(|d| d.id == w.deployment.id && !w.describes(d)));
    let (memory, forgot) = if changed { (None, Memory::Forget) } else { (memory, Memory::Keep) };
    let plan = |step| Plan { step, memory: forgot.clone() };

    let running = items.iter().find(|d| d.is_of(ev.sha) && d.status() == Some(Status::Running));
    // The environment's latest change, and what runs: the success that finished last (as
    // GitLab's `last_deployment`, by `finished_at`, which a success's `updated_at` is), unless
    // a newer rollout is still running.
    let latest = items.iter().max_by_key(|d| (d.changed_at(), d.id));
    let live = items
        .iter()
        .filter(|d| d.status() == Some(Status::Success))
        .max_by_key(|d| (d.changed_at(), d.id))
        .filter(|l| !items.iter().any(|d| d.id > l.id && d.status() == Some(Status::Running)));
    let live_is_this = live.filter(|d| d.is_of(ev.sha));

    if ev.status == Status::Running {
        if let Some(d) = running.or(live_is_this) {
            return confirmed(ev, d, latest, memory, forgot, now);
        }
        if let Some(reason) = stale(ev, memory, latest, skew) {
            return plan(Step::Stale(reason));
        }
        return plan(Step::Create);
    }

    if let Some(d) = running {
        // Known to this container: the rollout's start. An end older than it is a late
        // redelivery from an earlier attempt of the same sha.
        if let Some(reason) = memory.filter(|w| w.describes(d)).and_then(|w| ends_before_start(ev, w)) {
            return plan(Step::Stale(reason));
        }
        return plan(Step::Finish(d.clone()));
    }
    let same = match ev.status {
        Status::Success => live_is_this,
        status => latest.filter(|n| n.is_of(ev.sha) && n.status() == Some(status)),
    };
    if let Some(d) = same {
        return confirmed(ev, d, latest, memory, forgot, now);
    }
    if let Some(reason) = stale(ev, memory, latest, skew) {
        return plan(Step::Stale(reason));
    }
    // Before creating, make sure no running deployment of the sha hides beyond the window.
    if recent.more {
        return plan(Step::LookBeyondWindow);
    }
    plan(Step::Create)
}

/// After [`Step::LookBeyondWindow`]: finish a running deployment of the sha found among
/// `running` (the environment's running deployments), else create.
pub fn beyond_window(ev: &Attempt, running: &Recent) -> Step {
    match running.items.iter().find(|d| d.is_of(ev.sha) && d.status() == Some(Status::Running)) {
        Some(d) => Step::Finish(d.clone()),
        None => Step::Create,
    }
}

/// Why a create must wait for an earlier one in the environment ([`Claim`]), if it must: that
/// create is not among the deployments GitLab shows (a deployment of its sha newer than those it
/// was decided on) and GitLab may still commit it (`settle` has not passed since it was sent).
/// `None`: the claim is settled — found, or too old to commit — and a create may go ahead.
pub fn claim_blocks(claim: &Claim, recent: &Recent, now_ms: u64, settle: Duration) -> Option<String> {
    let found = recent.items.iter().any(|d| d.id > claim.above && d.is_of(&claim.sha));
    let settles_at = claim.sent_ms.saturating_add(settle.as_millis() as u64);
    if found || now_ms >= settles_at {
        return None;
    }
    Some(format!(
        "an earlier create of {} {} in this environment (sent {} s ago, its answer never came: a restart, or another container) may still be committing in GitLab; nothing is created here until GitLab shows it or {} s have passed (GITLAB_CREATE_SETTLE_SECONDS)",
        claim.sha,
        claim.status,
        now_ms.saturating_sub(claim.sent_ms) / 1000,
        settle.as_secs()
    ))
}

/// Whether a create GitLab answered made something new: GitLab answers a success equal to the
/// environment's last successful deployment with that deployment (`Deployments::CreateService`).
pub fn created_new(created: &Deployment, recent: &Recent) -> bool {
    !recent.items.iter().any(|n| created.id <= n.id)
}

/// The facade's `PUT .../deployments/:id`: GitLab's rules, except that a finished deployment
/// never changes (GitLab itself lets `success` become `failed` and back); asking for the status
/// it already has is answered with it unchanged, so a tool's retry is harmless. `Ok(true)`:
/// update it; `Ok(false)`: nothing to do.
pub fn status_change(current: &Deployment, status: Status) -> Result<bool, GitLabError> {
    match current.status() {
        Some(s) if s == status => Ok(false),
        Some(s @ (Status::Success | Status::Failed | Status::Canceled)) => Err(GitLabError::Rejected {
            status: 400,
            message: format!(
                "status cannot transition via \"{}\": deployment {} already finished as {s}, and the bridge never changes a finished deployment",
                transition_event(status),
                current.id
            ),
        }),
        _ => Ok(true),
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
fn ends_before_start(ev: &Attempt, running: &Written) -> Option<String> {
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

/// Whether the event happened before the environment's latest change in GitLab: judged
/// against the tool's own time of the event that made (or confirmed) that change when this
/// container saw it, else against GitLab's clock with the skew.
fn stale(ev: &Attempt, memory: Option<&Written>, latest: Option<&Deployment>, skew: Duration) -> Option<String> {
    let (at, latest) = (ev.occurred_at?, latest?);
    let by_tool = memory.filter(|w| w.describes(latest)).and_then(|w| w.occurred_at);
    let (reference, allowance, whose) = match by_tool {
        Some(t) => (t, Duration::ZERO, "by the tool's own clock"),
        // The spool delivers an environment's events in order, later than they happened:
        // GitLab's clock then shows when the drain wrote, not when the tool acted.
        None if ev.ordered => return None,
        None => (latest.changed_at()?, skew, "by GitLab's clock"),
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

/// An event that finds its state already in GitLab still says, by its time, that the state
/// held then: an end delivered before its start makes that start stale, not a retry. A state
/// this container knows the time of is moved forward. A finished state it did not write
/// (another container did, or its own create's answer was lost) is remembered with the event's
/// time only when it is the environment's latest change and that time is after GitLab's record
/// of it: the event's time says nothing of when that state began, but it does say the
/// environment was in it then, which is newer than what GitLab's clock tells. From the spool
/// (`ordered`) GitLab's clock says when the drain wrote, not when the tool acted, and the
/// environment's events come in order: the confirmation is the newest word on it. Only the latest
/// change is worth remembering (it is what a stale delivery is judged against): adopting an
/// older one would drop what this container knows of the latest. A running one is never
/// adopted: the one-call finish trusts only running deployments this container created.
fn confirmed(
    ev: &Attempt,
    d: &Deployment,
    latest: Option<&Deployment>,
    memory: Option<&Written>,
    otherwise: Memory,
    now: Instant,
) -> Plan {
    let memory = match memory.filter(|w| w.describes(d)) {
        Some(w) => {
            let occurred_at = w.occurred_at.max(ev.occurred_at);
            if occurred_at != w.occurred_at {
                Memory::Set(Box::new(Written { occurred_at, ..w.clone() }))
            } else {
                otherwise
            }
        }
        None if d.status() != Some(Status::Running)
            && latest.is_some_and(|l| l.id == d.id)
            && ev.occurred_at.is_some()
            && (ev.ordered || ev.occurred_at.zip(d.changed_at()).is_some_and(|(at, changed)| at >= changed)) =>
        {
            Memory::Set(Box::new(Written { deployment: d.clone(), occurred_at: ev.occurred_at, at: now }))
        }
        None => otherwise,
    };
    Plan { step: Step::Unchanged(d.clone()), memory }
}

#[cfg(test)]
mod tests {
    //! One test per row of the README's Lifecycle table (`row_*`), then the histories the model
    //! test found (`found_*`), each at the step where the rule decides.
    use super::*;
    use crate::model::EnvironmentRef;

    const X: &str = "a91957a858320c0e17f3a0eca7cfacbff50ea29a";
    const Y: &str = "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0";
    const SKEW: Duration = Duration::from_secs(30);

    /// 2026-10-02T11:00 plus `s` seconds.
    fn t(s: i64) -> OffsetDateTime {
        crate::model::parse_time("2026-10-02T11:00:00Z").unwrap() + time::Duration::seconds(s)
    }

    /// A deployment as GitLab lists it, last changed at `t(changed)`.
    fn dep(id: u64, sha: &str, status: Status, changed: i64) -> Deployment {
        Deployment {
            id,
            iid: Some(id),
            status: status.as_str().into(),
            sha: sha.into(),
            git_ref: "main".into(),
            created_at: Some(t(changed)),
            updated_at: Some(t(changed)),
            environment: Some(EnvironmentRef { name: "production".into(), external_url: None }),
        }
    }

    /// The environment's newest deployments, newest first by id (as GitLab lists them).
    fn shown(mut items: Vec<Deployment>) -> Recent {
        items.sort_by_key(|d| std::cmp::Reverse(d.id));
        Recent { items, more: false }
    }

    fn ev(sha: &str, status: Status, at: Option<i64>) -> Attempt<'_> {
        Attempt { sha, status, occurred_at: at.map(t), ordered: false }
    }

    fn wrote(d: &Deployment, at: Option<i64>) -> Written {
        Written { deployment: d.clone(), occurred_at: at.map(t), at: Instant::now() }
    }

    fn step(ev: &Attempt, recent: &Recent, memory: Option<&Written>) -> Step {
        plan(ev, recent, memory, SKEW, Instant::now()).step
    }

    fn is_stale(s: &Step) -> bool {
        matches!(s, Step::Stale(_))
    }

    /// Issue 21: `kill -9` during a create, then a second attempt that read the environment
    /// before the killed process's create was committed, made the deployment twice.
    #[test]
    fn a_create_waits_for_an_earlier_one_until_gitlab_shows_it_or_can_no_longer_commit_it() {
        let settle = Duration::from_secs(150);
        let claim = Claim { sha: X.into(), status: Status::Running, sent_ms: 1_000_000, above: 2 };
        let before = shown(vec![dep(1, Y, Status::Success, 0), dep(2, Y, Status::Failed, 5)]);
        let why = claim_blocks(&claim, &before, 1_010_000, settle).unwrap();
        assert!(why.contains("may still be committing") && why.contains("sent 10 s ago"), "{why}");
        // GitLab shows it now: settled (the plan then finds it, and creates nothing).
        let committed = shown(vec![dep(2, Y, Status::Failed, 5), dep(3, X, Status::Running, 9)]);
        assert_eq!(claim_blocks(&claim, &committed, 1_010_000, settle), None);
        assert_eq!(step(&ev(X, Status::Running, None), &committed, None), Step::Unchanged(committed.items[0].clone()));
        // A deployment of the sha from before the claim is not it.
        let older = shown(vec![dep(2, X, Status::Failed, 5)]);
        assert!(claim_blocks(&claim, &older, 1_010_000, settle).is_some());
        // Once GitLab can no longer commit it (its request timeout is behind), a create goes ahead.
        assert_eq!(claim_blocks(&claim, &before, 1_000_000 + 150_000, settle), None);
    }

    // --- The README's Lifecycle table, row by row -------------------------------------------

    /// `running` | a running deployment of X among the newest 20 | nothing (a redelivery) | `unchanged`
    #[test]
    fn row_running_with_a_running_deployment_of_x_changes_nothing() {
        let r = dep(3, X, Status::Running, 10);
        // Also when it is not the newest: a racing rollout of Y started after it.
        let recent = shown(vec![dep(1, Y, Status::Success, 0), r.clone(), dep(4, Y, Status::Running, 11)]);
        assert_eq!(step(&ev(X, Status::Running, Some(10)), &recent, None), Step::Unchanged(r));
    }

    /// `running` | X is what runs | nothing (a re-sync of what runs) | `unchanged`
    #[test]
    fn row_running_of_what_runs_changes_nothing() {
        let live = dep(2, X, Status::Success, 5);
        let recent = shown(vec![dep(1, Y, Status::Success, 0), live.clone()]);
        assert_eq!(step(&ev(X, Status::Running, None), &recent, None), Step::Unchanged(live));
    }

    /// `running` | anything else: Y runs (a rollback to X), X failed (a retry), or nothing yet | creates X `running` | `created`
    #[test]
    fn row_running_otherwise_creates_a_rollout() {
        let rollback = shown(vec![dep(1, X, Status::Success, 0), dep(2, Y, Status::Success, 5)]);
        assert_eq!(step(&ev(X, Status::Running, Some(60)), &rollback, None), Step::Create);
        let retry = shown(vec![dep(1, X, Status::Failed, 5)]);
        assert_eq!(step(&ev(X, Status::Running, Some(60)), &retry, None), Step::Create);
        assert_eq!(step(&ev(X, Status::Running, None), &Recent::default(), None), Step::Create);
    }

    /// end | a running deployment of X | moves it to the end status | `updated`
    #[test]
    fn row_an_end_finishes_the_running_deployment_of_x() {
        let r = dep(2, X, Status::Running, 5);
        let recent = shown(vec![dep(1, Y, Status::Success, 0), r.clone()]);
        for end in [Status::Success, Status::Failed, Status::Canceled] {
            assert_eq!(step(&ev(X, end, Some(6)), &recent, None), Step::Finish(r.clone()), "{end}");
        }
        // Finishing never depends on GitLab's clock: a delayed rollout still finishes.
        assert_eq!(step(&ev(X, Status::Success, Some(-3600)), &recent, None), Step::Finish(r));
    }

    /// `success` | X is what runs | nothing (a redelivery; GitLab would answer the same) | `unchanged`
    #[test]
    fn row_success_of_what_runs_changes_nothing() {
        let live = dep(2, X, Status::Success, 5);
        let recent = shown(vec![live.clone(), dep(1, Y, Status::Failed, 2)]);
        assert_eq!(step(&ev(X, Status::Success, Some(5)), &recent, None), Step::Unchanged(live));
    }

    /// `failed` / `canceled` | the latest change is X with this status | nothing (a redelivery, or the same failure repeated) | `unchanged`
    #[test]
    fn row_the_same_failure_again_changes_nothing() {
        for end in [Status::Failed, Status::Canceled] {
            let latest = dep(2, X, end, 5);
            let recent = shown(vec![dep(1, Y, Status::Success, 0), latest.clone()]);
            assert_eq!(step(&ev(X, end, Some(9)), &recent, None), Step::Unchanged(latest), "{end}");
        }
    }

    /// end | anything else: Y runs (a rollback reported only as "it worked"), or X's last attempt failed while Y runs | creates X with the end status | `created`
    #[test]
    fn row_an_end_otherwise_creates_the_rollout_finished() {
        let rollback = shown(vec![dep(1, X, Status::Success, 0), dep(2, Y, Status::Success, 5)]);
        assert_eq!(step(&ev(X, Status::Success, Some(60)), &rollback, None), Step::Create);
        let failed_then_y = shown(vec![dep(1, X, Status::Failed, 0), dep(2, Y, Status::Success, 5)]);
        assert_eq!(step(&ev(X, Status::Failed, Some(60)), &failed_then_y, None), Step::Create);
        // A success after X failed is a new rollout too: "what runs" is Y, not X.
        assert_eq!(step(&ev(X, Status::Success, Some(60)), &failed_then_y, None), Step::Create);
    }

    /// one that would create, carrying the tool's time | the latest change is after that time | nothing | `stale`
    #[test]
    fn row_a_delivery_older_than_the_latest_change_is_stale() {
        let recent = shown(vec![dep(1, X, Status::Success, 0), dep(2, Y, Status::Success, 100)]);
        // By GitLab's clock, allowing the skew: 100 s later than the event is older; 20 s is not.
        let s = step(&ev(X, Status::Success, Some(10)), &recent, None);
        assert!(is_stale(&s) && format!("{s:?}").contains("by GitLab's clock"), "{s:?}");
        assert_eq!(step(&ev(X, Status::Success, Some(80)), &recent, None), Step::Create, "within the skew");
        assert!(is_stale(&step(&ev(X, Status::Running, Some(10)), &recent, None)));
        // By the tool's own clock, exactly, when this container made that change.
        let mine = wrote(&recent.items[0], Some(50));
        let s = step(&ev(X, Status::Running, Some(49)), &recent, Some(&mine));
        assert!(is_stale(&s) && format!("{s:?}").contains("by the tool's own clock"), "{s:?}");
        assert_eq!(step(&ev(X, Status::Running, Some(51)), &recent, Some(&mine)), Step::Create);
        // Without a time nothing is stale; from the spool, GitLab's clock says nothing.
        assert_eq!(step(&ev(X, Status::Success, None), &recent, None), Step::Create);
        let spooled = Attempt { ordered: true, ..ev(X, Status::Success, Some(10)) };
        assert_eq!(step(&spooled, &recent, None), Step::Create);
    }

    /// end, carrying the tool's time | a running deployment of X whose start this container saw after that time | nothing: the end of an earlier attempt | `stale`
    #[test]
    fn row_the_end_of_an_earlier_attempt_does_not_finish_the_retry() {
        let retry = dep(2, X, Status::Running, 50);
        let recent = shown(vec![dep(1, X, Status::Failed, 10), retry.clone()]);
        let mine = wrote(&retry, Some(50));
        assert!(is_stale(&step(&ev(X, Status::Failed, Some(10)), &recent, Some(&mine))));
        assert_eq!(step(&ev(X, Status::Success, Some(60)), &recent, Some(&mine)), Step::Finish(retry.clone()));
        // Without reading: the same rule in the one-call finish.
        assert!(is_stale(&without_reading(&ev(X, Status::Failed, Some(10)), Some(&mine), Instant::now()).unwrap()));
    }

    // --- The cost rules ---------------------------------------------------------------------

    #[test]
    fn the_end_of_a_rollout_this_container_started_is_one_call_while_trusted() {
        let mine = wrote(&dep(7, X, Status::Running, 0), Some(0));
        assert_eq!(
            without_reading(&ev(X, Status::Success, Some(5)), Some(&mine), Instant::now()),
            Some(Step::Finish(mine.deployment.clone()))
        );
        assert_eq!(without_reading(&ev(Y, Status::Success, Some(5)), Some(&mine), Instant::now()), None, "another sha");
        assert_eq!(without_reading(&ev(X, Status::Running, Some(5)), Some(&mine), Instant::now()), None, "a start");
        let later = Instant::now() + TRUST_RUNNING_FOR;
        assert_eq!(without_reading(&ev(X, Status::Success, Some(5)), Some(&mine), later), None, "trusted for an hour");
        let finished = wrote(&dep(7, X, Status::Success, 0), Some(0));
        assert_eq!(without_reading(&ev(X, Status::Failed, None), Some(&finished), Instant::now()), None);
    }

    #[test]
    fn an_end_that_would_create_looks_beyond_the_window_first() {
        let mut recent = shown((1..=20).map(|i| dep(100 + i, Y, Status::Success, i as i64)).collect());
        recent.more = true;
        assert_eq!(step(&ev(X, Status::Success, None), &recent, None), Step::LookBeyondWindow);
        let long = dep(5, X, Status::Running, -3600);
        let running = shown(vec![dep(6, Y, Status::Running, -10), long.clone()]);
        assert_eq!(beyond_window(&ev(X, Status::Success, None), &running), Step::Finish(long));
        assert_eq!(beyond_window(&ev(X, Status::Success, None), &Recent::default()), Step::Create);
        // A start never looks: a new rollout is created.
        assert_eq!(step(&ev(X, Status::Running, None), &recent, None), Step::Create);
    }

    #[test]
    fn a_create_answered_with_an_existing_deployment_made_nothing_new() {
        let recent = shown(vec![dep(1, X, Status::Success, 0), dep(2, Y, Status::Failed, 5)]);
        assert!(!created_new(&dep(1, X, Status::Success, 0), &recent));
        assert!(created_new(&dep(3, X, Status::Success, 9), &recent));
    }

    #[test]
    fn the_facade_never_changes_a_finished_deployment() {
        let running = dep(1, X, Status::Running, 0);
        assert!(status_change(&running, Status::Success).unwrap());
        assert!(!status_change(&dep(1, X, Status::Success, 0), Status::Success).unwrap(), "a retry");
        let e = status_change(&dep(1, X, Status::Success, 0), Status::Failed).unwrap_err();
        assert!(e.is_cannot_transition() && e.to_string().contains("\"drop\""), "{e}");
    }

    // --- What the model test found ------------------------------------------------------------

    /// X live, Y failed; a re-sync of X delivered end-first was de-duplicated by GitLab (its
    /// `last_deployment` is X): the late start must not open a running deployment nothing finishes.
    #[test]
    fn found_a_resync_of_what_runs_after_a_failed_attempt_leaves_nothing_running() {
        let live = dep(1, X, Status::Success, 0);
        let recent = shown(vec![live.clone(), dep(2, Y, Status::Failed, 10)]);
        assert_eq!(step(&ev(X, Status::Running, Some(20)), &recent, None), Step::Unchanged(live));
    }

    /// After two racing rollouts the newest by id is not what GitLab shows as deployed: what
    /// runs is the success that finished last.
    #[test]
    fn found_what_runs_is_the_success_that_finished_last_not_the_newest_id() {
        let y_first_to_finish = dep(2, Y, Status::Success, 5);
        let x_last = dep(1, X, Status::Success, 9);
        let recent = shown(vec![x_last.clone(), y_first_to_finish]);
        assert_eq!(step(&ev(X, Status::Running, None), &recent, None), Step::Unchanged(x_last));
        assert_eq!(step(&ev(Y, Status::Running, None), &recent, None), Step::Create, "Y no longer runs");
        // A newer rollout still running: nothing "runs" for the rule, so a start of X is new.
        let recent = shown(vec![dep(1, X, Status::Success, 0), dep(2, Y, Status::Running, 5)]);
        assert_eq!(step(&ev(X, Status::Running, None), &recent, None), Step::Create);
    }

    /// An end delivered before its start records the end; the start, older than that end (by
    /// the tool's clock), is then stale after a failure and unchanged after a success — not a retry.
    #[test]
    fn found_a_start_after_its_end_changes_nothing() {
        let failed = dep(2, X, Status::Failed, 30);
        let recent = shown(vec![dep(1, Y, Status::Success, 0), failed.clone()]);
        let mine = wrote(&failed, Some(11));
        assert!(is_stale(&step(&ev(X, Status::Running, Some(10)), &recent, Some(&mine))));
        let ok = dep(2, X, Status::Success, 30);
        let recent = shown(vec![dep(1, Y, Status::Success, 0), ok.clone()]);
        assert_eq!(step(&ev(X, Status::Running, Some(10)), &recent, Some(&wrote(&ok, Some(11)))), Step::Unchanged(ok));
    }

    /// A failure repeated (a tool that reports only ends) confirms the state and moves the
    /// remembered tool time forward, so that a late start of that rollout is stale.
    #[test]
    fn found_a_confirmation_moves_the_remembered_time_forward_only() {
        let failed = dep(2, X, Status::Failed, 30);
        let recent = shown(vec![failed.clone()]);
        let mine = wrote(&failed, Some(10));
        let p = plan(&ev(X, Status::Failed, Some(20)), &recent, Some(&mine), SKEW, Instant::now());
        assert_eq!(p.step, Step::Unchanged(failed.clone()));
        assert_eq!(p.memory, Memory::Set(Box::new(Written { occurred_at: Some(t(20)), ..mine.clone() })));
        let p = plan(&ev(X, Status::Failed, Some(5)), &recent, Some(&mine), SKEW, Instant::now());
        assert_eq!(p.memory, Memory::Keep, "an older confirmation moves nothing back");
    }

    /// A finished state this container did not write (its create's answer was lost, or another
    /// container wrote it) is adopted with the event's time only when that time is after
    /// GitLab's record; a running one never is (the one-call finish trusts only its own).
    #[test]
    fn found_late_confirmations_of_older_states_do_not_hide_the_latest_change() {
        let failed = dep(2, X, Status::Failed, 30);
        let recent = shown(vec![failed.clone()]);
        let p = plan(&ev(X, Status::Failed, Some(40)), &recent, None, SKEW, Instant::now());
        assert!(matches!(&p.memory, Memory::Set(w) if w.occurred_at == Some(t(40)) && w.deployment == failed));
        let p = plan(&ev(X, Status::Failed, Some(20)), &recent, None, SKEW, Instant::now());
        assert_eq!(p.memory, Memory::Keep, "older than GitLab's record: says nothing of the latest change");
        let running = dep(3, X, Status::Running, 30);
        let p = plan(&ev(X, Status::Running, Some(40)), &shown(vec![running]), None, SKEW, Instant::now());
        assert_eq!(p.memory, Memory::Keep);
    }

    /// The same failure twice (the second end-first), then a redeploy of what runs: confirming
    /// what runs must not replace what this container knows of the latest change (the
    /// failure), or a late start of the second failure is judged by GitLab's clock — older than
    /// the first failure's record — and opens a deployment nothing finishes (found by the
    /// in-process model test, `lifecycle::model`).
    #[test]
    fn found_confirming_what_runs_keeps_the_memory_of_the_latest_change() {
        let live = dep(1, Y, Status::Success, 0);
        let failed = dep(2, X, Status::Canceled, 10);
        let recent = shown(vec![live.clone(), failed.clone()]);
        let mine = wrote(&failed, Some(30));
        let p = plan(&ev(Y, Status::Success, Some(40)), &recent, Some(&mine), SKEW, Instant::now());
        assert_eq!((p.step, p.memory), (Step::Unchanged(live), Memory::Keep));
        assert!(is_stale(&step(&ev(X, Status::Running, Some(20)), &recent, Some(&mine))));
    }

    /// From the spool, a confirmation of the latest change is remembered whatever GitLab's clock
    /// says (it recorded the drain): an end spooled during an outage whose create answer was lost
    /// (so this container never recorded writing it), repeated, then its start — the start is
    /// stale, not a rollout to open (found by the model test with outages).
    #[test]
    fn found_a_spooled_confirmation_is_remembered_whatever_gitlabs_clock_says() {
        let failed = dep(1, X, Status::Failed, 3600);
        let recent = shown(vec![failed.clone()]);
        let end = Attempt { ordered: true, ..ev(X, Status::Failed, Some(1)) };
        let p = plan(&end, &recent, None, SKEW, Instant::now());
        assert_eq!(p.step, Step::Unchanged(failed.clone()));
        let Memory::Set(w) = p.memory else { panic!("{:?}", p.memory) };
        let start = Attempt { ordered: true, ..ev(X, Status::Running, Some(0)) };
        assert!(is_stale(&step(&start, &recent, Some(&w))));
        let direct = plan(&ev(X, Status::Failed, Some(1)), &recent, None, SKEW, Instant::now());
        assert_eq!(direct.memory, Memory::Keep, "a direct delivery older than GitLab's record is not adopted");
    }

    /// A remembered deployment that GitLab shows changed (another container finished it, an
    /// operator deleted and re-created) is forgotten, and the event judged by GitLab alone.
    #[test]
    fn found_a_remembered_deployment_that_changed_elsewhere_is_forgotten() {
        let mine = wrote(&dep(2, X, Status::Running, 5), Some(5));
        let recent = shown(vec![dep(2, X, Status::Failed, 50)]);
        let p = plan(&ev(X, Status::Success, Some(60)), &recent, Some(&mine), SKEW, Instant::now());
        assert_eq!((p.step, p.memory), (Step::Create, Memory::Forget));
    }

    /// Racing rollouts end at the same instant: the second end is a rollout of its own, never
    /// taken for a redelivery of the first.
    #[test]
    fn found_two_rollouts_racing_into_one_environment_each_finish_their_own() {
        let (rx, ry) = (dep(1, X, Status::Running, 0), dep(2, Y, Status::Running, 0));
        let recent = shown(vec![rx.clone(), ry.clone()]);
        assert_eq!(step(&ev(X, Status::Success, Some(1)), &recent, None), Step::Finish(rx));
        assert_eq!(step(&ev(Y, Status::Failed, Some(1)), &recent, None), Step::Finish(ry));
    }

    /// Times at the ends of the calendar, and a huge skew, are judged, not overflowed on.
    #[test]
    fn found_times_at_the_ends_of_the_calendar_are_judged() {
        let recent = shown(vec![dep(1, Y, Status::Success, 0)]);
        let far =
            Attempt { occurred_at: Some(time::PrimitiveDateTime::MAX.assume_utc()), ..ev(X, Status::Running, None) };
        assert_eq!(plan(&far, &recent, None, Duration::MAX, Instant::now()).step, Step::Create);
        let early =
            Attempt { occurred_at: Some(time::PrimitiveDateTime::MIN.assume_utc()), ..ev(X, Status::Running, None) };
        assert!(is_stale(&plan(&early, &recent, None, SKEW, Instant::now()).step));
    }
}
