//! Serving one downstream connection: HTTP/1.1 and h2c on one port, with the listener's limits.
//!
//! hyper parses and enforces the protocol limits: a request head over `max_header_bytes` or
//! with more than `max_headers` fields gets 431, a malformed head 400 and a closed connection,
//! a head not received within `header_read_timeout` a closed connection. On HTTP/1.1 that read
//! timeout also bounds the wait for the next request on a kept-alive connection. HTTP/2 gets
//! explicit stream, header-list and reset-flood limits. A connection that moves no byte for
//! `idle_timeout` is closed gracefully, as is every connection when the worker shuts down.

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

/// Serves a connection until it ends, is idle for `idle_timeout`, or the worker shuts down
/// (then in-flight requests finish first: HTTP/2 GOAWAY, HTTP/1.1 `Connection: close`).
pub async fn serve(
    builder: Rc<auto::Builder<LocalExec>>,
    conn: Rc<Downstream>,
    socket: Socket,
    idle_timeout: Duration,
    _tracked: Tracked,
    mut shutdown: watch::Receiver<bool>,
) {
    conn.stats.connections_active.inc();
    let _active = ActiveConnection(Arc::clone(&conn.stats));
    let activity = Activity::default();
    let socket = socket
        .with_activity(activity.clone())
        .with_framing_guard(Arc::clone(&conn.framing));
    let service = service_fn(move |req| forward::handle(Rc::clone(&conn), req));
    let connection = builder.serve_connection_with_upgrades(socket, service);
    tokio::pin!(connection);
    let mut seen = activity.count();
    let mut closing = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(error = %err, "downstream connection ended with an error");
                }
                return;
            }
            _ = shutdown.wait_for(|stop| *stop), if !closing => {
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
            () = tokio::time::sleep(idle_timeout), if !closing => {
                let now = activity.count();
                if now == seen {
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
