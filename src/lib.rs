//! gitlab-deploy-bridge: turns webhooks from external deploy tools into GitLab deployments.
//!
//! The pipeline for every webhook is the same and lives in [`http`]:
//! `source.verify(headers, raw body, secret)` → `source.parse(headers, body)` →
//! [`event::DeploymentEvent`] (query overrides applied, fields validated) →
//! [`lifecycle::Lifecycle::apply`] (stateless find-or-create against GitLab) → JSON answer.
//! [`app`] builds the one axum `Router` and runs it under Lambda, as a local server, or on event files.

pub mod app;
pub mod config;
pub mod environment;
pub mod error;
pub mod event;
pub mod gitlab;
pub mod http;
pub mod lifecycle;
pub mod secrets;
pub mod sources;
pub mod telemetry;
