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
    let cite = Regex::new(r#"(README|docs/[a-z_/]+\.md), "([^"]+)""#).unwrap();
    let setting = Regex::new(r"\b[A-Z][A-Z0-9]*_[A-Z0-9_]+\b").unwrap();
    // The settings the bridge reads, from the one list of them: its own table, each tool's
    // declaration (its settings, and its secret keys as environment variables); the root
    // certificates' directory is read by rustls-native-certs beside SSL_CERT_FILE.
    let mut known: Vec<String> = gitlab_deploy_bridge::config::SETTINGS.iter().map(|s| s.var.to_string()).collect();
    for source in gitlab_deploy_bridge::sources::ALL {
        known.extend(source.spec().settings.iter().map(|s| s.var.to_string()));
        known.extend(source.spec().secrets.iter().map(|k| k.key.to_ascii_uppercase()));
    }
    known.extend(["SSL_CERT_DIR".to_string(), "AWS_LAMBDA_LOG_LEVEL".to_string()]);
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
                let name = m.as_str();
                let pattern =
                    |k: &String| k.contains('<') && name.ends_with(k.rsplit('>').next().unwrap_or(k.as_str()));
                assert!(
                    known.iter().any(|k| k == name || pattern(k)),
                    "{file}: {} is not a setting the bridge reads: {lit}",
                    m.as_str()
                );
            }
        }
    }
    assert!(cited >= 3, "the citations were not found; the test reads nothing");
}

/// Every test docs/security.md names as a promise's proof exists where its path says: a unit
/// test (`module::tests::name`) in `src/`, an end-to-end one (`module::name`) in `tests/it/`.
#[test]
fn every_test_the_security_document_names_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/security.md")).unwrap();
    let named = Regex::new(r"`((?:[a-z_]+::)+[a-z_0-9]+)`").unwrap();
    let mut checked = 0;
    for c in named.captures_iter(&doc) {
        let path: Vec<&str> = c[1].split("::").collect();
        let (name, modules) = path.split_last().unwrap();
        let (base, modules): (&str, Vec<&str>) = match modules.iter().position(|m| *m == "tests") {
            Some(i) => ("src", modules[..i].to_vec()),
            None => ("tests/it", modules.to_vec()),
        };
        let file = modules.join("/");
        let candidates = [root.join(base).join(format!("{file}.rs")), root.join(base).join(&file).join("mod.rs")];
        let found = candidates
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .any(|code| code.contains(&format!("fn {name}(")));
        assert!(found, "docs/security.md names {} but no such test is in {base}/{file}", &c[1]);
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} test names were found in docs/security.md");
}

/// The README's configuration table is the one `config::reference_table` generates from the
/// settings table and the tools' declarations (`cargo run --example docs` rewrites it).
#[test]
fn the_configuration_table_is_generated_from_the_settings() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let block = readme
        .split_once("<!-- settings:begin -->\n")
        .and_then(|(_, rest)| rest.split_once("<!-- settings:end -->"))
        .map(|(table, _)| table)
        .expect("README.md has the settings markers");
    assert!(
        block == gitlab_deploy_bridge::config::reference_table(),
        "README.md's configuration table is not current: run `cargo run --example docs`"
    );
}

/// `events/demo.env` holds every registered tool's demo secret (`cargo run --example events`).
#[test]
fn the_demo_secrets_name_every_tool() {
    let env = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("events/demo.env")).unwrap();
    for source in gitlab_deploy_bridge::sources::ALL {
        let line = format!("{}_WEBHOOK_SECRET=demo-{}-secret", source.name().to_ascii_uppercase(), source.name());
        assert!(env.lines().any(|l| l == line), "events/demo.env lacks {line}: run `cargo run --example events`");
    }
}
