//! The Lambda side: SQS batches of the spool queue go to [`crate::drain`]; everything else is a
//! function-URL event for the one router, made safe for `lambda_http`'s
//! conversion to an HTTP request, which panics (`Url::parse(..).unwrap()`, `.expect(..)` in
//! lambda_http 1.3.2 `request.rs`) on a `Host` or `x-forwarded-proto` header the URL parser
//! refuses, or on a query an `http::Uri` cannot hold. Whether a function URL lets a caller send
//! those is not documented; they are repaired before the conversion runs, the same way for the
//! Runtime API and for `invoke`:
//! - an `x-forwarded-proto` other than `http`/`https` is dropped (the conversion then says `https`);
//! - a `Host` header (and a `requestContext.domainName`) that does not make a URL is dropped (the
//!   router never reads the host);
//! - a raw path is made to start with `/` and, if it still makes no URL, becomes `/` (the router
//!   answers 404);
//! - a raw query with bytes a URI cannot carry has them percent-encoded.
//!
//! The release profile unwinds (`panic = "unwind"`): should anything else panic in a handler,
//! lambda_runtime's `CatchPanicService` reports the invocation as failed and the process goes on.

use aws_lambda_events::event::sqs::SqsEvent;
use axum::Router;
use lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use lambda_http::http::{HeaderName, Uri, header};
use lambda_http::lambda_runtime::service_fn;
use lambda_http::request::LambdaRequest;
use lambda_http::tower::ServiceExt;
use lambda_http::{Adapter, LambdaEvent};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use reqwest::Url;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::pipeline::Pipeline;
use crate::spool::sqs::SqsSpool;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a URI query cannot carry as is (besides non-ASCII, always encoded).
const QUERY: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'<')
    .add(b'>')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'|')
    .add(b'\\')
    .add(b'^')
    .add(b'#');

/// What the spool queue's batches are delivered with.
pub type Consumer = (Arc<Pipeline>, Arc<SqsSpool>);

/// Serves the Lambda Runtime API: an SQS batch (from the spool queue's event source mapping) is
/// delivered through the pipeline and answered with its `batchItemFailures`; any other event is
/// a function-URL request, repaired before lambda_http converts it, and served by `app`.
pub async fn run(app: Router, consumer: Option<Consumer>) -> Result<(), BoxError> {
    let handler = service_fn(move |ev: LambdaEvent<Value>| {
        let (app, consumer) = (app.clone(), consumer.clone());
        async move { dispatch(app, consumer.as_ref(), ev).await }
    });
    lambda_http::lambda_runtime::run(handler).await
}

async fn dispatch(app: Router, consumer: Option<&Consumer>, ev: LambdaEvent<Value>) -> Result<Value, BoxError> {
    let LambdaEvent { payload, context } = ev;
    if is_sqs_batch(&payload) {
        let Some((pipeline, queue)) = consumer else {
            // Failing the invocation returns the whole batch to the queue: nothing is lost.
            return Err("an SQS batch arrived, but this function has no spool queue (SPOOL_QUEUE_URL) or its configuration is invalid".into());
        };
        let batch: SqsEvent = serde_json::from_value(payload)?;
        let deadline = invocation_deadline(context.deadline, pipeline.deadlines().margin);
        let answer = crate::drain::sqs_batch(pipeline, queue, batch, deadline).await;
        return Ok(serde_json::to_value(answer)?);
    }
    let request: LambdaRequest = serde_json::from_value(payload)?;
    let response = Adapter::from(app).oneshot(LambdaEvent { payload: sanitize(request), context }).await?;
    Ok(serde_json::to_value(response)?)
}

/// An SQS event: `Records` whose first says `"eventSource": "aws:sqs"`.
fn is_sqs_batch(payload: &Value) -> bool {
    payload.get("Records").and_then(|r| r.get(0)).and_then(|r| r.get("eventSource")).and_then(Value::as_str)
        == Some("aws:sqs")
}

/// The instant by which an invocation whose deadline is `deadline_ms` (Unix milliseconds) must
/// have answered, `margin` kept free.
fn invocation_deadline(deadline_ms: u64, margin: Duration) -> Instant {
    let now_ms = crate::spool::now_ms();
    Instant::now() + Duration::from_millis(deadline_ms.saturating_sub(now_ms)).saturating_sub(margin)
}

/// A function-URL (HTTP API v2) event from its JSON, repaired, as the HTTP request the router sees.
pub fn request_from_str(text: &str) -> Result<lambda_http::Request, serde_json::Error> {
    serde_json::from_str::<LambdaRequest>(text).map(sanitize).map(Into::into)
}

/// Repairs what lambda_http's conversion would panic on (module documentation).
pub fn sanitize(req: LambdaRequest) -> LambdaRequest {
    match req {
        LambdaRequest::ApiGatewayV2(mut ag) => {
            sanitize_v2(&mut ag);
            LambdaRequest::ApiGatewayV2(ag)
        }
        other => other,
    }
}

fn sanitize_v2(ag: &mut ApiGatewayV2httpRequest) {
    let forwarded_proto = HeaderName::from_static("x-forwarded-proto");
    let scheme_ok = ag.headers.get(&forwarded_proto).is_none_or(|v| matches!(v.to_str(), Ok("http" | "https")));
    if !scheme_ok {
        ag.headers.remove(&forwarded_proto);
    }
    let mut path = ag.raw_path.clone().unwrap_or_default();
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    ag.raw_path = Some(path);
    // A stage is a name; anything else (a `#` in it, found by fuzz/lambda_events) would become
    // part of the URL lambda_http builds. Function URLs always say `$default`.
    if ag
        .request_context
        .stage
        .as_deref()
        .is_some_and(|s| s != "$default" && !s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)))
    {
        ag.request_context.stage = None;
    }
    // Repairs, in order, until what lambda_http will build is a URI: drop a `Host` header, then
    // a domain name, that make no URL; percent-encode the query, then drop it; then the path
    // (with no host and no query, `/` always is one).
    let repairs: [fn(&mut ApiGatewayV2httpRequest); 5] = [
        |ag| drop(ag.headers.remove(header::HOST)),
        |ag| ag.request_context.domain_name = None,
        |ag| ag.raw_query_string = ag.raw_query_string.take().map(|q| utf8_percent_encode(&q, QUERY).to_string()),
        |ag| ag.raw_query_string = None,
        |ag| ag.raw_path = Some("/".into()),
    ];
    for repair in repairs {
        if lambda_uri(ag).is_some() {
            return;
        }
        repair(ag);
    }
}

/// The URI lambda_http 1.3.2 builds from an HTTP API v2 event (`into_api_gateway_v2_request`,
/// `apigw_path_with_stage`, `build_request_uri`), or `None` where it would panic: its
/// `Url::parse(..).unwrap()` fails, or the result is no `http::Uri` for its `.expect(..)`.
fn lambda_uri(ag: &ApiGatewayV2httpRequest) -> Option<Uri> {
    let raw_path = ag.raw_path.as_deref().unwrap_or_default();
    let path = match ag.request_context.stage.as_deref() {
        _ if std::env::var_os("AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH").is_some() => raw_path.to_string(),
        None | Some("$default") => raw_path.to_string(),
        Some(stage) if raw_path.starts_with(&format!("/{stage}/")) => raw_path.to_string(),
        Some(stage) => format!("/{stage}{raw_path}"),
    };
    let host = ag.headers.get(header::HOST).and_then(|v| v.to_str().ok()).or(ag.request_context.domain_name.as_deref());
    let mut uri = match host {
        None => Url::parse(&format!("http://localhost{path}")).ok()?.path().to_string(),
        Some(host) => {
            let scheme = ag.headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).unwrap_or("https");
            Url::parse(&format!("{scheme}://{host}{path}")).ok()?.to_string()
        }
    };
    if let Some(query) = ag.raw_query_string.as_deref().filter(|q| !q.is_empty()) {
        uri.push('?');
        uri.push_str(query);
    }
    Uri::try_from(uri).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(host: Option<&str>, proto: Option<&str>, path: &str, query: &str) -> String {
        let mut headers = serde_json::Map::new();
        if let Some(h) = host {
            headers.insert("host".into(), h.into());
        }
        if let Some(p) = proto {
            headers.insert("x-forwarded-proto".into(), p.into());
        }
        serde_json::json!({
            "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": query, "headers": headers,
            "requestContext": {"accountId": "anonymous", "apiId": "abc", "domainName": "abc.lambda-url.eu-west-1.on.aws",
                "domainPrefix": "abc", "http": {"method": "POST", "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "t"},
                "requestId": "r", "routeKey": "$default", "stage": "$default", "time": "29/Nov/2026:12:00:00 +0000", "timeEpoch": 0},
            "body": "{}", "isBase64Encoded": false
        })
        .to_string()
    }

    /// Each of these panicked inside lambda_http before; now each becomes a request.
    #[test]
    fn what_lambda_http_would_panic_on_becomes_a_request() {
        let cases = [
            event(Some("bad host with spaces"), None, "/hooks/generic", ""),
            event(Some("[::1"), None, "/hooks/generic", ""),
            event(Some("abc.lambda-url.eu-west-1.on.aws"), Some(""), "/hooks/generic", ""),
            event(Some("abc.lambda-url.eu-west-1.on.aws"), Some("gopher stuff"), "/hooks/generic", ""),
            event(Some("abcdefghij.lambda`-url.us-east-1.on.aws"), None, "/hooks/generic", "project=42"),
            // A stage that is no name, no host, and a query a URI cannot hold (fuzz/lambda_events, 10 min run).
            event(None, None, "/hooks/flux", "project=42&en  vironment=pro%duction")
                .replace(r#""stage":"$default""#, r#""stage":"$#efault""#)
                .replace(r#""domainName":"abc.lambda-url.eu-west-1.on.aws","#, ""),
            event(None, None, ":99999", ""),
            event(Some("h"), None, "/hooks/generic", "project=a b\"<>\u{7f}é"),
        ];
        for (n, text) in cases.iter().enumerate() {
            // The reproducers: lambda_http's own conversion panics on the first six (the last two
            // found by fuzz/lambda_events). When an upgrade fixes that, this fails, and the repair
            // can go.
            if n < 6 {
                let raw = std::panic::catch_unwind(|| lambda_http::request::from_str(text));
                assert!(raw.is_err(), "lambda_http no longer panics on case {n}: {text}");
            }
            let req = request_from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
            assert!(req.uri().path().starts_with('/'), "{text}");
        }
        let req = request_from_str(&event(Some("h"), None, "/hooks/generic", "project=a b")).unwrap();
        assert_eq!(req.uri().query(), Some("project=a%20b"));
        let req = request_from_str(&event(Some("abc.example"), Some("http"), "/x", "a=1")).unwrap();
        assert_eq!(req.uri().to_string(), "http://abc.example/x?a=1", "a good event is unchanged");
    }
}
