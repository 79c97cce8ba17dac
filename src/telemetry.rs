//! Logging: JSON lines in Lambda (or with `LOG_FORMAT=json`), compact text elsewhere.
//! Level from `AWS_LAMBDA_LOG_LEVEL`, then `RUST_LOG`, then `info`. The HTTP and AWS client
//! crates are held at `warn` whatever the level, so no request or secret dump can reach the log.

use tracing_subscriber::EnvFilter;

const QUIET_DEPENDENCIES: &[&str] = &[
    "hyper=warn",
    "hyper_util=warn",
    "h2=warn",
    "rustls=warn",
    "reqwest=warn",
    "aws_smithy_runtime=warn",
    "aws_smithy_http=warn",
    "aws_smithy_runtime_api=warn",
    "aws_config=warn",
    "aws_sdk_secretsmanager=warn",
    "lambda_runtime=warn",
    "lambda_http=warn",
];

pub fn filter() -> EnvFilter {
    let base = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .or_else(|_| std::env::var("RUST_LOG"))
        .map(|v| v.to_ascii_lowercase())
        .unwrap_or_else(|_| "info".into());
    let directives =
        std::iter::once(base.as_str()).chain(QUIET_DEPENDENCIES.iter().copied()).collect::<Vec<_>>().join(",");
    EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new("info"))
}

pub fn init(in_lambda: bool) {
    let json = in_lambda || std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter()).with_writer(std::io::stderr).with_target(false);
    // A subscriber that is already installed (tests, embedding) is kept: nothing to do then.
    if json {
        // CloudWatch stamps each line; Logs Insights discovers the flattened fields.
        let _ = builder.json().flatten_event(true).with_current_span(false).without_time().try_init();
    } else {
        let _ = builder.compact().with_ansi(false).try_init();
    }
}
