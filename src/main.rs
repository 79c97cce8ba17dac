use clap::{Parser, Subcommand};
use gitlab_deploy_bridge::{app, config::Config, http, telemetry};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// Relays deploy tools' webhooks to GitLab's Deployments API. Under AWS Lambda
/// (AWS_LAMBDA_RUNTIME_API set) it serves function-URL events and ignores arguments.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Plan every GitLab call but send none (also DRY_RUN=1).
    #[arg(long, global = true)]
    dry_run: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the webhook routes over plain HTTP.
    Serve {
        #[arg(long, default_value = "127.0.0.1:3000")]
        listen: SocketAddr,
    },
    /// Run Lambda function-URL event files (events/*.json) through the handler.
    Invoke {
        #[arg(required = true)]
        events: Vec<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let in_lambda = std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some();
    telemetry::init(in_lambda);
    let result = if in_lambda { lambda().await } else { local(Cli::parse()).await };
    match result {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = %e, "gitlab-deploy-bridge stopped");
            ExitCode::FAILURE
        }
    }
}

async fn lambda() -> Result<ExitCode, app::BoxError> {
    let built = match Config::from_env() {
        Ok(config) => {
            let secrets = app::secret_provider(&config, true).await;
            app::build(config, secrets)
        }
        Err(e) => Err(e.into()),
    };
    let router = match built {
        Ok(router) => router,
        Err(e) => {
            tracing::error!(error = %e, "configuration is invalid; every webhook will get 500 until it is fixed");
            http::misconfigured_router(e.to_string())
        }
    };
    app::run_lambda(router).await?;
    Ok(ExitCode::SUCCESS)
}

async fn local(cli: Cli) -> Result<ExitCode, app::BoxError> {
    let mut config = Config::from_env()?;
    config.dry_run |= cli.dry_run;
    let secrets = app::secret_provider(&config, false).await;
    let (header_timeout, max_connections) = (config.serve_header_timeout, config.serve_max_connections);
    let router = app::build(config, secrets)?;
    match cli.command {
        Command::Serve { listen } => app::serve(router, listen, header_timeout, max_connections).await.map(|_| ExitCode::SUCCESS),
        Command::Invoke { events } => {
            let ok = app::invoke(router, &events).await?;
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}
