//! Starting the upstream: the builder, the accept loop and per-connection serving.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::HeaderValue;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinSet};
use tracing::{debug, warn};

use super::record::{Log, SeenRequest};
use super::respond;
use crate::task::Background;

/// A running upstream; see the [module docs](super) for its behaviour by path.
///
/// Dropping it closes the listener and aborts its connections and WebSocket sessions.
#[derive(Debug)]
pub struct Upstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    _accept: Background,
}

/// Configures an [`Upstream`] before it starts.
#[derive(Debug, Clone)]
pub struct UpstreamBuilder {
    name: String,
    abort_first: usize,
    protocol: Protocol,
}

#[derive(Debug, Clone, Copy)]
enum Protocol {
    Auto,
    Http1,
    H2c,
}

/// State shared by the accept loop, connections, handlers and the [`Upstream`] handle.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) name: String,
    pub(super) name_header: HeaderValue,
    pub(super) log: Arc<Log>,
    connections: AtomicUsize,
    open: AtomicUsize,
    abort_left: AtomicUsize,
    upgrades: Mutex<Vec<AbortHandle>>,
}

// === impl Upstream ===

impl Upstream {
    /// A builder with name `upstream`, both protocols, no forced aborts.
    pub fn builder() -> UpstreamBuilder {
        UpstreamBuilder {
            name: "upstream".to_owned(),
            abort_first: 0,
            protocol: Protocol::Auto,
        }
    }

    /// Starts an upstream with the default builder.
    ///
    /// # Panics
    ///
    /// As [`UpstreamBuilder::start`].
    pub async fn start() -> Self {
        Self::builder().start().await
    }

    /// The listening address (`127.0.0.1:port`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The name sent in `x-upstream` and as the default body.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// How many requests have arrived (counted when the head arrives).
    pub fn requests_seen(&self) -> usize {
        self.shared.log.len()
    }

    /// How many TCP connections have been accepted.
    pub fn connections_seen(&self) -> usize {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// How many TCP connections are open now (accepted and not yet closed).
    pub fn connections_open(&self) -> usize {
        self.shared.open.load(Ordering::Relaxed)
    }

    /// Every request seen so far, oldest first.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.shared.log.snapshot()
    }

    /// The most recent request, if any.
    pub fn last_request(&self) -> Option<SeenRequest> {
        self.shared.log.last()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        // The accept task owns the listener and connections; `Background` aborts it. Upgraded
        // connections run in their own tasks, so end those here.
        for handle in self
            .shared
            .upgrades
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            handle.abort();
        }
    }
}

// === impl UpstreamBuilder ===

impl UpstreamBuilder {
    /// Sets the name sent in `x-upstream` and as the default body.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Aborts the first `n` requests as `/abort` does, whatever their path: no response, the
    /// HTTP/1.1 connection closed or the HTTP/2 stream reset. The requests are still recorded.
    pub fn abort_first(mut self, n: usize) -> Self {
        self.abort_first = n;
        self
    }

    /// Serves HTTP/1.1 only (an h2c preface gets an error and a closed connection).
    pub fn http1_only(mut self) -> Self {
        self.protocol = Protocol::Http1;
        self
    }

    /// Serves h2c with prior knowledge only.
    pub fn h2c_only(mut self) -> Self {
        self.protocol = Protocol::H2c;
        self
    }

    /// Binds `127.0.0.1:0` and spawns the accept loop on the current runtime.
    ///
    /// # Panics
    ///
    /// Panics outside a tokio runtime, if the name is not a valid header value, or if binding
    /// a loopback port fails (the test cannot run without one).
    pub async fn start(self) -> Upstream {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("binding 127.0.0.1:0 for a test upstream");
        let addr = listener
            .local_addr()
            .expect("a bound listener has a local address");
        let name_header = HeaderValue::try_from(self.name.as_str())
            .expect("an upstream name must be a valid header value");
        let shared = Arc::new(Shared {
            name: self.name,
            name_header,
            log: Arc::default(),
            connections: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            abort_left: AtomicUsize::new(self.abort_first),
            upgrades: Mutex::default(),
        });
        debug!(name = %shared.name, %addr, "upstream listening");
        let accept = Background::spawn(accept_loop(listener, shared.clone(), self.protocol));
        Upstream {
            addr,
            shared,
            _accept: accept,
        }
    }
}

// === impl Shared ===

impl Shared {
    /// Consumes one forced abort, if any are left.
    pub(super) fn take_abort(&self) -> bool {
        self.abort_left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Tracks an upgraded-connection task so dropping the upstream ends it.
    pub(super) fn track_upgrade(&self, handle: AbortHandle) {
        let mut upgrades = self.upgrades.lock().unwrap_or_else(PoisonError::into_inner);
        upgrades.retain(|h| !h.is_finished());
        upgrades.push(handle);
    }
}

/// Accepts until aborted. Connections live in a `JoinSet` owned here, so aborting this task
/// aborts them too.
async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, protocol: Protocol) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let id = shared.connections.fetch_add(1, Ordering::Relaxed) + 1;
                    debug!(name = %shared.name, %peer, connection = id, "upstream accepted");
                    connections.spawn(serve(stream, id, shared.clone(), protocol));
                }
                Err(error) => {
                    // Usually EMFILE under load; back off instead of spinning.
                    warn!(name = %shared.name, %error, "upstream accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve(stream: TcpStream, id: usize, shared: Arc<Shared>, protocol: Protocol) {
    shared.open.fetch_add(1, Ordering::Relaxed);
    let _open = OpenConnection(shared.clone());
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(stream);
    let name = shared.name.clone();
    let service = service_fn(move |req| respond::respond(shared.clone(), id, req));
    // hyper-util's auto builder ignores `http1_only`/`http2_only` when serving upgrades, so
    // the restricted modes use hyper's per-version builders.
    let result = match protocol {
        Protocol::Auto => {
            auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(io, service)
                .await
        }
        Protocol::Http1 => http1::Builder::new()
            .serve_connection(io, service)
            .with_upgrades()
            .await
            .map_err(Into::into),
        Protocol::H2c => http2::Builder::new(TokioExecutor::new())
            .serve_connection(io, service)
            .await
            .map_err(Into::into),
    };
    if let Err(error) = result {
        debug!(%name, connection = id, %error, "upstream connection ended with error");
    }
}

/// Counts a connection open until its serving ends (the peer closed it, or it failed).
struct OpenConnection(Arc<Shared>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}
