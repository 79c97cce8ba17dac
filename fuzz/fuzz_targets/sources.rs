//! Each source's verify + parse over any body: a body the tool signed always verifies, a changed
//! byte never does (for the signing tools), and nothing panics.
#![no_main]

#[path = "../common/mod.rs"]
mod common;

use gitlab_deploy_bridge::sources;
use http::HeaderMap;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((selector, body)) = data.split_first() else { return };
    let source = sources::ALL[*selector as usize % sources::ALL.len()];
    let secret = common::secret_of(source.name());
    let mut headers = HeaderMap::new();
    for (k, v) in common::signed_headers(source.name(), body) {
        headers.insert(k, v.parse().expect("a signature is a header value"));
    }
    source
        .credentials(&headers)
        .unwrap_or_else(|e| panic!("{}: signed headers refused before the body: {e}", source.name()));
    source
        .verify(&headers, body, &secret)
        .unwrap_or_else(|e| panic!("{}: a body the tool signed was refused: {e}", source.name()));
    let _ = source.parse(&headers, body);
    let _ = source.signed_at(&headers, body);
    let _ = source.delivery_key(&headers, body);
    if !matches!(source.name(), "generic" | "argocd") && !body.is_empty() {
        let mut changed = body.to_vec();
        let i = usize::from(*selector) % changed.len();
        changed[i] ^= 0x20;
        assert!(source.verify(&headers, &changed, &secret).is_err(), "{}: a changed body verified", source.name());
    }
    // Unsigned, and with headers that are the body itself (where they can be header values).
    let _ = source.verify(&HeaderMap::new(), body, &secret);
    if let Ok(text) = std::str::from_utf8(body)
        && let Ok(v) = text.parse::<http::HeaderValue>()
    {
        let mut odd = HeaderMap::new();
        for k in [
            "authorization",
            "private-token",
            "heroku-webhook-hmac-sha256",
            "x-signature",
            "x-vercel-signature",
            "x-webhook-signature",
            "x-netlify-event",
            "content-type",
        ] {
            odd.insert(k, v.clone());
        }
        let _ = source.verify(&odd, body, &secret);
        let _ = source.parse(&odd, body);
    }
});
