//! The bridge driven by the real clients rather than by payloads we wrote: Argo CD's
//! notification engine (Go `text/template` + Sprig + `expr`, as argoproj/notifications-engine
//! renders and triggers) fed the README's own ConfigMap, Flux events marshalled and signed by Go as
//! notification-controller does, and Heroku/Vercel/Netlify deliveries as their docs and real
//! captures show them. The Go programs live in `tests/fixtures/`; they are built with Debian's
//! Go and Go libraries (`GO111MODULE=off`, `GOPATH=/usr/share/gocode`), which `.ci/run` installs.
//!
//! Without Go these tests say SKIPPED on stderr and pass — unless `REAL_CLIENTS=required`
//! (set by `.ci/run` once the install succeeded), where a missing toolchain is a failure.

mod argocd;
mod flux;
mod samples;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

pub fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn required() -> bool {
    std::env::var("REAL_CLIENTS").as_deref() == Ok("required")
}

/// The README's `ROUTES` example, as a user copies it.
pub fn readme_routes() -> gitlab_deploy_bridge::routes::Routes {
    let readme = std::fs::read_to_string(manifest_dir().join("README.md")).unwrap();
    let json =
        readme.split("ROUTES='").nth(1).and_then(|r| r.split('\'').next()).expect("README.md shows ROUTES='{...}'");
    gitlab_deploy_bridge::routes::Routes::parse(json).unwrap_or_else(|e| panic!("the README's ROUTES: {e}"))
}

/// The bridge with the README's routes only (unbound hooks refused, as by default), each route's
/// secret being the test secret of its source.
pub async fn readme_routed_setup() -> (crate::support::GitLabStub, crate::support::Bridge) {
    use crate::support::*;
    let token = format!("glpat-{}", fastrand_token());
    let gitlab = GitLabStub::start(&token).await;
    gitlab.add_commit(SHA_A);
    gitlab.add_commit(SHA_B);
    let routes = readme_routes();
    // Each route's secret is its tool's test secret.
    let keys: Vec<(String, String)> =
        routes.iter().map(|(name, r)| (gitlab_deploy_bridge::routes::secret_key(name), secret_of(&r.source))).collect();
    let extra: Vec<(&str, &str)> = keys.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let config = gitlab_deploy_bridge::config::Config { routes, unbound_hooks: false, ..config(&gitlab.url) };
    let bridge = Bridge::start(config, static_secrets_with(&token, &extra)).await;
    (gitlab, bridge)
}

/// The fenced YAML block of a tool's docs page (`docs/tools/<tool>.md`) that contains `marker`,
/// as a user copies it.
pub fn docs_yaml(tool: &str, marker: &str) -> String {
    let page = format!("docs/tools/{tool}.md");
    let text = std::fs::read_to_string(manifest_dir().join(&page)).unwrap();
    let mut blocks = text.split("```yaml\n").skip(1).map(|b| b.split("\n```").next().unwrap_or(""));
    blocks
        .find(|b| b.contains(marker))
        .unwrap_or_else(|| panic!("{page} has no ```yaml block with {marker:?}"))
        .to_string()
}

/// A scratch file under Cargo's per-test-binary temporary directory.
pub fn scratch(name: &str, contents: &[u8]) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("real_clients");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{}-{name}", fastrand::u64(..)));
    std::fs::write(&path, contents).unwrap();
    path
}

/// Builds `tests/fixtures/<name>/main.go` (once per test binary) and returns the binary, or
/// `None` after saying SKIPPED when Go is not installed and the real clients are not required.
pub fn go_tool(name: &str) -> Option<PathBuf> {
    static BUILT: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let built = built.get_or_insert_with(HashMap::new);
    if let Some(p) = built.get(name) {
        return Some(p.clone());
    }
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR")).join("real_clients");
    std::fs::create_dir_all(&tmp).unwrap();
    let out = tmp.join(name);
    let src = manifest_dir().join("tests/fixtures").join(name).join("main.go");
    let result = Command::new("go")
        .args(["build", "-o"])
        .arg(&out)
        .arg(&src)
        .env("GO111MODULE", "off")
        .env("GOPATH", "/usr/share/gocode")
        .env("GOCACHE", tmp.join("go-cache"))
        .env("GOFLAGS", "")
        .output();
    match result {
        Ok(o) if o.status.success() => {
            built.insert(name.to_string(), out.clone());
            Some(out)
        }
        Ok(o) if !required() && String::from_utf8_lossy(&o.stderr).contains("cannot find package") => {
            eprintln!(
                "SKIPPED: the {name} real-client test needs Go libraries:\n{}",
                String::from_utf8_lossy(&o.stderr)
            );
            None
        }
        Ok(o) => panic!("building {} failed:\n{}", src.display(), String::from_utf8_lossy(&o.stderr)),
        Err(e) if !required() => {
            eprintln!(
                "SKIPPED: the {name} real-client test needs Go ({e}); install golang-go, \
                 golang-github-masterminds-sprig-dev, golang-github-antonmedv-expr-dev and \
                 golang-github-ghodss-yaml-dev, or run .ci/run"
            );
            None
        }
        Err(e) => panic!("REAL_CLIENTS=required but Go cannot be run: {e}"),
    }
}

/// Runs a built tool without blocking the runtime the bridge is served on; returns stdout as JSON
/// lines. A non-zero exit fails the test with the tool's stderr.
pub async fn run_tool(tool: &Path, args: &[&std::ffi::OsStr]) -> Vec<serde_json::Value> {
    let out = tokio::process::Command::new(tool).args(args).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{} failed: {stderr}", tool.display());
    if !stderr.is_empty() {
        eprintln!("{}: {stderr}", tool.display());
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}
