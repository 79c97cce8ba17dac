//! Configuration, read once from the environment into a typed struct.

use serde::Deserialize;
use std::collections::HashMap;
use std::time::Duration;

use crate::model::Tier;
use crate::routes::Routes;

/// The largest webhook body accepted (1 MiB); larger ones get 413.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

#[derive(Clone, Debug)]
pub struct Config {
    /// Base URL of the GitLab instance, without `/api/v4` (`GITLAB_URL`).
    pub gitlab_url: String,
    /// Secrets Manager secret holding `gitlab_token` and `<source>_webhook_secret` (`SECRET_ID`).
    pub secret_id: Option<String>,
    /// How long a fetched secret is trusted (`SECRET_CACHE_TTL_SECONDS`).
    pub secret_ttl: Duration,
    /// Ref sent to GitLab when neither the query nor the payload names a branch (`DEFAULT_REF`).
    pub default_ref: String,
    /// Plan everything, send nothing to GitLab (`DRY_RUN`).
    pub dry_run: bool,
    /// Time budget of one webhook when no Lambda deadline is known (`REQUEST_DEADLINE_SECONDS`).
    pub local_deadline: Duration,
    /// How long a request's body may take to arrive (`BODY_TIMEOUT_SECONDS`, default 10).
    pub body_timeout: Duration,
    /// Replay windows in seconds by source, overriding each source's own (`REPLAY_WINDOWS`,
    /// a JSON object; 0 turns a source's off, `"*"` applies to every source).
    pub replay_windows: HashMap<String, u64>,
    /// `serve`: how long a request's headers may take to arrive, and how long a kept-alive
    /// connection may wait idle for the next request (`SERVE_HEADER_TIMEOUT_SECONDS`, default 10).
    pub serve_header_timeout: Duration,
    /// `serve`: connections served at once (`SERVE_MAX_CONNECTIONS`, default 256); one request
    /// at a time per connection (HTTP/1.1), so this also caps the requests in flight.
    pub serve_max_connections: usize,
    /// Kept free before Lambda's own deadline so an answer can still be sent (`DEADLINE_MARGIN_MS`).
    pub deadline_margin: Duration,
    /// TCP+TLS connect timeout towards GitLab (`GITLAB_CONNECT_TIMEOUT_MS`).
    pub connect_timeout: Duration,
    /// Timeout of one GitLab request (`GITLAB_REQUEST_TIMEOUT_MS`).
    pub request_timeout: Duration,
    /// Attempts per GitLab call, the first included (`GITLAB_MAX_ATTEMPTS`).
    pub max_attempts: u32,
    /// First backoff step; doubles per attempt, with jitter (`GITLAB_RETRY_BASE_MS`).
    pub retry_base: Duration,
    /// Upper bound of one backoff step (`GITLAB_RETRY_MAX_MS`).
    pub retry_max: Duration,
    /// Heroku Platform API, used only when the secret holds `heroku_api_token` (`HEROKU_API_URL`).
    pub heroku_api_url: String,
    /// Per-environment settings (`ENVIRONMENTS`, a JSON object: `{"prod-eu": {"tier": "production", "ref": "main"}}`).
    pub environments: HashMap<String, EnvironmentSettings>,
    /// How much later than a tool's own time of an event GitLab's clock may record it before the
    /// event counts as older than what GitLab shows (`CLOCK_SKEW_SECONDS`).
    pub clock_skew: Duration,
    /// What each route's credential may touch (`ROUTES`, see [`crate::routes`]).
    pub routes: Routes,
    /// Whether `/hooks/{source}` without a route is served, its project and environment chosen
    /// by the unsigned query (`UNBOUND_HOOKS=allow`; default `refuse`, except in a dry run).
    pub unbound_hooks: bool,
    /// Argo CD application annotation holding the application commit (`ARGOCD_SHA_ANNOTATION`).
    pub argocd_sha_annotation: Option<String>,
    /// Container image whose tag is the application commit: an image name (`registry/app`), or a
    /// regex with one capture group (`ARGOCD_IMAGE`).
    pub argocd_image: Option<String>,
    /// The spool's settings (`SPOOL_*`, see [`SpoolSettings`]).
    pub spool: SpoolSettings,
}

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

/// Where and when events wait for GitLab (issue 11; README "Spool").
#[derive(Clone, Debug, PartialEq)]
pub struct SpoolSettings {
    /// `on-failure` (default), `always` or `off` (`SPOOL_MODE`).
    pub mode: SpoolMode,
    /// How long a webhook may wait for GitLab before its event goes to the spool
    /// (`SPOOL_AFTER_SECONDS`, default 5; Flux gives the whole exchange 15 s).
    pub after: Duration,
    /// `serve`'s spool directory (`SPOOL_DIR`, default `spool` under the working directory).
    pub dir: std::path::PathBuf,
    /// Lambda's SQS FIFO queue (`SPOOL_QUEUE_URL`); set by template.yaml.
    pub queue_url: Option<String>,
    /// Its dead-letter queue (`SPOOL_DLQ_URL`).
    pub dlq_url: Option<String>,
    /// How long a spooled event is retried before it becomes a dead letter
    /// (`SPOOL_MAX_AGE_HOURS`, default 72).
    pub max_age: Duration,
    /// The longest wait between two attempts (`SPOOL_RETRY_MAX_SECONDS`, default 300).
    pub retry_max: Duration,
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
        }
    }
}

/// What `ENVIRONMENTS` may say about one environment.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentSettings {
    pub tier: Option<Tier>,
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            gitlab_url: "https://gitlab.com".into(),
            secret_id: None,
            secret_ttl: Duration::from_secs(300),
            default_ref: "main".into(),
            dry_run: false,
            local_deadline: Duration::from_secs(25),
            body_timeout: Duration::from_secs(10),
            replay_windows: HashMap::new(),
            serve_header_timeout: Duration::from_secs(10),
            serve_max_connections: 256,
            deadline_margin: Duration::from_millis(1000),
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(10),
            max_attempts: 5,
            retry_base: Duration::from_millis(250),
            retry_max: Duration::from_secs(5),
            heroku_api_url: "https://api.heroku.com".into(),
            environments: HashMap::new(),
            clock_skew: Duration::from_secs(30),
            routes: Routes::default(),
            unbound_hooks: false,
            argocd_sha_annotation: None,
            argocd_image: None,
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
        let gitlab_url = get("GITLAB_URL").unwrap_or(d.gitlab_url).trim_end_matches('/').to_string();
        let gitlab_url = gitlab_url.strip_suffix("/api/v4").unwrap_or(&gitlab_url).to_string();
        if !(gitlab_url.starts_with("https://") || gitlab_url.starts_with("http://")) {
            return Err(ConfigError(format!("GITLAB_URL must start with https:// (or http://), got {gitlab_url:?}")));
        }
        let dry_run = match get("DRY_RUN").as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("0" | "false" | "no" | "off") => false,
            Some("1" | "true" | "yes" | "on") => true,
            Some(other) => return Err(ConfigError(format!("DRY_RUN must be 1/0 or true/false, got {other:?}"))),
        };
        let environments = match get("ENVIRONMENTS") {
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
        let unbound_hooks = match get("UNBOUND_HOOKS").as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("refuse") => false,
            Some("allow") => true,
            Some(other) => {
                return Err(ConfigError(format!("UNBOUND_HOOKS must be `refuse` or `allow`, got {other:?}")));
            }
        };
        let argocd_image = get("ARGOCD_IMAGE");
        if let Some(pattern) = argocd_image.as_deref().filter(|p| p.contains('(')) {
            let re = regex_lite::Regex::new(pattern)
                .map_err(|e| ConfigError(format!("ARGOCD_IMAGE is not a valid regex: {e}")))?;
            if re.captures_len() != 2 {
                return Err(ConfigError("ARGOCD_IMAGE as a regex needs exactly one capture group (the commit)".into()));
            }
        }
        let spool_mode = get("SPOOL_MODE");
        let spool = SpoolSettings {
            mode: match spool_mode.as_deref() {
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
        };
        let max_attempts = num("GITLAB_MAX_ATTEMPTS")?.unwrap_or(d.max_attempts as u64).clamp(1, 20) as u32;
        Ok(Config {
            gitlab_url,
            secret_id: get("SECRET_ID"),
            secret_ttl: secs("SECRET_CACHE_TTL_SECONDS", d.secret_ttl)?,
            default_ref: get("DEFAULT_REF").unwrap_or(d.default_ref),
            dry_run,
            local_deadline: secs("REQUEST_DEADLINE_SECONDS", d.local_deadline)?,
            body_timeout: secs("BODY_TIMEOUT_SECONDS", d.body_timeout)?,
            replay_windows: match get("REPLAY_WINDOWS") {
                None => HashMap::new(),
                Some(v) => serde_json::from_str(&v).map_err(|e| {
                    ConfigError(format!(
                        "REPLAY_WINDOWS must be a JSON object of seconds such as {{\"flux\": 600, \"heroku\": 0}} ({e})"
                    ))
                })?,
            },
            serve_header_timeout: secs("SERVE_HEADER_TIMEOUT_SECONDS", d.serve_header_timeout)?,
            serve_max_connections: num("SERVE_MAX_CONNECTIONS")?
                .map(|n| n.clamp(1, 65_536) as usize)
                .unwrap_or(d.serve_max_connections),
            deadline_margin: ms("DEADLINE_MARGIN_MS", d.deadline_margin)?,
            connect_timeout: ms("GITLAB_CONNECT_TIMEOUT_MS", d.connect_timeout)?,
            request_timeout: ms("GITLAB_REQUEST_TIMEOUT_MS", d.request_timeout)?,
            max_attempts,
            retry_base: ms("GITLAB_RETRY_BASE_MS", d.retry_base)?,
            retry_max: ms("GITLAB_RETRY_MAX_MS", d.retry_max)?,
            heroku_api_url: get("HEROKU_API_URL").unwrap_or(d.heroku_api_url).trim_end_matches('/').to_string(),
            environments,
            clock_skew: secs("CLOCK_SKEW_SECONDS", d.clock_skew)?,
            routes,
            unbound_hooks,
            argocd_sha_annotation: get("ARGOCD_SHA_ANNOTATION"),
            argocd_image,
            spool,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

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
        assert_eq!(c.gitlab_url, "https://gitlab.com");
        assert_eq!(c.secret_ttl, Duration::from_secs(300));
        assert_eq!(c.clock_skew, Duration::from_secs(30));
        assert_eq!(cfg(&[("CLOCK_SKEW_SECONDS", "0")]).unwrap().clock_skew, Duration::ZERO);
        let c = cfg(&[
            ("GITLAB_URL", "https://git.example.com/api/v4/"),
            ("DRY_RUN", "1"),
            ("SECRET_CACHE_TTL_SECONDS", "60"),
        ])
        .unwrap();
        assert_eq!(c.gitlab_url, "https://git.example.com");
        assert!(c.dry_run);
        assert_eq!(c.secret_ttl, Duration::from_secs(60));
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
        assert_eq!(cfg(&[("REQUEST_DEADLINE_SECONDS", "86400")]).unwrap().local_deadline, Duration::from_secs(86_400));
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
        assert!(!cfg(&[]).unwrap().unbound_hooks && cfg(&[("UNBOUND_HOOKS", "allow")]).unwrap().unbound_hooks);
        assert!(cfg(&[("ARGOCD_IMAGE", "app:(a)(b)")]).unwrap_err().to_string().contains("one capture group"));
    }

    #[test]
    fn environment_settings() {
        let c = cfg(&[("ENVIRONMENTS", r#"{"eu-west-1": {"tier": "production", "ref": "release"}}"#)]).unwrap();
        let e = &c.environments["eu-west-1"];
        assert_eq!((e.tier, e.git_ref.as_deref()), (Some(Tier::Production), Some("release")));
    }
}
