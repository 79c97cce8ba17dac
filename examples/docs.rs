//! Rewrites what the docs show from the code that is its one source: the configuration table of
//! README.md ("Configuration", between `<!-- settings:begin -->` and `<!-- settings:end -->`)
//! from [`config::reference_table`] (the bridge's settings and each tool's declaration).
//!
//!     cargo run --example docs            rewrite
//!     cargo run --example docs -- --check fail if anything is not current (what the tests check)

use gitlab_deploy_bridge::config;
use std::path::Path;

const BEGIN: &str = "<!-- settings:begin -->";
const END: &str = "<!-- settings:end -->";

/// `text` with the part between the markers replaced by `table`.
fn with_table(text: &str, table: &str) -> Option<String> {
    let (before, rest) = text.split_once(BEGIN)?;
    let (_, after) = rest.split_once(END)?;
    Some(format!("{before}{BEGIN}\n{table}{END}{after}"))
}

fn main() -> std::process::ExitCode {
    let check = std::env::args().any(|a| a == "--check");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let text = std::fs::read_to_string(&path).expect("README.md");
    let Some(new) = with_table(&text, &config::reference_table()) else {
        eprintln!("README.md has no {BEGIN} ... {END} block");
        return std::process::ExitCode::FAILURE;
    };
    if new == text {
        return std::process::ExitCode::SUCCESS;
    }
    if check {
        eprintln!("README.md's configuration table is not current: run `cargo run --example docs`");
        return std::process::ExitCode::FAILURE;
    }
    std::fs::write(&path, new).expect("README.md written");
    println!("README.md: configuration table rewritten");
    std::process::ExitCode::SUCCESS
}
