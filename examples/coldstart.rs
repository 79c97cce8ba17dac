//! Cold start (issue 13): the time from exec of a Lambda `bootstrap` to its first answered
//! invocation, under a Lambda Runtime API stand-in, for three cases run interleaved, round by
//! round (their order rotating each round, after one untimed warm-up round):
//! - `hello`: the lambda_http + axum hello-world (`benches/anchors/hello.rs`);
//! - `hello+sdk`: the same plus a Secrets Manager client built in init and one `GetSecretValue`
//!   per invocation (`benches/anchors/hello_sdk.rs`);
//! - `bridge`: the real binary, reading its secret from moto's Secrets Manager, relaying a
//!   `generic` `success` webhook to the tests' GitLab stand-in behind TLS (a throwaway CA, given
//!   through `SSL_CERT_FILE` with the system's roots); the answer must be 2xx and the deployment
//!   must exist in the stand-in, or the run fails.
//!
//! Each case gets the same event and the same environment. Per case: init (exec → first
//! `GET /runtime/invocation/next`), invoke (event handed out → response posted), total (exec →
//! response posted), CPU time (user + sys, from `wait4` after a SIGKILL when the process asks
//! for its second event) and max RSS; for the bridge, the TLS handshakes at the GitLab stand-in
//! and the `GetSecretValue` calls made during init and during the first invocation. Prints a
//! markdown table (medians, min–max), what moto and the TLS handshakes took, and the issue's
//! targets, or JSON with `--json`. Exits non-zero when any run fails functionally; a missed
//! target is a measurement, not a failure.
//!
//! `bash scripts/coldstart [--rounds 25] [--json]` builds everything and runs it (moto from
//! `.venv`, or `MOTO_ENDPOINT`). By hand: `cargo run --release --example coldstart -- --bridge
//! target/release/gitlab-deploy-bridge --hello target/release/examples/anchor-hello --hello-sdk
//! target/release/examples/anchor-hello-sdk`. Loopback only.

#[allow(dead_code)]
#[path = "../tests/it/support/gitlab.rs"]
mod gitlab;
#[allow(dead_code)]
#[path = "../tests/it/support/moto.rs"]
mod moto;

/// What `moto.rs` takes from the tests' support module.
mod support {
    pub fn fastrand_token() -> String {
        (0..20).map(|_| fastrand::alphanumeric()).collect()
    }
}

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

/// How long one run may take before it counts as failed.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);
/// The targets: bridge total over each anchor's total, and calls in the first invocation.
const TARGET_OVER_HELLO: f64 = 4.0;
const TARGET_OVER_HELLO_SDK: f64 = 1.2;
/// The webhook every case is sent (the bridge's route `bench`, below).
const EVENT: &str = include_str!("../events/generic-success.json");
const ROUTE_PATH: &str = "/hooks/generic/bench";

type Error = Box<dyn std::error::Error + Send + Sync>;

struct Args {
    bridge: PathBuf,
    hello: PathBuf,
    hello_sdk: PathBuf,
    rounds: usize,
    json: bool,
}

fn args() -> Result<Args, String> {
    let usage = "usage: coldstart --bridge <gitlab-deploy-bridge> --hello <anchor-hello> --hello-sdk <anchor-hello-sdk> [--rounds 25] [--json]";
    let (mut bridge, mut hello, mut hello_sdk) = (None, None, None);
    let (mut rounds, mut json) = (25, false);
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut val = || it.next().ok_or(format!("{k} needs a value"));
        match k.as_str() {
            "--bridge" => bridge = Some(PathBuf::from(val()?)),
            "--hello" => hello = Some(PathBuf::from(val()?)),
            "--hello-sdk" => hello_sdk = Some(PathBuf::from(val()?)),
            "--rounds" => {
                rounds = val()?.parse().ok().filter(|n| *n > 0).ok_or("--rounds needs a whole number above 0")?
            }
            "--json" => json = true,
            "-h" | "--help" => return Err(usage.into()),
            other => return Err(format!("unknown argument {other}\n{usage}")),
        }
    }
    match (bridge, hello, hello_sdk) {
        (Some(bridge), Some(hello), Some(hello_sdk)) => Ok(Args { bridge, hello, hello_sdk, rounds, json }),
        _ => Err(usage.into()),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Case {
    Hello,
    HelloSdk,
    Bridge,
}

const CASES: [Case; 3] = [Case::Hello, Case::HelloSdk, Case::Bridge];

impl Case {
    fn name(self) -> &'static str {
        match self {
            Case::Hello => "hello",
            Case::HelloSdk => "hello+sdk",
            Case::Bridge => "bridge",
        }
    }
}

/// One run of one case.
#[derive(Clone, Default)]
struct Sample {
    init: Duration,
    invoke: Duration,
    total: Duration,
    cpu: Duration,
    max_rss_kb: u64,
    /// `GetSecretValue` calls, and TLS handshakes at the GitLab stand-in, during init and
    /// during the first invocation; GitLab API calls during the first invocation.
    secret_reads: (usize, usize),
    tls_handshakes: (usize, usize),
    gitlab_calls: usize,
    /// How long moto took to answer each `GetSecretValue`, and each TLS handshake at the GitLab
    /// stand-in (accepted → established), in this run.
    secret_read_times: Vec<Duration>,
    handshake_times: Vec<Duration>,
}

/// A call seen by a stand-in: when it arrived, and how long it took.
#[derive(Clone, Copy)]
struct Call {
    at: Instant,
    took: Duration,
}

type Calls = Arc<Mutex<Vec<Call>>>;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("coldstart FAILED: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Error> {
    for path in [&args.bridge, &args.hello, &args.hello_sdk] {
        if !path.is_file() {
            return Err(format!("{} does not exist (bash scripts/coldstart builds it)", path.display()).into());
        }
    }
    let bench = Bench::start().await?;
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); CASES.len()];
    // Round 0 warms the page cache and moto up and is not counted; the order rotates so that no
    // case always runs right after another.
    for round in 0..=args.rounds {
        for k in 0..CASES.len() {
            let i = (round + k) % CASES.len();
            let binary = [&args.hello, &args.hello_sdk, &args.bridge][i];
            let sample = bench
                .run_once(CASES[i], binary, round)
                .await
                .map_err(|e| format!("{} (round {round}): {e}", CASES[i].name()))?;
            if round > 0 {
                samples[i].push(sample);
            }
        }
        if round == 0 {
            eprintln!("coldstart: warm-up round done; {} timed rounds", args.rounds);
        } else if round % 5 == 0 || round == args.rounds {
            eprintln!("coldstart: {round}/{} rounds", args.rounds);
        }
    }
    let binaries = [&args.hello, &args.hello_sdk, &args.bridge];
    let report = Report::new(&samples, &binaries, args.rounds, bench.roots);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.json())?);
    } else {
        print!("{}", report.markdown());
    }
    Ok(())
}

/// What every run shares: moto (with the bridge's secret) behind a counting proxy, the
/// throwaway CA and the stand-in's certificate, and a scratch directory.
struct Bench {
    secrets: moto::CountingProxy,
    secret_id: String,
    gitlab_token: String,
    route_secret: String,
    acceptor: TlsAcceptor,
    /// `SSL_CERT_FILE`: the system's roots, if any, and the throwaway CA.
    ca_file: PathBuf,
    roots: usize,
    dir: Scratch,
    run_id: u32,
}

impl Bench {
    async fn start() -> Result<Bench, Error> {
        let dir = Scratch::new()?;
        let (acceptor, ca_pem) = throwaway_tls()?;
        let system = ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"]
            .iter()
            .find_map(|p| std::fs::read_to_string(p).ok());
        let bundle =
            format!("{}{}", system.as_deref().map(|s| format!("{}\n", s.trim_end())).unwrap_or_default(), ca_pem);
        let roots = bundle.matches("-----BEGIN CERTIFICATE-----").count();
        let ca_file = dir.0.join("ca.pem");
        std::fs::write(&ca_file, bundle)?;

        // Starts moto (a blocking wait) off the async threads; the proxy below then finds it.
        tokio::task::spawn_blocking(moto::endpoint).await?;
        let gitlab_token = format!("glpat-{}", support::fastrand_token());
        let route_secret = support::fastrand_token();
        let secret_id =
            moto::create_secret(&json!({"gitlab_token": gitlab_token, "route_bench_secret": route_secret}).to_string())
                .await;
        let secrets = moto::CountingProxy::start().await;
        Ok(Bench {
            secrets,
            secret_id,
            gitlab_token,
            route_secret,
            acceptor,
            ca_file,
            roots,
            dir,
            run_id: fastrand::u32(..),
        })
    }

    /// The environment every case gets: what Lambda sets, fake credentials, moto as the AWS
    /// endpoint, the secret, the bridge's route and its GitLab.
    fn environment(&self, runtime: &RuntimeApi, gitlab_url: &str) -> Vec<(&'static str, String)> {
        vec![
            ("PATH", std::env::var("PATH").unwrap_or_default()),
            ("AWS_LAMBDA_RUNTIME_API", runtime.address.clone()),
            ("AWS_LAMBDA_FUNCTION_NAME", "gitlab-deploy-bridge".into()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128".into()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
            ("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/gitlab-deploy-bridge".into()),
            ("AWS_LAMBDA_LOG_STREAM_NAME", "2026/11/29/[$LATEST]0123456789abcdef".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_SESSION_TOKEN", "test".into()),
            ("AWS_ENDPOINT_URL", self.secrets.url.clone()),
            ("SSL_CERT_FILE", self.ca_file.display().to_string()),
            ("SECRET_ID", self.secret_id.clone()),
            ("GITLAB_URL", gitlab_url.into()),
            ("ROUTES", json!({"bench": {"source": "generic", "projects": ["42"]}}).to_string()),
        ]
    }

    /// The webhook: the sample `generic` `success` event, sent to the route `bench` with the
    /// route's secret, for commit `sha` (fresh in each run).
    fn event(&self, sha: &str) -> Result<String, Error> {
        let mut ev: Value = serde_json::from_str(EVENT)?;
        ev["rawPath"] = json!(ROUTE_PATH);
        ev["requestContext"]["http"]["path"] = json!(ROUTE_PATH);
        ev["headers"]["authorization"] = json!(format!("Bearer {}", self.route_secret));
        ev["body"] = json!(
            json!({"environment": "production", "sha": sha, "ref": "main", "tag": false, "status": "success"})
                .to_string()
        );
        Ok(ev.to_string())
    }

    /// Starts `binary` as Lambda would, hands it one event, and measures it (module docs).
    async fn run_once(&self, case: Case, binary: &std::path::Path, round: usize) -> Result<Sample, Error> {
        let sha = format!("{:08x}{:032x}", self.run_id, round * CASES.len() + case as usize);
        let runtime = RuntimeApi::start(self.event(&sha)?).await?;
        // A fresh GitLab (and TLS front) per run, so that every run finds the same GitLab.
        let gitlab = gitlab::GitLabStub::start(&self.gitlab_token).await;
        gitlab.add_commit(&sha);
        let front = TlsFront::start(self.acceptor.clone(), gitlab.url.trim_start_matches("http://").parse()?).await?;
        let log_path = self.dir.0.join(format!("{}.log", case.name().replace('+', "-")));
        let log = std::fs::File::create(&log_path)?;
        let mut cmd = std::process::Command::new(binary);
        cmd.env_clear()
            .envs(self.environment(&runtime, &format!("https://localhost:{}", front.port)))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);

        let started = Instant::now();
        let child = Child(cmd.spawn()?.id() as libc::pid_t);
        let ended = runtime.finished(&child).await;
        let usage = child.kill();
        let failure =
            |what: String| -> Error { format!("{what}\n--- the end of its output:\n{}", tail(&log_path, 30)).into() };
        ended.map_err(failure)?;

        let timeline = runtime.timeline();
        let (Some(first_next), Some(handed_out), Some((answered, kind, body))) =
            (timeline.first_next, timeline.handed_out, timeline.answered)
        else {
            return Err(failure("the runtime saw no answer".into()));
        };
        if kind != "response" {
            return Err(failure(format!("the function posted {kind}: {body}")));
        }
        let answer: Value =
            serde_json::from_str(&body).map_err(|e| failure(format!("the response is no JSON ({e}): {body}")))?;
        let status = answer["statusCode"].as_u64().unwrap_or(0);
        if !(200..300).contains(&status) {
            return Err(failure(format!("answered {status}, not 2xx: {body}")));
        }
        if case == Case::Bridge {
            let deployed = gitlab
                .deployments()
                .iter()
                .any(|d| d.sha == sha && d.environment == "production" && d.status == "success");
            if !deployed {
                let handshake_errors = front.errors.lock().unwrap().join("; ");
                return Err(failure(format!(
                    "answered {status}, but GitLab holds no `success` deployment of {sha} (TLS errors: [{handshake_errors}]): {body}"
                )));
            }
        }

        let (utime, stime, max_rss_kb) = usage.map_err(|e| failure(format!("wait4: {e}")))?;
        let this_run = |calls: &Calls| -> Vec<Call> {
            calls.lock().unwrap().iter().filter(|c| c.at >= started).copied().collect()
        };
        let reads: Vec<Call> = self
            .secrets
            .read_times()
            .into_iter()
            .filter(|(at, _)| *at >= started)
            .map(|(at, took)| Call { at, took })
            .collect();
        let handshakes = this_run(&front.handshakes);
        let split = |calls: &[Call]| {
            let init = calls.iter().filter(|c| c.at < handed_out).count();
            let invoke = calls.iter().filter(|c| c.at >= handed_out && c.at <= answered).count();
            (init, invoke)
        };
        let gitlab_calls = gitlab.requests().iter().filter(|r| r.at >= handed_out && r.at <= answered).count();
        Ok(Sample {
            init: first_next - started,
            invoke: answered - handed_out,
            total: answered - started,
            cpu: utime + stime,
            max_rss_kb,
            secret_reads: split(&reads),
            tls_handshakes: split(&handshakes),
            gitlab_calls,
            secret_read_times: reads.iter().map(|c| c.took).collect(),
            handshake_times: handshakes.iter().map(|c| c.took).collect(),
        })
    }
}

/// The last `n` lines of a file.
fn tail(path: &std::path::Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A started function process, by pid, killed and reaped at the latest when dropped.
struct Child(libc::pid_t);

impl Child {
    /// Reaps it if it has exited: its wait status.
    fn exited(&self) -> Option<i32> {
        let mut status = 0;
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        (unsafe { libc::wait4(self.0, &mut status, libc::WNOHANG, &mut usage) } == self.0).then_some(status)
    }

    /// SIGKILL, then reap: user and system CPU time and max RSS (KiB) of its whole life.
    fn kill(self) -> Result<(Duration, Duration, u64), std::io::Error> {
        let pid = self.0;
        std::mem::forget(self);
        let mut status = 0;
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::kill(pid, libc::SIGKILL) };
        if unsafe { libc::wait4(pid, &mut status, 0, &mut usage) } != pid {
            return Err(std::io::Error::last_os_error());
        }
        let time = |t: libc::timeval| Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64);
        Ok((time(usage.ru_utime), time(usage.ru_stime), usage.ru_maxrss as u64))
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        unsafe {
            libc::kill(self.0, libc::SIGKILL);
            libc::waitpid(self.0, std::ptr::null_mut(), 0);
        }
    }
}

/// A Lambda Runtime API (2018-06-01) stand-in for one run: hands out one event, timestamps the
/// function's first `next`, the hand-out and the answer, and signals when the function asks for
/// a second event (or reports an error).
struct RuntimeApi {
    address: String,
    state: Arc<RuntimeState>,
    server: tokio::task::JoinHandle<()>,
}

#[derive(Clone, Default)]
struct Timeline {
    first_next: Option<Instant>,
    handed_out: Option<Instant>,
    /// When, `response` / `error` / `init_error`, and the body.
    answered: Option<(Instant, String, String)>,
}

struct RuntimeState {
    event: Mutex<Option<String>>,
    timeline: Mutex<Timeline>,
    done: Notify,
}

impl RuntimeApi {
    async fn start(event: String) -> Result<RuntimeApi, Error> {
        let state =
            Arc::new(RuntimeState { event: Mutex::new(Some(event)), timeline: Mutex::default(), done: Notify::new() });
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route("/2018-06-01/runtime/invocation/{id}/{kind}", post(answer))
            .route(
                "/2018-06-01/runtime/init/error",
                post(|st: State<Arc<RuntimeState>>, body: Bytes| {
                    answer(st, Path((String::new(), "init_error".into())), body)
                }),
            )
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?.to_string();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener.tap_io(no_delay), app).await;
        });
        Ok(RuntimeApi { address, state, server })
    }

    /// Waits until the function asks for its second event or reports an error; fails if it
    /// exits first or takes longer than [`RUN_TIMEOUT`].
    async fn finished(&self, child: &Child) -> Result<(), String> {
        let deadline = Instant::now() + RUN_TIMEOUT;
        loop {
            if tokio::time::timeout(Duration::from_millis(10), self.state.done.notified()).await.is_ok() {
                return Ok(());
            }
            if let Some(status) = child.exited() {
                return Err(format!("the function exited (wait status {status}) before asking for a second event"));
            }
            if Instant::now() > deadline {
                return Err(format!("no answer and no second `next` within {} s", RUN_TIMEOUT.as_secs()));
            }
        }
    }

    fn timeline(&self) -> Timeline {
        self.state.timeline.lock().unwrap().clone()
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn next(State(st): State<Arc<RuntimeState>>) -> Response {
    let now = Instant::now();
    st.timeline.lock().unwrap().first_next.get_or_insert(now);
    let Some(event) = st.event.lock().unwrap().take() else {
        // The second `next`: the run is over; the function is killed while it waits.
        st.done.notify_one();
        tokio::time::sleep(RUN_TIMEOUT).await;
        return (StatusCode::GONE, "no more events").into_response();
    };
    let deadline_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
        + RUN_TIMEOUT.as_millis() as u64;
    let mut r = event.into_response();
    let h = r.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert("lambda-runtime-aws-request-id", HeaderValue::from_static("coldstart-0001"));
    h.insert("lambda-runtime-deadline-ms", HeaderValue::from(deadline_ms));
    h.insert(
        "lambda-runtime-invoked-function-arn",
        HeaderValue::from_static("arn:aws:lambda:us-east-1:123456789012:function:gitlab-deploy-bridge"),
    );
    h.insert("lambda-runtime-trace-id", HeaderValue::from_static("Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1"));
    st.timeline.lock().unwrap().handed_out = Some(Instant::now());
    r
}

async fn answer(
    State(st): State<Arc<RuntimeState>>,
    Path((_id, kind)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let now = Instant::now();
    st.timeline.lock().unwrap().answered.get_or_insert((now, kind.clone(), String::from_utf8_lossy(&body).into()));
    if kind != "response" {
        st.done.notify_one();
    }
    (StatusCode::ACCEPTED, "{\"status\":\"OK\"}").into_response()
}

/// What every stand-in does to its connections, as a real server does: without it, Nagle's
/// algorithm meets the client's delayed ACK and an answer now and then waits 40 ms.
fn no_delay(tcp: &mut tokio::net::TcpStream) {
    let _ = tcp.set_nodelay(true);
}

/// TLS in front of one GitLab stand-in: terminates TLS with the throwaway certificate and
/// relays the bytes; times every handshake that succeeded (from the connection's accept).
struct TlsFront {
    port: u16,
    handshakes: Calls,
    errors: Arc<Mutex<Vec<String>>>,
    server: tokio::task::JoinHandle<()>,
}

impl TlsFront {
    async fn start(acceptor: TlsAcceptor, upstream: SocketAddr) -> Result<TlsFront, Error> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (handshakes, errors) = (Calls::default(), Arc::new(Mutex::new(Vec::new())));
        let (h, e) = (handshakes.clone(), errors.clone());
        let server = tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let accepted = Instant::now();
                no_delay(&mut tcp);
                let (acceptor, h, e) = (acceptor.clone(), h.clone(), e.clone());
                tokio::spawn(async move {
                    match acceptor.accept(tcp).await {
                        Ok(mut tls) => {
                            h.lock().unwrap().push(Call { at: accepted, took: accepted.elapsed() });
                            if let Ok(mut plain) = tokio::net::TcpStream::connect(upstream).await {
                                no_delay(&mut plain);
                                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                            }
                        }
                        Err(err) => e.lock().unwrap().push(err.to_string()),
                    }
                });
            }
        });
        Ok(TlsFront { port, handshakes, errors, server })
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A throwaway CA and a certificate for `localhost` it signed: the acceptor that presents the
/// certificate, and the CA's PEM.
fn throwaway_tls() -> Result<(TlsAcceptor, String), Error> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "gitlab-deploy-bridge coldstart throwaway CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_pem = ca.self_signed(&ca_key)?.pem();
    let issuer = Issuer::new(ca, ca_key);

    let leaf_key = KeyPair::generate()?;
    let leaf = CertificateParams::new(vec!["localhost".to_string()])?.signed_by(&leaf_key, &issuer)?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)?;
    Ok((TlsAcceptor::from(Arc::new(config)), ca_pem))
}

/// A scratch directory (the CA file, each case's output), removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> std::io::Result<Scratch> {
        let dir = std::env::temp_dir().join(format!("coldstart-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Median, min and max.
#[derive(Clone, Copy)]
struct Stats {
    median: f64,
    min: f64,
    max: f64,
}

impl Stats {
    fn of(mut xs: Vec<f64>) -> Stats {
        xs.sort_by(f64::total_cmp);
        let n = xs.len();
        let median = if n % 2 == 1 { xs[n / 2] } else { (xs[n / 2 - 1] + xs[n / 2]) / 2.0 };
        Stats { median, min: xs[0], max: xs[n - 1] }
    }

    /// `12.3 (11.0–15.2)` with `decimals`; a count that never varied is just the number.
    fn cell(&self, decimals: usize) -> String {
        if self.min == self.max {
            return format!("{:.decimals$}", self.median);
        }
        format!("{:.decimals$} ({:.decimals$}–{:.decimals$})", self.median, self.min, self.max)
    }

    fn json(&self) -> Value {
        let r = |x: f64| (x * 100.0).round() / 100.0;
        json!({"median": r(self.median), "min": r(self.min), "max": r(self.max)})
    }
}

struct CaseReport {
    name: &'static str,
    binary: String,
    binary_mb: f64,
    init: Stats,
    invoke: Stats,
    total: Stats,
    cpu: Stats,
    rss_mb: Stats,
    secret_reads: (Stats, Stats),
    tls_handshakes: (Stats, Stats),
    gitlab_calls: Stats,
    /// Each run's init, invoke, total and CPU time (ms), in round order.
    runs: Vec<Value>,
}

struct Report {
    rounds: usize,
    roots: usize,
    cases: Vec<CaseReport>,
    /// moto's time per `GetSecretValue` and the stand-in's per TLS handshake, over every run.
    secret_read_ms: Option<Stats>,
    handshake_ms: Option<Stats>,
}

impl Report {
    fn new(samples: &[Vec<Sample>], binaries: &[&PathBuf], rounds: usize, roots: usize) -> Report {
        let cases = CASES
            .iter()
            .zip(samples)
            .zip(binaries)
            .map(|((case, s), binary)| {
                let ms = |f: fn(&Sample) -> Duration| Stats::of(s.iter().map(|x| f(x).as_secs_f64() * 1000.0).collect());
                let count = |f: fn(&Sample) -> usize| Stats::of(s.iter().map(|x| f(x) as f64).collect());
                CaseReport {
                    name: case.name(),
                    binary: binary.display().to_string(),
                    binary_mb: std::fs::metadata(binary).map(|m| m.len() as f64 / 1e6).unwrap_or(0.0),
                    init: ms(|x| x.init),
                    invoke: ms(|x| x.invoke),
                    total: ms(|x| x.total),
                    cpu: ms(|x| x.cpu),
                    rss_mb: Stats::of(s.iter().map(|x| x.max_rss_kb as f64 / 1024.0).collect()),
                    secret_reads: (count(|x| x.secret_reads.0), count(|x| x.secret_reads.1)),
                    tls_handshakes: (count(|x| x.tls_handshakes.0), count(|x| x.tls_handshakes.1)),
                    gitlab_calls: count(|x| x.gitlab_calls),
                    runs: s
                        .iter()
                        .map(|x| {
                            let ms = |d: Duration| (d.as_secs_f64() * 1e5).round() / 100.0;
                            json!({"init_ms": ms(x.init), "invoke_ms": ms(x.invoke), "total_ms": ms(x.total), "cpu_ms": ms(x.cpu)})
                        })
                        .collect(),
                }
            })
            .collect();
        let all_ms = |f: fn(&Sample) -> &Vec<Duration>| {
            let xs: Vec<f64> = samples.iter().flatten().flat_map(f).map(|d| d.as_secs_f64() * 1000.0).collect();
            (!xs.is_empty()).then(|| Stats::of(xs))
        };
        Report {
            rounds,
            roots,
            cases,
            secret_read_ms: all_ms(|x| &x.secret_read_times),
            handshake_ms: all_ms(|x| &x.handshake_times),
        }
    }

    fn case(&self, case: Case) -> &CaseReport {
        &self.cases[CASES.iter().position(|c| *c == case).unwrap_or(0)]
    }

    /// (label, value, target, met) for each of the targets.
    fn targets(&self) -> Vec<(&'static str, f64, f64, bool)> {
        let bridge = self.case(Case::Bridge);
        let over = |anchor: Case| bridge.total.median / self.case(anchor).total.median;
        let (h, s) = (over(Case::Hello), over(Case::HelloSdk));
        let (tls, reads) = (bridge.tls_handshakes.1.median, bridge.secret_reads.1.median);
        vec![
            ("bridge total / hello total", h, TARGET_OVER_HELLO, h <= TARGET_OVER_HELLO),
            ("bridge total / hello+sdk total", s, TARGET_OVER_HELLO_SDK, s <= TARGET_OVER_HELLO_SDK),
            ("bridge: TLS handshakes during the first invocation", tls, 0.0, tls == 0.0),
            ("bridge: GetSecretValue during the first invocation", reads, 0.0, reads == 0.0),
        ]
    }

    fn markdown(&self) -> String {
        let mut out = format!(
            "Cold start, exec to first answered invocation: {} interleaved rounds after a warm-up round, on {} cores; \
             median (min–max) in ms. `SSL_CERT_FILE`: {} roots (the system's and the throwaway CA).\n\n",
            self.rounds,
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            self.roots,
        );
        out += "| case | binary (MB) | init | first invoke | total | CPU (user+sys) | max RSS (MB) | GetSecretValue init / invoke | TLS handshakes init / invoke | GitLab calls in invoke |\n";
        out += "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
        for c in &self.cases {
            let pair = |p: &(Stats, Stats)| format!("{} / {}", p.0.cell(0), p.1.cell(0));
            let (tls, gitlab) = if c.name == "bridge" {
                (pair(&c.tls_handshakes), c.gitlab_calls.cell(0))
            } else {
                ("—".into(), "—".into())
            };
            let reads = if c.name == "hello" { "—".into() } else { pair(&c.secret_reads) };
            out += &format!(
                "| {} | {:.1} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                c.name,
                c.binary_mb,
                c.init.cell(1),
                c.invoke.cell(1),
                c.total.cell(1),
                c.cpu.cell(1),
                c.rss_mb.cell(1),
                reads,
                tls,
                gitlab
            );
        }
        let took = |s: &Option<Stats>| s.map(|s| format!("{} ms", s.cell(1))).unwrap_or_else(|| "—".into());
        out += &format!(
            "\nAt the stand-ins: moto answers a `GetSecretValue` in {} (at the proxy); a TLS handshake at the GitLab stand-in takes {} \
             (accept → established, the client's share included).\n",
            took(&self.secret_read_ms),
            took(&self.handshake_ms)
        );
        out += "\n| issue 13 target | measured | target | |\n|---|---:|---:|---|\n";
        for (label, value, target, met) in self.targets() {
            let (value, target) = if target == 0.0 {
                (format!("{value:.0}"), "0".to_string())
            } else {
                (format!("{value:.2}x"), format!("≤ {target}x"))
            };
            out += &format!("| {label} | {value} | {target} | target {} |\n", if met { "met" } else { "missed" });
        }
        out
    }

    fn json(&self) -> Value {
        let cases: serde_json::Map<String, Value> = self
            .cases
            .iter()
            .map(|c| {
                let v = json!({
                    "binary": c.binary,
                    "binary_mb": (c.binary_mb * 100.0).round() / 100.0,
                    "init_ms": c.init.json(),
                    "invoke_ms": c.invoke.json(),
                    "total_ms": c.total.json(),
                    "cpu_ms": c.cpu.json(),
                    "max_rss_mb": c.rss_mb.json(),
                    "get_secret_value": {"init": c.secret_reads.0.json(), "invoke": c.secret_reads.1.json()},
                    "tls_handshakes": {"init": c.tls_handshakes.0.json(), "invoke": c.tls_handshakes.1.json()},
                    "gitlab_calls_in_invoke": c.gitlab_calls.json(),
                    "runs": c.runs,
                });
                (c.name.to_string(), v)
            })
            .collect();
        let targets: Vec<Value> = self
            .targets()
            .into_iter()
            .map(|(label, value, target, met)| json!({"what": label, "measured": (value * 1000.0).round() / 1000.0, "target": target, "met": met}))
            .collect();
        let took = |s: &Option<Stats>| s.map(|s| s.json()).unwrap_or(Value::Null);
        json!({
            "rounds": self.rounds,
            "warmup_rounds": 1,
            "ssl_cert_file_roots": self.roots,
            "cases": cases,
            "targets": targets,
            "moto_get_secret_value_ms": took(&self.secret_read_ms),
            "tls_handshake_ms": took(&self.handshake_ms),
        })
    }
}
