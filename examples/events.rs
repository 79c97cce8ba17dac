//! The sample events of `events/`: Lambda function-URL events (payload 2.0), signed with the demo
//! secrets (`demo-<source>-secret`, in `events/demo.env`) by each tool's own signer
//! ([`Source::sign`], the one signer tests and fuzz seeds use too).
//!
//!     cargo run --example events                    re-sign every event whose body changed; rewrite demo.env
//!     cargo run --example events -- --check         fail if any event does not verify, or demo.env is not current
//!     cargo run --example events -- new <source> <name> <body.json> [<query>]
//!                                                   write events/<name>.json: the body, as <source> sends it
//!
//! The bodies are the files' own (edit a body, then run this to sign it again); the events of
//! one source are the files named `<source>-*.json` (the facade's, `facade-*.json`, are `generic`).

use gitlab_deploy_bridge::sources::{self, Request, Source};
use http::HeaderMap;
use secrecy::SecretString;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn events_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("events")
}

fn demo_secret(source: &dyn Source) -> String {
    format!("demo-{}-secret", source.name())
}

/// `events/demo.env`: every source's unbound webhook secret, as the README's first command loads it.
fn demo_env() -> String {
    sources::ALL
        .iter()
        .map(|s| format!("{}={}\n", sources::webhook_secret_key(s.name()).to_ascii_uppercase(), demo_secret(*s)))
        .collect()
}

/// The source an event file is for, by its name.
fn source_of(file: &Path) -> Option<&'static dyn Source> {
    let name = file.file_name()?.to_str()?;
    let prefix = name.split('-').next()?;
    sources::find(if prefix == "facade" { "generic" } else { prefix })
}

/// An event as the function URL delivers it.
fn envelope(path: &str, query: &str, headers: Vec<(String, String)>, body: &str) -> Value {
    let mut all = serde_json::Map::new();
    for (k, v) in [
        ("content-type", "application/json"),
        ("host", "abcdefghij.lambda-url.us-east-1.on.aws"),
        ("user-agent", "demo"),
        ("x-forwarded-proto", "https"),
    ] {
        all.insert(k.into(), v.into());
    }
    for (k, v) in headers {
        all.insert(k, v.into());
    }
    json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": all,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "abcdefghij",
            "domainName": "abcdefghij.lambda-url.us-east-1.on.aws",
            "domainPrefix": "abcdefghij",
            "http": {"method": "POST", "path": path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.7", "userAgent": "demo"},
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "routeKey": "$default",
            "stage": "$default",
            "time": "25/Nov/2026:12:00:00 +0000",
            "timeEpoch": 1795608000000u64
        },
        "body": body,
        "isBase64Encoded": false
    })
}

/// Whether the event verifies with its source's demo secret.
fn verifies(source: &dyn Source, ev: &Value) -> bool {
    let mut headers = HeaderMap::new();
    for (k, v) in ev["headers"].as_object().into_iter().flatten() {
        if let (Ok(k), Some(Ok(v))) = (http::HeaderName::from_bytes(k.as_bytes()), v.as_str().map(|v| v.parse())) {
            headers.insert(k, v);
        }
    }
    let body = ev["body"].as_str().unwrap_or_default().as_bytes();
    source.verify(&Request::new(&headers, body), &SecretString::from(demo_secret(source))).is_ok()
}

fn write(path: &Path, ev: &Value) -> std::io::Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(ev)? + "\n")
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("new") {
        return new(&args[1..]);
    }
    let check = args.iter().any(|a| a == "--check");
    let mut stale = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(events_dir())
        .expect("events/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    for file in files {
        let Some(source) = source_of(&file) else {
            stale.push(format!("{}: names no source (<source>-<what>.json)", file.display()));
            continue;
        };
        let text = std::fs::read_to_string(&file).expect("an event file");
        let mut ev: Value = serde_json::from_str(&text).expect("an event is JSON");
        if verifies(source, &ev) {
            continue;
        }
        if check {
            stale.push(format!("{}: does not verify as {}", file.display(), source.name()));
            continue;
        }
        let body = ev["body"].as_str().unwrap_or_default().to_string();
        for h in source.spec().credential.headers {
            if let Some(headers) = ev["headers"].as_object_mut() {
                headers.remove(*h);
            }
        }
        for (k, v) in source.sign(body.as_bytes(), &demo_secret(source)) {
            ev["headers"][k] = v.into();
        }
        write(&file, &ev).expect("written");
        println!("{}: signed again", file.display());
    }
    let env_file = events_dir().join("demo.env");
    if std::fs::read_to_string(&env_file).ok().as_deref() != Some(demo_env().as_str()) {
        if check {
            stale.push(format!("{}: not every source's demo secret", env_file.display()));
        } else {
            std::fs::write(&env_file, demo_env()).expect("demo.env written");
            println!("{}: rewritten", env_file.display());
        }
    }
    for s in &stale {
        eprintln!("{s}");
    }
    if stale.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("run `cargo run --example events` to sign them again");
        ExitCode::FAILURE
    }
}

/// `new <source> <name> <body.json> [<query>]`.
fn new(args: &[String]) -> ExitCode {
    let [source, name, body, rest @ ..] = args else {
        eprintln!("usage: cargo run --example events -- new <source> <name> <body.json> [<query>]");
        return ExitCode::FAILURE;
    };
    let Some(source) = sources::find(source) else {
        eprintln!("no source {source:?}; the sources are {}", sources::names());
        return ExitCode::FAILURE;
    };
    let body = match std::fs::read_to_string(body) {
        Ok(b) => b.trim_end().to_string(),
        Err(e) => {
            eprintln!("{body}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let query = rest.first().cloned().unwrap_or_else(|| "project=42".into());
    let headers =
        source.sign(body.as_bytes(), &demo_secret(source)).into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    let ev = envelope(&format!("/hooks/{}", source.name()), &query, headers, &body);
    let file = events_dir().join(format!("{name}.json"));
    write(&file, &ev).expect("written");
    println!("{}: written", file.display());
    ExitCode::SUCCESS
}
