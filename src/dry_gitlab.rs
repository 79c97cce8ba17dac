//! The GitLab a dry run plans against: an in-memory one that keeps what the run's earlier
//! calls created, so that a batch of events (`invoke --dry-run events/*.json`, or a `serve
//! --dry-run`) is planned in order — the second event of a rollout finds the deployment the
//! first one would create, and says `updated`. It answers the Deployments and Environments
//! calls the lifecycle makes, as GitLab shapes them; anything else is left to the client's
//! fixed dry-run answers. Nothing leaves the process.

use reqwest::{Method, Url};
use serde_json::{Value, json};
use std::sync::Mutex;
use time::OffsetDateTime;

use crate::model::format_time;

/// Beyond this many planned deployments (a long-running dry-run server, a fuzzer) the memory
/// starts again empty.
const LIMIT: usize = 10_000;

/// One planned deployment.
#[derive(Debug, Clone)]
struct Planned {
    project: String,
    id: u64,
    iid: u64,
    environment: String,
    sha: String,
    git_ref: String,
    tag: bool,
    status: String,
    history: Vec<String>,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
}

impl Planned {
    fn json(&self) -> Value {
        json!({
            "id": self.id, "iid": self.iid, "status": self.status, "sha": self.sha, "ref": self.git_ref, "tag": self.tag,
            "created_at": format_time(self.created_at), "updated_at": format_time(self.updated_at),
            "environment": {"name": self.environment},
        })
    }
}

#[derive(Debug, Clone)]
struct PlannedEnvironment {
    project: String,
    id: u64,
    name: String,
    tier: Option<String>,
    external_url: Option<String>,
}

impl PlannedEnvironment {
    fn json(&self) -> Value {
        json!({"id": self.id, "name": self.name, "tier": self.tier, "external_url": self.external_url})
    }
}

#[derive(Default)]
struct State {
    next_id: u64,
    deployments: Vec<Planned>,
    environments: Vec<PlannedEnvironment>,
}

#[derive(Default)]
pub struct DryGitLab {
    state: Mutex<State>,
}

impl DryGitLab {
    /// GitLab's answer to the call, from what this run planned so far; `None` for a call it
    /// does not model.
    pub fn answer(&self, method: &Method, url: &Url, body: Option<&Value>) -> Option<Value> {
        let path = url.path().strip_prefix("/api/v4/projects/")?;
        let (project, rest) = path.split_once('/').unwrap_or((path, ""));
        let query = |k: &str| url.query_pairs().find(|(key, _)| key == k).map(|(_, v)| v.into_owned());
        let field = |k: &str| body.and_then(|b| b.get(k)).and_then(Value::as_str).map(str::to_string);
        let mut st = self.state.lock().ok()?;
        if st.deployments.len() > LIMIT {
            *st = State::default();
        }
        let now = OffsetDateTime::now_utc();
        let segments: Vec<&str> = rest.split('/').collect();
        match (method.as_str(), segments.as_slice()) {
            ("GET", ["deployments"]) => {
                let environment = query("environment");
                let status = query("status");
                let per_page = query("per_page").and_then(|p| p.parse().ok()).unwrap_or(20usize);
                let mut found: Vec<Value> = st
                    .deployments
                    .iter()
                    .rev()
                    .filter(|d| d.project == project)
                    .filter(|d| environment.as_deref().is_none_or(|e| d.environment == e))
                    .filter(|d| status.as_deref().is_none_or(|s| d.status == s))
                    .map(Planned::json)
                    .collect();
                found.truncate(per_page);
                Some(Value::Array(found))
            }
            ("POST", ["deployments"]) => {
                st.next_id += 1;
                let id = st.next_id;
                let iid = st.deployments.iter().filter(|d| d.project == project).count() as u64 + 1;
                let status = field("status").unwrap_or_else(|| "running".into());
                let planned = Planned {
                    project: project.to_string(),
                    id,
                    iid,
                    environment: field("environment").unwrap_or_default(),
                    sha: field("sha").unwrap_or_default(),
                    git_ref: field("ref").unwrap_or_default(),
                    tag: body.and_then(|b| b.get("tag")).and_then(Value::as_bool).unwrap_or(false),
                    history: vec![status.clone()],
                    status,
                    created_at: now,
                    updated_at: now,
                };
                let answer = planned.json();
                st.deployments.push(planned);
                Some(answer)
            }
            (method @ ("GET" | "PUT"), ["deployments", id]) => {
                let id: u64 = id.parse().ok()?;
                let d = st.deployments.iter_mut().find(|d| d.project == project && d.id == id)?;
                if method == "PUT"
                    && let Some(status) = field("status")
                {
                    d.history.push(status.clone());
                    d.status = status;
                    d.updated_at = now;
                }
                Some(d.json())
            }
            ("GET", ["environments"]) => {
                let name = query("name");
                let found = st
                    .environments
                    .iter()
                    .filter(|e| e.project == project && name.as_deref().is_none_or(|n| e.name == n))
                    .map(PlannedEnvironment::json)
                    .collect();
                Some(Value::Array(found))
            }
            ("POST", ["environments"]) => {
                st.next_id += 1;
                let e = PlannedEnvironment {
                    project: project.to_string(),
                    id: st.next_id,
                    name: field("name").unwrap_or_default(),
                    tier: field("tier"),
                    external_url: field("external_url"),
                };
                let answer = e.json();
                st.environments.push(e);
                Some(answer)
            }
            ("PUT", ["environments", id]) => {
                let id: u64 = id.parse().ok()?;
                let e = st.environments.iter_mut().find(|e| e.project == project && e.id == id)?;
                if let Some(tier) = field("tier") {
                    e.tier = Some(tier);
                }
                if let Some(url) = field("external_url") {
                    e.external_url = Some(url);
                }
                Some(e.json())
            }
            _ => None,
        }
    }

    /// What the run planned: per project, environment and sha, each deployment and the statuses
    /// it would go through.
    pub fn summary(&self) -> Value {
        let Ok(st) = self.state.lock() else { return json!([]) };
        let mut planned: Vec<&Planned> = st.deployments.iter().collect();
        planned.sort_by(|a, b| (&a.project, &a.environment, a.id).cmp(&(&b.project, &b.environment, b.id)));
        Value::Array(
            planned
                .into_iter()
                .map(|d| {
                    json!({
                        "project": percent_encoding::percent_decode_str(&d.project).decode_utf8_lossy(),
                        "environment": d.environment,
                        "sha": d.sha,
                        "deployment": d.id,
                        "statuses": d.history,
                    })
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_run_creates_is_found_by_its_later_calls() {
        let dry = DryGitLab::default();
        let url = |p: &str| Url::parse(&format!("https://gitlab.example.com/api/v4/projects/42{p}")).unwrap();
        let created = dry
            .answer(
                &Method::POST,
                &url("/deployments"),
                Some(&json!({"environment": "production", "sha": "a1", "ref": "main", "status": "running"})),
            )
            .unwrap();
        let id = created["id"].as_u64().unwrap();
        let list = dry
            .answer(&Method::GET, &url("/deployments?environment=production&order_by=id&sort=desc&per_page=20"), None)
            .unwrap();
        assert_eq!(list[0]["id"], id);
        assert_eq!(dry.answer(&Method::GET, &url("/deployments?environment=staging"), None).unwrap(), json!([]));
        dry.answer(&Method::PUT, &url(&format!("/deployments/{id}")), Some(&json!({"status": "success"}))).unwrap();
        let running =
            dry.answer(&Method::GET, &url("/deployments?environment=production&status=running"), None).unwrap();
        assert_eq!(running, json!([]));
        assert_eq!(dry.summary()[0]["statuses"], json!(["running", "success"]));
        assert!(
            dry.answer(&Method::GET, &url("/repository/commits/abc"), None).is_none(),
            "not modelled: the client's own answer"
        );
    }
}
