//! End-to-end tests: the real router over HTTP against a GitLab stand-in that enforces the
//! documented contract, moto's Secrets Manager, and the built binary under a Runtime API stand-in.
//!
//! Organized by behaviour: what each tool's payloads do (`tools`), the deployment lifecycle
//! (`lifecycle`), what a delivery must pass (`admission`), GitLab failing (`gitlab_failures`),
//! the GitLab-compatible facade (`facade`), running the bridge (`operations`), the spool, Lambda,
//! Secrets Manager, the command line (`cli`), the docs and packaging held to the code (`docs`),
//! and the real clients driving the bridge (`real_clients`, over `tests/fixtures/`).

mod support;

mod admission;
mod cli;
mod docs;
mod facade;
mod gitlab_failures;
mod lambda;
mod lifecycle;
mod operations;
mod real_clients;
mod secrets;
mod spool;
mod tools;
