//! Logging: JSON lines in Lambda (or with `LOG_FORMAT=json`), compact text elsewhere.
//! Level from `AWS_LAMBDA_LOG_LEVEL`, then `RUST_LOG`, then `info`. The HTTP and AWS client
//! crates are held at `warn` whatever the level, so no request or secret dump can reach the log.
//!
//! A webhook's facts are fields of its span (`webhook`, recorded as the pipeline learns them);
//! [`FlatJson`] writes each line with the fields of the spans it is in beside its own, so the
//! one line a webhook ends with carries them all, flat, as Logs Insights discovers them.

use serde_json::{Map, Value};
use std::fmt;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormattedFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

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
    // A subscriber that is already installed (tests, embedding) is kept: nothing to do then.
    if json {
        // CloudWatch stamps each line.
        let _ = json_subscriber(filter(), std::io::stderr, false).try_init();
    } else {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter())
            .with_writer(std::io::stderr)
            .with_target(false)
            .compact()
            .with_ansi(false)
            .try_init();
    }
}

/// The JSON subscriber of Lambda (and of the tests' log capture): one flat object per line.
pub fn json_subscriber<W>(
    filter: EnvFilter,
    writer: W,
    with_time: bool,
) -> tracing_subscriber::fmt::SubscriberBuilder<JsonFields, FlatJson, EnvFilter, W>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .fmt_fields(JsonFields::new())
        .event_format(FlatJson { with_time })
        .with_env_filter(filter)
        .with_writer(writer)
}

/// Writes an event as one JSON object: `level`, `message`, its fields, and the fields of every
/// span it is in (the outer first; the event's own win).
pub struct FlatJson {
    pub with_time: bool,
}

impl<S> FormatEvent<S, JsonFields> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = Map::new();
        if self.with_time {
            let now = time::OffsetDateTime::now_utc();
            line.insert("timestamp".into(), Value::String(crate::model::format_time(now)));
        }
        line.insert("level".into(), Value::String(event.metadata().level().to_string()));
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                let fields = extensions.get::<FormattedFields<JsonFields>>();
                if let Some(Ok(Value::Object(fields))) = fields.map(|f| serde_json::from_str::<Value>(f)) {
                    line.extend(fields);
                }
            }
        }
        let mut own = Fields(Map::new());
        event.record(&mut own);
        line.extend(own.0);
        let text = serde_json::to_string(&Value::Object(line)).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// An event's fields as JSON values.
struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), Value::String(value.into()));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().into(), Value::String(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_line_carries_its_spans_fields_flat_beside_its_own() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = json_subscriber(EnvFilter::new("info"), move || writer.clone(), false).finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("webhook", source = "flux", project = "", action = tracing::field::Empty);
            let _entered = span.enter();
            span.record("project", "42");
            span.record("action", "created");
            tracing::info!(http_status = 200u16, source = "own", "webhook handled");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let line: Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["message"], "webhook handled");
        assert_eq!((line["project"].as_str(), line["action"].as_str()), (Some("42"), Some("created")));
        assert_eq!((line["http_status"].as_u64(), line["source"].as_str()), (Some(200), Some("own")));
        assert_eq!(line["level"], "INFO");
    }
}
