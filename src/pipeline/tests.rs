//! The pipeline's own behaviour, stage to stage, without HTTP: admission, normalization and
//! delivery (now or to the spool) against the in-memory GitLab, which a switch can take down
//! or make refuse, and a local spool in a temporary directory.

use super::*;
use crate::config::SpoolSettings;
use crate::event::Event;
use crate::gitlab::memory::MemoryGitLab;
use crate::gitlab::{EnvironmentChange, GitLab, GitLabError, NewDeployment, Recent};
use crate::model::{BoxFuture, Environment, Status};
use crate::replay::Replays;
use crate::routes::Routes;
use crate::secrets::StaticSecrets;
use crate::sources::ToolSettings;
use crate::spool::local::LocalSpool;
use crate::spool::{Spool, Spooled};
use admit::{ReplayPolicy, Unbound};
use secrecy::SecretString;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

const SHA: &str = "a91957a858320c0e17f3a0eca7cfacbff50ea29a";
const ROUTES: &str = r#"{"ci": {"source": "generic", "projects": ["42"]}, "fx": {"source": "flux", "projects": ["42"], "environments": ["production"]}}"#;

/// The in-memory GitLab, which can be taken down (every call unavailable) or made to refuse
/// every write (GitLab's 400 on the data).
#[derive(Default)]
struct Switchable {
    inner: MemoryGitLab,
    /// 0: up; 1: down; 2: refusing writes.
    state: AtomicU8,
}

impl Switchable {
    fn set(&self, state: u8) {
        self.state.store(state, Ordering::Relaxed);
    }

    fn check(&self, write: bool) -> Result<(), GitLabError> {
        match self.state.load(Ordering::Relaxed) {
            1 => Err(GitLabError::Unavailable("cannot connect to gitlab.test".into())),
            2 if write => Err(GitLabError::Rejected { status: 400, message: "sha: The commit does not exist".into() }),
            _ => Ok(()),
        }
    }
}

impl GitLab for Switchable {
    fn recent_deployments<'a>(
        &'a self,
        ctx: &'a CallCtx,
        project: &'a str,
        environment: &'a str,
        status: Option<Status>,
        per_page: u32,
    ) -> BoxFuture<'a, Result<Recent, GitLabError>> {
        Box::pin(async move {
            self.check(false)?;
            self.inner.recent_deployments(ctx, project, environment, status, per_page).await
        })
    }
    fn project_id<'a>(&'a self, ctx: &'a CallCtx, project: &'a str) -> BoxFuture<'a, Result<Option<u64>, GitLabError>> {
        Box::pin(async move {
            self.check(false)?;
            self.inner.project_id(ctx, project).await
        })
    }
    fn get_deployment<'a>(
        &'a self,
        ctx: &'a CallCtx,
        project: &'a str,
        id: u64,
    ) -> BoxFuture<'a, Result<Deployment, GitLabError>> {
        Box::pin(async move {
            self.check(false)?;
            self.inner.get_deployment(ctx, project, id).await
        })
    }
    fn resolve_commit<'a>(
        &'a self,
        ctx: &'a CallCtx,
        project: &'a str,
        rev: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, GitLabError>> {
        Box::pin(async move {
            self.check(false)?;
            self.inner.resolve_commit(ctx, project, rev).await
        })
    }
    fn find_environment<'a>(
        &'a self,
        ctx: &'a CallCtx,
        project: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Environment>, GitLabError>> {
        Box::pin(async move {
            self.check(false)?;
            self.inner.find_environment(ctx, project, name).await
        })
    }
    fn create_environment<'a>(
        &'a self,
        ctx: &'a CallCtx,
        project: &'a str,
        name: &'a str,
        settings: EnvironmentChange<'a>,
    ) -> BoxFuture<'a, Result<Environment, GitLabError>> {
        Box::pin(async move {
            self.check(true)?;
            self.inner.create_environment(ctx, project, name, settings).await
        })
    }
    fn update_environment<'a>(
        &'a self,
        ctx: &'a CallCtx,
        project: &'a str,
        id: u64,
        settings: EnvironmentChange<'a>,
    ) -> BoxFuture<'a, Result<Environment, GitLabError>> {
        Box::pin(async move {
            self.check(true)?;
            self.inner.update_environment(ctx, project, id, settings).await
        })
    }
    fn create_deployment<'a>(
        &'a self,
        ctx: &'a CallCtx,
        project: &'a str,
        d: &'a NewDeployment,
    ) -> BoxFuture<'a, Result<Deployment, GitLabError>> {
        Box::pin(async move {
            self.check(true)?;
            self.inner.create_deployment(ctx, project, d).await
        })
    }
    fn update_deployment<'a>(
        &'a self,
        ctx: &'a CallCtx,
        project: &'a str,
        id: u64,
        status: Status,
    ) -> BoxFuture<'a, Result<Deployment, GitLabError>> {
        Box::pin(async move {
            self.check(true)?;
            self.inner.update_deployment(ctx, project, id, status).await
        })
    }
    fn warm_up(&self) -> BoxFuture<'_, WarmUp> {
        self.inner.warm_up()
    }
    /// A GitLab that answers (not a plan): the pipeline treats it as live.
    fn dry_run(&self) -> bool {
        false
    }
    fn planned(&self) -> Option<serde_json::Value> {
        None
    }
}

struct World {
    pipeline: Pipeline,
    gitlab: Arc<Switchable>,
    spool: Option<Arc<LocalSpool>>,
}

fn world(spooled: bool, unbound: Unbound) -> World {
    let secrets: HashMap<String, SecretString> = [
        ("route_ci_secret", "ci-secret"),
        ("route_fx_secret", "fx-secret"),
        ("generic_webhook_secret", "generic-secret"),
        ("gitlab_token", "glpat-test"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), SecretString::from(v.to_string())))
    .collect();
    let gitlab = Arc::new(Switchable::default());
    let spool = spooled.then(|| {
        let dir = std::env::temp_dir().join(format!("pipeline-test-{}", fastrand::u64(..)));
        Arc::new(LocalSpool::open(&dir).unwrap())
    });
    let store = spool.clone().map(|s| Spool::Local(s, Arc::new(tokio::sync::Notify::new())));
    let gate = Gate::new(
        Routes::parse(ROUTES).unwrap(),
        unbound,
        Replays::new(HashMap::new(), Duration::from_secs(30)),
        ReplayPolicy::Enforce,
        Arc::new(StaticSecrets::new(secrets)),
        ToolSettings::default(),
    );
    let lifecycle = Lifecycle::new(gitlab.clone(), Duration::from_secs(30));
    let spool_settings = SpoolSettings { after: Duration::from_secs(2), ..SpoolSettings::default() };
    let deliverer = Deliverer::new(lifecycle, store, spool_settings);
    let pipeline = Pipeline::new(gate, Defaults::default(), ToolApis::Offline, deliverer, Deadlines::default());
    World { pipeline, gitlab, spool }
}

fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("authorization", format!("Bearer {token}").parse().unwrap());
    h
}

async fn send(w: &World, source: &str, route: Option<&str>, headers: &HeaderMap, body: &str) -> Result<Handled, Error> {
    // A routed call's project is its route's; an unbound one names it.
    let query = route.is_none().then_some("project=42");
    let hook = Webhook {
        source,
        route,
        path_project: None,
        headers,
        query,
        body: Ok(Bytes::from(body.to_string())),
        received: Instant::now(),
    };
    w.pipeline.handle(hook, Instant::now() + Duration::from_secs(5)).await
}

fn generic(status: &str) -> String {
    serde_json::json!({"environment": "production", "sha": SHA, "ref": "main", "status": status}).to_string()
}

#[tokio::test]
async fn a_routed_webhook_is_admitted_normalized_and_delivered_as_one_rollout() {
    let w = world(false, Unbound::Refuse);
    let started = send(&w, "generic", Some("ci"), &bearer("ci-secret"), &generic("running")).await.unwrap();
    assert_eq!(started.answer.action, answer::Action::Created);
    let d = started.answer.deployment.as_ref().unwrap();
    assert_eq!(
        (d.environment.as_deref(), d.sha.as_deref(), d.status.as_deref()),
        (Some("production"), Some(SHA), Some("running"))
    );
    let ended = send(&w, "generic", Some("ci"), &bearer("ci-secret"), &generic("success")).await.unwrap();
    assert_eq!(ended.answer.action, answer::Action::Updated);
    assert_eq!(ended.deployment.map(|d| d.id), started.deployment.map(|d| d.id), "one deployment");
}

#[tokio::test]
async fn admission_refuses_before_anything_is_written() {
    let w = world(false, Unbound::Refuse);
    let wrong = send(&w, "generic", Some("ci"), &bearer("fx-secret"), &generic("running")).await.unwrap_err();
    assert_eq!(wrong.status(), 401, "another route's secret");
    let unbound = send(&w, "generic", None, &bearer("generic-secret"), &generic("running")).await.unwrap_err();
    assert_eq!(unbound.status(), 403);
    let bad = generic("running").replace("production", "x:y");
    let outside = send(&w, "generic", Some("ci"), &bearer("ci-secret"), &bad).await.unwrap_err();
    assert_eq!(outside.status(), 400, "GitLab's environment rule");
    assert!(w.gitlab.inner.summary().as_array().unwrap().is_empty(), "nothing reached GitLab");
}

#[tokio::test]
async fn a_replayed_delivery_changes_nothing_and_a_dry_run_plans_an_unbound_one() {
    let w = world(false, Unbound::Refuse);
    let at = crate::model::format_time(time::OffsetDateTime::now_utc());
    let body = serde_json::json!({
        "involvedObject": {"kind": "Kustomization", "namespace": "flux-system", "name": "app"},
        "reason": "Progressing", "timestamp": at,
        "metadata": {"revision": format!("main@sha1:{SHA}"), "environment": "production"}
    })
    .to_string();
    let flux = crate::sources::find("flux").unwrap();
    let mut headers = HeaderMap::new();
    for (k, v) in flux.sign(body.as_bytes(), "fx-secret") {
        headers.insert(k, v.parse().unwrap());
    }
    assert_eq!(send(&w, "flux", Some("fx"), &headers, &body).await.unwrap().answer.action, answer::Action::Created);
    let again = send(&w, "flux", Some("fx"), &headers, &body).await.unwrap();
    assert_eq!(again.answer.action, answer::Action::Ignored);
    assert!(again.answer.reason.unwrap().contains("already handled"));

    let planned = world(false, Unbound::Plan);
    let handled = send(&planned, "generic", None, &bearer("generic-secret"), &generic("running")).await.unwrap();
    assert!(handled.answer.unbound.unwrap().contains("a live run would refuse"));
}

#[tokio::test]
async fn gitlab_down_spools_the_event_and_the_spool_delivers_it_in_order() {
    let w = world(true, Unbound::Refuse);
    w.gitlab.set(1);
    let first = send(&w, "generic", Some("ci"), &bearer("ci-secret"), &generic("running")).await.unwrap();
    assert!(first.spooled && first.answer.action == answer::Action::Spooled, "{:?}", first.answer);
    assert!(first.answer.spool.as_ref().unwrap().reason.contains("cannot connect"));
    // GitLab is back, but the environment has an event waiting: this one queues behind it.
    w.gitlab.set(0);
    let second = send(&w, "generic", Some("ci"), &bearer("ci-secret"), &generic("success")).await.unwrap();
    assert!(second.spooled && second.answer.spool.as_ref().unwrap().reason.contains("waiting"));
    let spool = w.spool.as_ref().unwrap();
    let entries = spool.list().unwrap();
    assert_eq!(entries.len(), 2);
    for entry in entries {
        let crate::spool::local::Stored::Entry(entry) = entry else { panic!("{entry:?}") };
        let item = Spooled::decode(entry.payload).unwrap();
        let delivered = w.pipeline.deliver(&item, 0, Instant::now() + Duration::from_secs(5)).await;
        assert!(matches!(delivered, Delivery::Delivered { .. }), "{delivered:?}");
    }
    assert_eq!(
        w.gitlab.inner.summary()[0]["statuses"],
        serde_json::json!(["running", "success"]),
        "in order, one deployment"
    );
}

#[tokio::test]
async fn a_refusal_of_the_data_is_answered_at_once_and_a_spooled_one_is_a_dead_letter() {
    let w = world(true, Unbound::Refuse);
    w.gitlab.set(2);
    let refused = send(&w, "generic", Some("ci"), &bearer("ci-secret"), &generic("running")).await.unwrap_err();
    assert_eq!(refused.status(), 422, "GitLab refused the data: no later attempt can succeed");
    assert!(refused.to_string().contains(SHA), "the commit is named: {refused}");
    assert!(w.spool.as_ref().unwrap().list().unwrap().is_empty(), "not spooled");
    let ev = Event::from_draft(
        "generic",
        crate::event::EventDraft {
            environment: Some("production".into()),
            sha: Some(SHA.into()),
            status: Some(Status::Running),
            ..Default::default()
        },
        &crate::event::Overrides { project: Some("42".into()), ..Default::default() },
        &Defaults::default(),
    )
    .unwrap();
    let item = Spooled::new(&ev, Some("ci"), "k", time::OffsetDateTime::now_utc(), "down".into());
    let dead = w.pipeline.deliver(&item, 0, Instant::now() + Duration::from_secs(5)).await;
    assert!(matches!(&dead, Delivery::Dead(r) if r.contains("The commit does not exist")), "{dead:?}");
    w.gitlab.set(1);
    let retry = w.pipeline.deliver(&item, 0, Instant::now() + Duration::from_secs(5)).await;
    assert!(matches!(retry, Delivery::Retry(_)));
}
