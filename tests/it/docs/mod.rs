//! The tests that hold the docs and the packaging to the code: every error and hint cites a
//! section and a setting that exist (`hints`), no dependency needs a newer Rust than the one
//! Cargo.toml and the README state (`toolchain`), and template.yaml lints clean with the real SAM
//! transform and wires the spool (`template`).

mod hints;
mod template;
mod toolchain;
