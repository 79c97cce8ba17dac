//! Every GitLab API call the bridge makes, as a value ([`Call`]): method, path below the base
//! URL with its query, and JSON body. The HTTP client sends these; the in-memory GitLab of a
//! dry run records them. Path encoding and its safety rule live here only: a project is one
//! path segment (its `/` encoded), and a `.` or `..` segment — which URL parsing would resolve
//! away, aiming the token at another endpoint — is refused wherever it comes from.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::Url;
use serde_json::json;

use super::{Call, EnvironmentChange, GitLabError, NewDeployment};
use crate::model::Status;

/// Characters left as they are in a path segment; everything else (`/` included) is %-encoded.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// `value` as one path segment.
pub fn segment(value: &str) -> String {
    utf8_percent_encode(value, PATH_SEGMENT).to_string()
}

fn call(
    method: &str,
    path: String,
    query: &[(&str, &str)],
    body: Option<serde_json::Value>,
) -> Result<Call, GitLabError> {
    // Parsed against a placeholder host only to encode the query as GitLab's clients do.
    let mut url = Url::parse(&format!("http://gitlab.invalid{path}"))
        .map_err(|e| GitLabError::InvalidResponse(format!("cannot build a GitLab API path: {e}")))?;
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    Ok(Call { method: method.to_string(), path, body })
}

/// `/api/v4/projects/<project>/<rest>`, and nothing else.
fn project_path(project: &str, rest: &[&str]) -> Result<String, GitLabError> {
    let dot = |seg: &str| seg == "." || seg == "..";
    let p = segment(project);
    let rest: Vec<String> = rest.iter().map(|s| segment(s)).collect();
    if dot(&p) || rest.iter().any(|s| dot(s)) {
        return Err(GitLabError::Rejected {
            status: 400,
            message: format!("{project:?} / {rest:?} cannot be part of a GitLab API path (a `.` or `..` segment)"),
        });
    }
    let mut path = format!("/api/v4/projects/{p}");
    for seg in rest {
        path.push('/');
        path.push_str(&seg);
    }
    Ok(path)
}

/// `GET /projects/:id/deployments?environment=&status=&order_by=id&sort=desc&per_page=`.
pub fn list_deployments(
    project: &str,
    environment: &str,
    status: Option<Status>,
    per_page: u32,
) -> Result<Call, GitLabError> {
    let per_page = per_page.to_string();
    let mut query = vec![("environment", environment)];
    if let Some(s) = status {
        query.push(("status", s.as_str()));
    }
    query.extend([("order_by", "id"), ("sort", "desc"), ("per_page", per_page.as_str())]);
    call("GET", project_path(project, &["deployments"])?, &query, None)
}

/// `GET /projects/:id` (its numeric id, and the token's `permissions` there).
pub fn project(project: &str) -> Result<Call, GitLabError> {
    call("GET", project_path(project, &[])?, &[], None)
}

/// `GET /api/v4/<path>` outside any project (`personal_access_tokens/self`, for `check`).
pub fn api(path: &str) -> Result<Call, GitLabError> {
    call("GET", format!("/api/v4/{path}"), &[], None)
}

pub fn get_deployment(project: &str, id: u64) -> Result<Call, GitLabError> {
    call("GET", project_path(project, &["deployments", &id.to_string()])?, &[], None)
}

/// `GET /projects/:id/repository/commits/:rev` (a short sha, a branch or a tag, as one segment).
pub fn commit(project: &str, rev: &str) -> Result<Call, GitLabError> {
    call("GET", project_path(project, &["repository", "commits", rev])?, &[], None)
}

pub fn find_environment(project: &str, name: &str) -> Result<Call, GitLabError> {
    call("GET", project_path(project, &["environments"])?, &[("name", name)], None)
}

fn environment_body(name: Option<&str>, change: EnvironmentChange<'_>) -> serde_json::Value {
    let mut body = json!({});
    if let Some(n) = name {
        body["name"] = json!(n);
    }
    if let Some(t) = change.tier {
        body["tier"] = json!(t);
    }
    if let Some(u) = change.external_url {
        body["external_url"] = json!(u);
    }
    body
}

pub fn create_environment(project: &str, name: &str, change: EnvironmentChange<'_>) -> Result<Call, GitLabError> {
    call("POST", project_path(project, &["environments"])?, &[], Some(environment_body(Some(name), change)))
}

pub fn update_environment(project: &str, id: u64, change: EnvironmentChange<'_>) -> Result<Call, GitLabError> {
    call("PUT", project_path(project, &["environments", &id.to_string()])?, &[], Some(environment_body(None, change)))
}

pub fn create_deployment(project: &str, d: &NewDeployment) -> Result<Call, GitLabError> {
    let body = serde_json::to_value(d).map_err(|e| GitLabError::InvalidResponse(e.to_string()))?;
    call("POST", project_path(project, &["deployments"])?, &[], Some(body))
}

pub fn update_deployment(project: &str, id: u64, status: Status) -> Result<Call, GitLabError> {
    call("PUT", project_path(project, &["deployments", &id.to_string()])?, &[], Some(json!({ "status": status })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_paths_are_encoded() {
        assert_eq!(project("group/sub/app").unwrap().path, "/api/v4/projects/group%2Fsub%2Fapp");
        assert_eq!(project("42").unwrap().path, "/api/v4/projects/42");
        assert_eq!(project("group/my.app").unwrap().path, "/api/v4/projects/group%2Fmy.app");
        let list = list_deployments("42", "preview/a b", Some(Status::Running), 100).unwrap();
        assert_eq!(
            list.path,
            "/api/v4/projects/42/deployments?environment=preview%2Fa+b&status=running&order_by=id&sort=desc&per_page=100"
        );
        assert_eq!(commit("42", "v1.0/x").unwrap().path, "/api/v4/projects/42/repository/commits/v1.0%2Fx");
    }

    /// Every call stays under `/api/v4/projects/<one segment>/`: dot segments, which URL parsing
    /// resolves away, are refused wherever they come from.
    #[test]
    fn dot_segments_never_leave_the_project() {
        for p in [".", ".."] {
            assert!(list_deployments(p, "production", None, 20).is_err(), "{p}");
            assert!(project(p).is_err(), "{p}");
        }
        assert!(commit("42", "..").is_err());
        assert!(commit("42", ".").is_err());
        assert_eq!(project("group/..").unwrap().path, "/api/v4/projects/group%2F..", "one segment, %2F-encoded");
    }

    #[test]
    fn bodies_carry_only_what_is_set() {
        let c = update_environment("42", 7, EnvironmentChange { tier: None, external_url: Some("https://x") }).unwrap();
        assert_eq!((c.method.as_str(), c.body), ("PUT", Some(json!({"external_url": "https://x"}))));
        let d = NewDeployment {
            environment: "e".into(),
            sha: "a".repeat(40),
            git_ref: "main".into(),
            tag: false,
            status: Status::Running,
        };
        let c = create_deployment("42", &d).unwrap();
        assert_eq!(c.body.unwrap()["ref"], "main");
    }
}
