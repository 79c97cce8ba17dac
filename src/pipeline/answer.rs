//! The bridge's answer to a delivery: one typed value, serialized in one place — the contract
//! the README's "HTTP interface" documents.
//!
//! ```json
//! {"action": "updated", "source": "generic",
//!  "deployment": {"id": 1042, "status": "success", "environment": "production", "tier": "production",
//!                 "sha": "a91957a...", "ref": "main", "ref_source": "payload", "tag": false}}
//! ```

use serde::Serialize;

use crate::event::{Event, RefSource};
use crate::gitlab::Call;
use crate::lifecycle::{self, Outcome};
use crate::model::{Deployment, Tier, format_time};
use crate::spool::Receipt;

/// What a delivery did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Created,
    Updated,
    Unchanged,
    /// The delivery is older than what GitLab already shows; nothing was changed.
    Stale,
    /// Not a deployment state change, or a replay: nothing was changed.
    Ignored,
    /// Kept in the spool, delivered to GitLab later (202).
    Spooled,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::Updated => "updated",
            Action::Unchanged => "unchanged",
            Action::Stale => "stale",
            Action::Ignored => "ignored",
            Action::Spooled => "spooled",
        }
    }
}

impl From<lifecycle::Action> for Action {
    fn from(a: lifecycle::Action) -> Self {
        match a {
            lifecycle::Action::Created => Action::Created,
            lifecycle::Action::Updated => Action::Updated,
            lifecycle::Action::Unchanged => Action::Unchanged,
            lifecycle::Action::Stale => Action::Stale,
        }
    }
}

/// The deployment an answer is about: the event's, with GitLab's id and status once known.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DeploymentAnswer {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    pub environment: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<Tier>,
    pub sha: Option<String>,
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ref_source: Option<RefSource>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<String>,
}

impl DeploymentAnswer {
    /// The event as the answer's `deployment` says it.
    pub fn of(ev: &Event) -> DeploymentAnswer {
        let d = ev.deploy();
        DeploymentAnswer {
            environment: Some(ev.environment.to_string()),
            sha: d.map(|d| d.sha.to_string()),
            git_ref: d.map(|d| d.git_ref.clone()),
            ref_source: d.map(|d| d.ref_source),
            tag: d.map(|d| d.tag),
            tier: d.and_then(|d| d.tier),
            external_url: d.and_then(|d| d.external_url.clone()),
            occurred_at: ev.occurred_at.map(format_time),
            ..DeploymentAnswer::default()
        }
    }

    /// A deployment as GitLab has it (the facade's status change).
    pub fn gitlab(d: &Deployment) -> DeploymentAnswer {
        DeploymentAnswer {
            id: Some(d.id),
            status: Some(d.status.clone()),
            environment: d.environment.as_ref().map(|e| e.name.clone()),
            sha: Some(d.sha.clone()),
            git_ref: Some(d.git_ref.clone()),
            ..DeploymentAnswer::default()
        }
    }
}

/// Where a spooled event waits.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpoolAnswer {
    pub kind: &'static str,
    pub id: String,
    pub duplicate: bool,
    pub reason: String,
}

/// The answer to one delivery.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Answer {
    pub action: Action,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment: Option<DeploymentAnswer>,
    /// Why nothing changed (stale, ignored).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spool: Option<SpoolAnswer>,
    /// How GitLab will treat the environment for DORA and MR tracking, and what could not be set.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// A dry run of an unbound hook: a live run would refuse it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unbound: Option<String>,
    /// A dry run of a replay: a live run would change nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// In a dry run, every GitLab call a live run would make.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gitlab_calls: Option<Vec<Call>>,
}

impl Answer {
    fn new(action: Action) -> Answer {
        Answer {
            action,
            source: None,
            deployment: None,
            reason: None,
            spool: None,
            warnings: Vec::new(),
            unbound: None,
            replay: None,
            dry_run: false,
            gitlab_calls: None,
        }
    }

    /// Not a deployment state change, or a replay.
    pub fn ignored(reason: String) -> Answer {
        Answer { reason: Some(reason), ..Answer::new(Action::Ignored) }
    }

    /// What the lifecycle did with the event.
    pub fn applied(ev: &Event, outcome: &Outcome) -> Answer {
        let mut deployment = DeploymentAnswer::of(ev);
        if let Some(d) = &outcome.deployment {
            deployment.id = Some(d.id);
            deployment.status = Some(d.status.clone());
        }
        Answer {
            source: Some(ev.source.clone()),
            deployment: Some(deployment),
            reason: outcome.reason.clone(),
            warnings: outcome.notes.clone(),
            ..Answer::new(outcome.action.into())
        }
    }

    /// The event waits in the spool.
    pub fn spooled(ev: &Event, kind: &'static str, receipt: Receipt, reason: String) -> Answer {
        let deployment = DeploymentAnswer { status: Some(ev.verb().to_string()), ..DeploymentAnswer::of(ev) };
        Answer {
            source: Some(ev.source.clone()),
            deployment: Some(deployment),
            spool: Some(SpoolAnswer { kind, id: receipt.id, duplicate: receipt.duplicate, reason }),
            ..Answer::new(Action::Spooled)
        }
    }

    /// The facade's status change of one deployment.
    pub fn status_changed(outcome: &Outcome) -> Answer {
        Answer {
            source: Some("generic".into()),
            deployment: outcome.deployment.as_ref().map(DeploymentAnswer::gitlab),
            ..Answer::new(outcome.action.into())
        }
    }

    /// A dry run's answer lists the calls a live run would make.
    pub fn planned(self, calls: Vec<Call>) -> Answer {
        Answer { dry_run: true, gitlab_calls: Some(calls), ..self }
    }

    pub fn with_warnings(mut self, mut warnings: Vec<String>) -> Answer {
        warnings.append(&mut self.warnings);
        Answer { warnings, ..self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Defaults, EventDraft, Overrides};
    use crate::model::Status;
    use serde_json::json;

    fn event() -> Event {
        let draft = EventDraft {
            environment: Some("production".into()),
            sha: Some("a".repeat(40)),
            status: Some(Status::Success),
            ..Default::default()
        };
        Event::from_draft(
            "generic",
            draft,
            &Overrides { project: Some("42".into()), ..Default::default() },
            &Defaults::default(),
        )
        .unwrap()
    }

    #[test]
    fn an_ignored_delivery_says_why_and_nothing_else() {
        assert_eq!(
            serde_json::to_value(Answer::ignored("a dyno".into())).unwrap(),
            json!({"action": "ignored", "reason": "a dyno"})
        );
    }

    #[test]
    fn an_applied_event_names_its_deployment_as_the_readme_documents() {
        let d: Deployment =
            serde_json::from_value(json!({"id": 7, "status": "success", "sha": "a".repeat(40), "ref": "main"}))
                .unwrap();
        let outcome = Outcome {
            action: lifecycle::Action::Updated,
            deployment: Some(d),
            reason: None,
            notes: vec!["tier not set".into()],
        };
        let answer =
            serde_json::to_value(Answer::applied(&event(), &outcome).with_warnings(vec!["folder".into()])).unwrap();
        assert_eq!(
            answer,
            json!({"action": "updated", "source": "generic", "warnings": ["folder", "tier not set"],
                   "deployment": {"id": 7, "status": "success", "environment": "production", "sha": "a".repeat(40),
                                  "ref": "main", "ref_source": "default", "tag": false}})
        );
    }

    #[test]
    fn a_spooled_event_says_where_it_waits_and_a_dry_run_what_it_would_call() {
        let receipt = Receipt { id: "3".into(), duplicate: false };
        let answer = Answer::spooled(&event(), "local", receipt, "GitLab is down".into()).planned(Vec::new());
        let v = serde_json::to_value(answer).unwrap();
        assert_eq!((v["action"].as_str(), v["deployment"]["status"].as_str()), (Some("spooled"), Some("success")));
        assert_eq!(v["spool"], json!({"kind": "local", "id": "3", "duplicate": false, "reason": "GitLab is down"}));
        assert_eq!((v["dry_run"].as_bool(), v["gitlab_calls"].as_array().map(Vec::len)), (Some(true), Some(0)));
    }
}
