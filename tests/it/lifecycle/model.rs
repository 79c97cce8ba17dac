//! Model-based test of the lifecycle: random histories of rollouts over a few shas — rollbacks,
//! redeploys of the live sha, retries, duplicated and reordered deliveries within a rollout,
//! late redeliveries (to this container and to a cold one), two rollouts racing into one
//! environment, answers GitLab loses after acting — run through the real router against the
//! GitLab stand-in, with invariants checked after every history:
//!
//! 1. every rollout is exactly one deployment with its final status (a successful redeploy of
//!    the sha that is live is that live deployment), and there is no other deployment;
//! 2. the environment's newest successful deployment (by `finished_at`) is the sha rolled out
//!    successfully last;
//! 3. no deployment is left `running`, and none went through more than `running` → final;
//! 4. a redelivery changes nothing; every answer is 200;
//! 5. an event costs at most one read and one write, and the end of a rollout whose running
//!    deployment this container created costs one call.
//!
//! The same histories run again with GitLab outages in the path (issue 11): during some
//! rollouts GitLab is down, their events (and every later event of the environment, while
//! earlier ones wait) go to `serve`'s local spool and are answered 202, and the spool's worker
//! delivers them once GitLab is back. Invariants 1–3 must hold once the spool is empty.
//!
//! `PROPTEST_CASES` sets the number of histories (64 by default, as CI runs it; half as many
//! with outages);
//! `PROPTEST_CASES=2000 cargo test --test it lifecycle::model::` is the long local run. Shrunk
//! failures are written to `tests/proptest-regressions/lifecycle/model.txt` (this file's path
//! under `tests/it/`, by proptest's `SourceParallel` rule) and replayed first by every later run.

use crate::support::*;
use gitlab_deploy_bridge::model::Status;
use gitlab_deploy_bridge::spool::local::Stored;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{Value, json};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const SHAS: [&str; 3] = [SHA_A, SHA_B, "c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3"];

#[derive(Debug, Clone)]
struct Rollout {
    sha: usize,
    outcome: Status,
    /// The tool reports the start (`running`), not only the end.
    with_running: bool,
    /// The end is delivered before the start.
    end_first: bool,
    /// Extra deliveries of the start and of the end.
    dup_running: usize,
    dup_end: usize,
    /// Deliveries name the project by its path instead of its id.
    by_path: bool,
    /// GitLab carries out the first create/update of this rollout but its answer is lost.
    lost_answer: bool,
    /// One of its events is delivered again this many rollouts later (the start if `true`),
    /// and to a container that has never seen the environment if `cold`.
    late: Option<(usize, bool, bool)>,
    /// It races the next rollout into the environment.
    race: bool,
}

fn rollout() -> impl Strategy<Value = Rollout> {
    let outcome = prop_oneof![4 => Just(Status::Success), 1 => Just(Status::Failed), 1 => Just(Status::Canceled)];
    let late = prop::option::weighted(0.3, (1usize..4, any::<bool>(), any::<bool>()));
    (0..SHAS.len(), outcome, prop::bool::weighted(0.8), prop::bool::weighted(0.2), 0..3usize, 0..3usize, any::<bool>())
        .prop_flat_map(move |t| (Just(t), prop::bool::weighted(0.1), late.clone(), prop::bool::weighted(0.15)))
        .prop_map(
            |((sha, outcome, with_running, end_first, dup_running, dup_end, by_path), lost_answer, late, race)| {
                Rollout {
                    sha,
                    outcome,
                    with_running,
                    end_first,
                    dup_running,
                    dup_end,
                    by_path,
                    lost_answer,
                    late,
                    race,
                }
            },
        )
}

/// The rollouts that actually race: each with the next one, both reporting their start first
/// (and their end once: see `run`),
/// into shas that differ from each other and from the live one (otherwise which of the two
/// GitLab sees first decides whether one is a redeploy, and both answers are right).
fn races(rollouts: &[Rollout]) -> Vec<bool> {
    let mut races = vec![false; rollouts.len()];
    let mut live = None;
    let mut i = 0;
    while i < rollouts.len() {
        let (r, next) = (&rollouts[i], rollouts.get(i + 1));
        let clean =
            |r: &Rollout| r.with_running && !r.end_first && !r.lost_answer && r.late.is_none() && Some(r.sha) != live;
        if let Some(n) = next.filter(|n| r.race && clean(r) && clean(n) && n.sha != r.sha) {
            races[i] = true;
            for x in [r, n] {
                if x.outcome == Status::Success {
                    live = Some(x.sha);
                }
            }
            i += 2;
            continue;
        }
        if r.outcome == Status::Success {
            live = Some(r.sha);
        }
        i += 1;
    }
    races
}

struct World {
    rt: tokio::runtime::Runtime,
    gitlab: GitLabStub,
    bridge: Bridge,
    /// The spool of the bridge with outages in its path.
    spool: Option<std::sync::Arc<gitlab_deploy_bridge::spool::local::LocalSpool>>,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let (gitlab, bridge) = rt.block_on(async {
            let token = fastrand_token();
            let gitlab = GitLabStub::start(&token).await;
            gitlab.add_commits(SHAS.iter().map(|s| s.to_string()));
            let bridge = Bridge::start(model_config(&gitlab), static_secrets(&token)).await;
            // The container has looked the project's path up once already.
            let body = json!({"environment": "model-warm-up", "sha": SHA_A, "status": "running"});
            bridge.post("/hooks/generic?project=group/app", Some(GENERIC_SECRET), body.to_string()).await;
            (gitlab, bridge)
        });
        World { rt, gitlab, bridge, spool: None }
    })
}

/// The world of the histories with outages: the bridge with `serve`'s local spool and worker.
fn spooled_world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let (gitlab, bridge, spool) = rt.block_on(async {
            let token = fastrand_token();
            let gitlab = GitLabStub::start(&token).await;
            gitlab.add_commits(SHAS.iter().map(|s| s.to_string()));
            let mut config = model_config(&gitlab);
            config.gitlab.max_attempts = 2;
            config.spool.after = Duration::from_secs(1);
            config.spool.retry_max = Duration::from_millis(1500);
            // A create answered 502 during an outage may be in flight for all the bridge knows:
            // its environment waits for it (issue 21). The stand-in never commits late, so a
            // short wait keeps the histories quick without changing what they end with.
            config.create_settle = Duration::from_secs(2);
            let dir = std::env::temp_dir().join(format!("bridge-model-spool-{}", fastrand_token()));
            let (bridge, spool) = Bridge::start_spooled(config, static_secrets(&token), &dir).await;
            (gitlab, bridge, spool)
        });
        World { rt, gitlab, bridge, spool: Some(spool) }
    })
}

/// Events carry exact times from the test's clock, which is GitLab's: no skew needed.
fn model_config(gitlab: &GitLabStub) -> gitlab_deploy_bridge::config::Config {
    let mut c = config(&gitlab.url);
    c.clock_skew = Duration::ZERO;
    c
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 2000, ..ProptestConfig::default() })]

    #[test]
    fn every_history_leaves_gitlab_showing_what_was_deployed(rollouts in prop::collection::vec(rollout(), 1..9)) {
        let w = world();
        let outages = vec![false; rollouts.len()];
        w.rt.block_on(run(w, rollouts, outages))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases().div_ceil(2), max_shrink_iters: 500, ..ProptestConfig::default() })]

    #[test]
    fn every_history_with_outages_ends_the_same_once_the_spool_is_empty(
        history in prop::collection::vec((rollout(), prop::bool::weighted(0.3)), 1..7)
    ) {
        let w = spooled_world();
        let (mut rollouts, outages): (Vec<Rollout>, Vec<bool>) = history.into_iter().unzip();
        // The spool orders an environment's events by the project as the call names it: a
        // tool names it one way (docs/decisions.md, "Durable spool").
        let by_path = rollouts[0].by_path;
        rollouts.iter_mut().for_each(|r| r.by_path = by_path);
        w.rt.block_on(run(w, rollouts, outages))?;
    }
}

/// One delivery as sent.
struct Sent {
    answer: (u16, Value),
    calls: usize,
}

#[derive(Clone)]
struct Event {
    env: String,
    sha: &'static str,
    status: Status,
    at: OffsetDateTime,
    by_path: bool,
}

async fn deliver(bridge: &Bridge, gitlab: &GitLabStub, ev: &Event) -> Sent {
    let body = json!({"environment": ev.env, "sha": ev.sha, "ref": "main", "status": ev.status.as_str(), "timestamp": ev.at.format(&Rfc3339).unwrap()});
    let project = if ev.by_path { "group/app" } else { "42" };
    let before = gitlab.request_count();
    let answer =
        bridge.post(&format!("/hooks/generic?project={project}"), Some(GENERIC_SECRET), body.to_string()).await;
    Sent { answer, calls: gitlab.request_count() - before }
}

fn snapshot(gitlab: &GitLabStub, env: &str) -> Vec<(u64, String, Vec<String>)> {
    gitlab.deployments_in(env).into_iter().map(|d| (d.id, d.status, d.history)).collect()
}

/// The deliveries of one rollout, in the order the tool's deliveries arrive.
fn deliveries(r: &Rollout, env: &str, start: OffsetDateTime) -> (Vec<Event>, Event, Option<Event>) {
    let ev = |status, at| Event { env: env.to_string(), sha: SHAS[r.sha], status, at, by_path: r.by_path };
    let running = r.with_running.then(|| ev(Status::Running, start));
    let end = ev(r.outcome, start + time::Duration::microseconds(1));
    let mut order = Vec::new();
    let starts = running.iter().flat_map(|s| std::iter::repeat_n(s.clone(), 1 + r.dup_running));
    let ends = std::iter::repeat_n(end.clone(), 1 + r.dup_end);
    if r.end_first {
        order.extend(ends.chain(starts));
    } else {
        order.extend(starts.chain(ends));
    }
    (order, end, running)
}

/// Delivers one rollout's events, checking each answer; returns the events for late redelivery.
/// `alone`: no other rollout is delivered meanwhile (not racing), so GitLab's state and the
/// stand-in's request count belong to this rollout's deliveries.
async fn roll_out(
    w: &World,
    r: &Rollout,
    env: &str,
    start: OffsetDateTime,
    alone: bool,
) -> Result<(Event, Option<Event>), TestCaseError> {
    if w.spool.is_some() {
        return roll_out_spooled(w, r, env, start).await;
    }
    let (order, end, running) = deliveries(r, env, start);
    let mut first_of = std::collections::HashSet::new();
    let mut created_running = false;
    for (n, ev) in order.iter().enumerate() {
        let first = first_of.insert(ev.status);
        let faulted = r.lost_answer && n == 0;
        if faulted {
            w.gitlab.push_fault_for("POST", Fault::LostAnswer(502));
        }
        let before = snapshot(&w.gitlab, env);
        let sent = deliver(&w.bridge, &w.gitlab, ev).await;
        w.gitlab.clear_faults();
        let (code, answer) = &sent.answer;
        prop_assert_eq!(*code, 200, "{:?} → {}", ev.status, answer);
        let action = answer["action"].as_str().unwrap_or_default().to_string();
        if !first && alone {
            // A redelivery within the rollout changes nothing.
            prop_assert_eq!(snapshot(&w.gitlab, env), before, "redelivered {:?} changed GitLab: {}", ev.status, answer);
        }
        if !first {
            prop_assert!(action == "unchanged" || action == "stale", "redelivered {:?}: {}", ev.status, answer);
        }
        if alone && !faulted {
            prop_assert!(sent.calls <= 2, "{:?} cost {} calls: {}", ev.status, sent.calls, answer);
            if ev.status != Status::Running && first && created_running {
                prop_assert_eq!(sent.calls, 1, "the end of a rollout this container started: {}", answer);
            }
        }
        if ev.status == Status::Running && first && action == "created" && !faulted {
            created_running = true;
        }
    }
    Ok((end, running))
}

/// With a spool in the path an answer is 200 (delivered now) or 202 (spooled); what a delivery
/// did is judged only at the end, once the spool is empty.
async fn roll_out_spooled(
    w: &World,
    r: &Rollout,
    env: &str,
    start: OffsetDateTime,
) -> Result<(Event, Option<Event>), TestCaseError> {
    let (order, end, running) = deliveries(r, env, start);
    for (n, ev) in order.iter().enumerate() {
        if r.lost_answer && n == 0 {
            w.gitlab.push_fault_for("POST", Fault::LostAnswer(502));
        }
        let sent = deliver(&w.bridge, &w.gitlab, ev).await;
        w.gitlab.clear_faults();
        let (code, answer) = &sent.answer;
        prop_assert!(*code == 200 || *code == 202, "{:?} → {} {}", ev.status, code, answer);
    }
    Ok((end, running))
}

/// Waits until the spool has nothing left to deliver.
async fn drained(w: &World) -> Result<(), TestCaseError> {
    let Some(spool) = &w.spool else { return Ok(()) };
    for _ in 0..600 {
        let left = spool.list().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let dead = |s: &Stored| !matches!(s, Stored::Entry(e) if !e.dead);
        prop_assert!(!left.iter().any(dead), "a dead letter: {:?}", left);
        if left.is_empty() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(TestCaseError::fail("the spool did not drain within 30 s"))
}

async fn run(w: &World, rollouts: Vec<Rollout>, outages: Vec<bool>) -> Result<(), TestCaseError> {
    static CASE: AtomicUsize = AtomicUsize::new(0);
    let env = format!("model-{}", CASE.fetch_add(1, Ordering::Relaxed));
    let races = races(&rollouts);
    let mut pending_late: Vec<(usize, Event, bool)> = Vec::new();
    let mut i = 0;
    while i < rollouts.len() {
        // Rollouts are some milliseconds apart, so each starts after the last one's events.
        tokio::time::sleep(Duration::from_millis(3)).await;
        let start = OffsetDateTime::now_utc() - time::Duration::milliseconds(2);
        if outages[i] {
            w.gitlab.set_down(Some(502));
        }
        if races[i] {
            // Racing rollouts end at the same instant; a redelivery of one end after the other
            // end was recorded cannot be told from a rollback at that instant, so their ends
            // are delivered once (their starts may repeat).
            let once = |r: &Rollout| Rollout { dup_end: 0, ..r.clone() };
            let (a, b) = (&once(&rollouts[i]), &once(&rollouts[i + 1]));
            let (ra, rb) = tokio::join!(roll_out(w, a, &env, start, false), roll_out(w, b, &env, start, false));
            w.gitlab.set_down(None);
            ra?;
            rb?;
            i += 2;
        } else {
            let r = &rollouts[i];
            let done = roll_out(w, r, &env, start, true).await;
            w.gitlab.set_down(None);
            let (end, running) = done?;
            if let Some((after, of_start, cold)) = r.late {
                // A cold container has only GitLab's clock, and GitLab keeps no trace of an end
                // it absorbed as unchanged (the same failure again): a very late start of such a
                // rollout looks like a retry there (README, "Lifecycle"). Cold ones get the end.
                let ev = if of_start && !cold { running.unwrap_or(end) } else { end };
                pending_late.push((i + after, ev, cold));
            }
            i += 1;
        }
        // Late redeliveries due after this rollout.
        let (due, later): (Vec<_>, Vec<_>) = pending_late.into_iter().partition(|(at, _, _)| *at < i);
        pending_late = later;
        for (_, ev, cold) in due {
            redeliver_late(w, &env, &ev, cold).await?;
        }
    }
    for (_, ev, cold) in std::mem::take(&mut pending_late) {
        redeliver_late(w, &env, &ev, cold).await?;
    }
    drained(w).await?;
    check(&w.gitlab, &env, &rollouts, &races)
}

async fn redeliver_late(w: &World, env: &str, ev: &Event, cold: bool) -> Result<(), TestCaseError> {
    if w.spool.is_some() {
        // A cold container shares the spool (Lambda's queue): it is the warm one, once the
        // spool is empty.
        drained(w).await?;
        let sent = deliver(&w.bridge, &w.gitlab, ev).await;
        let (code, answer) = &sent.answer;
        prop_assert!(*code == 200 || *code == 202, "late {:?} (cold: {}) → {} {}", ev.status, cold, code, answer);
        return Ok(());
    }
    let before = snapshot(&w.gitlab, env);
    let sent = if cold {
        let fresh = Bridge::start(model_config(&w.gitlab), static_secrets(&w.gitlab.token())).await;
        deliver(&fresh, &w.gitlab, &Event { by_path: false, ..ev.clone() }).await
    } else {
        deliver(&w.bridge, &w.gitlab, ev).await
    };
    let (code, answer) = &sent.answer;
    prop_assert_eq!(*code, 200, "{}", answer);
    prop_assert_eq!(
        snapshot(&w.gitlab, env),
        before,
        "a late {:?} of {} changed GitLab (cold: {}): {}",
        ev.status,
        ev.sha,
        cold,
        answer
    );
    prop_assert!(sent.calls <= 2, "late {:?} cost {} calls", ev.status, sent.calls);
    Ok(())
}

/// The invariants, against what the stand-in holds.
fn check(gitlab: &GitLabStub, env: &str, rollouts: &[Rollout], races: &[bool]) -> Result<(), TestCaseError> {
    let deps = gitlab.deployments_in(env);
    let shown: Vec<_> = deps.iter().map(|d| (&d.sha[..4], d.status.as_str(), d.history.len())).collect();
    for d in &deps {
        prop_assert!(d.status != "running", "left running: {:?}", shown);
        let shape_ok = d.history.len() == 1 || (d.history.len() == 2 && d.history[0] == "running");
        prop_assert!(shape_ok, "deployment {} went through {:?}", d.id, d.history);
    }
    let mut next = 0; // deployments are matched to rollouts in id order
    let mut live: Option<&str> = None;
    let mut i = 0;
    while i < rollouts.len() {
        let r = &rollouts[i];
        let sha = SHAS[r.sha];
        if races[i] {
            let n = &rollouts[i + 1];
            let mut want = vec![(sha, r.outcome.as_str()), (SHAS[n.sha], n.outcome.as_str())];
            let mut got: Vec<_> = deps.iter().skip(next).take(2).map(|d| (d.sha.as_str(), d.status.as_str())).collect();
            want.sort();
            got.sort();
            prop_assert_eq!(got, want, "racing rollouts {} and {}: {:?}", i, i + 1, shown);
            let winner =
                deps.iter().skip(next).take(2).filter(|d| d.status == "success").max_by_key(|d| d.finished_seq);
            if let Some(d) = winner {
                live = SHAS.iter().copied().find(|s| *s == d.sha);
            }
            next += 2;
            i += 2;
            continue;
        }
        // Between rollouts nothing runs, so what runs is the success that finished last (GitLab's
        // `last_deployment`), and the environment's latest change is the deployment that
        // finished last.
        let before = &deps[..next];
        let runs =
            before.iter().filter(|d| d.status == "success").max_by_key(|d| d.finished_seq).map(|d| d.sha.as_str());
        let latest = before.iter().max_by_key(|d| d.finished_seq).map(|d| (d.sha.as_str(), d.status.as_str()));
        // A rollout GitLab already shows is that deployment: a successful redeploy of what runs,
        // or the same failure again when its start did not come first or was a re-sync of what
        // runs (Flux repeats ReconciliationFailed at every retry).
        let start_absorbed = !r.with_running || r.end_first || runs == Some(sha);
        let shown_already = match r.outcome {
            Status::Success => runs == Some(sha),
            outcome => latest == Some((sha, outcome.as_str())) && start_absorbed,
        };
        if !shown_already {
            let matches = deps.get(next).is_some_and(|d| d.sha == sha && d.status == r.outcome.as_str());
            prop_assert!(
                matches,
                "rollout {} ({:?} of {}) has no deployment of its own: {:?}",
                i,
                r.outcome,
                &sha[..4],
                shown
            );
            next += 1;
        }
        if r.outcome == Status::Success {
            live = Some(sha);
        }
        i += 1;
    }
    prop_assert_eq!(next, deps.len(), "deployments that no rollout made: {:?}", shown);
    let shown_live =
        deps.iter().filter(|d| d.status == "success").max_by_key(|d| d.finished_seq).map(|d| d.sha.as_str());
    prop_assert_eq!(shown_live, live, "GitLab shows the wrong sha as deployed: {:?}", shown);
    Ok(())
}
