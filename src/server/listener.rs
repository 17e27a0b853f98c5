//! The accept loop: at most `server.max_connections` client connections, accept errors
//! survived, and a graceful end.
//!
//! At the connection limit the loop stops accepting, so newcomers wait in the kernel's backlog
//! (and a load balancer sees this replica slow, or [`Lifecycle::at_connection_limit`] through
//! the readiness probe) rather than being accepted and starved.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::response::Response;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::conn::{self, Policy};
use super::Lifecycle;
use crate::config::ServerConfig;
use crate::layers::metrics::Metrics;
use crate::tls::server::ServerTls;

/// The first pause after a failed accept (EMFILE and the like), doubled while they go on.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Serves `service` on every connection `listener` accepts (over TLS with `tls`) until
/// `shutdown` completes; then closes the listener, tells each connection to finish the request
/// it is serving (idle ones close at once) and returns when all have.
pub async fn serve<S>(
    listener: TcpListener,
    tls: Option<ServerTls>,
    service: S,
    config: &ServerConfig,
    metrics: Arc<Metrics>,
    lifecycle: Arc<Lifecycle>,
    shutdown: impl Future<Output = ()>,
) where
    S: tower::Service<axum::extract::Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let policy = Arc::new(Policy::new(config));
    let mut slots = Slots::new(config.max_connections, &metrics, lifecycle);
    let graceful = GracefulShutdown::new();
    let mut failures = AcceptFailures::default();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            biased;
            () = &mut shutdown => break,
            slot = slots.take() => slot,
        };
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                failures.ended();
                accepted
            }
            Err(e) => {
                let pause = failures.failed(&e, &metrics);
                tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(pause) => continue,
                }
            }
        };
        // The gateway writes whole answers or large frames: Nagle would only delay their tails.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, "cannot set TCP_NODELAY: {e}");
        }
        let (service, policy, metrics, watcher) =
            (service.clone(), policy.clone(), metrics.clone(), graceful.watcher());
        let acceptor = tls.as_ref().map(|tls| tls.acceptor().clone());
        tokio::spawn(async move {
            let _open = metrics.connection_opened();
            conn::serve(stream, peer, acceptor, service, &policy, &metrics, watcher).await;
            drop(slot);
        });
    }
    drop(listener);
    // Renewed certificates no longer matter.
    drop(tls);
    graceful.shutdown().await;
}

/// The connection slots, and the episodes during which all are taken.
struct Slots {
    free: Arc<Semaphore>,
    max: usize,
    metrics: Arc<Metrics>,
    lifecycle: Arc<Lifecycle>,
    /// The limit was reached and no slot has been free at once since: one episode, one warning.
    at_limit: Option<Instant>,
}

impl Slots {
    fn new(max: usize, metrics: &Arc<Metrics>, lifecycle: Arc<Lifecycle>) -> Self {
        Slots { free: Arc::new(Semaphore::new(max)), max, metrics: metrics.clone(), lifecycle, at_limit: None }
    }

    /// A slot for the next connection: at once if one is free, else when a connection ends.
    async fn take(&mut self) -> OwnedSemaphorePermit {
        if let Ok(slot) = self.free.clone().try_acquire_owned() {
            if let Some(since) = self.at_limit.take() {
                tracing::info!(
                    max_connections = self.max,
                    seconds = since.elapsed().as_secs_f64(),
                    "below the connection limit again"
                );
            }
            return slot;
        }
        if self.at_limit.is_none() {
            self.at_limit = Some(Instant::now());
            self.metrics.connection_limit_reached();
            tracing::warn!(
                max_connections = self.max,
                "at the connection limit (server.max_connections): not accepting until a connection closes"
            );
        }
        self.lifecycle.set_at_connection_limit(true);
        let slot = self.free.clone().acquire_owned().await;
        self.lifecycle.set_at_connection_limit(false);
        match slot {
            Ok(slot) => slot,
            // The semaphore is never closed.
            Err(_) => std::future::pending().await,
        }
    }
}

/// A run of failed accepts: the first is logged, the pause grows, the end is logged with the count.
#[derive(Default)]
struct AcceptFailures {
    count: u64,
    pause: Duration,
}

impl AcceptFailures {
    /// How long to wait before accepting again.
    fn failed(&mut self, e: &std::io::Error, metrics: &Metrics) -> Duration {
        metrics.accept_error();
        // One connection's trouble (it was reset before it was accepted): the next may be fine.
        if matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionRefused
        ) {
            tracing::debug!("accept failed: {e}");
            return Duration::ZERO;
        }
        if self.count == 0 {
            tracing::warn!("cannot accept connections: {e}; retrying");
        }
        self.count += 1;
        self.pause = (self.pause * 2).clamp(ACCEPT_BACKOFF, ACCEPT_BACKOFF_MAX);
        self.pause
    }

    fn ended(&mut self) {
        if self.count > 0 {
            tracing::info!(failures = self.count, "accepting connections again");
        }
        *self = AcceptFailures::default();
    }
}
