//! Every error and hint names something real: a README section or a docs heading it cites
//! exists, and a setting it names is one the bridge reads.

use regex_lite::Regex;
use std::path::Path;

fn source_files() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut dirs = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|e| e == "rs") {
                out.push((p.display().to_string(), std::fs::read_to_string(&p).unwrap()));
            }
        }
    }
    out
}

/// The string literals of a Rust source (plain `"..."` ones, escapes kept; a `\` at the end of
/// a line continues the literal).
fn literals(code: &str) -> Vec<String> {
    let re = Regex::new(r#""((?:[^"\\]|\\(?s:.))*)""#).unwrap();
    re.captures_iter(code).map(|c| c[1].replace("\\\"", "\"")).collect()
}

fn headings(file: &str) -> Vec<String> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file)).unwrap();
    text.lines().filter(|l| l.starts_with('#')).map(|l| l.trim_start_matches('#').trim().to_string()).collect()
}

#[test]
fn every_cited_section_and_setting_exists() {
    let readme = headings("README.md");
    let cite = Regex::new(r#"(README|docs/[a-z_]+\.md), "([^"]+)""#).unwrap();
    let setting = Regex::new(r"\b[A-Z][A-Z0-9]*_[A-Z0-9_]+\b").unwrap();
    // Settings are read in config.rs; the secrets' environment variables (GITLAB_TOKEN, ...) in
    // secrets.rs; the root certificates' (SSL_CERT_FILE) in transport.rs.
    let config = ["src/config.rs", "src/secrets.rs", "src/transport.rs"]
        .map(|f| std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(f)).unwrap())
        .join("\n");
    let mut cited = 0;
    for (file, code) in source_files() {
        for lit in literals(&code) {
            for c in cite.captures_iter(&lit) {
                cited += 1;
                let (doc, section) = (&c[1], &c[2]);
                let heads = if doc == "README" { readme.clone() } else { headings(doc) };
                assert!(
                    heads.iter().any(|h| h == section || h.starts_with(&format!("{section} "))),
                    "{file}: {doc} has no section {section:?}: {lit}"
                );
            }
            // Messages (literals with words), not identifiers passed to macros.
            for m in setting.find_iter(&lit).filter(|_| lit.contains(' ')) {
                assert!(
                    config.contains(&format!("\"{}\"", m.as_str())),
                    "{file}: {} is not a setting the bridge reads: {lit}",
                    m.as_str()
                );
            }
        }
    }
    assert!(cited >= 3, "the citations were not found; the test reads nothing");
}
