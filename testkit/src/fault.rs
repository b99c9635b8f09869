//! Upstream endpoints that fail at the TCP layer, for the proxy's 502 and 504 paths.
//!
//! - [`ClosedPort`]: nothing listens, so connecting is refused (`ECONNREFUSED`).
//! - [`BlackHole`]: accepts connections and never reads or answers (response timeouts).
//! - [`ResetServer`]: accepts and immediately resets the connection (`RST`, via
//!   `SO_LINGER` 0).
//!
//! A connect *timeout* cannot be provoked on loopback (the kernel completes the handshake even
//! before `accept`); tests for it need an unroutable address and say so.

use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tracing::debug;

use crate::task::Background;

/// An address on which nothing listens.
///
/// It is a port the kernel just handed out and released, so another process could in
/// principle bind it before the test connects; on a test machine that is rare enough to
/// ignore.
#[derive(Debug, Clone, Copy)]
pub struct ClosedPort {
    addr: SocketAddr,
}

impl ClosedPort {
    /// Binds `127.0.0.1:0`, notes the address and closes the listener.
    ///
    /// # Panics
    ///
    /// Panics if binding a loopback port fails.
    pub fn new() -> Self {
        let listener =
            StdTcpListener::bind(("127.0.0.1", 0)).expect("binding 127.0.0.1:0 for a closed port");
        let addr = listener
            .local_addr()
            .expect("a bound listener has a local address");
        drop(listener);
        Self { addr }
    }

    /// The address that refuses connections.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Default for ClosedPort {
    fn default() -> Self {
        Self::new()
    }
}

/// A listener that accepts connections, holds them open, and never reads or writes.
///
/// Dropping it closes the listener and every held connection.
#[derive(Debug)]
pub struct BlackHole {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    _accept: Background,
}

impl BlackHole {
    /// Binds `127.0.0.1:0` and starts accepting on the current runtime.
    ///
    /// # Panics
    ///
    /// Panics outside a tokio runtime or if binding a loopback port fails.
    pub async fn start() -> Self {
        let (listener, addr) = bind("black hole").await;
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let accept = Background::spawn(async move {
            // Held, never read: the peer's writes fill the socket buffers and then block.
            let mut held = Vec::new();
            loop {
                match listener.accept().await {
                    Ok((stream, peer)) => {
                        count.fetch_add(1, Ordering::Relaxed);
                        debug!(%peer, "black hole accepted");
                        held.push(stream);
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        });
        Self {
            addr,
            accepted,
            _accept: accept,
        }
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many connections were accepted.
    pub fn connections_seen(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

/// A listener that accepts each connection and resets it at once (`SO_LINGER` 0, then
/// close), without reading anything.
///
/// Dropping it closes the listener.
#[derive(Debug)]
pub struct ResetServer {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    _accept: Background,
}

impl ResetServer {
    /// Binds `127.0.0.1:0` and starts accepting on the current runtime.
    ///
    /// # Panics
    ///
    /// Panics outside a tokio runtime or if binding a loopback port fails.
    pub async fn start() -> Self {
        let (listener, addr) = bind("reset server").await;
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let accept = Background::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, peer)) => {
                        count.fetch_add(1, Ordering::Relaxed);
                        debug!(%peer, "reset server resets");
                        // Zero linger makes close() send RST instead of FIN; with a zero
                        // timeout the close does not block the thread.
                        let _ = stream.set_zero_linger();
                        drop(stream);
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        });
        Self {
            addr,
            accepted,
            _accept: accept,
        }
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many connections were accepted (and reset).
    pub fn connections_seen(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

async fn bind(what: &str) -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap_or_else(|e| panic!("binding 127.0.0.1:0 for a {what}: {e}"));
    let addr = listener
        .local_addr()
        .expect("a bound listener has a local address");
    (listener, addr)
}
