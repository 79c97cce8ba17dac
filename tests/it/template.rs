//! template.yaml is lint-clean with the real SAM transform (cfn-lint 1.53.3), and the lint
//! really catches faults: deliberately broken copies must fail.

use std::path::{Path, PathBuf};
use std::process::Command;

fn cfn_lint() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/cfn-lint");
    if venv.exists() { venv } else { PathBuf::from("cfn-lint") }
}

fn lint(template: &str) -> (bool, String) {
    let dir = std::env::temp_dir().join(format!("bridge-lint-{}", crate::support::fastrand_token()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("template.yaml");
    std::fs::write(&file, template).unwrap();
    let out = Command::new(cfn_lint())
        .arg(&file)
        .output()
        .expect("cfn-lint runs (bash scripts/test installs it into .venv)");
    let _ = std::fs::remove_dir_all(&dir);
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn template() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("template.yaml")).unwrap()
}

#[test]
fn lint_is_the_version_that_runs_the_sam_transform() {
    let out = Command::new(cfn_lint()).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("1.53.3"), "pin cfn-lint==1.53.3");
}

#[test]
fn template_has_no_errors_and_no_warnings() {
    let (ok, out) = lint(&template());
    assert!(ok && out.trim().is_empty(), "cfn-lint findings:\n{out}");
}

#[test]
fn broken_templates_fail_the_lint() {
    let t = template();
    let mutations = [
        ("Runtime: provided.al2023", "Runtime: provided.al2099"),
        ("Architectures: [arm64]", "Architectures: [arm65]"),
        ("AuthType: NONE", "AuthType: OPEN"),
        ("!GetAtt BridgeFunctionUrl.FunctionUrl", "!GetAtt BridgeFunctionUrlX.FunctionUrl"),
        ("Timeout: 20", "Timeoutt: 20"),
    ];
    for (from, to) in mutations {
        assert!(t.contains(from), "template no longer contains {from:?}");
        let (ok, out) = lint(&t.replacen(from, to, 1));
        assert!(!ok, "cfn-lint accepted a template with {to:?}:\n{out}");
    }
}
