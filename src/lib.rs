//! gitlab-deploy-bridge: turns webhooks from external deploy tools into GitLab deployments.
//!
//! # Layout
//!
//! From the outside in (each module imports only those below it; no circle):
//!
//! - **Entry points.** [`cli`] (the operator's commands: `invoke`, `check`, `spool`) and
//!   [`app`] (builds the clients and the router once, choosing implementations — a dry run's
//!   in-memory GitLab is chosen here — and runs them: [`lambda`] under AWS Lambda, `serve`).
//! - **Transport.** [`http`]: the one axum `Router` (hooks, the GitLab-compatible facade,
//!   health); [`lambda`]: function-URL events made safe for lambda_http, SQS batches to
//!   [`drain`]; [`server`]: `serve`'s listener, its limits per server and per peer.
//! - **The pipeline** ([`pipeline`]), stage by stage: admission (route, secret, the tool's
//!   verification, the body read once, replay), normalization, delivery (now, or [`spool`]),
//!   the typed answer, the span that is the webhook's one log line. [`drain`] delivers what
//!   waits in the spool through the same pipeline.
//! - **The tools** ([`sources`]): one self-describing file each — credential, settings,
//!   replay decision, verification, decoding, signing.
//! - **The rules** ([`lifecycle`]): the rollout rules as a pure planner
//!   ([`lifecycle::plan`]) executed against the [`gitlab::GitLab`] port; [`environment`]:
//!   tiers, URLs and the warnings that keep DORA right.
//! - **Ports.** [`gitlab`] (the HTTP client, and the in-memory GitLab of a dry run),
//!   [`secrets`] (Secrets Manager, or environment variables), [`spool`] (SQS FIFO, or redb on
//!   disk), [`transport`] (the process's one HTTP and TLS stack).
//! - **Vocabulary.** [`event`] (the normalized event and its validated types), [`routes`],
//!   [`replay`], [`config`], [`error`] (typed errors → HTTP status, in one place), [`model`]
//!   (statuses, tiers, GitLab's records), [`telemetry`].

pub mod app;
pub mod cli;
pub mod config;
pub mod drain;
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
pub mod server;
pub mod sources;
pub mod spool;
pub mod telemetry;
pub mod transport;
