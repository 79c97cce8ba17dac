//! The Rust a user needs is the Rust the project says it needs: no locked dependency asks for a
//! newer one than `rust-version` in Cargo.toml, and the README states that same version.

use serde_json::Value;
use std::process::Command;

fn version(v: &str) -> Vec<u64> {
    v.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

#[test]
fn no_dependency_needs_a_newer_rust_than_ours_and_the_readme_says_ours() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let ours = env!("CARGO_PKG_RUST_VERSION");
    assert!(!ours.is_empty(), "Cargo.toml states a rust-version");
    // What builds on the machine and what AWS runs.
    for platform in ["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"] {
        let out = Command::new(&cargo)
            .args([
                "metadata",
                "--format-version",
                "1",
                "--locked",
                "--filter-platform",
                platform,
                "--manifest-path",
                manifest,
            ])
            .output()
            .expect("cargo metadata runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let metadata: Value = serde_json::from_slice(&out.stdout).unwrap();
        let too_new: Vec<String> = metadata["packages"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| Some((p["name"].as_str()?, p["version"].as_str()?, p["rust_version"].as_str()?)))
            .filter(|(_, _, needs)| version(needs) > version(ours))
            .map(|(name, v, needs)| format!("{name} {v} needs Rust {needs}"))
            .collect();
        assert!(too_new.is_empty(), "rust-version = {ours:?} in Cargo.toml, but on {platform}: {too_new:?}");
    }
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    assert!(readme.contains(&format!("Rust ({ours}+")), "README.md names Rust {ours}+ as the minimum");
}
