//! Routes: what one credential may touch.
//!
//! A tool's signature covers its body, not the URL's query, and a tool's secret is often shared
//! by many apps. A route binds a credential of its own to a source, the GitLab projects it may
//! write to and the environments it may write in (`ROUTES`, a JSON object by route name):
//!
//! ```json
//! {"shop-prod": {"source": "vercel", "projects": ["group/shop"], "environments": ["production", "preview/*"],
//!                "tier": "production", "ref": "main", "set_environment": true}}
//! ```
//!
//! The URL names the route (`/hooks/vercel/shop-prod`, or `/routes/<name>/api/v4/...` for the
//! GitLab-compatible facade) and its secret is `route_<name>_secret` (dashes become
//! underscores). A body signed for one route does not verify on another; a stolen secret writes
//! only where its route allows; the query may choose only among what the route allows, and never
//! the tier. See `docs/security.md`.

use serde::Deserialize;
use std::collections::HashMap;

use crate::model::Tier;

/// One route, as `ROUTES` declares it.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// The source (tool) whose calls this route takes.
    pub source: String,
    /// Projects the route may write to: a numeric id, a full path (case-insensitive, as GitLab
    /// treats paths), or `group/*` (every project below that group; a `*` nowhere else). With one
    /// plain entry, a call that names no project goes there.
    pub projects: Vec<String>,
    /// Environments the route may write in: names, or prefixes ending in `*` (`preview/*`).
    /// Absent: any environment of the allowed projects. With one plain entry, a call whose
    /// payload and query name no environment goes there.
    #[serde(default)]
    pub environments: Option<Vec<String>>,
    /// The tier set on the environments this route writes in (the query cannot set one here).
    #[serde(default)]
    pub tier: Option<Tier>,
    /// The ref sent when the query names none (before `ENVIRONMENTS` and the payload).
    #[serde(default, rename = "ref")]
    pub git_ref: Option<String>,
    /// Whether calls of this route may change an environment's tier and external URL (after
    /// their deployment call succeeded). Default true.
    #[serde(default = "yes")]
    pub set_environment: bool,
}

fn yes() -> bool {
    true
}

/// Every declared route, by name.
#[derive(Clone, Debug, Default)]
pub struct Routes(HashMap<String, Route>);

/// The secret key of route `name` in the secret (`route_<name>_secret`, `-` → `_`); locally the
/// environment variable `ROUTE_<NAME>_SECRET`.
pub fn secret_key(name: &str) -> String {
    format!("route_{}_secret", name.replace('-', "_"))
}

impl Routes {
    /// Parses and checks `ROUTES`; the error says what is wrong in which route.
    pub fn parse(json: &str) -> Result<Routes, String> {
        let routes: HashMap<String, Route> = serde_json::from_str(json).map_err(|e| {
            format!(
                "ROUTES must be a JSON object such as {{\"shop-prod\": {{\"source\": \"vercel\", \"projects\": [\"group/shop\"], \"environments\": [\"production\"]}}}} ({e})"
            )
        })?;
        let mut keys: HashMap<String, &str> = HashMap::new();
        for (name, route) in &routes {
            let ok_name = !name.is_empty()
                && name.len() <= 64
                && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
            if !ok_name {
                return Err(format!("ROUTES: route name {name:?} must be 1-64 characters of a-z, 0-9, `-` and `_`"));
            }
            if let Some(other) = keys.insert(secret_key(name), name) {
                return Err(format!(
                    "ROUTES: routes {other:?} and {name:?} would share the secret key {:?}",
                    secret_key(name)
                ));
            }
            if route.projects.is_empty() || route.projects.iter().any(|p| !valid_pattern(p)) {
                let bad = route.projects.iter().find(|p| !valid_pattern(p)).map(|p| format!(" ({p:?} is not one)"));
                return Err(format!(
                    "ROUTES: route {name:?} needs `projects`: numeric ids, full paths, or `group/*` for every project below a group{} — a `*` only ends a group path, after `/`",
                    bad.unwrap_or_default()
                ));
            }
            if route.environments.as_ref().is_some_and(|e| e.is_empty() || e.iter().any(|e| e.trim().is_empty())) {
                return Err(format!(
                    "ROUTES: route {name:?} has an empty `environments` list or name; leave it out to allow any"
                ));
            }
        }
        Ok(Routes(routes))
    }

    pub fn get(&self, name: &str) -> Option<&Route> {
        self.0.get(name)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Route)> {
        self.0.iter()
    }
}

/// A project entry: a numeric id, a full path, or `group/*` (`group/sub/*`): every project below
/// that group. A `*` anywhere else (`acme*`, `42*`, `group/app-*`) would match by string prefix —
/// `acme*` matches `acme-evil/x`, `42*` project 4242 — so it is refused; so are empty, `.` and
/// `..` segments.
fn valid_pattern(p: &str) -> bool {
    let p = p.trim();
    let body = p.strip_suffix("/*").unwrap_or(p);
    !body.is_empty() && body.split('/').all(|s| !s.is_empty() && s != "." && s != ".." && !s.contains('*'))
}

/// `value` matches `pattern`: equal, or below a prefix that ends in `*` (for projects, `group/*`).
fn matches(pattern: &str, value: &str, fold_case: bool) -> bool {
    let (pattern, value) = if fold_case {
        (pattern.to_ascii_lowercase(), value.to_ascii_lowercase())
    } else {
        (pattern.to_string(), value.to_string())
    };
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix) && value.len() > prefix.len(),
        None => pattern == value,
    }
}

/// The one plain (pattern-free) entry of a list, if it has exactly one entry.
fn only_plain(list: &[String]) -> Option<&str> {
    match list {
        [one] if !one.ends_with('*') => Some(one.trim()),
        _ => None,
    }
}

impl Route {
    /// Whether the route may write to `project` (already validated: no dot segments).
    pub fn allows_project(&self, project: &str) -> bool {
        self.projects.iter().any(|p| matches(p.trim(), project, true))
    }

    /// Whether the route may write in `environment`.
    pub fn allows_environment(&self, environment: &str) -> bool {
        self.environments.as_ref().is_none_or(|list| list.iter().any(|e| matches(e.trim(), environment, false)))
    }

    /// The project of a call that names none.
    pub fn default_project(&self) -> Option<&str> {
        only_plain(&self.projects)
    }

    /// The environment of a call whose payload and query name none.
    pub fn default_environment(&self) -> Option<&str> {
        self.environments.as_deref().and_then(only_plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(json: &str) -> Route {
        let routes = Routes::parse(&format!(r#"{{"r": {json}}}"#)).unwrap();
        routes.get("r").unwrap().clone()
    }

    #[test]
    fn projects_and_environments_match_exactly_or_below_a_prefix() {
        let r = route(
            r#"{"source": "vercel", "projects": ["Group/Shop", "ops/*"], "environments": ["production", "preview/*"]}"#,
        );
        assert!(r.allows_project("group/shop"));
        assert!(r.allows_project("ops/a") && r.allows_project("ops/sub/b"));
        assert!(
            !r.allows_project("group/shop2")
                && !r.allows_project("ops")
                && !r.allows_project("ops/")
                && !r.allows_project("42")
        );
        assert!(r.allows_environment("production") && r.allows_environment("preview/feat-1"));
        assert!(
            !r.allows_environment("Production")
                && !r.allows_environment("preview/")
                && !r.allows_environment("staging")
        );
        assert_eq!((r.default_project(), r.default_environment()), (None, None));
        assert!(r.set_environment);
        let one = route(
            r#"{"source": "flux", "projects": ["42"], "environments": ["prod"], "tier": "production", "set_environment": false}"#,
        );
        assert_eq!(
            (one.default_project(), one.default_environment(), one.tier),
            (Some("42"), Some("prod"), Some(Tier::Production))
        );
        assert!(!one.set_environment && one.allows_project("42"));
        let any = route(r#"{"source": "flux", "projects": ["42"]}"#);
        assert!(any.allows_environment("anything") && any.default_environment().is_none());
    }

    #[test]
    fn bad_routes_are_named() {
        for (json, says) in [
            (r#"{"Bad Name": {"source": "flux", "projects": ["1"]}}"#, "route name"),
            (r#"{"r": {"source": "flux", "projects": []}}"#, "needs `projects`"),
            (r#"{"r": {"source": "flux", "projects": ["a/../b"]}}"#, "needs `projects`"),
            (r#"{"r": {"source": "flux", "projects": ["*"]}}"#, "needs `projects`"),
            (r#"{"r": {"source": "flux", "projects": ["a/*/b"]}}"#, "needs `projects`"),
            (r#"{"r": {"source": "flux", "projects": ["1"], "environments": []}}"#, "empty `environments`"),
            (r#"{"r": {"source": "flux", "projects": ["1"], "tier": "prod"}}"#, "ROUTES must be"),
            (r#"{"r": {"source": "flux", "project": "1"}}"#, "ROUTES must be"),
            (
                r#"{"a-b": {"source": "flux", "projects": ["1"]}, "a_b": {"source": "flux", "projects": ["1"]}}"#,
                "share the secret key",
            ),
        ] {
            let err = Routes::parse(json).unwrap_err();
            assert!(err.contains(says), "{json}: {err}");
        }
        assert_eq!(secret_key("shop-prod"), "route_shop_prod_secret");
        assert!(valid_pattern("group/*") && valid_pattern("group/sub/*") && valid_pattern("42"));
        assert!(valid_pattern("group/app") && valid_pattern(" Group/Sub/App "));
        // Issue 21: `acme*` matched `acme-evil/x`, `42*` project 4242.
        for bad in ["acme*", "42*", "group/app-*", "group/*/x", "*", "/*", "group//*", "group/sub*", "a/../*"] {
            assert!(!valid_pattern(bad), "{bad}");
            let err = Routes::parse(&format!(r#"{{"r": {{"source": "flux", "projects": ["{bad}"]}}}}"#)).unwrap_err();
            assert!(err.contains(&format!("{bad:?} is not one")) && err.contains("group/*"), "{bad}: {err}");
        }
    }
}
