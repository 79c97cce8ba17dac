//! `serve`'s HTTP server: the router on a TCP listener, as a server one can put on a network.
//!
//! - A request's headers (and a kept-alive connection's wait for the next request) must arrive
//!   within `SERVE_HEADER_TIMEOUT_SECONDS`, a body within `BODY_TIMEOUT_SECONDS` (the router's).
//! - At most `SERVE_MAX_CONNECTIONS` are served at once, and at most
//!   `SERVE_MAX_CONNECTIONS_PER_PEER` from one address, so that one client holding half-sent
//!   requests cannot take the server from everyone. HTTP/1.1 serves one request at a time per
//!   connection, so that also caps the requests in flight. A connection beyond either is closed
//!   at once, and counted: the counts are logged once per [`REPORT_EVERY`], never one line each.
//! - When `accept` fails for want of resources (descriptors exhausted: EMFILE, ENFILE; memory),
//!   the loop backs off (10 ms doubling to 1 s) instead of spinning, says so once, and says
//!   again when it accepts once more.

use axum::Router;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::ServeSettings;

/// How often refused connections and failed accepts are reported (when there were any).
pub const REPORT_EVERY: Duration = Duration::from_secs(10);

const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Connections served per peer address.
#[derive(Default)]
struct Peers(Mutex<HashMap<IpAddr, usize>>);

impl Peers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One more connection of `peer`, unless it has `limit` already.
    fn admit(self: &Arc<Self>, peer: IpAddr, limit: usize) -> Option<PeerSlot> {
        let mut peers = self.lock();
        let n = peers.entry(peer).or_default();
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(PeerSlot { peers: self.clone(), peer })
    }
}

/// A peer's connection; its count goes down when it is dropped (the connection ended).
struct PeerSlot {
    peers: Arc<Peers>,
    peer: IpAddr,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut peers = self.peers.lock();
        if let Some(n) = peers.get_mut(&self.peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                peers.remove(&self.peer);
            }
        }
    }
}

/// What was refused since the last report.
#[derive(Default)]
struct Refused {
    full: u64,
    per_peer: u64,
    accept_errors: u64,
}

impl Refused {
    fn report(&mut self, settings: &ServeSettings) {
        if self.full + self.per_peer + self.accept_errors > 0 {
            tracing::warn!(
                refused_at_limit = self.full,
                refused_over_peer_share = self.per_peer,
                failed_accepts = self.accept_errors,
                max_connections = settings.max_connections,
                max_connections_per_peer = settings.max_connections_per_peer,
                "connections refused in the last {} s (SERVE_MAX_CONNECTIONS, SERVE_MAX_CONNECTIONS_PER_PEER)",
                REPORT_EVERY.as_secs()
            );
        }
        *self = Refused::default();
    }
}

/// Whether an `accept` error concerns only the connection being accepted (the peer gave up):
/// the next accept may go on at once. Anything else (EMFILE, ENFILE, ENOBUFS, ENOMEM) concerns
/// the process and is waited out.
fn connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted)
}

/// Serves `app` on `listener` within `settings` until `shutdown` ends.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    app: Router,
    settings: ServeSettings,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(settings.max_connections));
    let peers = Arc::new(Peers::default());
    let mut refused = Refused::default();
    let mut report = tokio::time::interval_at(tokio::time::Instant::now() + REPORT_EVERY, REPORT_EVERY);
    // Failed accepts in a row, and since when.
    let mut starved: Option<(u64, Instant)> = None;
    let mut backoff = Duration::ZERO;
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            _ = report.tick() => {
                refused.report(&settings);
                continue;
            }
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) if connection_error(&e) => continue,
                Err(e) => {
                    refused.accept_errors += 1;
                    let (failures, _) = starved.get_or_insert_with(|| {
                        tracing::error!(
                            error = %e,
                            "cannot accept connections (descriptors or memory exhausted: raise `ulimit -n`, or lower SERVE_MAX_CONNECTIONS); backing off until it can"
                        );
                        (0, Instant::now())
                    });
                    *failures += 1;
                    backoff = (backoff * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
                    tokio::select! {
                        _ = &mut shutdown => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    continue;
                }
            },
        };
        backoff = Duration::ZERO;
        if let Some((failures, since)) = starved.take() {
            tracing::info!(
                failed_accepts = failures,
                for_ms = since.elapsed().as_millis() as u64,
                "accepting connections again"
            );
        }
        let Some(peer_slot) = peers.admit(peer.ip().to_canonical(), settings.max_connections_per_peer) else {
            refused.per_peer += 1;
            drop(stream);
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refused.full += 1;
            drop(stream);
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let header_timeout = settings.header_timeout;
        tokio::spawn(async move {
            let _slots = (slot, peer_slot);
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    refused.report(&settings);
}

/// Raises the soft limit on open descriptors towards the hard one, so that
/// `SERVE_MAX_CONNECTIONS` connections (and the spool, GitLab's connections, the log) fit; warns
/// when even the hard limit is too low. Returns the soft limit in force.
pub fn fit_descriptor_limit(settings: &ServeSettings) -> Option<u64> {
    // Beyond the connections: the listener, the spool's files, GitLab's and AWS's pools, stdio.
    const HEADROOM: u64 = 64;
    let needed = settings.max_connections as u64 + HEADROOM;
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur < needed && limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: needed.min(limit.rlim_max), rlim_max: limit.rlim_max };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = raised.rlim_cur;
        }
    }
    if limit.rlim_cur < needed {
        tracing::warn!(
            open_files_limit = limit.rlim_cur,
            max_connections = settings.max_connections,
            "the open-files limit (`ulimit -n`) is below SERVE_MAX_CONNECTIONS plus {HEADROOM}: connections beyond it wait until descriptors free up; raise the limit or lower SERVE_MAX_CONNECTIONS"
        );
    }
    Some(limit.rlim_cur)
}
