//! Each source's verify + parse over any body: a body the tool signed always verifies, a changed
//! byte never does (for the signing tools), and nothing panics.
#![no_main]

#[path = "../common/mod.rs"]
mod common;

use gitlab_deploy_bridge::sources::{self, BodyAuth, Request, ToolSettings};
use http::HeaderMap;
use libfuzzer_sys::fuzz_target;
use secrecy::SecretString;

fuzz_target!(|data: &[u8]| {
    let Some((selector, body)) = data.split_first() else { return };
    let source = sources::ALL[*selector as usize % sources::ALL.len()];
    let secret = SecretString::from(common::secret_of(source));
    let settings = ToolSettings::default();
    let mut headers = HeaderMap::new();
    for (k, v) in common::signed_headers(source, body) {
        headers.insert(k, v.parse().expect("a signature is a header value"));
    }
    source
        .credentials(&headers)
        .unwrap_or_else(|e| panic!("{}: signed headers refused before the body: {e}", source.name()));
    let request = Request::new(&headers, body);
    source
        .verify(&request, &secret)
        .unwrap_or_else(|e| panic!("{}: a body the tool signed was refused: {e}", source.name()));
    let _ = source.read(&request, settings.of(source.name()));
    assert!(request.decodes() <= 1, "{}: the body was decoded {} times", source.name(), request.decodes());
    if source.spec().body == BodyAuth::Signed && !body.is_empty() {
        let mut changed = body.to_vec();
        let i = usize::from(*selector) % changed.len();
        changed[i] ^= 0x20;
        assert!(
            source.verify(&Request::new(&headers, &changed), &secret).is_err(),
            "{}: a changed body verified",
            source.name()
        );
    }
    // Unsigned, and with headers that are the body itself (where they can be header values):
    // every tool's credential header, and the content type.
    let _ = source.verify(&Request::new(&HeaderMap::new(), body), &secret);
    if let Ok(text) = std::str::from_utf8(body)
        && let Ok(v) = text.parse::<http::HeaderValue>()
    {
        let mut odd = HeaderMap::new();
        let names = sources::ALL.iter().flat_map(|s| s.spec().credential.headers.iter().copied());
        for k in names.chain(["content-type"]) {
            odd.insert(k, v.clone());
        }
        let request = Request::new(&odd, body);
        let _ = source.verify(&request, &secret);
        let _ = source.read(&request, settings.of(source.name()));
    }
});
