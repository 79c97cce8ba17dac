//! The GitLab a dry run plans against: in memory, keeping what the run's earlier calls created,
//! so that a batch of events (`invoke --dry-run events/*.json`, or a `serve --dry-run`) is
//! planned in order — the second event of a rollout finds the deployment the first one would
//! create, and says `updated`. It follows GitLab's own rules where the lifecycle depends on
//! them: the deployment state machine (a repeated status is refused, nothing goes back to
//! `running`), a `success` equal to the environment's last successful deployment answered with
//! that deployment (`Deployments::CreateService`), an environment created by its first
//! deployment. Each call is recorded as the HTTP client would send it ([`super::calls`]);
//! nothing leaves the process.
//!
//! What it cannot know it answers as GitLab would for a project with nothing in it yet: a path
//! is not resolved to an id, a short sha "resolves" to itself padded with zeros, and a
//! deployment it did not create is taken to exist with no status (so a facade `PUT` of it is
//! planned).

use serde_json::{Value, json};
use std::sync::Mutex;
use time::OffsetDateTime;

use super::{CallCtx, EnvironmentChange, GitLab, GitLabError, NewDeployment, Recent, WarmUp, calls};
use crate::model::{BoxFuture, Deployment, Environment, EnvironmentRef, Status, Tier};

/// Beyond this many planned deployments (a long-running dry-run server, a fuzzer) the memory
/// starts again empty.
const LIMIT: usize = 10_000;

/// One planned deployment.
#[derive(Debug, Clone)]
struct Planned {
    project: String,
    deployment: Deployment,
    tag: bool,
    history: Vec<String>,
    /// Order in which it finished (GitLab's `finished_at`).
    finished: Option<u64>,
}

#[derive(Debug, Clone)]
struct PlannedEnvironment {
    project: String,
    environment: Environment,
}

#[derive(Default)]
struct State {
    next_id: u64,
    finished: u64,
    deployments: Vec<Planned>,
    environments: Vec<PlannedEnvironment>,
}

impl State {
    fn deployment_mut(&mut self, project: &str, id: u64) -> Option<&mut Planned> {
        self.deployments.iter_mut().find(|d| d.project == project && d.deployment.id == id)
    }

    fn environment(&mut self, project: &str, name: &str, tier: Option<Tier>, url: Option<&str>) -> Environment {
        if let Some(e) = self.environments.iter().find(|e| e.project == project && e.environment.name == name) {
            return e.environment.clone();
        }
        self.next_id += 1;
        let environment = Environment {
            id: self.next_id,
            name: name.to_string(),
            tier: Some(tier.unwrap_or_else(|| Tier::guess(name)).as_str().to_string()),
            external_url: url.map(str::to_string),
        };
        self.environments.push(PlannedEnvironment { project: project.to_string(), environment: environment.clone() });
        environment
    }
}

/// The in-memory GitLab of a dry run.
#[derive(Default)]
pub struct MemoryGitLab {
    state: Mutex<State>,
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// GitLab's name of the state machine's event for a status (its refusals name it).
fn transition(status: Status) -> &'static str {
    match status {
        Status::Running => "run",
        Status::Success => "succeed",
        Status::Failed => "drop",
        Status::Canceled => "cancel",
    }
}

impl MemoryGitLab {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> Result<T, GitLabError> {
        let mut st =
            self.state.lock().map_err(|_| GitLabError::Unavailable("the dry run's GitLab is poisoned".into()))?;
        if st.deployments.len() > LIMIT || st.environments.len() > LIMIT {
            *st = State::default();
        }
        Ok(f(&mut st))
    }

    fn create(&self, project: &str, d: &NewDeployment) -> Result<Deployment, GitLabError> {
        self.with(|st| {
            st.environment(project, &d.environment, None, None);
            if d.status == Status::Success {
                let last = st
                    .deployments
                    .iter()
                    .filter(|p| p.project == project && p.deployment.status == "success")
                    .filter(|p| p.deployment.environment.as_ref().is_some_and(|e| e.name == d.environment))
                    .max_by_key(|p| p.finished);
                if let Some(p) =
                    last.filter(|p| p.deployment.sha == d.sha && p.deployment.git_ref == d.git_ref && p.tag == d.tag)
                {
                    return p.deployment.clone();
                }
            }
            st.next_id += 1;
            let iid = st.deployments.iter().filter(|p| p.project == project).count() as u64 + 1;
            let at = now();
            let finished = (d.status != Status::Running).then(|| {
                st.finished += 1;
                st.finished
            });
            let deployment = Deployment {
                id: st.next_id,
                iid: Some(iid),
                status: d.status.as_str().to_string(),
                sha: d.sha.clone(),
                git_ref: d.git_ref.clone(),
                created_at: Some(at),
                updated_at: Some(at),
                environment: Some(EnvironmentRef { name: d.environment.clone(), external_url: None }),
            };
            st.deployments.push(Planned {
                project: project.to_string(),
                deployment: deployment.clone(),
                tag: d.tag,
                history: vec![d.status.as_str().to_string()],
                finished,
            });
            deployment
        })
    }

    fn update(&self, project: &str, id: u64, status: Status) -> Result<Deployment, GitLabError> {
        self.with(|st| {
            let finished = st.finished + 1;
            let Some(p) = st.deployment_mut(project, id) else {
                // A deployment the run did not create (the facade's `PUT` of a real one).
                return Ok(Deployment { status: status.as_str().to_string(), ..unknown(id) });
            };
            let refused = match status {
                Status::Running => true,
                other => p.deployment.status == other.as_str(),
            };
            if refused {
                return Err(GitLabError::Rejected {
                    status: 400,
                    message: format!("status: cannot transition via \"{}\"", transition(status)),
                });
            }
            p.deployment.status = status.as_str().to_string();
            p.deployment.updated_at = Some(now());
            p.history.push(status.as_str().to_string());
            p.finished = Some(finished);
            let d = p.deployment.clone();
            st.finished = finished;
            Ok(d)
        })?
    }

    /// What the run planned: per project, environment and sha, each deployment and the statuses
    /// it would go through.
    pub fn summary(&self) -> Value {
        let Ok(st) = self.state.lock() else { return json!([]) };
        let mut planned: Vec<&Planned> = st.deployments.iter().collect();
        let env = |p: &Planned| p.deployment.environment.as_ref().map(|e| e.name.clone()).unwrap_or_default();
        planned.sort_by(|a, b| (&a.project, env(a), a.deployment.id).cmp(&(&b.project, env(b), b.deployment.id)));
        Value::Array(
            planned
                .into_iter()
                .map(|p| {
                    json!({
                        "project": p.project,
                        "environment": env(p),
                        "sha": p.deployment.sha,
                        "deployment": p.deployment.id,
                        "statuses": p.history,
                    })
                })
                .collect(),
        )
    }
}

/// A deployment the run knows nothing of.
fn unknown(id: u64) -> Deployment {
    Deployment {
        id,
        iid: None,
        status: String::new(),
        sha: String::new(),
        git_ref: String::new(),
        created_at: None,
        updated_at: None,
        environment: None,
    }
}

impl GitLab for MemoryGitLab {
    fn recent_deployments<'a>(
        &'a self,
        ctx: &'a CallCtx,
        project: &'a str,
        environment: &'a str,
        status: Option<Status>,
        per_page: u32,
    ) -> BoxFuture<'a, Result<Recent, GitLabError>> {
        Box::pin(async move {
            let per_page = per_page.clamp(1, 100) as usize;
            ctx.record(calls::list_deployments(project, environment, status, per_page as u32)?);
            let mut items: Vec<Deployment> = self.with(|st| {
                st.deployments
                    .iter()
                    .rev()
                    .filter(|p| p.project == project)
                    .filter(|p| p.deployment.environment.as_ref().is_some_and(|e| e.name == environment))
                    .filter(|p| status.is_none_or(|s| p.deployment.status == s.as_str()))
                    .map(|p| p.deployment.clone())
                    .collect()
            })?;
            items.truncate(per_page);
            Ok(Recent { more: items.len() >= per_page, items })
        })
    }

    fn project_id<'a>(&'a self, ctx: &'a CallCtx, project: &'a str) -> BoxFuture<'a, Result<Option<u64>, GitLabError>> {
        Box::pin(async move {
            ctx.record(calls::project(project)?);
            Ok(None)
        })
    }

    fn get_deployment<'a>(
        &'a self,
        ctx: &'a CallCtx,
        project: &'a str,
        id: u64,
    ) -> BoxFuture<'a, Result<Deployment, GitLabError>> {
        Box::pin(async move {
            ctx.record(calls::get_deployment(project, id)?);
            self.with(|st| st.deployment_mut(project, id).map(|p| p.deployment.clone()).unwrap_or_else(|| unknown(id)))
        })
    }

    fn resolve_commit<'a>(
        &'a self,
        ctx: &'a CallCtx,
        project: &'a str,
        rev: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, GitLabError>> {
        Box::pin(async move {
            ctx.record(calls::commit(project, rev)?);
            Ok(Some(format!("{:0<40}", rev.to_ascii_lowercase())))
        })
    }

    fn find_environment<'a>(
        &'a self,
        ctx: &'a CallCtx,
        project: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Environment>, GitLabError>> {
        Box::pin(async move {
            ctx.record(calls::find_environment(project, name)?);
            self.with(|st| {
                st.environments
                    .iter()
                    .find(|e| e.project == project && e.environment.name == name)
                    .map(|e| e.environment.clone())
            })
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
            ctx.record(calls::create_environment(project, name, settings)?);
            self.with(|st| {
                if st.environments.iter().any(|e| e.project == project && e.environment.name == name) {
                    return Err(GitLabError::Rejected { status: 400, message: "name: has already been taken".into() });
                }
                Ok(st.environment(project, name, settings.tier, settings.external_url))
            })?
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
            ctx.record(calls::update_environment(project, id, settings)?);
            self.with(|st| {
                let found = st.environments.iter_mut().find(|e| e.project == project && e.environment.id == id);
                let Some(e) = found else {
                    return Err(GitLabError::Rejected { status: 404, message: "404 Environment Not Found".into() });
                };
                if let Some(t) = settings.tier {
                    e.environment.tier = Some(t.as_str().to_string());
                }
                if let Some(u) = settings.external_url {
                    e.environment.external_url = Some(u.to_string());
                }
                Ok(e.environment.clone())
            })?
        })
    }

    fn create_deployment<'a>(
        &'a self,
        ctx: &'a CallCtx,
        project: &'a str,
        deployment: &'a NewDeployment,
    ) -> BoxFuture<'a, Result<Deployment, GitLabError>> {
        Box::pin(async move {
            ctx.record(calls::create_deployment(project, deployment)?);
            self.create(project, deployment)
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
            ctx.record(calls::update_deployment(project, id, status)?);
            self.update(project, id, status)
        })
    }

    /// Nothing to ready: no secret, no connection.
    fn warm_up(&self) -> BoxFuture<'_, WarmUp> {
        Box::pin(async { WarmUp::default() })
    }

    fn dry_run(&self) -> bool {
        true
    }

    fn planned(&self) -> Option<Value> {
        Some(self.summary())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn ctx() -> CallCtx {
        CallCtx::new(Instant::now() + Duration::from_secs(5))
    }

    fn new(sha: &str, status: Status) -> NewDeployment {
        NewDeployment { environment: "production".into(), sha: sha.into(), git_ref: "main".into(), tag: false, status }
    }

    #[tokio::test]
    async fn what_a_run_creates_is_found_by_its_later_calls_under_gitlabs_rules() {
        let (gitlab, ctx) = (MemoryGitLab::default(), ctx());
        let created = gitlab.create_deployment(&ctx, "42", &new("a1", Status::Running)).await.unwrap();
        let list = gitlab.recent_deployments(&ctx, "42", "production", None, 20).await.unwrap();
        assert_eq!(list.items[0].id, created.id);
        assert!(gitlab.recent_deployments(&ctx, "42", "staging", None, 20).await.unwrap().items.is_empty());
        gitlab.update_deployment(&ctx, "42", created.id, Status::Success).await.unwrap();
        let again = gitlab.update_deployment(&ctx, "42", created.id, Status::Success).await.unwrap_err();
        assert!(again.is_cannot_transition(), "{again}");
        let running = gitlab.recent_deployments(&ctx, "42", "production", Some(Status::Running), 20).await.unwrap();
        assert!(running.items.is_empty());
        let same = gitlab.create_deployment(&ctx, "42", &new("a1", Status::Success)).await.unwrap();
        assert_eq!(same.id, created.id, "a success equal to the last one is that one (Deployments::CreateService)");
        assert_eq!(gitlab.summary()[0]["statuses"], json!(["running", "success"]));
        let env = gitlab.find_environment(&ctx, "42", "production").await.unwrap().unwrap();
        assert_eq!(env.tier.as_deref(), Some("production"), "created by the first deployment, its tier guessed");
        let paths: Vec<String> = ctx.calls().into_iter().map(|c| format!("{} {}", c.method, c.path)).collect();
        assert_eq!(paths[0], "POST /api/v4/projects/42/deployments");
        assert_eq!(
            paths[1],
            "GET /api/v4/projects/42/deployments?environment=production&order_by=id&sort=desc&per_page=20"
        );
    }
}
