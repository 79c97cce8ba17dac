//! The compliance suite: every source in [`ALL`] must pass it, so a new tool that forgets part
//! of its contract fails here, not in production. Its samples are the files `events/<name>-*.json`
//! (Lambda function-URL events, signed with `demo-<name>-secret`, as `events/README.md` says).

use super::*;
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// One sample event of a tool: its file, headers and body.
struct Sample {
    file: PathBuf,
    headers: HeaderMap,
    body: Vec<u8>,
}

fn samples(source: &dyn Source) -> Vec<Sample> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("events"))
        .map(|dir| dir.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    let prefix = format!("{}-", source.name());
    files
        .into_iter()
        .filter(|f| {
            f.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
                && f.extension().is_some_and(|e| e == "json")
        })
        .map(|file| {
            let text = std::fs::read_to_string(&file).unwrap();
            let ev: Value = serde_json::from_str(&text).unwrap();
            let mut headers = HeaderMap::new();
            for (k, v) in ev["headers"].as_object().unwrap() {
                headers.insert(
                    axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.as_str().unwrap().parse().unwrap(),
                );
            }
            let body = ev["body"].as_str().unwrap_or_default().as_bytes().to_vec();
            assert_ne!(ev["isBase64Encoded"], true, "{}: keep samples readable", file.display());
            Sample { file, headers, body }
        })
        .collect()
}

fn demo_secret(source: &dyn Source) -> SecretString {
    SecretString::from(format!("demo-{}-secret", source.name()))
}

fn signed(source: &dyn Source, body: &[u8], secret: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (k, v) in source.sign(body, secret) {
        headers.insert(k, v.parse().unwrap());
    }
    headers
}

#[test]
fn every_tool_declares_itself_fully() {
    let mut names = std::collections::HashSet::new();
    for source in ALL {
        let spec = source.spec();
        let name = spec.name;
        assert!(names.insert(name), "two tools are called {name}");
        assert!(!name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()), "{name}");
        assert!(!spec.title.is_empty(), "{name}: a title");
        assert!(!spec.credential.headers.is_empty() && !spec.credential.missing.is_empty(), "{name}: a credential");
        for h in spec.credential.headers {
            assert_eq!(*h, h.to_ascii_lowercase(), "{name}: header names are lower case");
        }
        match spec.replay {
            Replay::SignedTime { window, why } => assert!(window.as_secs() > 0 && !why.is_empty(), "{name}"),
            Replay::NoSignedTime { why } => assert!(!why.is_empty(), "{name}: say why there is no signed time"),
        }
        for s in spec.settings {
            assert!(
                s.var.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'),
                "{name}: {}",
                s.var
            );
            assert!(!s.doc.is_empty(), "{name}: {} needs a doc line", s.var);
            if let Some(d) = s.default {
                (s.check)(d).unwrap_or_else(|e| panic!("{name}: the default of {} fails its own check: {e}", s.var));
            }
        }
        for k in spec.secrets {
            assert!(k.key.starts_with(&format!("{name}_")) && k.key == k.key.to_ascii_lowercase(), "{name}: {}", k.key);
        }
        assert!(root().join(spec.docs).is_file(), "{name}: no docs page {}", spec.docs);
        assert!(!samples(*source).is_empty(), "{name}: no sample event events/{name}-*.json");
    }
}

#[test]
fn every_tools_signed_samples_verify_and_a_changed_byte_or_secret_does_not() {
    for source in ALL {
        let name = source.name();
        for s in samples(*source) {
            let file = s.file.display();
            source.verify(&Request::new(&s.headers, &s.body), &demo_secret(*source)).unwrap_or_else(|e| {
                panic!("{file}: the sample does not verify ({e}); run `cargo run --example events`")
            });
            source.credentials(&s.headers).unwrap_or_else(|e| panic!("{file}: {e}"));
            // The tool's own signer, with another secret.
            let headers = signed(*source, &s.body, "another-secret");
            assert!(
                source.verify(&Request::new(&headers, &s.body), &SecretString::from("another-secret")).is_ok(),
                "{file}"
            );
            assert!(
                source.verify(&Request::new(&headers, &s.body), &demo_secret(*source)).is_err(),
                "{file}: a wrong secret verified"
            );
            assert!(source.credentials(&HeaderMap::new()).is_err(), "{name}: no credential passed the pre-check");
            if source.spec().body == BodyAuth::Signed {
                for i in [0, s.body.len() / 2, s.body.len().saturating_sub(1)] {
                    let mut changed = s.body.clone();
                    changed[i] ^= 0x01;
                    let refused =
                        source.verify(&Request::new(&headers, &changed), &SecretString::from("another-secret"));
                    assert!(refused.is_err(), "{file}: a body changed at byte {i} verified");
                }
            }
        }
    }
}

#[tokio::test]
async fn every_tool_keeps_its_replay_decision_and_decodes_each_body_once() {
    for source in ALL {
        let settings = ToolSettings::from_lookup(&|_| None).unwrap();
        for s in samples(*source) {
            let file = s.file.display();
            let request = Request::new(&s.headers, &s.body);
            source.verify(&request, &demo_secret(*source)).unwrap();
            let reading = source.read(&request, settings.of(source.name())).unwrap_or_else(|e| panic!("{file}: {e}"));
            match source.spec().replay {
                Replay::SignedTime { .. } => {
                    assert!(reading.signed_at.is_some(), "{file}: declares a signed time, reads none")
                }
                Replay::NoSignedTime { .. } => {
                    assert!(reading.signed_at.is_none(), "{file}: reads a signed time it declares none of")
                }
            }
            if source.spec().body == BodyAuth::Signed {
                assert!(reading.delivery_key.is_some(), "{file}: a signed delivery names itself (an id or its hash)");
            }
            if let Read::Draft(draft, Some(enrich)) = reading.read {
                enrich
                    .enrich(draft, settings.of(source.name()), &Offline)
                    .await
                    .unwrap_or_else(|e| panic!("{file}: {e}"));
            }
            assert_eq!(request.decodes(), 1, "{file}: the body was decoded {} times", request.decodes());
        }
    }
}

/// The body reaches a source's decoding only through [`Request`], which counts: no source
/// decodes its bytes on its own.
#[test]
fn no_source_decodes_the_body_on_its_own() {
    for entry in std::fs::read_dir(root().join("src/sources")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name == "mod.rs" || name == "tests.rs" {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for forbidden in ["serde_json::from_", "from_slice(", "serde_urlencoded::"] {
            assert!(!code.contains(forbidden), "{name} decodes on its own ({forbidden}); use Request::json_object");
        }
    }
}

/// Every source answers any body and any headers with Ok or Err, never a panic.
#[test]
fn no_input_panics_any_source() {
    let mut bodies: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"null".to_vec(),
        b"[]".to_vec(),
        b"\"x\"".to_vec(),
        b"{}".to_vec(),
        br#"{"data": 1, "payload": [], "metadata": "x", "involvedObject": 3, "revisions": {}, "images": 1}"#.to_vec(),
        br#"{"resource":"release","action":"update","data":{"status":"succeeded","description":"Deploy \u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9"}}"#.to_vec(),
        br#"{"type":"deployment.created","payload":{"deployment":{"meta":{"githubCommitSha":7}},"target":{}}}"#.to_vec(),
        br#"{"reason":"Progressing","metadata":{"revision":"@@@sha1:"},"involvedObject":{}}"#.to_vec(),
        br#"{"state":"ready","commit_ref":[],"context":null}"#.to_vec(),
        br#"{"app":"a","phase":"Running","health":{},"revision":1e400}"#.to_vec(),
        br#"{"createdAt": 9223372036854775807, "created_at": "9999-12-31T23:59:60Z", "timestamp": -1}"#.to_vec(),
        vec![0xff, 0xfe, 0x00, b'{'],
    ];
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..200 {
        let len = rng.usize(0..300);
        bodies.push((0..len).map(|_| rng.u8(..)).collect());
    }
    let mut headers = HeaderMap::new();
    for (k, v) in [
        ("authorization", "Bearer"),
        ("private-token", ""),
        ("heroku-webhook-hmac-sha256", "===="),
        ("x-signature", "sha256="),
        ("x-vercel-signature", "zz"),
        ("x-webhook-signature", "a.b.c"),
        ("x-netlify-event", "deploy_created"),
        ("content-type", "application/x-www-form-urlencoded"),
    ] {
        headers.insert(k, v.parse().unwrap());
    }
    let secret = SecretString::from("s");
    let settings = ToolSettings::default();
    for source in ALL {
        for body in &bodies {
            for h in [&HeaderMap::new(), &headers] {
                let request = Request::new(h, body);
                let _ = source.verify(&request, &secret);
                let _ = source.read(&request, settings.of(source.name()));
                let _ = source.sign(body, "s");
            }
        }
    }
}

#[test]
fn settings_are_checked_where_they_are_declared() {
    let all = ToolSettings::from_lookup(&|_| None).unwrap();
    assert_eq!(all.of("heroku").get("HEROKU_API_URL"), Some("https://api.heroku.com"), "its default");
    let err = ToolSettings::from_lookup(&|k| (k == "ARGOCD_IMAGE").then(|| "app:(a)(b)".to_string())).unwrap_err();
    assert!(err.contains("ARGOCD_IMAGE") && err.contains("one capture group"), "{err}");
    assert!(ToolSettings::default().set("NOT_A_SETTING", "x").is_err());
}
