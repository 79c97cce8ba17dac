//! Each tool's own way of signing a body: the tool's one signer ([`Source::sign`]), from the
//! registry, never a copy of its own here.

use gitlab_deploy_bridge::sources::{self, Source};

fn source(tool: &str) -> &'static dyn Source {
    sources::find(tool).unwrap_or_else(|| panic!("no tool {tool:?}"))
}

/// The headers `tool` sends with `body`, signed with `secret`.
pub fn headers(tool: &str, secret: &str, body: &str) -> Vec<(&'static str, String)> {
    source(tool).sign(body.as_bytes(), secret)
}

/// The value of `tool`'s signature header for `body` under `secret`.
pub fn signature(tool: &str, secret: &str, body: &str) -> String {
    headers(tool, secret, body).into_iter().next().map(|(_, v)| v).unwrap_or_default()
}
