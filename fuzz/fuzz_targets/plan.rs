//! Normalization and lifecycle planning, through the real router in a dry run: any query and
//! any generic (or GitLab-facade) body, correctly authenticated. Every planned GitLab call stays
//! under `/api/v4/projects/<one segment>/`, a routed call's only in the route's projects, and
//! nothing answers 5xx.
#![no_main]

#[path = "../common/mod.rs"]
mod common;

use axum::body::Body;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Map, Value};

const PROJECTS: &[&str] = &[
    "42",
    "7",
    "group/app",
    "group/sub/app",
    "Group/App",
    ".",
    "..",
    "group/..",
    "%2e%2e",
    "group/.",
    "",
    " ",
    "42/../7",
];
const SHAS: &[&str] =
    &["a91957a858320c0e17f3a0eca7cfacbff50ea29a", "B0B0B0B0B0B0B0B0B0B0B0B0B0B0B0B0B0B0B0B0", "a91957a", ""];
const STATUSES: &[&str] = &["running", "success", "failed", "canceled", "created", "blocked", "SUCCESS", ""];

#[derive(Arbitrary, Debug)]
enum Pick {
    Known(u8),
    Any(String),
}

impl Pick {
    fn get<'a>(&'a self, known: &'a [&'a str]) -> &'a str {
        match self {
            Pick::Known(i) => known[usize::from(*i) % known.len()],
            Pick::Any(s) => s,
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    mode: u8,
    project: Option<Pick>,
    environment_q: Option<String>,
    ref_q: Option<String>,
    tier_q: Option<String>,
    raw_path_project: bool,
    deployment_id: u64,
    environment: Option<String>,
    sha: Option<Pick>,
    git_ref: Option<String>,
    tag: Option<bool>,
    status: Option<Pick>,
    external_url: Option<String>,
    timestamp: Option<String>,
    delivery_id: Option<String>,
}

/// The bridge's secret for the unbound generic hook (and facade).
fn generic() -> String {
    common::secret_of(gitlab_deploy_bridge::sources::find("generic").expect("generic"))
}

fuzz_target!(|input: Input| {
    let project = input.project.as_ref().map(|p| p.get(PROJECTS).to_string());
    let mut query: Vec<(&str, String)> = Vec::new();
    for (k, v) in [("environment", &input.environment_q), ("ref", &input.ref_q), ("tier", &input.tier_q)] {
        if let Some(v) = v {
            query.push((k, v.clone()));
        }
    }
    let mut body = Map::new();
    let fields: [(&str, Option<Value>); 8] = [
        ("environment", input.environment.clone().map(Value::from)),
        ("sha", input.sha.as_ref().map(|s| Value::from(s.get(SHAS)))),
        ("ref", input.git_ref.clone().map(Value::from)),
        ("tag", input.tag.map(Value::from)),
        ("status", input.status.as_ref().map(|s| Value::from(s.get(STATUSES)))),
        ("external_url", input.external_url.clone().map(Value::from)),
        ("timestamp", input.timestamp.clone().map(Value::from)),
        ("delivery_id", input.delivery_id.clone().map(Value::from)),
    ];
    for (k, v) in fields {
        if let Some(v) = v {
            body.insert(k.to_string(), v);
        }
    }
    let in_path = |p: &str| {
        if input.raw_path_project { p.to_string() } else { utf8_percent_encode(p, NON_ALPHANUMERIC).to_string() }
    };
    let mode = input.mode % 5;
    let (path, token) = match mode {
        0 | 1 => {
            if let Some(p) = &project {
                query.push(("project", p.clone()));
            }
            let q = serde_urlencoded::to_string(&query).unwrap_or_default();
            if mode == 0 {
                (format!("/hooks/generic/ci?{q}"), common::ROUTE_CI.to_string())
            } else {
                (format!("/hooks/generic?{q}"), generic())
            }
        }
        2 => (
            format!("/routes/ci/api/v4/projects/{}/deployments", in_path(project.as_deref().unwrap_or("42"))),
            common::ROUTE_CI.to_string(),
        ),
        3 => (format!("/api/v4/projects/{}/deployments", in_path(project.as_deref().unwrap_or("42"))), generic()),
        _ => (
            format!(
                "/api/v4/projects/{}/deployments/{}",
                in_path(project.as_deref().unwrap_or("42")),
                input.deployment_id
            ),
            generic(),
        ),
    };
    let method = if mode == 4 { "PUT" } else { "POST" };
    let Ok(req) = http::Request::builder()
        .method(method)
        .uri(&path)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Body::from(Value::Object(body).to_string()))
    else {
        return;
    };
    let (status, answer) = common::send(req);
    common::check(status, &answer);
    // A routed call plans calls only in the route's projects (42, group/*).
    if matches!(mode, 0 | 2)
        && let Some(calls) = answer.get("gitlab_calls").and_then(Value::as_array)
    {
        for call in calls {
            let path = call["path"].as_str().unwrap_or_default();
            let segment = path.trim_start_matches("/api/v4/projects/").split(['/', '?']).next().unwrap_or_default();
            let project = percent_encoding::percent_decode_str(segment).decode_utf8_lossy().to_ascii_lowercase();
            assert!(
                project == "42" || project.starts_with("group/"),
                "route ci planned a call in project {project:?}: {path}"
            );
        }
    }
});
