use clap::{Parser, Subcommand};
use gitlab_deploy_bridge::{app, cli, config::Config, http, spool, telemetry};
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
    /// See and operate the spool: `serve`'s local one (SPOOL_DIR), or with SPOOL_QUEUE_URL and
    /// SPOOL_DLQ_URL set, the Lambda spool's dead-letter queue.
    Spool {
        #[command(subcommand)]
        action: cli::SpoolAction,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let in_lambda = std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some();
    telemetry::init(in_lambda);
    let result = if in_lambda { Box::pin(lambda()).await } else { Box::pin(local(Cli::parse())).await };
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
            let sdk = Box::pin(app::aws_config(&config)).await;
            let secrets = app::secret_provider(&config, true, sdk.as_ref()).await;
            let queue = app::sqs_spool(&config, sdk.as_ref()).filter(|_| config.spool.mode != spool::Mode::Off);
            app::assemble(config, secrets, queue.clone().map(spool::Spool::Sqs)).map(|app| (app, queue))
        }
        Err(e) => Err(e.into()),
    };
    let (router, consumer) = match built {
        Ok((app, queue)) => (app.router, queue.map(|q| (app.pipeline, q))),
        Err(e) => {
            tracing::error!(error = %e, "configuration is invalid; every webhook will get 500 until it is fixed");
            (http::misconfigured_router(e.to_string()), None)
        }
    };
    Box::pin(app::run_lambda(router, consumer)).await?;
    Ok(ExitCode::SUCCESS)
}

async fn local(cli: Cli) -> Result<ExitCode, app::BoxError> {
    let mut config = Config::from_env()?;
    config.dry_run |= cli.dry_run;
    let sdk = Box::pin(app::aws_config(&config)).await;
    let secrets = app::secret_provider(&config, false, sdk.as_ref()).await;
    let (header_timeout, max_connections) = (config.serve_header_timeout, config.serve_max_connections);
    match cli.command {
        Command::Serve { listen } => {
            let local = app::local_spool(&config)?;
            let app = app::assemble(config, secrets, local.clone().map(|(s, wake)| spool::Spool::Local(s, wake)))?;
            Box::pin(app::serve(app, local, listen, header_timeout, max_connections)).await.map(|_| ExitCode::SUCCESS)
        }
        Command::Invoke { events } => {
            let ok = app::invoke(app::build(config, secrets)?, &events).await?;
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Spool { action } => Box::pin(cli::spool(&config, sdk.as_ref(), action)).await,
    }
}
