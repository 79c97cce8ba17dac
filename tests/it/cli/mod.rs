//! The binary outside Lambda: `invoke` (the README's first command), `serve`, which must behave
//! exactly like the router the other tests drive, and `check`; here, what `--help` says.

mod check;
mod invoke;
mod serve;

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_gitlab-deploy-bridge");

#[test]
fn help_describes_every_argument_and_names_the_configuration() {
    let help = |args: &[&str]| {
        let out = Command::new(BIN).args(args).env_remove("AWS_LAMBDA_RUNTIME_API").output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let top = help(&["--help"]);
    for needle in ["GITLAB_URL", "GITLAB_TOKEN", "SECRET_ID", "ROUTES", "check", "spool"] {
        assert!(top.contains(needle), "--help lacks {needle}:\n{top}");
    }
    assert!(help(&["serve", "--help"]).contains("Address and port to listen on"));
    let invoke = help(&["invoke", "--help"]);
    assert!(invoke.contains("event files") && invoke.contains("--project") && invoke.contains("--sha"), "{invoke}");
}
