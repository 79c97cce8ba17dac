//! The deployment lifecycle in GitLab: how events become deployments (`rules`), random histories
//! of rollouts checked against invariants (`model`, proptest), and the environments they land in
//! — tiers, URLs, refs and names, for DORA metrics and merge-request tracking (`environments`).

mod environments;
mod model;
mod rules;
