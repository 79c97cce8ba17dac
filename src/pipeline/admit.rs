//! Admission: whether a call may change anything, decided before anything is changed. The
//! source the URL names; before the body is read, whether the call carries the source's
//! credential at all; the route (`ROUTES`) and its secret, or an unbound hook's; the tool's own
//! verification of the raw bytes; the body read, once ([`Source::read`]); the replay defence.
//! A refusal is worded as the tool words a wrong credential, whatever the cause, so an answer
//! never tells which sources or routes are configured; the log says why.

use axum::http::HeaderMap;
use secrecy::SecretString;
use std::sync::Arc;

use crate::error::Error;
use crate::event::{Change, Event};
use crate::gitlab::CallCtx;
use crate::replay::{self, Replays};
use crate::routes::{self, Route, Routes};
use crate::secrets::{SecretBundle, SecretProvider, SecretsError};
use crate::sources::{self, Reading, Request, Source, ToolSettings};

/// What becomes of calls without a route (`/hooks/{source}`, the unbound facade).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unbound {
    /// `UNBOUND_HOOKS=allow`: served with the tool's `<source>_webhook_secret`.
    Allow,
    /// Refused (403): calls take routes only.
    Refuse,
    /// A dry run: planned, saying that a live run would refuse it.
    Plan,
}

/// What the replay defence does with a replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayPolicy {
    /// It changes nothing (answered `ignored`), and handled deliveries are remembered.
    Enforce,
    /// A dry run: planned anyway, saying that a live run would change nothing; nothing remembered.
    Note,
}

/// The route a call came on, as `ROUTES` declares it.
#[derive(Debug, Clone)]
pub struct Bound {
    pub name: String,
    pub route: Route,
}

/// A call that passed admission.
pub struct Admitted {
    pub source: &'static dyn Source,
    pub route: Option<Bound>,
    /// The secret as read for this call (the tool's look-ups use its keys).
    pub secrets: Arc<SecretBundle>,
    /// A live run would refuse this unbound call (a dry run plans it anyway).
    pub unbound_note: Option<String>,
}

/// A delivery admitted and read.
pub struct Delivery {
    pub reading: Reading,
    pub replay: Replayed,
}

/// The replay defence's verdict on a delivery.
pub enum Replayed {
    /// A fresh delivery; remember it once it is handled (a dry run remembers nothing).
    Fresh(Option<replay::Admitted>),
    /// A replay: it changes nothing, and this is why.
    Refused(String),
    /// A replay a dry run plans anyway, with why a live run would not.
    Noted(String),
}

/// Admission's settings and state, built once per process.
pub struct Gate {
    routes: Routes,
    unbound: Unbound,
    replays: Replays,
    replay_policy: ReplayPolicy,
    secrets: Arc<dyn SecretProvider>,
    tools: ToolSettings,
}

impl Gate {
    pub fn new(
        routes: Routes,
        unbound: Unbound,
        replays: Replays,
        replay_policy: ReplayPolicy,
        secrets: Arc<dyn SecretProvider>,
        tools: ToolSettings,
    ) -> Gate {
        Gate { routes, unbound, replays, replay_policy, secrets, tools }
    }

    /// The source of `/hooks/{name}`.
    pub fn source(&self, name: &str) -> Result<&'static dyn Source, Error> {
        sources::find(name).ok_or_else(|| Error::UnknownSource { name: printable(name), known: sources::names() })
    }

    /// What can be refused before the body is read: an unknown source, an unbound call while
    /// those are refused, and a call without the source's credential header — so an
    /// unauthenticated caller cannot make the bridge buffer a body.
    pub fn precheck(&self, source: &str, route: Option<&str>, headers: &HeaderMap) -> Result<(), Error> {
        let source = self.source(source)?;
        self.admit_unbound(source, route)?;
        source.credentials(headers)
    }

    fn admit_unbound(&self, source: &dyn Source, route: Option<&str>) -> Result<(), Error> {
        match (route, self.unbound) {
            (None, Unbound::Refuse) => Err(unbound_refused(source.name())),
            _ => Ok(()),
        }
    }

    /// The route and secret of a call, and the tool's verification of it. The secret is read
    /// within the request's deadline: a slow Secrets Manager, or requests queued behind its
    /// read, answer in time instead of minutes later.
    pub async fn authenticate(
        &self,
        source: &'static dyn Source,
        route: Option<&str>,
        request: &Request<'_>,
        ctx: &CallCtx,
    ) -> Result<Admitted, Error> {
        let secrets = match ctx.remaining() {
            Some(left) => tokio::time::timeout(left, self.secrets.current()).await.ok(),
            None => None,
        }
        .unwrap_or_else(|| {
            Err(SecretsError::Unavailable("the secret could not be read before this request's deadline".into()))
        })?;
        // A route's calls verify with the route's own secret, an unbound hook's with the source's.
        let (bound, key) = match route {
            Some(name) => match self.routes.get(name).filter(|r| r.source == source.name()) {
                Some(route) => (Some(Bound { name: name.to_string(), route: route.clone() }), routes::secret_key(name)),
                None => {
                    tracing::warn!(source = source.name(), route = %printable(name), "no such route for this source in ROUTES; refusing the call");
                    return Err(refuse(source, request));
                }
            },
            None => {
                self.admit_unbound(source, None)?;
                (None, sources::webhook_secret_key(source.name()))
            }
        };
        match secrets.get(&key) {
            Some(secret) => source.verify(request, secret)?,
            // Refused whatever the call carries, in the words the source uses for a wrong
            // credential (it is checked against a secret nobody holds).
            None => {
                tracing::warn!(source = source.name(), key = %key, "the secret has no such key; refusing every call that needs it");
                return Err(refuse(source, request));
            }
        }
        let unbound_note = (route.is_none() && self.unbound == Unbound::Plan)
            .then(|| format!("a live run would refuse this call: {}", unbound_refused(source.name())));
        Ok(Admitted { source, route: bound, secrets, unbound_note })
    }

    /// The verified body read once, and the replay defence's verdict on it. `unsigned`: what
    /// the call's unsigned parts chose ([`Overrides::unsigned_choice`](crate::event::Overrides::unsigned_choice)).
    pub fn read(&self, admitted: &Admitted, request: &Request<'_>, unsigned: &str) -> Result<Delivery, Error> {
        let source = admitted.source;
        let reading = source.read(request, self.tools.of(source.name()))?;
        // Decoded once, whatever the tool (the compliance suite holds each source to it; every
        // debug build — the end-to-end tests — checks it on every call).
        debug_assert!(request.decodes() <= 1, "{} decoded the body {} times", source.name(), request.decodes());
        let route = admitted.route.as_ref().map(|b| b.name.as_str());
        let replay = match (self.replays.admit(source.spec(), route, &reading, unsigned), self.replay_policy) {
            (Ok(fresh), ReplayPolicy::Enforce) => Replayed::Fresh(Some(fresh)),
            (Ok(_), ReplayPolicy::Note) => Replayed::Fresh(None),
            (Err(reason), ReplayPolicy::Enforce) => Replayed::Refused(reason),
            (Err(reason), ReplayPolicy::Note) => Replayed::Noted(format!("a live run would change nothing: {reason}")),
        };
        Ok(Delivery { reading, replay })
    }

    /// Remembers a handled delivery (a later copy of it changes nothing).
    pub fn handled(&self, replayed: Replayed) {
        if let Replayed::Fresh(Some(fresh)) = replayed {
            self.replays.handled(fresh);
        }
    }

    /// Whether a spooled event may still be delivered, judged against `ROUTES` as they are now
    /// (the spool, or the SQS queue, is not trusted to say where an event may go): its route
    /// must exist and take its source, and allow its project and environment; an event of an
    /// unbound hook needs `UNBOUND_HOOKS=allow`. The route's tier and `set_environment` apply
    /// as at receipt. `Err`: why it may not (it becomes a dead letter).
    pub fn recheck(&self, route: Option<&str>, ev: &mut Event) -> Result<(), String> {
        let Some(name) = route else {
            return match self.unbound {
                Unbound::Allow => Ok(()),
                _ => Err("it came on an unbound hook, and UNBOUND_HOOKS no longer allows those".into()),
            };
        };
        let printed = printable(name);
        let route =
            self.routes.get(name).ok_or_else(|| format!("its route {printed:?} is no longer in ROUTES"))?.clone();
        if route.source != ev.source {
            return Err(format!("its route {printed:?} takes {} events, not {}", route.source, printable(&ev.source)));
        }
        if !route.allows_project(ev.project.as_str()) {
            return Err(format!("route {printed:?} may not write to project {:?}", printable(ev.project.as_str())));
        }
        if !route.allows_environment(ev.environment.as_str()) {
            return Err(format!(
                "route {printed:?} may not write in environment {:?}",
                printable(ev.environment.as_str())
            ));
        }
        let Change::Deployment(d) = &mut ev.change;
        if !route.set_environment {
            d.tier = None;
            d.external_url = None;
        } else if route.tier.is_some() {
            d.tier = route.tier;
        }
        Ok(())
    }

    /// The settings of a tool.
    pub fn tool_settings(&self, source: &dyn Source) -> &sources::Settings {
        self.tools.of(source.name())
    }
}

/// The answer to an unbound hook while those are refused.
fn unbound_refused(source: &str) -> Error {
    Error::Forbidden(format!(
        "this bridge takes calls on routes only: POST /hooks/{source}/<route> with a route in ROUTES (UNBOUND_HOOKS=allow serves /hooks/{source} while you move to routes; see docs/security.md)"
    ))
}

/// A refusal in the words the source uses for a wrong credential.
fn refuse(source: &dyn Source, request: &Request<'_>) -> Error {
    let refusal = source.verify(request, &unknowable_secret());
    refusal.err().unwrap_or_else(|| Error::Unauthorized("the credentials do not match".into()))
}

/// A secret to check an unconfigured source's credentials against (the call is refused even
/// if they match it).
fn unknowable_secret() -> SecretString {
    SecretString::from((0..48).map(|_| fastrand::alphanumeric()).collect::<String>())
}

/// A caller's text as it may appear in a log line or an answer: at most 64 characters, control
/// characters (and quotes, backslashes) escaped.
pub fn printable(text: &str) -> String {
    text.chars().take(64).flat_map(char::escape_debug).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::StaticSecrets;
    use std::collections::HashMap;
    use std::time::{Duration, Instant};

    fn gate(unbound: Unbound, routes: &str, keys: &[(&str, &str)]) -> Gate {
        let secrets: HashMap<String, SecretString> =
            keys.iter().map(|(k, v)| (k.to_string(), SecretString::from(v.to_string()))).collect();
        Gate::new(
            Routes::parse(routes).unwrap(),
            unbound,
            Replays::new(HashMap::new(), Duration::from_secs(30)),
            ReplayPolicy::Enforce,
            Arc::new(StaticSecrets::new(secrets)),
            ToolSettings::default(),
        )
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("authorization", format!("Bearer {token}").parse().unwrap());
        h
    }

    fn ctx() -> CallCtx {
        CallCtx::new(Instant::now() + Duration::from_secs(5))
    }

    async fn admit(gate: &Gate, route: Option<&str>, token: &str) -> Result<Admitted, Error> {
        let headers = bearer(token);
        gate.authenticate(gate.source("generic")?, route, &Request::new(&headers, b"{}"), &ctx()).await
    }

    #[tokio::test]
    async fn a_route_verifies_with_its_own_secret_and_nothing_else() {
        let g = gate(
            Unbound::Refuse,
            r#"{"ci": {"source": "generic", "projects": ["42"]}}"#,
            &[("route_ci_secret", "r"), ("generic_webhook_secret", "g")],
        );
        let admitted = admit(&g, Some("ci"), "r").await.unwrap();
        assert_eq!(admitted.route.map(|b| b.name).as_deref(), Some("ci"));
        assert_eq!(
            admit(&g, Some("ci"), "g").await.err().unwrap().status(),
            401,
            "the tool's secret is not the route's"
        );
        let unknown = admit(&g, Some("nope"), "r").await.err().unwrap();
        let wrong = admit(&g, Some("ci"), "x").await.err().unwrap();
        assert_eq!(
            (unknown.status(), unknown.to_string()),
            (wrong.status(), wrong.to_string()),
            "an unknown route reads as a wrong secret"
        );
    }

    #[tokio::test]
    async fn unbound_calls_are_refused_served_or_planned_as_configured() {
        let keys = [("generic_webhook_secret", "g")];
        assert_eq!(admit(&gate(Unbound::Refuse, "{}", &keys), None, "g").await.err().unwrap().status(), 403);
        assert!(admit(&gate(Unbound::Allow, "{}", &keys), None, "g").await.unwrap().unbound_note.is_none());
        let planned = admit(&gate(Unbound::Plan, "{}", &keys), None, "g").await.unwrap();
        assert!(planned.unbound_note.unwrap().contains("a live run would refuse"));
        let no_secret = admit(&gate(Unbound::Allow, "{}", &[]), None, "g").await.err().unwrap();
        assert_eq!(no_secret.status(), 401, "a source without a secret fails closed");
    }

    #[test]
    fn a_spooled_event_is_judged_against_routes_as_they_are_now() {
        let g = gate(
            Unbound::Refuse,
            r#"{"ci": {"source": "generic", "projects": ["group/*"], "environments": ["prod"], "tier": "production"},
                "quiet": {"source": "generic", "projects": ["42"], "set_environment": false}}"#,
            &[],
        );
        let event = |project: &str, environment: &str| {
            let draft = crate::event::EventDraft {
                environment: Some(environment.into()),
                sha: Some("a".repeat(40)),
                status: Some(crate::model::Status::Running),
                external_url: Some("https://x.example".into()),
                ..Default::default()
            };
            let o = crate::event::Overrides { project: Some(project.into()), ..Default::default() };
            Event::from_draft("generic", draft, &o, &crate::event::Defaults::default()).unwrap()
        };
        let mut ok = event("group/app", "prod");
        assert!(g.recheck(Some("ci"), &mut ok).is_ok());
        assert_eq!(ok.deploy().unwrap().tier, Some(crate::model::Tier::Production), "the route's tier");
        let mut quiet = event("42", "anything");
        assert!(g.recheck(Some("quiet"), &mut quiet).is_ok());
        assert!(quiet.deploy().unwrap().external_url.is_none(), "set_environment: false");
        for (route, project, environment, says) in [
            (Some("ci"), "other/app", "prod", "may not write to project"),
            (Some("ci"), "group/app", "staging", "may not write in environment"),
            (Some("gone"), "group/app", "prod", "no longer in ROUTES"),
            (None, "group/app", "prod", "UNBOUND_HOOKS"),
        ] {
            let why = g.recheck(route, &mut event(project, environment)).unwrap_err();
            assert!(why.contains(says), "{route:?} {project} {environment}: {why}");
        }
        let mut heroku = event("group/app", "prod");
        heroku.source = "heroku".into();
        assert!(g.recheck(Some("ci"), &mut heroku).unwrap_err().contains("takes generic events"));
    }

    #[test]
    fn the_precheck_refuses_before_the_body_is_read() {
        let g = gate(Unbound::Refuse, "{}", &[]);
        assert_eq!(g.precheck("gitlab", Some("r"), &bearer("x")).unwrap_err().status(), 404);
        assert_eq!(g.precheck("generic", None, &bearer("x")).unwrap_err().status(), 403);
        assert_eq!(
            g.precheck("heroku", Some("r"), &bearer("x")).unwrap_err().status(),
            401,
            "no Heroku signature header"
        );
        assert!(g.precheck("generic", Some("r"), &bearer("x")).is_ok());
        assert_eq!(printable("a\nb\"c"), "a\\nb\\\"c");
    }
}
