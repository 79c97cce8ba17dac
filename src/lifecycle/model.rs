//! The model test, in process: random histories of rollouts through [`Lifecycle`] against the
//! in-memory GitLab (GitLab's state machine and `last_deployment` rule), thousands of them in
//! seconds, with the invariants of the end-to-end model test (`tests/it`, against the GitLab
//! stand-in over HTTP, with races, lost answers, cold containers and outages) checked after
//! each:
//!
//! 1. every rollout is exactly one deployment with its final status (a successful redeploy of
//!    the sha that is live is that live deployment, the same failure again the failed one);
//! 2. the newest successful deployment is the sha rolled out successfully last;
//! 3. no deployment is left `running`, and none went through more than `running` → final;
//! 4. a redelivery, and a late redelivery rollouts later, change nothing;
//! 5. an event costs at most one read and one write, and the end of a rollout whose running
//!    deployment this container created costs one call.

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};
use time::OffsetDateTime;

use super::{Action, Lifecycle};
use crate::event::{Defaults, Event, EventDraft, Overrides};
use crate::gitlab::CallCtx;
use crate::gitlab::memory::MemoryGitLab;
use crate::model::Status;

const SHAS: [&str; 3] = [
    "a91957a858320c0e17f3a0eca7cfacbff50ea29a",
    "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0",
    "c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3",
];

#[derive(Debug, Clone)]
struct Rollout {
    sha: usize,
    outcome: Status,
    /// The tool reports the start, not only the end.
    with_running: bool,
    /// The end is delivered before the start.
    end_first: bool,
    dup_running: usize,
    dup_end: usize,
    /// One of its events is delivered again this many rollouts later (the start if `true`).
    late: Option<(usize, bool)>,
}

fn rollout() -> impl Strategy<Value = Rollout> {
    let outcome = prop_oneof![4 => Just(Status::Success), 1 => Just(Status::Failed), 1 => Just(Status::Canceled)];
    let late = prop::option::weighted(0.3, (1usize..4, any::<bool>()));
    (0..SHAS.len(), outcome, prop::bool::weighted(0.8), prop::bool::weighted(0.2), 0..3usize, 0..3usize, late).prop_map(
        |(sha, outcome, with_running, end_first, dup_running, dup_end, late)| Rollout {
            sha,
            outcome,
            with_running,
            end_first,
            dup_running,
            dup_end,
            late,
        },
    )
}

fn event(env: &str, sha: &str, status: Status, at: OffsetDateTime) -> Event {
    let draft = EventDraft {
        environment: Some(env.into()),
        sha: Some(sha.into()),
        status: Some(status),
        occurred_at: Some(at),
        ..Default::default()
    };
    Event::from_draft(
        "generic",
        draft,
        &Overrides { project: Some("42".into()), ..Default::default() },
        &Defaults::default(),
    )
    .expect("a valid event")
}

/// (id, sha, statuses) of the environment's deployments, by id.
fn shown(gitlab: &MemoryGitLab, env: &str) -> Vec<(u64, String, Vec<String>)> {
    let summary = gitlab.summary();
    let mut out: Vec<(u64, String, Vec<String>)> = summary
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["environment"] == env)
        .map(|d| {
            let statuses = d["statuses"].as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_string);
            (d["deployment"].as_u64().unwrap_or(0), d["sha"].as_str().unwrap_or("").to_string(), statuses.collect())
        })
        .collect();
    out.sort();
    out
}

struct Sent {
    action: Action,
    calls: usize,
}

async fn send(lc: &Lifecycle, ev: &Event) -> Result<Sent, TestCaseError> {
    let ctx = CallCtx::new(Instant::now() + Duration::from_secs(5));
    let outcome = lc.apply(&mut ev.clone(), &ctx).await.map_err(|e| TestCaseError::fail(e.to_string()))?;
    Ok(Sent { action: outcome.action, calls: ctx.count() })
}

async fn run(rollouts: Vec<Rollout>) -> Result<(), TestCaseError> {
    let gitlab = Arc::new(MemoryGitLab::default());
    let lc = Lifecycle::new(gitlab.clone(), Duration::ZERO);
    let env = "model";
    let mut late: Vec<(usize, Event)> = Vec::new();
    for (i, r) in rollouts.iter().enumerate() {
        // The tool's clock is GitLab's (the in-memory GitLab's is the system's): each rollout
        // starts after GitLab recorded the last one's events, and ends a microsecond later.
        let start = OffsetDateTime::now_utc();
        let sha = SHAS[r.sha];
        let begin = event(env, sha, Status::Running, start);
        let end = event(env, sha, r.outcome, start + time::Duration::microseconds(1));
        let starts = std::iter::repeat_n(&begin, if r.with_running { 1 + r.dup_running } else { 0 });
        let ends = std::iter::repeat_n(&end, 1 + r.dup_end);
        let order: Vec<&Event> = if r.end_first { ends.chain(starts).collect() } else { starts.chain(ends).collect() };
        let mut seen = std::collections::HashSet::new();
        let mut started_here = false;
        for ev in order {
            let status = ev.deploy().map(|d| d.status).unwrap_or(Status::Running);
            let first = seen.insert(status);
            let before = shown(&gitlab, env);
            let sent = send(&lc, ev).await?;
            prop_assert!(sent.calls <= 2, "{status:?} cost {} calls", sent.calls);
            if !first {
                prop_assert_eq!(shown(&gitlab, env), before, "redelivered {:?} changed GitLab", status);
                prop_assert!(
                    matches!(sent.action, Action::Unchanged | Action::Stale),
                    "redelivered {status:?}: {:?}",
                    sent.action
                );
            }
            if status != Status::Running && first && started_here {
                prop_assert_eq!(sent.calls, 1, "the end of a rollout this container started");
            }
            started_here |= status == Status::Running && first && sent.action == Action::Created;
        }
        if let Some((after, of_start)) = r.late {
            late.push((i + after, if of_start && r.with_running { begin } else { end }));
        }
        let (due, later): (Vec<_>, Vec<_>) = late.into_iter().partition(|(at, _)| *at <= i);
        late = later;
        for (_, ev) in due {
            let before = shown(&gitlab, env);
            send(&lc, &ev).await?;
            prop_assert_eq!(shown(&gitlab, env), before, "a late redelivery changed GitLab");
        }
    }
    check(&shown(&gitlab, env), &rollouts)
}

fn check(deps: &[(u64, String, Vec<String>)], rollouts: &[Rollout]) -> Result<(), TestCaseError> {
    for (id, _, history) in deps {
        prop_assert!(history.last().is_some_and(|s| s != "running"), "deployment {id} left running: {deps:?}");
        let shape_ok = history.len() == 1 || (history.len() == 2 && history[0] == "running");
        prop_assert!(shape_ok, "deployment {id} went through {history:?}");
    }
    let status = |d: &(u64, String, Vec<String>)| d.2.last().cloned().unwrap_or_default();
    let mut next = 0;
    let mut live: Option<&str> = None;
    for (i, r) in rollouts.iter().enumerate() {
        let sha = SHAS[r.sha];
        let before = &deps[..next];
        let runs = before.iter().rev().find(|d| status(d) == "success").map(|d| d.1.as_str());
        let latest = before.last().map(|d| (d.1.as_str(), status(d)));
        let start_absorbed = !r.with_running || r.end_first || runs == Some(sha);
        let shown_already = match r.outcome {
            Status::Success => runs == Some(sha),
            outcome => latest.as_ref().is_some_and(|(s, st)| *s == sha && st == outcome.as_str()) && start_absorbed,
        };
        if !shown_already {
            let matches = deps.get(next).is_some_and(|d| d.1 == sha && status(d) == r.outcome.as_str());
            prop_assert!(
                matches,
                "rollout {i} ({:?} of {}) has no deployment of its own: {deps:?}",
                r.outcome,
                &sha[..4]
            );
            next += 1;
        }
        if r.outcome == Status::Success {
            live = Some(sha);
        }
    }
    prop_assert_eq!(next, deps.len(), "deployments that no rollout made: {:?}", deps);
    let shown_live = deps.iter().rev().find(|d| status(d) == "success").map(|d| d.1.as_str());
    prop_assert_eq!(shown_live, live, "GitLab shows the wrong sha as deployed: {:?}", deps);
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_history_leaves_gitlab_showing_what_was_deployed(rollouts in prop::collection::vec(rollout(), 1..10)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        rt.block_on(run(rollouts))?;
    }
}
