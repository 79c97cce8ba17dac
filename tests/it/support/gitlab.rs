//! An in-process GitLab stand-in for the Deployments, Environments and commits APIs that enforces
//! the documented contract (`../shared/reference/gitlab-api.md`): token header, project ids and
//! encoded paths, required fields and Grape's error shapes, the deployment state machine, list
//! filters, ordering and pagination, the success de-duplication against the environment's last
//! successful deployment by `finished_at` (`Deployments::CreateService`), real `created_at` /
//! `updated_at` times, project look-up by id or (case-insensitive) path, environments
//! auto-created with GitLab's guessed tier, and injectable faults (5xx, plain-text 429, lost
//! answers).

// Handlers here answer errors as ready axum responses; their size does not matter in a test stand-in.
#![allow(clippy::result_large_err)]

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Map, Value, json};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

#[derive(Clone, Debug)]
pub struct StoredDeployment {
    pub id: u64,
    pub iid: u64,
    pub project: String,
    pub environment: String,
    pub sha: String,
    pub git_ref: String,
    pub tag: bool,
    pub status: String,
    /// Every status this deployment went through, in order.
    pub history: Vec<String>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    /// Order in which deployments entered a finished status (GitLab's `finished_at`).
    pub finished_seq: Option<u64>,
}

impl StoredDeployment {
    fn set_status(&mut self, status: &str, seq: &mut u64) {
        self.status = status.to_string();
        self.history.push(status.to_string());
        self.updated_at = now();
        if status != "running" {
            *seq += 1;
            self.finished_seq = Some(*seq);
        }
    }
}

/// GitLab's clock, to the millisecond as its API writes times.
pub fn now() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(t.nanosecond() / 1_000_000 * 1_000_000).unwrap()
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap()
}

#[derive(Clone, Debug)]
pub struct StoredEnvironment {
    pub id: u64,
    pub project: String,
    pub name: String,
    pub tier: String,
    pub external_url: Option<String>,
}

/// `Environment#guess_tier` from app/models/environment.rb (current master), verbatim regexes.
pub fn guess_tier(name: &str) -> &'static str {
    let rules = [
        (r"(?i)(dev|review|trunk)", "development"),
        (r"(?i)(test|tst|int|ac(ce|)pt|qa|qc|control|quality)", "testing"),
        (r"(?i)(st(a|)g|mod(e|)l|pre|demo|non)", "staging"),
        (r"(?i)(pr(o|)d|live)", "production"),
    ];
    rules
        .iter()
        .find(|(re, _)| regex_lite::Regex::new(re).unwrap().is_match(name))
        .map(|(_, tier)| *tier)
        .unwrap_or("other")
}

#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub uri: String,
    pub at: Instant,
    pub private_token: Option<String>,
}

#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer with this status and JSON body.
    Json(u16, Value),
    /// GitLab's Rack::Attack throttle: plain text body and `Retry-After`.
    RateLimited { retry_after_secs: u64 },
    /// The request is carried out, but the answer is replaced by this status (a proxy timing out).
    LostAnswer(u16),
    /// A 200 whose JSON body is this many bytes (`[`, spaces, `]`), streamed without a length and
    /// never held in memory (a hostile or broken GitLab).
    Huge(u64),
}

#[derive(Default)]
struct StubState {
    tokens: HashSet<String>,
    commits: HashSet<String>,
    /// Every 40-hex sha is a commit (load tests).
    any_commit: bool,
    refs: HashSet<String>,
    deployments: Vec<StoredDeployment>,
    environments: Vec<StoredEnvironment>,
    next_id: u64,
    finished_seq: u64,
    /// The last `iid` given in each project.
    iids: HashMap<String, u64>,
    faults: VecDeque<(Option<String>, Fault)>,
    requests: Vec<Recorded>,
    /// An outage: every request is answered with this status (recorded, not carried out).
    down: Option<u16>,
    /// Added to every answer (a GitLab across the internet, not on loopback).
    latency: Option<std::time::Duration>,
    /// How long a create takes to commit. As Rails does, the create is carried out to the end
    /// even when the client has gone (killed, or given up) meanwhile.
    commit_delay: Option<std::time::Duration>,
    /// What `GET /personal_access_tokens/self` says of the token, and its role in every project.
    token_info: TokenInfo,
}

/// The token as GitLab describes it (`personal_access_tokens/self`) and its role in projects.
#[derive(Clone)]
pub struct TokenInfo {
    pub scopes: Vec<String>,
    pub expires_at: Option<String>,
    pub access_level: u64,
}

impl Default for TokenInfo {
    fn default() -> Self {
        TokenInfo { scopes: vec!["api".into()], expires_at: None, access_level: 30 }
    }
}

#[derive(Clone)]
pub struct GitLabStub {
    pub url: String,
    state: Arc<Mutex<StubState>>,
}

/// Projects the stand-in knows: numeric ids, and full paths.
/// (`my-group/my-app` is the README's example path.)
const PROJECTS: &[(&str, &str)] =
    &[("42", "42"), ("group/app", "42"), ("my-group/my-app", "42"), ("group/sub/app", "77"), ("77", "77")];

impl GitLabStub {
    /// Starts on a free loopback port; `token` is the only valid GitLab token.
    pub async fn start(token: &str) -> GitLabStub {
        let state = StubState {
            tokens: HashSet::from([token.to_string()]),
            refs: HashSet::from(["main".to_string(), "release".to_string(), "v1.0.0".to_string()]),
            next_id: 1000,
            ..Default::default()
        };
        let state = Arc::new(Mutex::new(state));
        let app = Router::new()
            .route("/api/v4/personal_access_tokens/self", get(token_self))
            .route("/api/v4/projects/{id}", get(project))
            .route("/api/v4/projects/{id}/deployments", get(list).post(create))
            .route("/api/v4/projects/{id}/deployments/{did}", get(get_one).put(update))
            .route("/api/v4/projects/{id}/repository/commits/{rev}", get(commit))
            .route("/api/v4/projects/{id}/environments", get(list_environments).post(create_environment))
            .route("/api/v4/projects/{id}/environments/{eid}", axum::routing::put(update_environment))
            .fallback(|uri: Uri| async move {
                (StatusCode::NOT_FOUND, Json(json!({"error": format!("404 Not Found: {}", uri.path())})))
            })
            .layer(axum::middleware::from_fn_with_state(state.clone(), gate))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        GitLabStub { url, state }
    }

    pub fn add_commit(&self, sha: &str) {
        self.state.lock().unwrap().commits.insert(sha.to_string());
    }

    /// The token the stand-in accepts (one of them, when several).
    pub fn token(&self) -> String {
        self.state.lock().unwrap().tokens.iter().next().cloned().unwrap_or_default()
    }

    /// Removes an environment's deployments, as if an administrator had deleted them.
    pub fn delete_all(&self, environment: &str) {
        self.state.lock().unwrap().deployments.retain(|d| d.environment != environment);
    }

    pub fn set_token(&self, token: &str) {
        let mut s = self.state.lock().unwrap();
        s.tokens.clear();
        s.tokens.insert(token.to_string());
    }

    /// The next request gets this fault.
    pub fn push_fault(&self, f: Fault) {
        self.state.lock().unwrap().faults.push_back((None, f));
    }

    /// Starts (`Some(status)`, e.g. 502 from the load balancer) or ends (`None`) an outage.
    pub fn set_down(&self, status: Option<u16>) {
        self.state.lock().unwrap().down = status;
    }

    /// Makes every answer take `latency` longer.
    pub fn set_latency(&self, latency: Option<std::time::Duration>) {
        self.state.lock().unwrap().latency = latency;
    }

    /// What GitLab says of the token: scopes, expiry, role in every project.
    /// Creates take `delay` to commit, whether or not the client waits for the answer.
    pub fn set_commit_delay(&self, delay: Option<std::time::Duration>) {
        self.state.lock().unwrap().commit_delay = delay;
    }

    pub fn set_token_info(&self, info: TokenInfo) {
        self.state.lock().unwrap().token_info = info;
    }

    /// Drops faults no request has met yet.
    pub fn clear_faults(&self) {
        self.state.lock().unwrap().faults.clear();
    }

    /// The next request with this method gets this fault.
    pub fn push_fault_for(&self, method: &str, f: Fault) {
        self.state.lock().unwrap().faults.push_back((Some(method.to_string()), f));
    }

    pub fn deployments(&self) -> Vec<StoredDeployment> {
        self.state.lock().unwrap().deployments.clone()
    }

    /// One environment's deployments, in id order.
    pub fn deployments_in(&self, environment: &str) -> Vec<StoredDeployment> {
        self.state.lock().unwrap().deployments.iter().filter(|d| d.environment == environment).cloned().collect()
    }

    pub fn environments(&self) -> Vec<StoredEnvironment> {
        self.state.lock().unwrap().environments.clone()
    }

    /// Creates an environment as if someone had made it in GitLab (tier guessed unless given).
    pub fn seed_environment(&self, project: &str, name: &str, tier: Option<&str>) {
        let mut s = self.state.lock().unwrap();
        find_or_create_environment(&mut s, project, name, tier);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Seeds a deployment as if another client had made it.
    pub fn seed(&self, project: &str, environment: &str, sha: &str, status: &str) -> u64 {
        let mut s = self.state.lock().unwrap();
        let d = new_deployment(&mut s, project, environment, sha, "main", false, status);
        let id = d.id;
        s.deployments.push(d);
        id
    }

    /// Makes `sha` a commit of every project.
    pub fn add_commits(&self, shas: impl IntoIterator<Item = String>) {
        self.state.lock().unwrap().commits.extend(shas);
    }

    /// Makes `name` a branch (or tag) of every project.
    pub fn add_ref(&self, name: &str) {
        self.state.lock().unwrap().refs.insert(name.to_string());
    }

    /// Makes every 40-hex sha a commit of every project (`examples/load.rs`).
    #[allow(dead_code)]
    pub fn accept_any_commit(&self) {
        self.state.lock().unwrap().any_commit = true;
    }

    /// How many requests reached the stand-in.
    pub fn request_count(&self) -> usize {
        self.state.lock().unwrap().requests.len()
    }
}

type Shared = Arc<Mutex<StubState>>;

fn err(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

/// Records every request, applies injected faults, and checks the token.
async fn gate(State(st): State<Shared>, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let token = req.headers().get("private-token").and_then(|v| v.to_str().ok()).map(str::to_string).or_else(|| {
        req.headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_string)
    });
    let latency = st.lock().unwrap().latency;
    if let Some(latency) = latency {
        tokio::time::sleep(latency).await;
    }
    let (fault, authorized) = {
        let mut s = st.lock().unwrap();
        s.requests.push(Recorded {
            method: req.method().to_string(),
            uri: req.uri().to_string(),
            at: Instant::now(),
            private_token: token.clone(),
        });
        if let Some(code) = s.down {
            return err(
                StatusCode::from_u16(code).unwrap(),
                json!({"message": format!("{code} GitLab is not responding")}),
            );
        }
        let method = req.method().to_string();
        let fault = s.faults.iter().position(|(m, _)| m.as_ref().is_none_or(|m| *m == method));
        let fault = fault.and_then(|i| s.faults.remove(i)).map(|(_, f)| f);
        (fault, token.as_ref().is_some_and(|t| s.tokens.contains(t)))
    };
    match fault {
        Some(Fault::Json(code, body)) => return err(StatusCode::from_u16(code).unwrap(), body),
        Some(Fault::RateLimited { retry_after_secs }) => {
            let mut r = (StatusCode::TOO_MANY_REQUESTS, "Retry later\n").into_response();
            r.headers_mut().insert("retry-after", HeaderValue::from_str(&retry_after_secs.to_string()).unwrap());
            r.headers_mut().insert("ratelimit-name", HeaderValue::from_static("throttle_authenticated_api"));
            return r;
        }
        Some(Fault::Huge(bytes)) => {
            const CHUNK: usize = 64 * 1024;
            let spaces = Bytes::from(vec![b' '; CHUNK]);
            let middle = bytes.saturating_sub(2);
            let chunks = (0..middle.div_ceil(CHUNK as u64)).map(move |i| {
                let n = (middle - i * CHUNK as u64).min(CHUNK as u64) as usize;
                Ok::<Bytes, std::io::Error>(spaces.slice(..n))
            });
            let stream = futures_util::stream::iter(
                std::iter::once(Ok(Bytes::from_static(b"[")))
                    .chain(chunks)
                    .chain(std::iter::once(Ok(Bytes::from_static(b"]")))),
            );
            let mut r = Response::new(axum::body::Body::from_stream(stream));
            r.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
            return r;
        }
        Some(Fault::LostAnswer(code)) if authorized => {
            let _ = next.run(req).await;
            return err(StatusCode::from_u16(code).unwrap(), json!({"message": "upstream timed out"}));
        }
        _ => {}
    }
    if !authorized {
        return err(StatusCode::UNAUTHORIZED, json!({"message": "401 Unauthorized"}));
    }
    next.run(req).await
}

/// A project id or full path (GitLab matches paths without regard to case) to its id.
fn project_id(id: &str) -> Result<&'static str, Response> {
    PROJECTS
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(id))
        .map(|(_, v)| *v)
        .ok_or_else(|| err(StatusCode::NOT_FOUND, json!({"message": "404 Project Not Found"})))
}

/// `GET /projects/:id`, the fields a client reads.
async fn project(State(st): State<Shared>, Path(id): Path<String>) -> Response {
    let level = st.lock().unwrap().token_info.access_level;
    match project_id(&id) {
        Ok(pid) => {
            let path = PROJECTS.iter().find(|(k, v)| *v == pid && k.contains('/')).map(|(k, _)| *k).unwrap_or(pid);
            Json(json!({"id": pid.parse::<u64>().unwrap(), "path_with_namespace": path, "name": path.rsplit('/').next(),
                        "web_url": format!("https://gitlab.example.com/{path}"), "default_branch": "main",
                        "permissions": {"project_access": {"access_level": level, "notification_level": 3}, "group_access": null}}))
            .into_response()
        }
        Err(r) => r,
    }
}

/// GitLab's `GET /personal_access_tokens/self` (personal, project and group access tokens).
async fn token_self(State(st): State<Shared>) -> Response {
    let info = st.lock().unwrap().token_info.clone();
    Json(json!({"id": 4711, "name": "deploy-bridge", "revoked": false, "created_at": "2026-11-01T09:00:00.000Z",
                "description": "", "scopes": info.scopes, "user_id": 91, "last_used_at": null, "active": true,
                "expires_at": info.expires_at}))
    .into_response()
}

fn new_deployment(
    s: &mut StubState,
    project: &str,
    environment: &str,
    sha: &str,
    git_ref: &str,
    tag: bool,
    status: &str,
) -> StoredDeployment {
    s.next_id += 1;
    let iid = *s.iids.entry(project.to_string()).and_modify(|i| *i += 1).or_insert(1);
    let at = now();
    let mut d = StoredDeployment {
        id: s.next_id,
        iid,
        project: project.into(),
        environment: environment.into(),
        sha: sha.into(),
        git_ref: git_ref.into(),
        tag,
        status: String::new(),
        history: Vec::new(),
        created_at: at,
        updated_at: at,
        finished_seq: None,
    };
    d.set_status(status, &mut s.finished_seq);
    d
}

fn env_entity(e: &StoredEnvironment) -> Value {
    json!({"id": e.id, "name": e.name, "slug": e.name.to_lowercase().replace(['/', ' ', '.'], "-"), "external_url": e.external_url,
           "state": "available", "tier": e.tier, "created_at": "2026-11-25T00:00:00Z", "updated_at": "2026-11-25T00:00:00Z"})
}

/// `project.environments.find_or_create_by_name`: a new environment gets a guessed tier.
fn find_or_create_environment(s: &mut StubState, project: &str, name: &str, tier: Option<&str>) -> StoredEnvironment {
    if let Some(e) = s.environments.iter().find(|e| e.project == project && e.name == name) {
        return e.clone();
    }
    s.next_id += 1;
    let e = StoredEnvironment {
        id: s.next_id,
        project: project.to_string(),
        name: name.to_string(),
        tier: tier.map(str::to_string).unwrap_or_else(|| guess_tier(name).to_string()),
        external_url: None,
    };
    s.environments.push(e.clone());
    e
}

const TIERS: &[&str] = &["production", "staging", "testing", "development", "other"];

async fn list_environments(
    State(st): State<Shared>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let project = match project_id(&id) {
        Ok(p) => p,
        Err(r) => return r,
    };
    if q.contains_key("name") && q.contains_key("search") {
        return err(StatusCode::BAD_REQUEST, json!({"error": "name, search are mutually exclusive"}));
    }
    let s = st.lock().unwrap();
    let items: Vec<Value> = s
        .environments
        .iter()
        .filter(|e| e.project == project && q.get("name").is_none_or(|n| &e.name == n))
        .map(env_entity)
        .collect();
    Json(Value::Array(items)).into_response()
}

async fn create_environment(
    State(st): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (project, p) = match project_and_params(&id, &headers, &body) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Some(name) = p.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()).map(str::to_string) else {
        return err(StatusCode::BAD_REQUEST, json!({"error": "name is missing"}));
    };
    let tier = p.get("tier").and_then(Value::as_str).map(str::to_string);
    if tier.as_deref().is_some_and(|t| !TIERS.contains(&t)) {
        return err(StatusCode::BAD_REQUEST, json!({"error": "tier does not have a valid value"}));
    }
    if !env_name_valid(&name) {
        return err(
            StatusCode::BAD_REQUEST,
            json!({"message": {"name": ["can contain only letters, digits, '-', '_', '/', '$', '{', '}', '.', and spaces, but it cannot start or end with '/'"]}}),
        );
    }
    let mut s = st.lock().unwrap();
    if s.environments.iter().any(|e| e.project == project && e.name == name) {
        return err(StatusCode::BAD_REQUEST, json!({"message": {"name": ["has already been taken"]}}));
    }
    let mut e = find_or_create_environment(&mut s, project, &name, tier.as_deref());
    e.external_url = p.get("external_url").and_then(Value::as_str).map(str::to_string);
    if let Some(stored) = s.environments.iter_mut().find(|x| x.id == e.id) {
        *stored = e.clone();
    }
    (StatusCode::CREATED, Json(env_entity(&e))).into_response()
}

async fn update_environment(
    State(st): State<Shared>,
    Path((id, eid)): Path<(String, u64)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (project, p) = match project_and_params(&id, &headers, &body) {
        Ok(x) => x,
        Err(r) => return r,
    };
    if p.contains_key("name") {
        return err(StatusCode::BAD_REQUEST, json!({"error": "name is no longer changeable"}));
    }
    let tier = p.get("tier").and_then(Value::as_str).map(str::to_string);
    if tier.as_deref().is_some_and(|t| !TIERS.contains(&t)) {
        return err(StatusCode::BAD_REQUEST, json!({"error": "tier does not have a valid value"}));
    }
    let mut s = st.lock().unwrap();
    let Some(e) = s.environments.iter_mut().find(|e| e.id == eid && e.project == project) else {
        return err(StatusCode::NOT_FOUND, json!({"message": "404 Not found"}));
    };
    if let Some(t) = tier {
        e.tier = t;
    }
    if let Some(u) = p.get("external_url").and_then(Value::as_str) {
        e.external_url = Some(u.to_string());
    }
    Json(env_entity(e)).into_response()
}

fn entity(d: &StoredDeployment) -> Value {
    json!({
        "id": d.id, "iid": d.iid, "ref": d.git_ref, "sha": d.sha, "status": d.status,
        "created_at": rfc3339(d.created_at), "updated_at": rfc3339(d.updated_at),
        "user": {"id": 1, "username": "project_42_bot"},
        "environment": {"id": 1, "name": d.environment, "slug": d.environment.to_lowercase(), "external_url": null},
        "deployable": null
    })
}

const STATUSES: &[&str] = &["created", "running", "success", "failed", "canceled", "skipped", "blocked"];
const API_STATUSES: &[&str] = &["running", "success", "failed", "canceled"];

async fn list(State(st): State<Shared>, Path(id): Path<String>, Query(q): Query<HashMap<String, String>>) -> Response {
    let project = match project_id(&id) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let order_by = q.get("order_by").map(String::as_str).unwrap_or("id");
    if !["id", "iid", "created_at", "updated_at", "finished_at"].contains(&order_by) {
        return err(StatusCode::BAD_REQUEST, json!({"error": "order_by does not have a valid value"}));
    }
    if order_by == "finished_at" || order_by == "updated_at" {
        return err(StatusCode::BAD_REQUEST, json!({"message": "400 Bad request - the stand-in only sorts by id"}));
    }
    let sort = q.get("sort").map(String::as_str).unwrap_or("asc");
    if !["asc", "desc"].contains(&sort) {
        return err(StatusCode::BAD_REQUEST, json!({"error": "sort does not have a valid value"}));
    }
    if let Some(s) = q.get("status")
        && !STATUSES.contains(&s.as_str())
    {
        return err(StatusCode::BAD_REQUEST, json!({"error": "status does not have a valid value"}));
    }
    let per_page: usize = q.get("per_page").and_then(|v| v.parse().ok()).unwrap_or(20).clamp(1, 100);
    let page: usize = q.get("page").and_then(|v| v.parse().ok()).unwrap_or(1).max(1);
    let s = st.lock().unwrap();
    // Deployments are stored in id order. One more than the page tells whether a next page
    // exists; like GitLab.com for large lists, no `x-total` is sent.
    let wanted = |d: &&StoredDeployment| {
        d.project == project
            && q.get("environment").is_none_or(|e| &d.environment == e)
            && q.get("status").is_none_or(|st| &d.status == st)
    };
    let ordered: Box<dyn Iterator<Item = &StoredDeployment>> =
        if sort == "desc" { Box::new(s.deployments.iter().rev()) } else { Box::new(s.deployments.iter()) };
    let items: Vec<&StoredDeployment> = ordered.filter(wanted).take(page * per_page + 1).collect();
    let body: Vec<Value> = items.iter().skip((page - 1) * per_page).take(per_page).map(|d| entity(d)).collect();
    let mut r = Json(Value::Array(body)).into_response();
    let h = r.headers_mut();
    h.insert("x-page", HeaderValue::from(page as u64));
    h.insert("x-per-page", HeaderValue::from(per_page as u64));
    let next = if items.len() > page * per_page { (page + 1).to_string() } else { String::new() };
    h.insert("x-next-page", HeaderValue::from_str(&next).unwrap());
    r
}

/// `GET /projects/:id/repository/commits/:sha` resolves a full or short (7+) sha, or a ref.
async fn commit(State(st): State<Shared>, Path((id, rev)): Path<(String, String)>) -> Response {
    if let Err(r) = project_id(&id) {
        return r;
    }
    let s = st.lock().unwrap();
    let found = if rev.len() >= 7 { s.commits.iter().find(|c| c.starts_with(&rev.to_lowercase())) } else { None };
    match found {
        Some(c) => Json(json!({"id": c, "short_id": &c[..8], "title": "a commit"})).into_response(),
        None => err(StatusCode::NOT_FOUND, json!({"message": "404 Commit Not Found"})),
    }
}

async fn get_one(State(st): State<Shared>, Path((id, did)): Path<(String, u64)>) -> Response {
    let project = match project_id(&id) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let s = st.lock().unwrap();
    match s.deployments.iter().find(|d| d.id == did && d.project == project) {
        Some(d) => Json(entity(d)).into_response(),
        None => err(StatusCode::NOT_FOUND, json!({"message": "404 Not found"})),
    }
}

/// JSON or form body, as Grape accepts both.
fn params(headers: &HeaderMap, body: &Bytes) -> Result<Map<String, Value>, Response> {
    let form = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    if form {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).unwrap_or_default();
        return Ok(pairs.into_iter().map(|(k, v)| (k, Value::String(v))).collect());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(err(StatusCode::BAD_REQUEST, json!({"error": "The provided content-type '' is not supported."}))),
    }
}

fn project_and_params(
    id: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(&'static str, Map<String, Value>), Response> {
    Ok((project_id(id)?, params(headers, body)?))
}

fn env_name_valid(name: &str) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric() || "_${}. -".contains(c);
    name.len() <= 255 && !name.starts_with('/') && !name.ends_with('/') && name.chars().all(|c| ok(c) || c == '/')
}

async fn create(State(st): State<Shared>, Path(id): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let delay = st.lock().unwrap().commit_delay;
    match delay {
        None => create_now(&st, &id, &headers, &body),
        // A task of its own: dropping this handler (the client went away) does not cancel it.
        Some(delay) => {
            let task = tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                create_now(&st, &id, &headers, &body)
            });
            task.await.unwrap_or_else(|e| err(StatusCode::INTERNAL_SERVER_ERROR, json!({"message": e.to_string()})))
        }
    }
}

fn create_now(st: &Shared, id: &str, headers: &HeaderMap, body: &Bytes) -> Response {
    let (project, p) = match project_and_params(id, headers, body) {
        Ok(x) => x,
        Err(r) => return r,
    };
    // Grape parameter validation: every attribute is required.
    let mut problems = Vec::new();
    for k in ["environment", "sha", "ref", "tag", "status"] {
        match p.get(k) {
            None | Some(Value::Null) => problems.push(format!("{k} is missing")),
            Some(Value::String(s)) if s.is_empty() => problems.push(format!("{k} is empty")),
            _ => {}
        }
    }
    if !problems.is_empty() {
        return err(StatusCode::BAD_REQUEST, json!({"error": problems.join(", ")}));
    }
    let tag = match &p["tag"] {
        Value::Bool(b) => *b,
        Value::String(s) if s == "true" || s == "false" => s == "true",
        _ => return err(StatusCode::BAD_REQUEST, json!({"error": "tag is invalid"})),
    };
    let status = p["status"].as_str().unwrap_or_default().to_string();
    if !API_STATUSES.contains(&status.as_str()) {
        return err(StatusCode::BAD_REQUEST, json!({"error": "status does not have a valid value"}));
    }
    let (environment, sha, git_ref) = (
        p["environment"].as_str().unwrap_or_default().to_string(),
        p["sha"].as_str().unwrap_or_default().to_string(),
        p["ref"].as_str().unwrap_or_default().to_string(),
    );
    let mut s = st.lock().unwrap();
    if !s.refs.contains(&git_ref) && !s.commits.contains(&git_ref) {
        return err(StatusCode::BAD_REQUEST, json!({"message": {"ref": ["The branch or tag does not exist"]}}));
    }
    if !env_name_valid(&environment) {
        return err(
            StatusCode::BAD_REQUEST,
            json!({"message": {"name": ["can contain only letters, digits, '-', '_', '/', '$', '{', '}', '.', and spaces, but it cannot start or end with '/'"]}}),
        );
    }
    // GitLab creates the environment (guessing its tier) before it validates the sha.
    find_or_create_environment(&mut s, project, &environment, None);
    if !(s.commits.contains(&sha) || (s.any_commit && sha.len() == 40 && sha.bytes().all(|b| b.is_ascii_hexdigit()))) {
        return err(StatusCode::BAD_REQUEST, json!({"message": {"sha": ["The commit does not exist"]}}));
    }
    // Deployments::CreateService: a success equal to the environment's last deployment
    // (`last_deployment`: its newest success by `finished_at`) is returned as is.
    if status == "success" {
        let last = s
            .deployments
            .iter()
            .filter(|d| d.project == project && d.environment == environment && d.status == "success")
            .max_by_key(|d| d.finished_seq);
        if let Some(d) = last.filter(|d| d.sha == sha && d.git_ref == git_ref && d.tag == tag) {
            return (StatusCode::CREATED, Json(entity(d))).into_response();
        }
    }
    let d = new_deployment(&mut s, project, &environment, &sha, &git_ref, tag, &status);
    let body = entity(&d);
    s.deployments.push(d);
    (StatusCode::CREATED, Json(body)).into_response()
}

async fn update(
    State(st): State<Shared>,
    Path((id, did)): Path<(String, u64)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (project, p) = match project_and_params(&id, &headers, &body) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Some(status) = p.get("status").and_then(Value::as_str).map(str::to_string) else {
        return err(StatusCode::BAD_REQUEST, json!({"error": "status is missing"}));
    };
    if !API_STATUSES.contains(&status.as_str()) {
        return err(StatusCode::BAD_REQUEST, json!({"error": "status does not have a valid value"}));
    }
    let mut guard = st.lock().unwrap();
    let s = &mut *guard;
    let Some(d) = s.deployments.iter_mut().find(|d| d.id == did && d.project == project) else {
        return err(StatusCode::NOT_FOUND, json!({"message": "404 Not found"}));
    };
    // app/models/deployment.rb state machine.
    let (event, allowed) = match status.as_str() {
        "running" => ("run", d.status == "created" || d.status == "blocked"),
        "success" => ("succeed", d.status != "success"),
        "failed" => ("drop", d.status != "failed"),
        _ => ("cancel", d.status != "canceled"),
    };
    if !allowed {
        return err(
            StatusCode::BAD_REQUEST,
            json!({"message": {"status": [format!("cannot transition via \"{event}\"")]}}),
        );
    }
    d.set_status(&status, &mut s.finished_seq);
    Json(entity(d)).into_response()
}
