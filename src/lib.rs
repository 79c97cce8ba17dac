//! gitlab-deploy-bridge: turns webhooks from external deploy tools into GitLab deployments.
//!
//! The pipeline for every webhook is the same and lives in [`pipeline`]:
//! `source.verify(headers, raw body, secret)` → `source.parse(headers, body)` →
//! `source.enrich` → [`event::DeploymentEvent`] (query overrides applied, fields validated) →
//! [`lifecycle::Lifecycle::apply`] (the rollout rules against GitLab) → JSON answer.
//! [`http`] is the one axum `Router` in front of it; [`app`] builds both and runs the router
//! under Lambda (through [`lambda`], which makes events safe for lambda_http), as a local
//! server, or on event files.
//!
//! Imports point one way: `cli` → `app` → `lambda` / `http` / `drain` → `pipeline` → `spool` →
//! `sources` / `lifecycle` → `event` → `environment` → `gitlab` → `dry_gitlab`, `model` (the
//! vocabulary) and `secrets`; `pipeline` and `config` → `routes` → `model`. A webhook GitLab
//! cannot take now waits in [`spool`] and is delivered by [`drain`]; [`check`] verifies a
//! configuration against the real services. [`transport`] is the process's one HTTP stack (one
//! TLS configuration and connection pool for GitLab, the tools' APIs and the AWS SDK).

pub mod app;
pub mod check;
pub mod cli;
pub mod config;
pub mod drain;
pub mod dry_gitlab;
pub mod environment;
pub mod error;
pub mod event;
pub mod gitlab;
pub mod http;
pub mod lambda;
pub mod lifecycle;
pub mod model;
pub mod pipeline;
pub mod replay;
pub mod routes;
pub mod secrets;
pub mod sources;
pub mod spool;
pub mod telemetry;
pub mod transport;
