//! End-to-end tests: the real router over HTTP against a GitLab stand-in that enforces the
//! documented contract, moto's Secrets Manager, and the built binary under a Runtime API stand-in.

mod support;

mod check;
mod cli;
mod dora;
mod events;
mod firsthour;
mod flux;
mod hardening;
mod heroku;
mod hints;
mod lambda;
mod model;
mod netlify;
mod realclients;
mod relay;
mod rollout;
mod routes;
mod secrets;
mod spool;
mod template;
mod toolchain;
mod vercel;
