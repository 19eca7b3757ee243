//! The HTTP accept loop and the limits that keep sockets from being spent
//! without a request: connections held at once, and the time a client has
//! to send a request's headers (which is also how long an idle keep-alive
//! connection is kept).
//!
//! When every slot is taken, the oldest connection that has no request in
//! progress is closed to make room, so a flood of idle or slow-header
//! sockets never keeps `/healthz` (or a registry's delivery) out. Only when
//! every held connection is in the middle of a request is a new one closed
//! at once: requests themselves are bounded by the request timeout.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::metrics::Metrics;

/// The connection limits of the HTTP server.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections held open at once.
    pub max_connections: usize,
    /// Time to send a request's headers, from the connection's opening or
    /// the end of its previous response.
    pub header_read_timeout: Duration,
}

/// File descriptors kept for everything but client connections: the
/// findings database, registry and alert clients, git, the manifest walk.
const RESERVED_FDS: u64 = 256;

/// Raises the soft open-files limit to the hard one, and returns the
/// connection cap that fits under it (the configured one, or less).
pub fn fit_connection_cap(configured: usize) -> usize {
    let Some(soft) = raise_open_files_limit() else {
        return configured;
    };
    let fits = soft.saturating_sub(RESERVED_FDS).max(1);
    if (configured as u64) > fits {
        tracing::warn!(
            configured,
            open_files_limit = soft,
            cap = fits,
            "http.max_connections does not fit under the open-files limit; using less"
        );
        return fits as usize;
    }
    configured
}

/// The soft `RLIMIT_NOFILE` after raising it to the hard limit (None when
/// it cannot be read).
fn raise_open_files_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given, nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct it is given, nothing else.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = limit.rlim_max;
        }
    }
    Some(limit.rlim_cur)
}

/// One held connection, as the accept loop sees it.
struct Slot {
    /// Requests being served on it now.
    in_flight: Arc<AtomicUsize>,
    /// Closes it (gracefully: a request that started meanwhile finishes).
    close: CancellationToken,
}

/// Held connections by age (ids increase).
#[derive(Default)]
struct Held {
    slots: Mutex<BTreeMap<u64, Slot>>,
}

impl Held {
    fn len(&self) -> usize {
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn insert(&self, id: u64, slot: Slot) {
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, slot);
    }

    fn remove(&self, id: u64) {
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// Closes the oldest connection without a request in progress; false
    /// when every one is busy.
    fn shed_oldest_idle(&self) -> bool {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let idle = slots
            .iter()
            .find(|(_, s)| s.in_flight.load(Ordering::Acquire) == 0)
            .map(|(&id, _)| id);
        match idle.and_then(|id| slots.remove(&id)) {
            Some(slot) => {
                slot.close.cancel();
                true
            }
            None => false,
        }
    }
}

/// Serves `app` on `listener` until `shutdown`, then lets the requests in
/// progress finish and returns.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let held = Arc::new(Held::default());
    let mut tasks = JoinSet::new();
    let mut next_id = 0u64;
    loop {
        while tasks.try_join_next().is_some() {}
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors (or a connection reset before
                    // it was accepted): give the held ones a moment to end.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if held.len() >= limits.max_connections {
            if held.shed_oldest_idle() {
                metrics.rejected("idle_connection_shed");
            } else {
                metrics.rejected("connections");
                drop(stream);
                continue;
            }
        }
        let id = next_id;
        next_id += 1;
        let slot = Slot {
            in_flight: Arc::new(AtomicUsize::new(0)),
            close: shutdown.child_token(),
        };
        let connection = Connection {
            in_flight: slot.in_flight.clone(),
            close: slot.close.clone(),
            app: app.clone(),
            metrics: metrics.clone(),
            peer,
        };
        held.insert(id, slot);
        let held = held.clone();
        tasks.spawn(async move {
            connection.run(stream, limits.header_read_timeout).await;
            held.remove(id);
        });
    }
    drop(listener);
    // Every connection's close token is a child of `shutdown`: idle ones
    // close now, busy ones after their response.
    while tasks.join_next().await.is_some() {}
}

struct Connection {
    in_flight: Arc<AtomicUsize>,
    close: CancellationToken,
    app: Router,
    metrics: Arc<Metrics>,
    peer: SocketAddr,
}

impl Connection {
    async fn run(self, stream: TcpStream, header_read_timeout: Duration) {
        let served_any = Arc::new(AtomicBool::new(false));
        let service = {
            let in_flight = self.in_flight.clone();
            let served_any = served_any.clone();
            let app = self.app;
            hyper::service::service_fn(move |request: http::Request<Incoming>| {
                served_any.store(true, Ordering::Relaxed);
                let busy = InFlight::enter(in_flight.clone());
                let app = app.clone();
                async move {
                    let response = app.oneshot(request.map(axum::body::Body::new)).await;
                    drop(busy);
                    response
                }
            })
        };
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout)
            .serve_connection(TokioIo::new(stream), service);
        let mut connection = std::pin::pin!(connection);
        let result = tokio::select! {
            result = connection.as_mut() => result,
            () = self.close.cancelled() => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(e) = result {
            // A connection that served requests and then idled past the
            // header time is an ordinary keep-alive expiry, not a refusal.
            if e.is_timeout() && !served_any.load(Ordering::Relaxed) {
                self.metrics.rejected("header_timeout");
            } else if !e.is_timeout() {
                tracing::debug!(error = %e, peer = %self.peer, "HTTP connection error");
            }
        }
    }
}

/// Marks a connection busy while one of its requests is being served.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(count: Arc<AtomicUsize>) -> InFlight {
        count.fetch_add(1, Ordering::AcqRel);
        InFlight(count)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
