//! moto's Secrets Manager server: `MOTO_ENDPOINT` when the test script started one, otherwise
//! started here once per test binary (from `.venv/bin/moto_server` or PATH) on a free port.
//! A counting proxy in front of it tells how often the bridge really read the secret.

use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

static ENDPOINT: OnceLock<String> = OnceLock::new();

fn moto_binary() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/moto_server");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("moto_server")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The moto endpoint, e.g. `http://127.0.0.1:5123`.
pub fn endpoint() -> String {
    ENDPOINT
        .get_or_init(|| {
            if let Ok(e) = std::env::var("MOTO_ENDPOINT") {
                return e;
            }
            let port = free_port();
            let bin = moto_binary();
            // The child is started from a thread that lives as long as the test process, with
            // PR_SET_PDEATHSIG so it dies with us.
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                use std::os::unix::process::CommandExt;
                let mut cmd = Command::new(&bin);
                cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]).stdout(Stdio::null()).stderr(Stdio::null());
                unsafe {
                    cmd.pre_exec(|| {
                        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                        Ok(())
                    });
                }
                let child = cmd.spawn();
                let ok = child.is_ok();
                tx.send(child.map(|_| ()).map_err(|e| format!("{}: {e}", bin.display()))).unwrap();
                if ok {
                    loop {
                        std::thread::park();
                    }
                }
            });
            if let Err(e) = rx.recv().unwrap() {
                panic!("cannot start moto_server ({e}); run `bash scripts/test` or `pip install 'moto[server]'`");
            }
            let url = format!("http://127.0.0.1:{port}");
            for _ in 0..200 {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return url;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            panic!("moto_server did not start listening on {url}");
        })
        .clone()
}

/// The HTTP client the bridge gives the AWS SDK (src/transport.rs), for the tests' own clients.
pub fn sdk_http() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    let http = gitlab_deploy_bridge::transport::http_client(Duration::from_secs(3)).expect("the HTTP client builds");
    gitlab_deploy_bridge::transport::SdkHttpClient::shared(&http)
}

/// An SDK client for moto, configured explicitly (no process environment involved).
pub fn client(endpoint: &str) -> aws_sdk_secretsmanager::Client {
    client_with(endpoint, aws_sdk_secretsmanager::config::retry::RetryConfig::standard())
}

/// [`client`] with its own retries (a test of what a failed read does need not wait for the SDK's).
pub fn client_with(
    endpoint: &str,
    retry: aws_sdk_secretsmanager::config::retry::RetryConfig,
) -> aws_sdk_secretsmanager::Client {
    let conf = aws_sdk_secretsmanager::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .retry_config(retry)
        .http_client(sdk_http())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .endpoint_url(endpoint)
        .build();
    aws_sdk_secretsmanager::Client::from_conf(conf)
}

/// Creates a secret with a unique name and returns the name.
pub async fn create_secret(value: &str) -> String {
    let name = format!("bridge/test-{}", crate::support::fastrand_token());
    client(&endpoint()).create_secret().name(&name).secret_string(value).send().await.expect("create secret in moto");
    name
}

pub async fn put_secret(name: &str, value: &str) {
    client(&endpoint()).put_secret_value().secret_id(name).secret_string(value).send().await.expect("put secret value");
}

/// A loopback proxy to moto that logs each `GetSecretValue` call (when it arrived, how long moto
/// took), and counts every call by its action.
pub struct CountingProxy {
    pub url: String,
    reads: ReadLog,
    pub actions: Actions,
    down: Arc<std::sync::atomic::AtomicBool>,
}

/// Calls by action (`AmazonSQS.SendMessage`, `secretsmanager.GetSecretValue`, ...).
pub type Actions = Arc<std::sync::Mutex<std::collections::BTreeMap<String, usize>>>;

/// Each `GetSecretValue`: when it arrived, and how long the answer took (zero until it came).
type ReadLog = Arc<std::sync::Mutex<Vec<(Instant, Duration)>>>;

#[derive(Clone)]
struct Upstream {
    /// An outage: every call is answered 503 `ServiceUnavailableException` (counted, not forwarded).
    down: Arc<std::sync::atomic::AtomicBool>,
    reads: ReadLog,
    actions: Actions,
    http: reqwest::Client,
    url: String,
}

impl CountingProxy {
    pub async fn start() -> CountingProxy {
        let upstream = Upstream {
            down: Default::default(),
            reads: ReadLog::default(),
            actions: Actions::default(),
            http: reqwest::Client::new(),
            url: endpoint(),
        };
        let (reads, actions, down) = (upstream.reads.clone(), upstream.actions.clone(), upstream.down.clone());
        let app = axum::Router::new().fallback(forward).with_state(upstream);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        // No Nagle: with the client's delayed ACK an answer would now and then wait 40 ms.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        CountingProxy { url, reads, actions, down }
    }

    /// Secrets Manager (or SQS) down (`true`) or back (`false`).
    #[allow(dead_code)]
    pub fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn reads(&self) -> usize {
        self.reads.lock().unwrap().len()
    }

    /// Each `GetSecretValue` so far: when it arrived, and how long moto took to answer it
    /// (the cold-start benchmark, examples/coldstart.rs, splits them by phase).
    #[allow(dead_code)]
    pub fn read_times(&self) -> Vec<(Instant, Duration)> {
        self.reads.lock().unwrap().clone()
    }
}

async fn forward(
    State(up): State<Upstream>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let at = Instant::now();
    let target = headers.get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    *up.actions.lock().unwrap().entry(target.clone()).or_default() += 1;
    // Counted on arrival; its duration filled in once moto has answered.
    let read = target.ends_with("GetSecretValue").then(|| {
        let mut log = up.reads.lock().unwrap();
        log.push((at, Duration::ZERO));
        log.len() - 1
    });
    if up.down.load(std::sync::atomic::Ordering::SeqCst) {
        let body = r#"{"__type":"ServiceUnavailableException","message":"the service is unavailable"}"#;
        let headers =
            [("content-type", "application/x-amz-json-1.1"), ("x-amzn-errortype", "ServiceUnavailableException")];
        return (StatusCode::SERVICE_UNAVAILABLE, headers, body).into_response();
    }
    let mut rb = up.http.post(format!("{}{}", up.url, uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")));
    for (k, v) in headers.iter() {
        if k != "host" && k != "content-length" {
            rb = rb.header(k.as_str(), v.as_bytes());
        }
    }
    let resp = rb.body(body).send().await.unwrap();
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
    let ct = resp.headers().get("content-type").cloned();
    let bytes = resp.bytes().await.unwrap();
    if let Some(i) = read {
        up.reads.lock().unwrap()[i].1 = at.elapsed();
    }
    let mut out = (status, bytes).into_response();
    if let Some(ct) = ct {
        out.headers_mut().insert("content-type", ct);
    }
    out
}
