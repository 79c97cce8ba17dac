use gitlab_deploy_bridge::{app, cli, telemetry};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let in_lambda = std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some();
    telemetry::init(in_lambda);
    let result = match in_lambda {
        true => Box::pin(app::lambda()).await.map(|()| ExitCode::SUCCESS),
        false => Box::pin(cli::run(cli::arguments())).await,
    };
    result.unwrap_or_else(|e| {
        tracing::error!(error = %e, "gitlab-deploy-bridge stopped");
        ExitCode::FAILURE
    })
}
