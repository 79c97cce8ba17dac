//! Normalization: from what a tool said to one validated [`Event`]. The URL's overrides, bound
//! to the route (the unsigned query may only choose among what the route allows, never the
//! tier); the tool's look-up where its payload lacks something ([`Enrich`](crate::sources::Enrich),
//! through a narrow [`Lookup`]); the event validated with the operator's defaults; the route's
//! bounds on the environment.

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use std::time::{Duration, Instant};

use super::admit::Bound;
use crate::error::Error;
use crate::event::{Change, Defaults, Event, EventDraft, Overrides, ProjectRef};
use crate::model::BoxFuture;
use crate::secrets::SecretBundle;
use crate::sources::{Lookup, Offline, Read, Settings, Spec};

/// The overrides of a call: its query, the project its path names (the facade), and its
/// route's bounds.
pub fn overrides(query: Option<&str>, path_project: Option<String>, route: Option<&Bound>) -> Result<Overrides, Error> {
    let mut overrides: Overrides = serde_urlencoded::from_str(query.unwrap_or(""))
        .map_err(|e| Error::BadRequest(format!("the query string cannot be read: {e}")))?;
    if path_project.is_some() {
        overrides.project = path_project;
    }
    if let Some(bound) = route {
        bind_project(bound, &mut overrides)?;
    }
    Ok(overrides)
}

/// The project of a routed call: the one its URL names or the route's only one, and one the
/// route allows. The unsigned query can never set a routed call's tier.
fn bind_project(bound: &Bound, overrides: &mut Overrides) -> Result<(), Error> {
    let (name, route) = (&bound.name, &bound.route);
    if overrides.tier.is_some() {
        return Err(Error::BadRequest(format!(
            "route {name:?} takes no `tier` from the URL (the query is not signed); set `tier` in the route in ROUTES"
        )));
    }
    overrides.tier = route.tier.map(|t| t.as_str().to_string());
    overrides.route_ref = route.git_ref.clone();
    let project = overrides.project.as_deref().map(str::trim).filter(|p| !p.is_empty()).or(route.default_project());
    let project = project.ok_or_else(|| {
        Error::BadRequest(format!("route {name:?} allows several projects; name one with `project=<id or full path>`"))
    })?;
    let project = ProjectRef::parse(project)?;
    if !route.allows_project(project.as_str()) {
        return Err(Error::Forbidden(format!("route {name:?} may not write to project {:?}", project.as_str())));
    }
    overrides.project = Some(project.to_string());
    Ok(())
}

/// A draft completed by its tool's look-up, where it has one.
pub async fn complete(read: Read, settings: &Settings, lookup: &dyn Lookup) -> Result<Read, Error> {
    match read {
        Read::Draft(draft, Some(enrich)) => enrich.enrich(draft, settings, lookup).await,
        other => Ok(other),
    }
}

/// The validated event of a draft, and what the route did not let it change.
pub fn event(
    source: &str,
    draft: EventDraft,
    overrides: &mut Overrides,
    defaults: &Defaults,
    route: Option<&Bound>,
) -> Result<(Event, Vec<String>), Error> {
    if let Some(bound) = route
        && overrides.environment.is_none()
        && draft.environment.as_deref().is_none_or(|e| e.trim().is_empty())
    {
        overrides.environment = bound.route.default_environment().map(str::to_string);
    }
    let mut ev = Event::from_draft(source, draft, overrides, defaults)?;
    let mut warnings = Vec::new();
    if let Some(Bound { name, route }) = route {
        if !route.allows_environment(ev.environment.as_str()) {
            return Err(Error::Forbidden(format!(
                "route {name:?} may not write in environment {:?}",
                ev.environment.as_str()
            )));
        }
        let Change::Deployment(d) = &mut ev.change;
        if !route.set_environment && (d.tier.is_some() || d.external_url.is_some()) {
            d.tier = None;
            d.external_url = None;
            warnings.push(format!(
                "route {name:?} does not change environments (set_environment: false): tier and external URL left as they are"
            ));
        }
    }
    Ok((ev, warnings))
}

/// The largest answer read from a tool's own API (a Heroku release is a few KiB).
const TOOL_API_MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// How the tools' look-ups reach their APIs.
#[derive(Clone)]
pub enum ToolApis {
    /// Through the process's HTTP client (no redirects), each GET within `request_timeout`
    /// and the webhook's deadline.
    Http { client: reqwest::Client, request_timeout: Duration },
    /// A dry run calls no tool's API: its look-ups hold no credential.
    Offline,
}

impl ToolApis {
    /// The look-up of one call of tool `spec`: the keys of the secret it declares, its API.
    pub fn lookup<'a>(
        &'a self,
        spec: &'static Spec,
        secrets: &'a SecretBundle,
        deadline: Instant,
    ) -> Box<dyn Lookup + 'a> {
        match self {
            ToolApis::Http { client, request_timeout } => {
                Box::new(CallLookup { client, request_timeout: *request_timeout, spec, secrets, deadline })
            }
            ToolApis::Offline => Box::new(Offline),
        }
    }
}

/// The [`Lookup`] of one call, through the HTTP client.
struct CallLookup<'a> {
    client: &'a reqwest::Client,
    request_timeout: Duration,
    spec: &'static Spec,
    secrets: &'a SecretBundle,
    deadline: Instant,
}

impl Lookup for CallLookup<'_> {
    /// Only the keys the tool declares.
    fn secret(&self, key: &str) -> Option<&SecretString> {
        self.spec.secrets.iter().any(|k| k.key == key).then(|| self.secrets.get(key)).flatten()
    }

    fn get_json<'a>(
        &'a self,
        url: &'a str,
        token: &'a SecretString,
        headers: &'a [(&'static str, &'static str)],
    ) -> BoxFuture<'a, Result<Value, String>> {
        Box::pin(async move {
            let remaining = self
                .deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
                .ok_or("no time left before the deadline")?;
            let mut request =
                self.client.get(url).bearer_auth(token.expose_secret()).timeout(remaining.min(self.request_timeout));
            for (k, v) in headers {
                request = request.header(*k, *v);
            }
            let resp = request.send().await.map_err(|e| e.without_url().to_string())?;
            let status = resp.status();
            if !status.is_success() {
                return Err(format!("answered {status}"));
            }
            let body = crate::transport::read_capped(resp, TOOL_API_MAX_ANSWER_BYTES).await.map_err(|e| match e {
                crate::transport::ReadError::Body(e) => e.without_url().to_string(),
                too_large => format!("{too_large} (a tool's API answer is read up to 1 MiB)"),
            })?;
            serde_json::from_slice(&body).map_err(|e| format!("answered with a body that is not JSON ({e})"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::Routes;

    fn bound(json: &str) -> Bound {
        let routes = Routes::parse(&format!(r#"{{"r": {json}}}"#)).unwrap();
        Bound { name: "r".into(), route: routes.get("r").unwrap().clone() }
    }

    #[test]
    fn a_route_binds_the_project_and_the_query_never_sets_its_tier() {
        let r = bound(r#"{"source": "generic", "projects": ["group/app"], "tier": "production", "ref": "main"}"#);
        let o = overrides(None, None, Some(&r)).unwrap();
        assert_eq!(
            (o.project.as_deref(), o.tier.as_deref(), o.route_ref.as_deref()),
            (Some("group/app"), Some("production"), Some("main"))
        );
        assert_eq!(overrides(Some("tier=staging"), None, Some(&r)).unwrap_err().status(), 400);
        assert_eq!(overrides(Some("project=other/app"), None, Some(&r)).unwrap_err().status(), 403);
        assert_eq!(overrides(None, Some("Group/App".into()), Some(&r)).unwrap().project.as_deref(), Some("Group/App"));
        let many = bound(r#"{"source": "generic", "projects": ["a/*"]}"#);
        assert!(overrides(None, None, Some(&many)).unwrap_err().to_string().contains("name one"));
    }

    #[test]
    fn a_route_bounds_the_environment_and_may_leave_it_alone() {
        let draft = || EventDraft {
            sha: Some("a".repeat(40)),
            status: Some(crate::model::Status::Running),
            external_url: Some("https://x".into()),
            ..Default::default()
        };
        let r =
            bound(r#"{"source": "generic", "projects": ["42"], "environments": ["prod"], "set_environment": false}"#);
        let mut o = overrides(None, None, Some(&r)).unwrap();
        let (ev, warnings) = event("generic", draft(), &mut o, &Defaults::default(), Some(&r)).unwrap();
        assert_eq!(ev.environment.as_str(), "prod", "the route's only environment");
        assert!(ev.deploy().unwrap().external_url.is_none() && warnings[0].contains("set_environment: false"));
        let mut o = overrides(Some("environment=staging"), None, Some(&r)).unwrap();
        assert_eq!(event("generic", draft(), &mut o, &Defaults::default(), Some(&r)).unwrap_err().status(), 403);
    }

    #[tokio::test]
    async fn a_dry_run_lookup_has_no_credential_and_calls_no_one() {
        let spec = crate::sources::find("heroku").unwrap().spec();
        let secrets =
            SecretBundle::new("t", 0, [("heroku_api_token".to_string(), SecretString::from("h".to_string()))].into());
        let deadline = Instant::now() + Duration::from_secs(1);
        let offline = ToolApis::Offline;
        let lookup = offline.lookup(spec, &secrets, deadline);
        assert!(lookup.secret("heroku_api_token").is_none());
        assert!(lookup.get_json("http://127.0.0.1:9/", &SecretString::from("h".to_string()), &[]).await.is_err());
        let live = ToolApis::Http { client: reqwest::Client::new(), request_timeout: Duration::from_secs(1) };
        assert!(live.lookup(spec, &secrets, deadline).secret("heroku_api_token").is_some());
        assert!(
            live.lookup(spec, &secrets, deadline).secret("gitlab_token").is_none(),
            "only the keys the tool declares"
        );
    }
}
