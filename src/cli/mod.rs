//! The operator's commands: [`invoke`] (event files through the router), [`check`] (the
//! configuration against the real GitLab), and `spool list|replay|drop` — `serve`'s local spool
//! (`SPOOL_DIR`; it works beside a running `serve`), or, with `SPOOL_DLQ_URL` set, the dead
//! letters of the Lambda spool (the stack's outputs `SpoolQueueUrl` and `SpoolDeadLetterQueueUrl`
//! as `SPOOL_QUEUE_URL` and `SPOOL_DLQ_URL`). Every line the spool command prints is one JSON object.

pub mod check;
pub mod invoke;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use serde_json::json;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use crate::app::{self, BoxError};
use crate::config::Config;
use crate::drain;
use crate::spool::local::{LocalSpool, Replayed, Stored};
use crate::spool::sqs::{DeadLetter, SqsSpool};
use crate::spool::{Spool, Spooled};
use crate::transport;

/// How long `spool` holds the dead letters it reads before giving the rest back.
const HOLD: Duration = Duration::from_secs(60);

/// Relays deploy tools' webhooks to GitLab's Deployments API. Under AWS Lambda
/// (AWS_LAMBDA_RUNTIME_API set) it serves function-URL events and ignores arguments.
#[derive(Parser)]
#[command(version)]
pub struct Cli {
    /// Plan every GitLab call but send none (also DRY_RUN=1).
    #[arg(long, global = true)]
    pub dry_run: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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
        action: SpoolAction,
    },
}

/// The command line; `--help` ends with the tools and the settings a first run needs
/// ([`crate::config::help_text`]).
pub fn arguments() -> Cli {
    let matches = Cli::command().after_help(crate::config::help_text()).get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// Runs the command line's command (outside Lambda).
pub async fn run(cli: Cli) -> Result<ExitCode, BoxError> {
    let mut config = match Config::from_env() {
        Ok(config) => config,
        // `check` names a configuration the bridge would refuse to start with as its first failed check.
        Err(e) => match cli.command {
            Command::Check { json, .. } => return print_checks(&[check::configuration_refused(&e)], json),
            _ => return Err(e.into()),
        },
    };
    config.dry_run |= cli.dry_run;
    let http = transport::http_client(config.gitlab.connect_timeout)?;
    let sdk = Box::pin(app::aws_config(&config, &http)).await;
    let secrets = app::secret_provider(&config, false, sdk.as_ref()).await;
    let serve_settings = config.serve.clone();
    match cli.command {
        Command::Serve { listen } => {
            let local = app::local_spool(&config)?;
            let app = app::assemble(config, secrets, local.clone().map(|(s, wake)| Spool::Local(s, wake)), http)?;
            Box::pin(app::serve(app, local, listen, serve_settings)).await.map(|_| ExitCode::SUCCESS)
        }
        Command::Invoke { events, project, sha, environment } => {
            let app = app::assemble(config, secrets, None, http)?;
            let retarget = invoke::Retarget { project, sha, environment };
            let ok = invoke::invoke_retargeted(app.router.clone(), &events, &retarget).await?;
            if let Some(planned) = app.pipeline.planned() {
                println!("{}", serde_json::json!({ "planned": planned }));
            }
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Check { projects, json } => Box::pin(run_check(&config, secrets, http, &projects, json)).await,
        Command::Spool { action } => Box::pin(spool(&config, sdk.as_ref(), action)).await,
    }
}

#[derive(clap::Subcommand)]
pub enum SpoolAction {
    /// Print each spooled event as a JSON line: pending ones and dead letters (local), or the
    /// Lambda spool's dead letters.
    List,
    /// Deliver a dead letter again, behind its environment's waiting events (`--all`: every one).
    Replay {
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        #[arg(long)]
        all: bool,
    },
    /// Delete a spooled event for good.
    Drop { id: String },
}

/// `check`: every check on its line (or a JSON array with `--json`); fails if any check fails.
pub async fn run_check(
    config: &Config,
    secrets: Arc<dyn crate::secrets::SecretProvider>,
    http: reqwest::Client,
    projects: &[String],
    as_json: bool,
) -> Result<ExitCode, BoxError> {
    let gitlab = app::gitlab_client(config, secrets.clone(), http);
    let lines = check::run(config, secrets, &gitlab, projects).await;
    print_checks(&lines, as_json)
}

/// Prints `check`'s lines (a JSON array with `--json`); fails if any check failed.
fn print_checks(lines: &[check::Line], as_json: bool) -> Result<ExitCode, BoxError> {
    if as_json {
        println!("{}", serde_json::to_string_pretty(lines)?);
    } else {
        for line in lines {
            println!("{}", line.text());
        }
    }
    let failed = lines.iter().any(|l| l.verdict == check::Verdict::Failed);
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

pub async fn spool(
    config: &Config,
    sdk: Option<&aws_config::SdkConfig>,
    action: SpoolAction,
) -> Result<ExitCode, BoxError> {
    if config.spool.dlq_url.is_some() {
        let queue = app::sqs_spool(config, sdk)
            .ok_or("set SPOOL_QUEUE_URL (the stack's output SpoolQueueUrl) as well as SPOOL_DLQ_URL")?;
        return dead_letters(&queue, action).await;
    }
    let dir = config.spool.dir.clone();
    if !dir.join("spool.redb").exists() {
        return Err(format!(
            "no spool in {} (set SPOOL_DIR to `serve`'s, or SPOOL_DLQ_URL for the Lambda spool)",
            dir.display()
        )
        .into());
    }
    let local = Arc::new(LocalSpool::open(&dir)?);
    tokio::task::spawn_blocking(move || local_action(&local, action)).await?
}

fn local_action(spool: &LocalSpool, action: SpoolAction) -> Result<ExitCode, BoxError> {
    match action {
        SpoolAction::List => {
            spool.for_each(|stored| println!("{}", drain::describe_local(&stored)))?;
        }
        SpoolAction::Replay { id, all } => {
            let ids: Vec<u64> = match (id, all) {
                // Every dead letter that can be delivered (an unreadable one cannot).
                (_, true) => {
                    let mut dead = Vec::new();
                    spool.for_each(|stored| {
                        if let Stored::Entry(e) = stored
                            && e.dead
                        {
                            dead.push(e.id);
                        }
                    })?;
                    dead
                }
                (Some(id), false) => vec![local_id(&id)?],
                (None, false) => Vec::new(),
            };
            for id in ids {
                match spool.replay(id)? {
                    Replayed::Replayed => println!("{}", json!({ "replayed": id.to_string() })),
                    Replayed::NoSuchEntry => return Err(format!("the spool has no entry {id}").into()),
                    Replayed::Unreadable => {
                        return Err(format!(
                            "entry {id} cannot be read (its bytes are not an event): there is nothing to deliver; `spool drop {id}` removes it"
                        )
                        .into());
                    }
                }
            }
        }
        SpoolAction::Drop { id } => {
            let id = local_id(&id)?;
            if !spool.drop_entry(id)? {
                return Err(format!("the spool has no entry {id}").into());
            }
            println!("{}", json!({ "dropped": id.to_string() }));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn local_id(id: &str) -> Result<u64, BoxError> {
    id.parse().map_err(|_| format!("{id:?} is not an entry id of the local spool (see `spool list`)").into())
}

async fn dead_letters(queue: &SqsSpool, action: SpoolAction) -> Result<ExitCode, BoxError> {
    let letters = queue.dead_letters(HOLD).await?;
    let chosen = |letter: &DeadLetter| match &action {
        SpoolAction::List => false,
        SpoolAction::Replay { all: true, .. } => true,
        SpoolAction::Replay { id, .. } => id.as_deref() == Some(letter.message_id.as_str()),
        SpoolAction::Drop { id } => *id == letter.message_id,
    };
    let (chosen, rest): (Vec<DeadLetter>, Vec<DeadLetter>) = letters.into_iter().partition(chosen);
    let result = async {
        if let SpoolAction::List = action {
            for letter in &rest {
                println!("{}", describe_dead(letter));
            }
            return Ok(ExitCode::SUCCESS);
        }
        if chosen.is_empty() {
            return Err::<ExitCode, BoxError>("the dead-letter queue has no such message (see `spool list`)".into());
        }
        for letter in &chosen {
            if let SpoolAction::Replay { .. } = action {
                queue.requeue(letter).await?;
                queue.delete_dead(letter).await?;
                println!("{}", json!({ "replayed": letter.message_id }));
            } else {
                queue.delete_dead(letter).await?;
                println!("{}", json!({ "dropped": letter.message_id }));
            }
        }
        Ok(ExitCode::SUCCESS)
    }
    .await;
    queue.release(&rest).await?;
    result
}

fn describe_dead(letter: &DeadLetter) -> serde_json::Value {
    let item = Spooled::decode_str(&letter.body).ok();
    json!({
        "id": letter.message_id,
        "state": "dead",
        "attempts": letter.attempts.as_deref().and_then(|a| a.parse::<u64>().ok()),
        "last_error": letter.reason,
        "dead_since": letter.sent_ms.and_then(|ms| time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000).ok()).map(crate::model::format_time),
        "event": item.as_ref().map(Spooled::summary),
    })
}
