//! The service's connections: how many it holds, how long each may take, and which one
//! makes room when it is full.
//!
//! A plain `axum::serve` keeps every connection for as long as the client likes, so a few
//! hundred half-open or slowloris clients exhaust the process's file descriptors and take
//! `/healthz` down with them. Here:
//! - at most [`Limits::max_connections`] connections are open at once, derived from the
//!   soft `RLIMIT_NOFILE` with room left for the files and sockets drover itself opens;
//! - a connection must deliver a request's headers within [`Limits::header_timeout`] of
//!   being accepted, and a keep-alive connection may wait [`Limits::idle_timeout`] for its
//!   next request;
//! - a request body must arrive within [`Limits::body_timeout`] (tower-http), so a lying
//!   `Content-Length` holds a slot for a bounded time;
//! - when the table is full, the connection that has waited longest without sending a
//!   complete request is closed to make room, so a client with a whole request (a liveness
//!   probe, a webhook) is served even under a flood of half-open and slowloris clients.
//!
//! HTTP/1.1 only: GitHub's webhooks, Prometheus, kubelet probes and browsers all speak it.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{oneshot, watch};
use tower::ServiceExt;

/// How many connections the service holds and how long each may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Connections open at once; a new one beyond this closes the longest-waiting one.
    pub max_connections: usize,
    /// Time from accept to a request's complete headers.
    pub header_timeout: Duration,
    /// Time a keep-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Time to receive a request's whole body.
    pub body_timeout: Duration,
    /// Time a shutdown waits for in-flight requests before closing their connections.
    pub drain_timeout: Duration,
}

impl Limits {
    /// Limits for this process: connections up to the soft open-files limit less a reserve
    /// of an eighth (at least 64) for drover's own files and sockets.
    pub(crate) fn for_this_process() -> Self {
        let soft = open_files_soft_limit().unwrap_or(1024);
        let reserve = (soft / 8).max(64);
        Self {
            max_connections: soft.saturating_sub(reserve).clamp(16, 65_536) as usize,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// The soft `RLIMIT_NOFILE`, when it can be read.
fn open_files_soft_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes into the struct we pass, which outlives the call.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    ok.then_some(limit.rlim_cur)
}

/// What a connection is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Accepted, no complete request yet.
    Opened,
    /// A request is being answered.
    Busy,
    /// Answered; waiting for the next request on a keep-alive connection.
    Idle,
}

#[derive(Debug)]
struct Slot {
    phase: Phase,
    since: Instant,
    close: Option<oneshot::Sender<()>>,
}

/// Every open connection, by accept order.
#[derive(Debug, Default)]
struct Table {
    next: u64,
    slots: BTreeMap<u64, Slot>,
}

impl Table {
    fn open(&mut self, close: oneshot::Sender<()>) -> u64 {
        self.next += 1;
        let slot = Slot {
            phase: Phase::Opened,
            since: Instant::now(),
            close: Some(close),
        };
        self.slots.insert(self.next, slot);
        self.next
    }

    fn set(&mut self, id: u64, phase: Phase) {
        if let Some(slot) = self.slots.get_mut(&id) {
            slot.phase = phase;
            slot.since = Instant::now();
        }
    }

    fn close(&mut self, id: u64) {
        if let Some(close) = self.slots.get_mut(&id).and_then(|s| s.close.take()) {
            let _ = close.send(());
        }
    }

    /// Closes the connection that has waited longest without a complete request; false
    /// when every connection is answering one.
    fn make_room(&mut self) -> bool {
        let oldest = self
            .slots
            .iter()
            .filter(|(_, s)| s.phase != Phase::Busy && s.close.is_some())
            .min_by_key(|(_, s)| s.since)
            .map(|(id, _)| *id);
        oldest.inspect(|id| self.close(*id)).is_some()
    }

    /// Closes connections past their header or idle timeout.
    fn expire(&mut self, limits: &Limits, now: Instant) {
        let expired: Vec<u64> = self
            .slots
            .iter()
            .filter(|(_, s)| match s.phase {
                Phase::Opened => now - s.since > limits.header_timeout,
                Phase::Idle => now - s.since > limits.idle_timeout,
                Phase::Busy => false,
            })
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.close(id);
        }
    }

    /// Connections counted against the limit: those not yet told to close.
    fn open_count(&self) -> usize {
        self.slots.values().filter(|s| s.close.is_some()).count()
    }
}

type SharedTable = Arc<Mutex<Table>>;

fn lock(table: &SharedTable) -> std::sync::MutexGuard<'_, Table> {
    table
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Connections the kernel queues for `accept` (`listen(2)` backlog; Linux caps it at
/// `net.core.somaxconn`). A plain bind queues 128: a burst beyond that has its SYNs dropped
/// and retried a second later by each client, so a webhook storm is served at about 128
/// connections a second however fast drover accepts.
pub(crate) const LISTEN_BACKLOG: u32 = 4096;

/// Binds the service's listening socket at `addr` with [`LISTEN_BACKLOG`] (and
/// `SO_REUSEADDR`, so a restarted service binds while old connections linger).
pub(crate) fn bind(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves `router` on `listener` until `stop` turns true, then stops accepting, lets
/// in-flight requests finish for up to [`Limits::drain_timeout`], and returns.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let router = router.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
        limits.body_timeout,
    ));
    let table = SharedTable::default();
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let reaper = tokio::spawn(reap(table.clone(), limits, stop.clone()));
    let mut refused_since_log = 0u64;
    loop {
        let stream = tokio::select! {
            biased;
            () = stopped(&mut stop) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Out of file descriptors (or a connection reset before accept): wait a
                    // little instead of spinning; the reaper frees slots.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (close_tx, close_rx) = oneshot::channel();
        let id = {
            let mut table = lock(&table);
            if table.open_count() >= limits.max_connections && !table.make_room() {
                refused_since_log += 1;
                if refused_since_log.is_power_of_two() {
                    tracing::warn!(
                        refused = refused_since_log,
                        limit = limits.max_connections,
                        "every connection is busy; refusing new ones"
                    );
                }
                continue;
            }
            table.open(close_tx)
        };
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .serve_connection(
                TokioIo::new(stream),
                tracked(router.clone(), table.clone(), id),
            );
        let conn = graceful.watch(conn);
        let table = table.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = conn => {}
                _ = close_rx => {}
            }
            lock(&table).slots.remove(&id);
        });
    }
    drop(listener);
    reaper.abort();
    if tokio::time::timeout(limits.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain timeout; closing them");
    }
    Ok(())
}

/// The router as a hyper service that records the connection's phase around each request.
fn tracked(
    router: Router,
    table: SharedTable,
    id: u64,
) -> impl hyper::service::Service<
    hyper::Request<Incoming>,
    Response = axum::response::Response,
    Error = Infallible,
    Future = impl Future<Output = Result<axum::response::Response, Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        lock(&table).set(id, Phase::Busy);
        let (router, table) = (router.clone(), table.clone());
        async move {
            let response = router.oneshot(request).await;
            lock(&table).set(id, Phase::Idle);
            response
        }
    })
}

/// Resolves once `stop` is true (or its sender is gone); holds no lock guard across awaits.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await.map(drop);
}

/// Closes timed-out connections every quarter second until stopped.
async fn reap(table: SharedTable, limits: Limits, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            () = stopped(&mut stop) => return,
            _ = tick.tick() => lock(&table).expire(&limits, Instant::now()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table_with(phases: &[Phase]) -> (Table, Vec<oneshot::Receiver<()>>) {
        let mut table = Table::default();
        let mut closed = Vec::new();
        for phase in phases {
            let (tx, rx) = oneshot::channel();
            let id = table.open(tx);
            table.set(id, *phase);
            closed.push(rx);
        }
        (table, closed)
    }

    #[test]
    fn room_is_made_by_closing_the_longest_waiting_never_a_busy_one() {
        let (mut table, mut closed) = table_with(&[Phase::Busy, Phase::Opened, Phase::Idle]);
        assert!(table.make_room());
        assert!(
            closed[1].try_recv().is_ok(),
            "the oldest waiting one is closed"
        );
        assert!(closed[0].try_recv().is_err() && closed[2].try_recv().is_err());
        assert_eq!(table.open_count(), 2);
        assert!(table.make_room());
        assert!(closed[2].try_recv().is_ok());
        assert!(!table.make_room(), "a busy connection is never closed");
        assert!(closed[0].try_recv().is_err());
    }

    #[test]
    fn timeouts_close_opened_and_idle_connections_only() {
        let limits = Limits {
            max_connections: 10,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(1),
        };
        let (mut table, mut closed) = table_with(&[Phase::Opened, Phase::Idle, Phase::Busy]);
        table.expire(&limits, Instant::now() + Duration::from_secs(11));
        assert!(closed[0].try_recv().is_ok(), "headers too late");
        assert!(closed[1].try_recv().is_err(), "idle for less than a minute");
        table.expire(&limits, Instant::now() + Duration::from_secs(61));
        assert!(closed[1].try_recv().is_ok());
        assert!(
            closed[2].try_recv().is_err(),
            "busy connections are never expired"
        );
    }

    #[test]
    fn the_limit_leaves_a_reserve_below_the_open_files_limit() {
        let limits = Limits::for_this_process();
        let soft = open_files_soft_limit().unwrap();
        assert!((limits.max_connections as u64) < soft.max(17));
        assert!(limits.max_connections >= 16);
    }
}
