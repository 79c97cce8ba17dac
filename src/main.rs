use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use gitlab_deploy_bridge::{app, cli, config, config::Config, http, spool, telemetry, transport};
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
        /// Address and port to listen on (0.0.0.0:3000 to be reachable from other hosts).
        #[arg(long, default_value = "127.0.0.1:3000")]
        listen: SocketAddr,
    },
    /// Run Lambda function-URL event files (events/*.json) through the handler.
    Invoke {
        /// Function-URL (HTTP API v2) event files, run in the order given; a dry run plans them
        /// in that order against one in-memory GitLab and ends with what it planned.
        #[arg(required = true)]
        events: Vec<PathBuf>,
        /// Send every event to this project (numeric id or full path) instead of its own.
        #[arg(long)]
        project: Option<String>,
        /// Use this commit in the events whose body is not signed (generic, the facade, Argo CD).
        #[arg(long)]
        sha: Option<String>,
        /// Send every event to this environment (e.g. a test one, before production).
        #[arg(long)]
        environment: Option<String>,
    },
    /// Check the configuration against the real GitLab (and the secret) before pointing a tool
    /// at it: the token, its scope and expiry, each project and the token's role there, the
    /// environments of ENVIRONMENTS, the secret's keys against ROUTES. Exits non-zero if any fails.
    Check {
        /// A project to check besides the routes' own (numeric id or full path; repeatable).
        #[arg(long = "project")]
        projects: Vec<String>,
        /// Print the checks as a JSON array.
        #[arg(long)]
        json: bool,
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
    let result = if in_lambda { Box::pin(lambda()).await } else { Box::pin(local(arguments())).await };
    match result {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = %e, "gitlab-deploy-bridge stopped");
            ExitCode::FAILURE
        }
    }
}

/// The command line; `--help` ends with the settings a first run needs ([`config::help_text`]).
fn arguments() -> Cli {
    let matches = Cli::command().after_help(config::help_text()).get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

async fn lambda() -> Result<ExitCode, app::BoxError> {
    let built = match Config::from_env() {
        Ok(config) => match transport::http_client(config.gitlab.connect_timeout) {
            Ok(http) => {
                let sdk = Box::pin(app::aws_config(&config, &http)).await;
                let secrets = app::secret_provider(&config, true, sdk.as_ref()).await;
                let queue = app::sqs_spool(&config, sdk.as_ref())
                    .filter(|_| config.spool.mode != gitlab_deploy_bridge::config::SpoolMode::Off);
                app::assemble(config, secrets, queue.clone().map(spool::Spool::Sqs), http).map(|app| (app, queue))
            }
            Err(e) => Err(e),
        },
        Err(e) => Err(e.into()),
    };
    let (router, consumer) = match built {
        Ok((app, queue)) => {
            Box::pin(app::warm_up(&app, app::WARM_UP_BUDGET)).await;
            (app.router, queue.map(|q| (app.pipeline, q)))
        }
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
    let http = transport::http_client(config.gitlab.connect_timeout)?;
    let sdk = Box::pin(app::aws_config(&config, &http)).await;
    let secrets = app::secret_provider(&config, false, sdk.as_ref()).await;
    let (header_timeout, max_connections) = (config.serve.header_timeout, config.serve.max_connections);
    match cli.command {
        Command::Serve { listen } => {
            let local = app::local_spool(&config)?;
            let app =
                app::assemble(config, secrets, local.clone().map(|(s, wake)| spool::Spool::Local(s, wake)), http)?;
            Box::pin(app::serve(app, local, listen, header_timeout, max_connections)).await.map(|_| ExitCode::SUCCESS)
        }
        Command::Invoke { events, project, sha, environment } => {
            let app = app::assemble(config, secrets, None, http)?;
            let retarget = cli::invoke::Retarget { project, sha, environment };
            let ok = cli::invoke::invoke_retargeted(app.router.clone(), &events, &retarget).await?;
            if let Some(planned) = app.pipeline.planned() {
                println!("{}", serde_json::json!({ "planned": planned }));
            }
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Check { projects, json } => Box::pin(cli::check(&config, secrets, http, &projects, json)).await,
        Command::Spool { action } => Box::pin(cli::spool(&config, sdk.as_ref(), action)).await,
    }
}
