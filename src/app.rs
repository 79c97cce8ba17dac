//! Builds the shared clients and the router once, then runs it: under Lambda or as a local
//! HTTP server (`invoke` runs it on event files, [`crate::cli::invoke`]). This is where the
//! configuration chooses implementations — the HTTP GitLab or, for a dry run, the in-memory
//! one; the spool's store; the tools' APIs or none — and nowhere else.

use axum::Router;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::Config;
use crate::gitlab::GitLab;
use crate::gitlab::http::HttpGitLab;
use crate::gitlab::memory::MemoryGitLab;
use crate::http::router;
use crate::lifecycle::Lifecycle;
use crate::pipeline::Pipeline;
use crate::pipeline::admit::{Gate, ReplayPolicy, Unbound};
use crate::pipeline::deliver::Deliverer;
use crate::pipeline::normalize::ToolApis;
use crate::replay::Replays;
use crate::secrets::{SecretProvider, SecretsManager, StaticSecrets, Unconfigured};
use crate::spool::claims::{Claims, DiskClaims, MemoryClaims};
use crate::spool::{self, Spool};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The router and the pipeline behind it (the spool's consumers deliver through the pipeline).
pub struct App {
    pub router: Router,
    pub pipeline: Arc<Pipeline>,
}

/// The AWS SDK's configuration, loaded once when something needs AWS (the secret, the spool
/// queue); the clients built from it share its credentials and send through `http`, the
/// process's one HTTP client.
pub async fn aws_config(config: &Config, http: &reqwest::Client) -> Option<aws_config::SdkConfig> {
    if config.secret_id.is_none() && config.spool.queue_url.is_none() && config.spool.dlq_url.is_none() {
        return None;
    }
    // The connect timeout is `http`'s own (GITLAB_CONNECT_TIMEOUT_MS, for every host it calls).
    let timeouts =
        aws_config::timeout::TimeoutConfig::builder().operation_timeout(std::time::Duration::from_secs(10)).build();
    Some(
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(crate::transport::SdkHttpClient::shared(http))
            .timeout_config(timeouts)
            .load()
            .await,
    )
}

/// The SQS spool, when `SPOOL_QUEUE_URL` names one (Lambda; template.yaml sets it).
pub fn sqs_spool(config: &Config, sdk: Option<&aws_config::SdkConfig>) -> Option<Arc<spool::sqs::SqsSpool>> {
    let (url, sdk) = (config.spool.queue_url.clone()?, sdk?);
    let client = aws_sdk_sqs::Client::new(sdk);
    Some(Arc::new(spool::sqs::SqsSpool::new(client, url, config.spool.dlq_url.clone(), config.spool.max_entries)))
}

/// Chooses where secrets come from: Secrets Manager when `SECRET_ID` is set; otherwise
/// environment variables (`GITLAB_TOKEN`, `<SOURCE>_WEBHOOK_SECRET`: local runs and
/// `cargo lambda watch`); in Lambda with neither, a provider that fails every request saying why.
pub async fn secret_provider(
    config: &Config,
    in_lambda: bool,
    sdk: Option<&aws_config::SdkConfig>,
) -> Arc<dyn SecretProvider> {
    match (&config.secret_id, sdk) {
        (Some(id), Some(sdk)) => {
            let client = aws_sdk_secretsmanager::Client::new(sdk);
            Arc::new(
                SecretsManager::new(client, id.clone(), config.secret_ttl).with_stale_limit(config.secret_stale_max),
            )
        }
        _ => {
            let env = StaticSecrets::from_env_vars(std::env::vars(), &crate::sources::declared_secret_keys());
            if in_lambda && env.is_empty() {
                Arc::new(Unconfigured(
                    "SECRET_ID is not set; point it at a Secrets Manager secret holding {\"gitlab_token\": ..., \"<source>_webhook_secret\": ...}".into(),
                ))
            } else {
                Arc::new(env)
            }
        }
    }
}

/// The router with its state, from a configuration and a secret provider (no spool: GitLab
/// unavailable past the deadline is a 5xx).
pub fn build(config: Config, secrets: Arc<dyn SecretProvider>) -> Result<Router, BoxError> {
    let http = crate::transport::http_client(config.gitlab.connect_timeout)?;
    assemble(config, secrets, None, http).map(|app| app.router)
}

/// The router and its pipeline, with the spool events wait in when GitLab cannot take them;
/// GitLab and the tools' APIs are called through `http` (the process's one client,
/// [`crate::transport`]). A dry run plans against the in-memory GitLab, spools nothing, calls
/// no tool's API, plans unbound hooks and replays saying a live run would refuse them.
pub fn assemble(
    config: Config,
    secrets: Arc<dyn SecretProvider>,
    spool: Option<Spool>,
    http: reqwest::Client,
) -> Result<App, BoxError> {
    let dry_run = config.dry_run;
    let gitlab: Arc<dyn GitLab> = match dry_run {
        true => Arc::new(MemoryGitLab::default()),
        false => Arc::new(HttpGitLab::new(&config.gitlab, http.clone(), secrets.clone())),
    };
    let unbound = match (config.unbound_hooks, dry_run) {
        (true, _) => Unbound::Allow,
        (false, true) => Unbound::Plan,
        (false, false) => Unbound::Refuse,
    };
    let replays = Replays::new(config.replay_windows, config.clock_skew);
    let replay_policy = if dry_run { ReplayPolicy::Note } else { ReplayPolicy::Enforce };
    let gate = Gate::new(config.routes, unbound, replays, replay_policy, secrets, config.tools);
    let apis = match dry_run {
        true => ToolApis::Offline,
        false => ToolApis::Http { client: http, request_timeout: config.gitlab.request_timeout },
    };
    let spool = spool.filter(|_| !dry_run);
    // Claims (a create whose answer never came) on disk with `serve`'s spool, else in memory.
    let claims: Arc<dyn Claims> = match &spool {
        Some(Spool::Local(local, _)) => Arc::new(DiskClaims(local.clone())),
        _ => Arc::new(MemoryClaims::default()),
    };
    let lifecycle = Lifecycle::new(gitlab, config.clock_skew).with_claims(claims, config.create_settle);
    let deliverer = Deliverer::new(lifecycle, spool, config.spool);
    let pipeline = Arc::new(Pipeline::new(gate, config.events, apis, deliverer, config.deadlines));
    Ok(App { router: router(pipeline.clone()), pipeline })
}

/// `serve`'s spool: opened from `SPOOL_DIR` unless `SPOOL_MODE=off` or in a dry run (which
/// writes nothing). The worker waits on the returned `Notify`.
pub fn local_spool(config: &Config) -> Result<Option<spool::LocalHandle>, BoxError> {
    if config.dry_run || config.spool.mode == crate::config::SpoolMode::Off {
        return Ok(None);
    }
    let dir = &config.spool.dir;
    let local = spool::local::LocalSpool::open_for_worker(dir).map_err(|e| {
        format!(
            "the spool in {} cannot be opened (is another `serve` using it? set SPOOL_DIR, or SPOOL_MODE=off): {e}",
            dir.display()
        )
    })?;
    let limits = spool::local::Limits { entries: config.spool.max_entries, bytes: config.spool.max_bytes };
    let local = local.with_limits(limits);
    Ok(Some((Arc::new(local), Arc::new(tokio::sync::Notify::new()))))
}

/// A GitLab client that really calls GitLab (for `check`, whatever `DRY_RUN` says).
pub fn gitlab_client(config: &Config, secrets: Arc<dyn SecretProvider>, http: reqwest::Client) -> HttpGitLab {
    HttpGitLab::new(&config.gitlab, http, secrets)
}

/// Runs under the Lambda Runtime API, configured by the environment. A configuration that
/// cannot be read keeps the function running: every webhook gets 500 saying why.
pub async fn lambda() -> Result<(), BoxError> {
    let (router, consumer) = match lambda_app().await {
        Ok((app, queue)) => {
            Box::pin(warm_up(&app, WARM_UP_BUDGET)).await;
            (app.router, queue.map(|q| (app.pipeline, q)))
        }
        Err(e) => {
            tracing::error!(error = %e, "configuration is invalid; every webhook will get 500 until it is fixed");
            (crate::http::misconfigured_router(e.to_string()), None)
        }
    };
    Box::pin(run_lambda(router, consumer)).await
}

/// The function's app from the environment, and the spool queue its SQS batches come from.
async fn lambda_app() -> Result<(App, Option<Arc<spool::sqs::SqsSpool>>), BoxError> {
    let config = Config::from_env()?;
    let http = crate::transport::http_client(config.gitlab.connect_timeout)?;
    let sdk = Box::pin(aws_config(&config, &http)).await;
    let secrets = secret_provider(&config, true, sdk.as_ref()).await;
    let queue = sqs_spool(&config, sdk.as_ref()).filter(|_| config.spool.mode != crate::config::SpoolMode::Off);
    let app = assemble(config, secrets, queue.clone().map(spool::Spool::Sqs), http)?;
    Ok((app, queue))
}

/// How long Lambda init may spend warming up ([`warm_up`]). Init has 10 s; a GitLab or Secrets
/// Manager slower than this is left to the first webhook, as without a warm-up.
pub const WARM_UP_BUDGET: std::time::Duration = std::time::Duration::from_secs(2);

/// Lambda init's warm-up: the secret read and GitLab's connection opened before the first
/// event arrives, so that the first webhook costs what every later one costs. Bounded by
/// `budget`; never fails (whatever did not happen, the first webhook does, as before).
pub async fn warm_up(app: &App, budget: std::time::Duration) {
    let started = std::time::Instant::now();
    match tokio::time::timeout(budget, app.pipeline.warm_up()).await {
        Ok(done) => tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            secret = done.secret.as_deref().unwrap_or("ready"),
            gitlab = done.gitlab.as_deref().unwrap_or("connected"),
            "warm-up"
        ),
        Err(_) => tracing::warn!(
            budget_ms = budget.as_millis() as u64,
            "warm-up did not finish in time; the first webhook completes it"
        ),
    }
}

/// Serves function-URL events through the router and, when the spool queue is configured,
/// its SQS batches through the pipeline.
pub async fn run_lambda(
    router: Router,
    consumer: Option<(Arc<Pipeline>, Arc<spool::sqs::SqsSpool>)>,
) -> Result<(), BoxError> {
    crate::lambda::run(router, consumer).await
}

/// Serves `app` over HTTP/1.1 on `listen` until Ctrl-C, within `settings` ([`crate::server`]);
/// the local spool's worker, if there is a spool, runs beside it.
pub async fn serve(
    app: App,
    spool: Option<spool::LocalHandle>,
    listen: SocketAddr,
    settings: crate::config::ServeSettings,
) -> Result<(), BoxError> {
    crate::server::fit_descriptor_limit(&settings);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(address = %listener.local_addr()?, spool = spool.as_ref().map(|_| "local").unwrap_or("off"), "listening");
    let (stop, _) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let worker = spool.map(|(local, wake)| {
        tokio::spawn(crate::drain::run_local(app.pipeline.clone(), local, wake, stopped(stop.subscribe())))
    });
    let server = crate::server::serve_on(listener, app.router, settings, stopped(stop.subscribe()));
    let signal = async {
        let _ = tokio::signal::ctrl_c().await;
        let _ = stop.send(true);
    };
    tokio::join!(server, signal);
    if let Some(worker) = worker {
        let _ = worker.await;
    }
    Ok(())
}
