//! Serving one downstream connection: HTTP/1.1 and h2c on one port, with the listener's limits.
//!
//! hyper parses and enforces the protocol limits: a request head over `max_header_bytes` or
//! with more than `max_headers` fields gets 431, a malformed head 400 and a closed connection,
//! a head not received within `header_read_timeout` a closed connection. On HTTP/1.1 that read
//! timeout also bounds the wait for the next request on a kept-alive connection. HTTP/2 gets
//! explicit stream, header-list and reset-flood limits. A connection that moves no byte for
//! `idle_timeout` is closed gracefully, as is every connection of a listener that drains (a
//! reload removed it, or the process shuts down or hands over to a new binary).

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioTimer;
use hyper_util::server::conn::auto;
use strait_config::Limits;
use tokio::sync::{Notify, watch};

use crate::forward::{self, Downstream};
use crate::io::{Activity, Socket};
use crate::metrics::ListenerStats;
use crate::worker::LocalExec;

/// hyper's smallest allowed read buffer.
const MIN_BUF: usize = 8 * 1024;

/// The connection builder for a listener's limits.
pub fn builder(limits: &Limits) -> auto::Builder<LocalExec> {
    let mut builder = auto::Builder::new(LocalExec);
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .half_close(false)
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(MIN_BUF))
        .max_headers(limits.max_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(limits.http2_max_pending_accept_reset_streams)
        .max_local_error_reset_streams(limits.http2_max_local_error_reset_streams)
        .initial_stream_window_size(1024 * 1024)
        .initial_connection_window_size(4 * 1024 * 1024)
        .max_send_buf_size(1024 * 1024);
    builder
}

/// How long an HTTP/1.1 connection must be quiet, once its listener drains, before it is
/// closed: a client between two requests would otherwise race the close.
const DRAIN_QUIET: Duration = Duration::from_millis(250);

/// What the connections of one listener on one worker share to drain.
#[derive(Debug)]
pub struct ListenerDrain {
    /// Turns true when the listener stops (removed by a reload, or the process shuts down).
    pub stop: watch::Receiver<bool>,
    /// Time connections get to finish once `stop` turns true; then they are closed.
    pub timeout: Duration,
    /// Counts the worker's open connections and tunnels.
    pub tracker: ConnTracker,
}

/// Serves a connection until it ends, is idle for `idle_timeout`, or its listener drains.
///
/// Draining: HTTP/2 gets GOAWAY (in-flight streams finish); an HTTP/1.1 connection answers
/// its next response with `Connection: close`, or is closed once quiet for [`DRAIN_QUIET`];
/// whatever is still open at the drain deadline is closed.
pub async fn serve(
    builder: Rc<auto::Builder<LocalExec>>,
    conn: Rc<Downstream>,
    socket: Socket,
    idle_timeout: Duration,
    _tracked: Tracked,
) {
    conn.stats.connections_active.inc();
    let _active = ActiveConnection(Arc::clone(&conn.stats));
    let activity = Activity::default();
    let socket = socket
        .with_activity(activity.clone())
        .with_framing_guard(Arc::clone(&conn.framing));
    let mut stop = conn.drain.stop.clone();
    let drain_timeout = conn.drain.timeout;
    let state = Rc::clone(&conn);
    let service = service_fn(move |req| forward::handle(Rc::clone(&conn), req));
    let connection = builder.serve_connection_with_upgrades(socket, service);
    tokio::pin!(connection);
    let deadline = tokio::time::sleep(Duration::MAX);
    tokio::pin!(deadline);
    let mut seen = activity.count();
    let mut closing = false;
    let mut draining = false;
    loop {
        let tick = if draining { DRAIN_QUIET } else { idle_timeout };
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(error = %err, "downstream connection ended with an error");
                }
                return;
            }
            _ = stop.wait_for(|stop| *stop), if !draining => {
                draining = true;
                state.closing.set(true);
                deadline.as_mut().reset(tokio::time::Instant::now() + drain_timeout);
                if state.http2.get() && !closing {
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
                seen = activity.count();
            }
            () = &mut deadline, if draining => {
                tracing::debug!(peer = %state.peer, "drain deadline passed; closing the connection");
                return;
            }
            () = tokio::time::sleep(tick), if !closing => {
                let now = activity.count();
                if now == seen || (draining && state.http2.get()) {
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
                seen = now;
            }
        }
    }
}

/// Counts a worker's open downstream connections, to wait for them to drain.
#[derive(Debug, Clone, Default)]
pub struct ConnTracker {
    open: Rc<Cell<usize>>,
    zero: Rc<Notify>,
}

/// One tracked connection; dropping it counts the connection closed.
#[derive(Debug)]
pub struct Tracked(ConnTracker);

impl ConnTracker {
    /// Counts a new connection.
    pub fn track(&self) -> Tracked {
        self.open.set(self.open.get() + 1);
        Tracked(self.clone())
    }

    /// Open connections.
    pub fn open(&self) -> usize {
        self.open.get()
    }

    /// Resolves once no connection is open.
    pub async fn drained(&self) {
        loop {
            let notified = self.zero.notified();
            if self.open.get() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let open = self.0.open.get().saturating_sub(1);
        self.0.open.set(open);
        if open == 0 {
            self.0.zero.notify_waiters();
        }
    }
}

/// Counts a connection open in its listener's gauge until dropped.
struct ActiveConnection(Arc<ListenerStats>);

impl Drop for ActiveConnection {
    fn drop(&mut self) {
        self.0.connections_active.dec();
    }
}
