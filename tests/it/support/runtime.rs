//! A stand-in for the Lambda Runtime API (2018-06-01): hands out queued events on
//! `/runtime/invocation/next` with the request id and deadline headers, and collects what the
//! function posts to `/response`, `/error` and `/init/error`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{Mutex, mpsc};

#[derive(Debug, Clone)]
pub struct Posted {
    pub request_id: String,
    /// `response`, `error` or `init_error`.
    pub kind: String,
    pub body: String,
    /// When the answer arrived, and the deadline the invocation was given (ms since the epoch).
    pub at_ms: u64,
    pub deadline_ms: u64,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

struct St {
    events: Mutex<mpsc::UnboundedReceiver<(String, String)>>,
    posted: mpsc::UnboundedSender<Posted>,
    deadline_ms: u64,
    deadlines: std::sync::Mutex<std::collections::HashMap<String, u64>>,
}

impl St {
    fn post(&self, request_id: String, kind: &str, body: &Bytes) {
        let deadline_ms = self.deadlines.lock().unwrap().get(&request_id).copied().unwrap_or(0);
        let _ = self.posted.send(Posted {
            request_id,
            kind: kind.into(),
            body: String::from_utf8_lossy(body).into(),
            at_ms: now_ms(),
            deadline_ms,
        });
    }
}

pub struct RuntimeApi {
    /// `host:port`, the value of `AWS_LAMBDA_RUNTIME_API`.
    pub address: String,
    events: mpsc::UnboundedSender<(String, String)>,
    posted: Mutex<mpsc::UnboundedReceiver<Posted>>,
    counter: std::sync::atomic::AtomicUsize,
}

impl RuntimeApi {
    /// `deadline` is how long each invocation gets (Lambda-Runtime-Deadline-Ms = now + deadline).
    pub async fn start(deadline: Duration) -> RuntimeApi {
        let (etx, erx) = mpsc::unbounded_channel();
        let (ptx, prx) = mpsc::unbounded_channel();
        let st = Arc::new(St {
            events: Mutex::new(erx),
            posted: ptx,
            deadline_ms: deadline.as_millis() as u64,
            deadlines: Default::default(),
        });
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route("/2018-06-01/runtime/invocation/{id}/response", post(response))
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(st);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        RuntimeApi { address, events: etx, posted: Mutex::new(prx), counter: Default::default() }
    }

    /// Queues one event and waits for what the function posts back.
    pub async fn invoke(&self, event: &str) -> Posted {
        let n = self.counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let id = format!("req-{n:04}");
        self.events.send((id.clone(), event.to_string())).unwrap();
        let posted = tokio::time::timeout(Duration::from_secs(60), self.posted.lock().await.recv())
            .await
            .expect("the function answered within 60 s")
            .expect("runtime API still running");
        assert_eq!(posted.request_id, id, "answer belongs to the invocation");
        posted
    }
}

async fn next(State(st): State<Arc<St>>) -> Response {
    let Some((id, body)) = st.events.lock().await.recv().await else {
        return (axum::http::StatusCode::GONE, "no more events").into_response();
    };
    let deadline = now_ms() + st.deadline_ms;
    st.deadlines.lock().unwrap().insert(id.clone(), deadline);
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert("lambda-runtime-aws-request-id", HeaderValue::from_str(&id).unwrap());
    h.insert("lambda-runtime-deadline-ms", HeaderValue::from(deadline));
    h.insert(
        "lambda-runtime-invoked-function-arn",
        HeaderValue::from_static("arn:aws:lambda:us-east-1:123456789012:function:gitlab-deploy-bridge"),
    );
    h.insert("lambda-runtime-trace-id", HeaderValue::from_static("Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1"));
    r
}

async fn response(State(st): State<Arc<St>>, Path(id): Path<String>, body: Bytes) -> &'static str {
    st.post(id, "response", &body);
    "{\"status\":\"OK\"}"
}

async fn error(State(st): State<Arc<St>>, Path(id): Path<String>, body: Bytes) -> &'static str {
    st.post(id, "error", &body);
    "{\"status\":\"OK\"}"
}

async fn init_error(State(st): State<Arc<St>>, body: Bytes) -> &'static str {
    st.post(String::new(), "init_error", &body);
    "{\"status\":\"OK\"}"
}

/// The function binary as Lambda starts it, against `runtime`: an empty environment but for
/// PATH, Lambda's variables and test AWS credentials; stdout and stderr piped. `BRIDGE_BINARY`
/// (and `BRIDGE_RUNNER`, e.g. `qemu-aarch64 -L /usr/aarch64-linux-gnu`) run another build of it,
/// such as the arm64 `bootstrap`. The caller adds its own variables and spawns it.
pub fn function_command(runtime: &RuntimeApi) -> tokio::process::Command {
    let binary =
        std::env::var("BRIDGE_BINARY").unwrap_or_else(|_| env!("CARGO_BIN_EXE_gitlab-deploy-bridge").to_string());
    let runner = std::env::var("BRIDGE_RUNNER").unwrap_or_default();
    let mut argv: Vec<String> = runner.split_whitespace().map(str::to_string).collect();
    argv.push(binary);
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_LAMBDA_RUNTIME_API", &runtime.address)
        .env("AWS_LAMBDA_FUNCTION_NAME", "gitlab-deploy-bridge")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "2026/11/25/[$LATEST]0123456789abcdef")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/gitlab-deploy-bridge")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_SESSION_TOKEN", "test")
        .env("GITLAB_RETRY_BASE_MS", "20")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    cmd
}
