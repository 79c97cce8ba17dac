//! Configuration: read once from the environment into typed sections. Every variable the
//! bridge reads is in [`SETTINGS`] (with its default and meaning) or in a tool's own
//! [`Spec`](crate::sources::Spec); the reference table of the docs and `--help` are generated
//! from them ([`reference_table`], [`help_text`]), and a test holds the parser to the table.

use std::collections::HashMap;
use std::time::Duration;

use crate::event::{Defaults, EnvironmentSettings};
use crate::routes::Routes;
use crate::sources::{self, ToolSettings};

pub use crate::gitlab::http::Settings as GitLabSettings;

/// The largest webhook body accepted (1 MiB); larger ones get 413.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// One environment variable, as the docs and `--help` describe it.
#[derive(Debug)]
pub struct SettingDoc {
    pub var: &'static str,
    /// `—` when there is none.
    pub default: &'static str,
    pub doc: &'static str,
    /// Listed in `--help` (the few a first run needs).
    pub in_help: bool,
}

const fn setting(var: &'static str, default: &'static str, doc: &'static str) -> SettingDoc {
    SettingDoc { var, default, doc, in_help: false }
}

const fn help(var: &'static str, default: &'static str, doc: &'static str) -> SettingDoc {
    SettingDoc { var, default, doc, in_help: true }
}

/// Every variable of the bridge's own (each tool's are in its spec). Parsed by
/// [`Config::from_lookup`], except those marked "(read by ...)".
pub static SETTINGS: &[SettingDoc] = &[
    help(
        "GITLAB_URL",
        "`https://gitlab.com`",
        "your GitLab, self-managed works the same (a trailing `/api/v4` is accepted)",
    ),
    setting(
        "SSL_CERT_FILE",
        "the system's roots",
        "(read by the HTTP client) a PEM bundle of root certificates to trust instead, e.g. with a self-managed GitLab's private CA added; `SSL_CERT_DIR` names a directory of them; read once at start, for GitLab and AWS alike",
    ),
    help(
        "SECRET_ID",
        "—",
        "a Secrets Manager secret (name or ARN) with `gitlab_token` and `route_<route>_secret` keys (Lambda). Without it the secrets are environment variables (below); in Lambda with neither, every webhook gets 500 saying so",
    ),
    setting("SECRET_CACHE_TTL_SECONDS", "`300`", "how long the secret is trusted before it is read again"),
    setting(
        "SECRET_STALE_MAX_SECONDS",
        "`3600`",
        "while Secrets Manager is unavailable, how long past its TTL the secret read last keeps serving (with a warning); `0`: never",
    ),
    help(
        "GITLAB_TOKEN",
        "—",
        "(read as a secret) without `SECRET_ID` (local runs, `cargo lambda watch`): the GitLab token",
    ),
    help(
        "ROUTE_<NAME>_SECRET",
        "—",
        "(read as a secret) without `SECRET_ID`: route `<name>`'s secret (`-` in the name becomes `_`)",
    ),
    setting(
        "<SOURCE>_WEBHOOK_SECRET",
        "—",
        "(read as a secret) without `SECRET_ID`, for unbound hooks (`UNBOUND_HOOKS=allow`, dry runs): e.g. `GENERIC_WEBHOOK_SECRET`",
    ),
    help("ROUTES", "`{}`", "what each route's secret may touch, JSON (README \"Routes\")"),
    setting(
        "UNBOUND_HOOKS",
        "`refuse`",
        "`allow` serves `/hooks/{source}` and `/api/v4/...` without a route (the query chooses project, environment and tier; the migration path, see \"Routes\")",
    ),
    setting("DEFAULT_REF", "`main`", "ref sent when neither query, `ENVIRONMENTS` nor payload names a usable branch"),
    setting(
        "ENVIRONMENTS",
        "`{}`",
        "per-environment settings, JSON: `{\"eu-west-1\": {\"tier\": \"production\", \"ref\": \"main\"}}`",
    ),
    help("DRY_RUN", "`0`", "`1`: plan every GitLab call, send none (same as `--dry-run`)"),
    setting("REQUEST_DEADLINE_SECONDS", "`25`", "time budget per webhook outside Lambda"),
    setting(
        "REPLAY_WINDOWS",
        "per source",
        "JSON object of seconds overriding each source's replay window (`{\"flux\": 1800}`); `0` turns a source's replay defence off, `\"*\"` sets every source (see \"HTTP interface\")",
    ),
    setting(
        "SERVE_HEADER_TIMEOUT_SECONDS",
        "`10`",
        "`serve`: how long a request's headers, or a kept-alive connection's next request, may take",
    ),
    setting(
        "SERVE_MAX_CONNECTIONS",
        "`256`",
        "`serve`: connections served at once (one request at a time each); more are closed at once",
    ),
    setting(
        "SERVE_MAX_CONNECTIONS_PER_PEER",
        "a quarter of `SERVE_MAX_CONNECTIONS`",
        "`serve`: connections served at once from one address, so one client cannot take them all; behind a reverse proxy (every call from its address) set it to `SERVE_MAX_CONNECTIONS`",
    ),
    setting(
        "BODY_TIMEOUT_SECONDS",
        "`10`",
        "how long a request's body may take to arrive (a call without the source's credential header is refused before its body is read)",
    ),
    setting("DEADLINE_MARGIN_MS", "`1000`", "kept free before Lambda's deadline to answer"),
    setting(
        "GITLAB_CONNECT_TIMEOUT_MS",
        "`3000`",
        "connect timeout (it holds for Secrets Manager, SQS and the tools' APIs too: one HTTP client)",
    ),
    setting("GITLAB_REQUEST_TIMEOUT_MS", "`10000`", "timeout of one GitLab request"),
    setting("GITLAB_MAX_ATTEMPTS", "`5`", "attempts per GitLab call"),
    setting("GITLAB_RETRY_BASE_MS", "`250`", "first backoff step (it doubles per attempt, with jitter)"),
    setting("GITLAB_RETRY_MAX_MS", "`5000`", "the backoff step's cap"),
    setting(
        "GITLAB_CREATE_SETTLE_SECONDS",
        "`150`",
        "how long after a create whose answer never came GitLab may still commit it (its request timeout after its queue's); until GitLab shows it or this has passed, nothing else is created in that environment",
    ),
    setting(
        "GITLAB_MAX_ANSWER_BYTES",
        "`4194304`",
        "the largest GitLab answer read (4 MiB); a larger one is an error naming this cap, dropped unread (a tool's own API gets 1 MiB)",
    ),
    setting(
        "SPOOL_MODE",
        "`on-failure`",
        "`on-failure`: spool when GitLab cannot take the event now; `always`: every event through the spool; `off`: no spool (5xx, the tool redelivers)",
    ),
    setting("SPOOL_AFTER_SECONDS", "`5`", "how long a webhook waits for GitLab before its event is spooled"),
    help("SPOOL_DIR", "`spool`", "`serve`: the local spool's directory (README \"Spool\")"),
    setting(
        "SPOOL_QUEUE_URL",
        "—",
        "Lambda: the spool's FIFO queue (template.yaml sets it); for the `spool` command, the Lambda spool's",
    ),
    setting(
        "SPOOL_DLQ_URL",
        "—",
        "Lambda: the spool's dead-letter queue (template.yaml sets it); for the `spool` command too",
    ),
    setting("SPOOL_MAX_AGE_HOURS", "`72`", "how long a spooled event is retried before it becomes a dead letter"),
    setting(
        "SPOOL_MAX_ENTRIES",
        "`10000`",
        "the most events the spool holds (locally dead letters included; under Lambda, the queue's messages); beyond, an event is refused with 503 naming this bound",
    ),
    setting(
        "SPOOL_MAX_BYTES",
        "`67108864`",
        "`serve`: the most bytes the local spool's entries take (64 MiB); beyond, an event is refused with 503 naming this bound",
    ),
    setting("SPOOL_RETRY_MAX_SECONDS", "`300`", "the longest wait between two attempts"),
    setting(
        "CLOCK_SKEW_SECONDS",
        "`30`",
        "how much later than a tool's time of an event GitLab's clock may have recorded the newest deployment before the event counts as older (stale); see \"Lifecycle\"",
    ),
    setting("LOG_FORMAT", "text locally, JSON in Lambda", "(read by the logger) `json` forces JSON lines"),
    setting(
        "RUST_LOG",
        "`info`",
        "(read by the logger) log level, after `AWS_LAMBDA_LOG_LEVEL`; HTTP and AWS client crates stay at `warn`; release builds (the Lambda `bootstrap`) contain no `debug`/`trace` lines, a debug build (`cargo build`) does",
    ),
];

/// When events go to the spool (`SPOOL_MODE`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SpoolMode {
    /// Deliver now within `SPOOL_AFTER_SECONDS`; spool when GitLab is unavailable, and while
    /// the event's group has events waiting (so order holds).
    #[default]
    OnFailure,
    /// Every event goes through the spool; the tool always gets 202.
    Always,
    /// No spool: GitLab unavailable past the deadline is a 5xx, as before issue 11.
    Off,
}

impl SpoolMode {
    pub fn parse(s: &str) -> Option<SpoolMode> {
        match s.trim().to_ascii_lowercase().as_str() {
            "on-failure" | "" => Some(SpoolMode::OnFailure),
            "always" => Some(SpoolMode::Always),
            "off" => Some(SpoolMode::Off),
            _ => None,
        }
    }
}

/// Where and when events wait for GitLab (README "Spool").
#[derive(Clone, Debug, PartialEq)]
pub struct SpoolSettings {
    pub mode: SpoolMode,
    /// How long a webhook may wait for GitLab before its event goes to the spool (Flux gives
    /// the whole exchange 15 s).
    pub after: Duration,
    /// `serve`'s spool directory.
    pub dir: std::path::PathBuf,
    /// Lambda's SQS FIFO queue; set by template.yaml.
    pub queue_url: Option<String>,
    /// Its dead-letter queue.
    pub dlq_url: Option<String>,
    /// How long a spooled event is retried before it becomes a dead letter.
    pub max_age: Duration,
    /// The longest wait between two attempts.
    pub retry_max: Duration,
    /// The most events the spool holds (`SPOOL_MAX_ENTRIES`).
    pub max_entries: u64,
    /// The most bytes the local spool's entries take (`SPOOL_MAX_BYTES`).
    pub max_bytes: u64,
}

impl Default for SpoolSettings {
    fn default() -> Self {
        SpoolSettings {
            mode: SpoolMode::OnFailure,
            after: Duration::from_secs(5),
            dir: "spool".into(),
            queue_url: None,
            dlq_url: None,
            max_age: Duration::from_secs(72 * 3600),
            retry_max: Duration::from_secs(300),
            max_entries: 10_000,
            max_bytes: 64 * 1024 * 1024,
        }
    }
}

/// How long a webhook may take.
#[derive(Clone, Debug, PartialEq)]
pub struct Deadlines {
    /// One webhook's budget when no Lambda deadline is known (`REQUEST_DEADLINE_SECONDS`).
    pub local: Duration,
    /// How long a request's body may take to arrive (`BODY_TIMEOUT_SECONDS`).
    pub body: Duration,
    /// Kept free before Lambda's own deadline so an answer can still be sent (`DEADLINE_MARGIN_MS`).
    pub margin: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines { local: Duration::from_secs(25), body: Duration::from_secs(10), margin: Duration::from_millis(1000) }
    }
}

/// `serve`'s limits as a server on a network.
#[derive(Clone, Debug, PartialEq)]
pub struct ServeSettings {
    /// How long a request's headers (and a kept-alive connection's next request) may take.
    pub header_timeout: Duration,
    /// Connections served at once (one request at a time per connection, HTTP/1.1).
    pub max_connections: usize,
    /// Connections served at once from one peer address.
    pub max_connections_per_peer: usize,
}

impl Default for ServeSettings {
    fn default() -> Self {
        ServeSettings { header_timeout: Duration::from_secs(10), max_connections: 256, max_connections_per_peer: 64 }
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub gitlab: GitLabSettings,
    /// Secrets Manager secret holding `gitlab_token` and the routes' secrets (`SECRET_ID`).
    pub secret_id: Option<String>,
    /// How long a fetched secret is trusted (`SECRET_CACHE_TTL_SECONDS`).
    pub secret_ttl: Duration,
    /// How long past its TTL it serves while Secrets Manager is unavailable (`SECRET_STALE_MAX_SECONDS`).
    pub secret_stale_max: Duration,
    /// Plan everything, send nothing to GitLab (`DRY_RUN`). Read once, when the bridge is
    /// assembled: it chooses the in-memory GitLab.
    pub dry_run: bool,
    pub deadlines: Deadlines,
    pub serve: ServeSettings,
    /// Replay windows in seconds by source, overriding each source's own (`REPLAY_WINDOWS`).
    pub replay_windows: HashMap<String, u64>,
    /// How long after it was sent GitLab may still commit a create (`GITLAB_CREATE_SETTLE_SECONDS`).
    pub create_settle: Duration,
    /// How much later than a tool's own time of an event GitLab's clock may record it before the
    /// event counts as older than what GitLab shows; also how far in the future a signed time may be.
    pub clock_skew: Duration,
    /// What each route's credential may touch (`ROUTES`, see [`crate::routes`]).
    pub routes: Routes,
    /// Whether `/hooks/{source}` without a route is served (`UNBOUND_HOOKS=allow`).
    pub unbound_hooks: bool,
    /// What events that do not say get (`DEFAULT_REF`, `ENVIRONMENTS`).
    pub events: Defaults,
    /// Each tool's own settings, as its spec declares them.
    pub tools: ToolSettings,
    pub spool: SpoolSettings,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            gitlab: GitLabSettings::default(),
            secret_id: None,
            secret_ttl: Duration::from_secs(300),
            secret_stale_max: crate::secrets::STALE_LIMIT,
            dry_run: false,
            deadlines: Deadlines::default(),
            serve: ServeSettings::default(),
            replay_windows: HashMap::new(),
            clock_skew: Duration::from_secs(30),
            create_settle: crate::lifecycle::CREATE_SETTLE,
            routes: Routes::default(),
            unbound_hooks: false,
            events: Defaults::default(),
            tools: ToolSettings::from_lookup(&|_| None).unwrap_or_default(),
            spool: SpoolSettings::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(String);

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads configuration through `get` (the environment, or a map in tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let d = Config::default();
        let get = |k: &str| get(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let num = |k: &str| -> Result<Option<u64>, ConfigError> {
            get(k)
                .map(|v| v.parse::<u64>().map_err(|_| ConfigError(format!("{k} must be a whole number, got {v:?}"))))
                .transpose()
        };
        // Every duration is bounded (a day): a time that large is a mistake, and one near u64::MAX
        // would overflow the clock arithmetic of the request it is added to.
        const MAX_SECONDS: u64 = 86_400;
        let bounded = |k: &str, v: Option<u64>, per_second: u64| -> Result<Option<u64>, ConfigError> {
            match v {
                Some(n) if n > MAX_SECONDS * per_second => {
                    Err(ConfigError(format!("{k} must be at most {} (a day), got {n}", MAX_SECONDS * per_second)))
                }
                other => Ok(other),
            }
        };
        let ms = |k: &str, dflt: Duration| -> Result<Duration, ConfigError> {
            Ok(bounded(k, num(k)?, 1000)?.map(Duration::from_millis).unwrap_or(dflt))
        };
        let secs = |k: &str, dflt: Duration| -> Result<Duration, ConfigError> {
            Ok(bounded(k, num(k)?, 1)?.map(Duration::from_secs).unwrap_or(dflt))
        };
        let gitlab_url = get("GITLAB_URL").unwrap_or(d.gitlab.base_url.clone()).trim_end_matches('/').to_string();
        let gitlab_url = gitlab_url.strip_suffix("/api/v4").unwrap_or(&gitlab_url).to_string();
        if !(gitlab_url.starts_with("https://") || gitlab_url.starts_with("http://")) {
            return Err(ConfigError(format!("GITLAB_URL must start with https:// (or http://), got {gitlab_url:?}")));
        }
        let dry_run = match get("DRY_RUN").as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("0" | "false" | "no" | "off") => false,
            Some("1" | "true" | "yes" | "on") => true,
            Some(other) => return Err(ConfigError(format!("DRY_RUN must be 1/0 or true/false, got {other:?}"))),
        };
        let environments: HashMap<String, EnvironmentSettings> = match get("ENVIRONMENTS") {
            None => HashMap::new(),
            Some(v) => serde_json::from_str(&v).map_err(|e| {
                ConfigError(format!(
                    "ENVIRONMENTS must be a JSON object such as {{\"prod-eu\": {{\"tier\": \"production\", \"ref\": \"main\"}}}} ({e})"
                ))
            })?,
        };
        let routes = match get("ROUTES") {
            None => Routes::default(),
            Some(v) => Routes::parse(&v).map_err(ConfigError)?,
        };
        for (name, route) in routes.iter() {
            if sources::find(&route.source).is_none() {
                return Err(ConfigError(format!(
                    "ROUTES: route {name:?} names source {:?}; this bridge knows: {}",
                    route.source,
                    sources::names()
                )));
            }
        }
        let unbound_hooks = match get("UNBOUND_HOOKS").as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("refuse") => false,
            Some("allow") => true,
            Some(other) => {
                return Err(ConfigError(format!("UNBOUND_HOOKS must be `refuse` or `allow`, got {other:?}")));
            }
        };
        let tools = ToolSettings::from_lookup(&get).map_err(ConfigError)?;
        let spool = SpoolSettings {
            mode: match get("SPOOL_MODE").as_deref() {
                None => d.spool.mode,
                Some(v) => SpoolMode::parse(v).ok_or_else(|| {
                    ConfigError(format!("SPOOL_MODE must be `on-failure`, `always` or `off`, got {v:?}"))
                })?,
            },
            after: secs("SPOOL_AFTER_SECONDS", d.spool.after)?,
            dir: get("SPOOL_DIR").map(Into::into).unwrap_or(d.spool.dir.clone()),
            queue_url: get("SPOOL_QUEUE_URL"),
            dlq_url: get("SPOOL_DLQ_URL"),
            max_age: match num("SPOOL_MAX_AGE_HOURS")? {
                Some(h) if h == 0 || h > 24 * 14 => {
                    return Err(ConfigError(format!(
                        "SPOOL_MAX_AGE_HOURS must be between 1 and 336 (14 days, SQS's longest retention), got {h}"
                    )));
                }
                Some(h) => Duration::from_secs(h * 3600),
                None => d.spool.max_age,
            },
            retry_max: secs("SPOOL_RETRY_MAX_SECONDS", d.spool.retry_max)?.max(Duration::from_secs(1)),
            max_entries: num("SPOOL_MAX_ENTRIES")?.unwrap_or(d.spool.max_entries).max(1),
            max_bytes: num("SPOOL_MAX_BYTES")?.unwrap_or(d.spool.max_bytes).max(64 * 1024),
        };
        let max_attempts = num("GITLAB_MAX_ATTEMPTS")?.unwrap_or(d.gitlab.max_attempts as u64).clamp(1, 20) as u32;
        Ok(Config {
            gitlab: GitLabSettings {
                base_url: gitlab_url,
                connect_timeout: ms("GITLAB_CONNECT_TIMEOUT_MS", d.gitlab.connect_timeout)?,
                request_timeout: ms("GITLAB_REQUEST_TIMEOUT_MS", d.gitlab.request_timeout)?,
                max_attempts,
                retry_base: ms("GITLAB_RETRY_BASE_MS", d.gitlab.retry_base)?,
                retry_max: ms("GITLAB_RETRY_MAX_MS", d.gitlab.retry_max)?,
                max_answer_bytes: match num("GITLAB_MAX_ANSWER_BYTES")? {
                    Some(n) if !(65_536..=268_435_456).contains(&n) => {
                        return Err(ConfigError(format!(
                            "GITLAB_MAX_ANSWER_BYTES must be between 65536 (64 KiB) and 268435456 (256 MiB), got {n}"
                        )));
                    }
                    Some(n) => n as usize,
                    None => d.gitlab.max_answer_bytes,
                },
            },
            secret_id: get("SECRET_ID"),
            secret_ttl: secs("SECRET_CACHE_TTL_SECONDS", d.secret_ttl)?,
            secret_stale_max: secs("SECRET_STALE_MAX_SECONDS", d.secret_stale_max)?,
            dry_run,
            deadlines: Deadlines {
                local: secs("REQUEST_DEADLINE_SECONDS", d.deadlines.local)?,
                body: secs("BODY_TIMEOUT_SECONDS", d.deadlines.body)?,
                margin: ms("DEADLINE_MARGIN_MS", d.deadlines.margin)?,
            },
            serve: {
                let max_connections = num("SERVE_MAX_CONNECTIONS")?
                    .map(|n| n.clamp(1, 65_536) as usize)
                    .unwrap_or(d.serve.max_connections);
                ServeSettings {
                    header_timeout: secs("SERVE_HEADER_TIMEOUT_SECONDS", d.serve.header_timeout)?,
                    max_connections,
                    max_connections_per_peer: num("SERVE_MAX_CONNECTIONS_PER_PEER")?
                        .map(|n| n as usize)
                        .unwrap_or(max_connections / 4)
                        .clamp(1, max_connections),
                }
            },
            replay_windows: match get("REPLAY_WINDOWS") {
                None => HashMap::new(),
                Some(v) => serde_json::from_str(&v).map_err(|e| {
                    ConfigError(format!(
                        "REPLAY_WINDOWS must be a JSON object of seconds such as {{\"flux\": 600, \"heroku\": 0}} ({e})"
                    ))
                })?,
            },
            clock_skew: secs("CLOCK_SKEW_SECONDS", d.clock_skew)?,
            create_settle: secs("GITLAB_CREATE_SETTLE_SECONDS", d.create_settle)?,
            routes,
            unbound_hooks,
            events: Defaults { git_ref: get("DEFAULT_REF").unwrap_or(d.events.git_ref), environments },
            tools,
            spool,
        })
    }
}

/// The configuration reference as a markdown table: the bridge's settings, each tool's, and
/// the secret keys tools declare (the docs embed it; a test keeps them equal).
pub fn reference_table() -> String {
    let mut out = String::from("| variable | default | meaning |\n|---|---|---|\n");
    let row = |var: &str, default: &str, doc: &str| format!("| `{var}` | {default} | {doc} |\n");
    for s in SETTINGS {
        out.push_str(&row(s.var, s.default, s.doc));
    }
    for source in sources::ALL {
        let spec = source.spec();
        for s in spec.settings {
            let default = s.default.map(|d| format!("`{d}`")).unwrap_or_else(|| "—".into());
            out.push_str(&row(s.var, &default, &format!("{} ({})", s.doc, spec.name)));
        }
        for k in spec.secrets {
            let doc = format!("(read as a secret) without `SECRET_ID`: `{}`, {} ({})", k.key, k.doc, spec.name);
            out.push_str(&row(&k.key.to_ascii_uppercase(), "—", &doc));
        }
    }
    out
}

/// The lines `--help` ends with: the tools a route may take, and the settings a first run needs.
pub fn help_text() -> String {
    let mut out = String::from("Tools (POST /hooks/<tool>/<route>; docs/tools/<tool>.md sets each up):\n");
    for source in sources::ALL {
        out.push_str(&format!("  {:<20} {}\n", source.name(), source.spec().title));
    }
    out.push_str("\nConfigured by environment variables (README \"Configuration\"), among them:\n");
    for s in SETTINGS.iter().filter(|s| s.in_help) {
        // The meaning's first clause, without what is in parentheses.
        let mut plain = String::new();
        let mut depth = 0;
        for c in s.doc.chars() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                '`' => {}
                c if depth == 0 => plain.push(c),
                _ => {}
            }
        }
        let first = plain.split([';', '.']).next().unwrap_or(&plain).split_whitespace().collect::<Vec<_>>().join(" ");
        out.push_str(&format!("  {:<20} {}\n", s.var, first.replace(" :", ":").replace(" ,", ",")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::{BTreeSet, HashMap};

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn spool_modes() {
        assert_eq!(SpoolMode::parse("ALWAYS"), Some(SpoolMode::Always));
        assert_eq!(SpoolMode::parse("sometimes"), None);
        assert!(cfg(&[("SPOOL_MODE", "sometimes")]).is_err());
    }

    #[test]
    fn defaults_and_overrides() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.gitlab.base_url, "https://gitlab.com");
        assert_eq!(c.secret_ttl, Duration::from_secs(300));
        assert_eq!(c.clock_skew, Duration::from_secs(30));
        assert_eq!(cfg(&[("CLOCK_SKEW_SECONDS", "0")]).unwrap().clock_skew, Duration::ZERO);
        let c = cfg(&[
            ("GITLAB_URL", "https://git.example.com/api/v4/"),
            ("DRY_RUN", "1"),
            ("SECRET_CACHE_TTL_SECONDS", "60"),
        ])
        .unwrap();
        assert_eq!(c.gitlab.base_url, "https://git.example.com");
        assert!(c.dry_run);
        assert_eq!(c.secret_ttl, Duration::from_secs(60));
        assert_eq!(c.tools.of("heroku").get("HEROKU_API_URL"), Some("https://api.heroku.com"));
    }

    /// `REQUEST_DEADLINE_SECONDS=18446744073709551615` panicked the first request (the deadline
    /// overflowed the clock); every duration now has a bound, named in the refusal.
    #[test]
    fn durations_are_bounded() {
        for k in [
            "REQUEST_DEADLINE_SECONDS",
            "SECRET_CACHE_TTL_SECONDS",
            "CLOCK_SKEW_SECONDS",
            "GITLAB_REQUEST_TIMEOUT_MS",
            "DEADLINE_MARGIN_MS",
        ] {
            let err = cfg(&[(k, "18446744073709551615")]).unwrap_err().to_string();
            assert!(err.contains(k) && err.contains("at most"), "{k}: {err}");
        }
        assert_eq!(cfg(&[("REQUEST_DEADLINE_SECONDS", "86400")]).unwrap().deadlines.local, Duration::from_secs(86_400));
    }

    #[test]
    fn bad_values_are_named() {
        assert!(cfg(&[("GITLAB_URL", "gitlab.com")]).unwrap_err().to_string().contains("GITLAB_URL"));
        assert!(cfg(&[("GITLAB_MAX_ATTEMPTS", "x")]).unwrap_err().to_string().contains("GITLAB_MAX_ATTEMPTS"));
        assert!(cfg(&[("DRY_RUN", "maybe")]).unwrap_err().to_string().contains("DRY_RUN"));
        assert!(
            cfg(&[("ENVIRONMENTS", r#"{"p": {"tier": "prod"}}"#)]).unwrap_err().to_string().contains("ENVIRONMENTS")
        );
        assert!(cfg(&[("UNBOUND_HOOKS", "yes")]).unwrap_err().to_string().contains("UNBOUND_HOOKS"));
        assert!(cfg(&[("ROUTES", "[]")]).unwrap_err().to_string().contains("ROUTES"));
        let unknown = cfg(&[("ROUTES", r#"{"ci": {"source": "gitlab", "projects": ["1"]}}"#)]).unwrap_err().to_string();
        assert!(unknown.contains("names source \"gitlab\""), "{unknown}");
        assert!(!cfg(&[]).unwrap().unbound_hooks && cfg(&[("UNBOUND_HOOKS", "allow")]).unwrap().unbound_hooks);
        let image = cfg(&[("ARGOCD_IMAGE", "app:(a)(b)")]).unwrap_err().to_string();
        assert!(image.contains("ARGOCD_IMAGE") && image.contains("one capture group"), "{image}");
    }

    #[test]
    fn environment_settings() {
        let c = cfg(&[("ENVIRONMENTS", r#"{"eu-west-1": {"tier": "production", "ref": "release"}}"#)]).unwrap();
        let e = &c.events.environments["eu-west-1"];
        assert_eq!((e.tier, e.git_ref.as_deref()), (Some(crate::model::Tier::Production), Some("release")));
    }

    /// What the parser reads is what the table documents, no more and no less: the table is
    /// the one list of settings (the docs and `--help` are generated from it).
    #[test]
    fn the_parser_reads_exactly_the_documented_settings() {
        let asked = RefCell::new(BTreeSet::new());
        Config::from_lookup(|k| {
            asked.borrow_mut().insert(k.to_string());
            None
        })
        .unwrap();
        let tools: BTreeSet<String> =
            sources::ALL.iter().flat_map(|s| s.spec().settings.iter().map(|s| s.var.to_string())).collect();
        let own: BTreeSet<String> =
            SETTINGS.iter().filter(|s| !s.doc.starts_with("(read ")).map(|s| s.var.to_string()).collect();
        let expected: BTreeSet<String> = own.union(&tools).cloned().collect();
        assert_eq!(asked.into_inner(), expected);
        let table = reference_table();
        for var in &expected {
            assert!(table.contains(&format!("| `{var}` |")), "{var} is not in the reference table");
        }
        assert!(table.contains("| `HEROKU_API_TOKEN` |"), "the tools' secret keys are listed");
        let help = help_text();
        assert!(help.contains("GITLAB_TOKEN") && help.contains("DRY_RUN"));
        assert!(sources::ALL.iter().all(|s| help.contains(s.spec().title)), "{help}");
    }
}
