//! The one HTTP stack of the process: one rustls configuration (aws-lc-rs, one root store
//! loaded once from the system or `SSL_CERT_FILE` / `SSL_CERT_DIR`), one reqwest client with
//! one connection pool, used for GitLab, for deploy tools' own APIs, and — through
//! [`SdkHttpClient`] — for every AWS SDK call (Secrets Manager, SQS, credentials).
//!
//! Before this module the process carried two stacks: reqwest's (rustls-platform-verifier,
//! which reads the system roots on the first handshake) and the SDK's own hyper client (which
//! reads them again). Loading the roots was more than half of the init time; now it happens
//! once, in init, and both users share the result (docs/decisions.md, issue 13).

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use std::sync::Arc;
use std::time::Duration;

/// The variable naming a PEM bundle of root certificates, instead of the system's.
pub const SSL_CERT_FILE: &str = "SSL_CERT_FILE";

/// The process's TLS client configuration: TLS 1.2 and 1.3 with aws-lc-rs, the system's root
/// certificates (`SSL_CERT_FILE` / `SSL_CERT_DIR` name others, e.g. a self-managed GitLab's
/// private CA). Root files that cannot be read are logged, not fatal: a handshake with a server
/// whose root is missing fails with a clear error instead.
pub fn tls_config() -> Result<rustls::ClientConfig, rustls::Error> {
    // rustls-native-certs reads `SSL_CERT_FILE` (a PEM bundle) and `SSL_CERT_DIR`, else the
    // system's bundle (AL2023: /etc/pki/tls/certs/ca-bundle.crt).
    let loaded = rustls_native_certs::load_native_certs();
    for error in &loaded.errors {
        tracing::warn!(error = %error, "a root certificate file could not be read");
    }
    let mut roots = rustls::RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(loaded.certs);
    if added == 0 {
        tracing::warn!(
            ignored,
            "no root certificates found (set {SSL_CERT_FILE} to a PEM bundle); every TLS handshake will fail"
        );
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The one HTTP client: the TLS configuration above, no redirects (a redirect could carry the
/// GitLab token elsewhere; AWS APIs do not redirect), a connect timeout, kept-alive connections.
/// No default header carries a credential: the GitLab token is added per request by
/// [`crate::gitlab::http::HttpGitLab`] only.
pub fn http_client(connect_timeout: Duration) -> Result<reqwest::Client, Box<dyn std::error::Error + Send + Sync>> {
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(tls_config()?)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(connect_timeout)
        .pool_idle_timeout(Duration::from_secs(50))
        .user_agent(concat!("gitlab-deploy-bridge/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

/// An answer's body could not be read within its cap.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// It is (or says it is) larger than the cap: it was not read further.
    #[error("the answer is larger than {0} bytes")]
    TooLarge(usize),
    #[error(transparent)]
    Body(#[from] reqwest::Error),
}

/// Reads an answer's body, at most `cap` bytes: a larger one (by its `Content-Length`, or once
/// that many bytes arrived) is dropped unread, with its connection, so a hostile or broken
/// server cannot make the process hold more than `cap` for it.
pub async fn read_capped(mut response: reqwest::Response, cap: usize) -> Result<bytes::Bytes, ReadError> {
    if response.content_length().is_some_and(|n| n > cap as u64) {
        return Err(ReadError::TooLarge(cap));
    }
    let expected = response.content_length().map(|n| n as usize).unwrap_or(16 * 1024);
    let mut body = bytes::BytesMut::with_capacity(expected.min(cap));
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > cap {
            return Err(ReadError::TooLarge(cap));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The most an AWS answer may be (SQS's largest, a batch of ten 256 KiB messages, is 2.5 MiB).
const SDK_MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;

/// The AWS SDK's HTTP client, sending through the shared reqwest client: the SDK signs and
/// retries as usual; this only carries the bytes. Operation timeouts stay the SDK's; its read
/// timeout, when one is set, becomes the request's timeout.
#[derive(Debug, Clone)]
pub struct SdkHttpClient(reqwest::Client);

impl SdkHttpClient {
    pub fn shared(http: &reqwest::Client) -> SharedHttpClient {
        SharedHttpClient::new(SdkHttpClient(http.clone()))
    }
}

impl HttpClient for SdkHttpClient {
    fn http_connector(&self, settings: &HttpConnectorSettings, _components: &RuntimeComponents) -> SharedHttpConnector {
        SharedHttpConnector::new(SdkConnector { http: self.0.clone(), read_timeout: settings.read_timeout() })
    }
}

#[derive(Debug)]
struct SdkConnector {
    http: reqwest::Client,
    read_timeout: Option<Duration>,
}

impl HttpConnector for SdkConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let (http, read_timeout) = (self.http.clone(), self.read_timeout);
        HttpConnectorFuture::new(async move {
            let request = request.try_into_http1x().map_err(|e| ConnectorError::user(e.into()))?;
            let (parts, body) = request.into_parts();
            // The calls this function makes (GetSecretValue, SQS) have small in-memory bodies.
            let bytes = body
                .bytes()
                .map(<[u8]>::to_vec)
                .ok_or_else(|| ConnectorError::user("a streaming request body cannot be sent by this client".into()))?;
            let mut request = reqwest::Request::try_from(http::Request::from_parts(parts, bytes))
                .map_err(|e| ConnectorError::user(e.into()))?;
            if let Some(t) = read_timeout {
                *request.timeout_mut() = Some(t);
            }
            let response = http.execute(request).await.map_err(connector_error)?;
            let (status, headers) = (response.status(), response.headers().clone());
            let body = match read_capped(response, SDK_MAX_ANSWER_BYTES).await {
                Ok(body) => body,
                Err(ReadError::Body(e)) => return Err(connector_error(e)),
                Err(too_large) => return Err(ConnectorError::other(too_large.into(), None)),
            };
            let mut answer = http::Response::new(SdkBody::from(body));
            *answer.status_mut() = status;
            *answer.headers_mut() = headers;
            HttpResponse::try_from(answer).map_err(|e| ConnectorError::other(e.into(), None))
        })
    }
}

/// reqwest's failure in the SDK's terms, which decide whether the SDK retries.
fn connector_error(e: reqwest::Error) -> ConnectorError {
    let e = e.without_url();
    if e.is_timeout() {
        ConnectorError::timeout(e.into())
    } else if e.is_connect() || e.is_request() || e.is_body() {
        ConnectorError::io(e.into())
    } else {
        ConnectorError::other(e.into(), None)
    }
}
