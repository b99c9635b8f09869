//! Per-worker upstream state: each cluster's balancer and each endpoint's connection pool.
//!
//! Everything here belongs to one worker thread (`Rc`, `Cell`, `RefCell`; no locks). An
//! HTTP/1.1 connection ([`h1`]) goes back to its pool only after its response was read to the
//! end (see [`crate::body`]); an HTTP/2 connection is shared by all requests of the worker to
//! that endpoint and reopened when it closes.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;

use hyper::client::conn::{http1, http2};
use hyper_util::rt::TokioTimer;
use strait_config::{Cluster, HashKey, UpstreamProtocol};
use tokio::time::Instant;

use crate::balance::Balancer;
use crate::body::RequestBody;
use crate::error::ProxyError;
use crate::io;
use crate::metrics::{ClusterStats, EndpointStats, Shard};
use crate::worker::LocalExec;

pub mod h1;

/// A cluster as one worker sees it.
#[derive(Debug)]
pub struct ClusterState {
    def: Cluster,
    stats: Arc<ClusterStats>,
    balancer: RefCell<Balancer>,
    endpoints: Vec<Rc<EndpointPool>>,
}

impl ClusterState {
    /// Builds the state of a cluster; pools start empty. Its metrics go to `shard`.
    pub fn new(def: &Cluster, shard: &Shard) -> Self {
        Self::rebuild(def, shard, None)
    }

    /// Builds the state of a changed cluster, keeping the pools (and so the open connections)
    /// of `old`'s endpoints that remain with the same address, protocol and pool settings.
    pub fn rebuild(def: &Cluster, shard: &Shard, old: Option<&Self>) -> Self {
        let stats = shard.cluster(def.name());
        let weights: Vec<_> = def
            .endpoints()
            .iter()
            .map(|e| (e.address(), e.weight()))
            .collect();
        let endpoints = def
            .endpoints()
            .iter()
            .map(|e| {
                let endpoint = stats.endpoint(e.address(), e.weight());
                let kept = old.and_then(|old| {
                    old.endpoints.iter().find(|p| {
                        p.addr == e.address()
                            && p.protocol == def.protocol()
                            && p.connect_timeout == def.connect_timeout()
                            && p.pool == *def.pool()
                    })
                });
                if let Some(kept) = kept {
                    return Rc::clone(kept);
                }
                Rc::new(EndpointPool::new(
                    def,
                    e.address(),
                    Arc::clone(&stats),
                    endpoint,
                ))
            })
            .collect();
        Self {
            def: def.clone(),
            balancer: RefCell::new(Balancer::new(def.lb(), &weights)),
            endpoints,
            stats,
        }
    }

    /// The cluster's metrics on this worker.
    pub fn stats(&self) -> &ClusterStats {
        &self.stats
    }

    /// The cluster's definition.
    pub fn def(&self) -> &Cluster {
        &self.def
    }

    /// The consistent-hash key, if the policy uses one.
    pub fn hash_key(&self) -> Option<&HashKey> {
        self.def.hash_key()
    }

    /// Picks an endpoint for a request.
    pub fn pick(&self, hash: Option<u64>, rng: &mut fastrand::Rng) -> Option<Rc<EndpointPool>> {
        let endpoints = &self.endpoints;
        let index = self.balancer.borrow_mut().pick(
            hash,
            |i| endpoints.get(i).map_or(0, |e| e.in_flight()),
            rng,
        )?;
        endpoints.get(index).cloned()
    }
}

/// Connections of one worker to one endpoint.
#[derive(Debug)]
pub struct EndpointPool {
    addr: std::net::SocketAddr,
    protocol: UpstreamProtocol,
    connect_timeout: std::time::Duration,
    pool: strait_config::Pool,
    /// Idle HTTP/1.1 connections, the most recently used last.
    idle: RefCell<VecDeque<(h1::Connection, Instant)>>,
    h2: RefCell<Option<http2::SendRequest<RequestBody>>>,
    open: Rc<Cell<usize>>,
    cluster_stats: Arc<ClusterStats>,
    stats: Arc<EndpointStats>,
}

/// Marks a request in flight to an endpoint until dropped.
#[derive(Debug)]
pub struct InFlight(Rc<EndpointPool>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.stats.in_flight.dec();
        self.0.cluster_stats.active.dec();
    }
}

/// An HTTP/1.1 connection checked out of a pool.
#[derive(Debug)]
pub struct H1Conn {
    /// The connection.
    pub conn: h1::Connection,
    /// Whether it came from the idle pool (and so may have been closed by the peer meanwhile).
    pub reused: bool,
}

impl EndpointPool {
    fn new(
        cluster: &Cluster,
        addr: std::net::SocketAddr,
        cluster_stats: Arc<ClusterStats>,
        stats: Arc<EndpointStats>,
    ) -> Self {
        Self {
            addr,
            protocol: cluster.protocol(),
            connect_timeout: cluster.connect_timeout(),
            pool: cluster.pool().clone(),
            idle: RefCell::new(VecDeque::new()),
            h2: RefCell::new(None),
            open: Rc::new(Cell::new(0)),
            cluster_stats,
            stats,
        }
    }

    /// The endpoint's address.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// The protocol configured for the cluster.
    pub fn protocol(&self) -> UpstreamProtocol {
        self.protocol
    }

    /// Counts a request in flight until the returned guard drops.
    pub fn start_request(self: &Rc<Self>) -> InFlight {
        self.stats.in_flight.inc();
        self.stats.requests.inc();
        self.cluster_stats.active.inc();
        InFlight(Rc::clone(self))
    }

    /// Requests in flight to this endpoint from this worker.
    pub fn in_flight(&self) -> u32 {
        u32::try_from(self.stats.in_flight.get()).unwrap_or(0)
    }

    /// An idle HTTP/1.1 connection, or a new one.
    ///
    /// # Errors
    /// Connect and handshake failures, or [`ProxyError::PoolFull`].
    pub async fn checkout_h1(&self) -> Result<H1Conn, ProxyError> {
        let now = Instant::now();
        loop {
            let Some((mut conn, since)) = self.idle.borrow_mut().pop_back() else {
                break;
            };
            // A connection the upstream closed (or wrote to) while idle is dropped here.
            if now.duration_since(since) >= self.pool.idle_timeout || !conn.is_quiet() {
                continue;
            }
            self.cluster_stats.connection_reuses.inc();
            return Ok(H1Conn { conn, reused: true });
        }
        self.connect_h1().await.map(|conn| H1Conn {
            conn,
            reused: false,
        })
    }

    /// Opens a new HTTP/1.1 connection (not pooled until its first response is read).
    ///
    /// # Errors
    /// Connect failures, or [`ProxyError::PoolFull`].
    pub async fn connect_h1(&self) -> Result<h1::Connection, ProxyError> {
        let (socket, guard) = self.open_socket().await?;
        Ok(h1::Connection::new(socket, guard))
    }

    /// Opens a new HTTP/1.1 connection through hyper's client, for a request that asks for a
    /// protocol upgrade: after a 101 the connection belongs to the tunnel, never to the pool.
    ///
    /// # Errors
    /// Connect and handshake failures, or [`ProxyError::PoolFull`].
    pub async fn connect_upgrade(&self) -> Result<http1::SendRequest<RequestBody>, ProxyError> {
        let (socket, guard) = self.open_socket().await?;
        let (sender, conn) = http1::Builder::new()
            .max_buf_size(1024 * 1024)
            .handshake(socket)
            .await
            .map_err(|source| ProxyError::Handshake {
                addr: self.addr,
                source,
            })?;
        tokio::task::spawn_local(async move {
            let _guard = guard;
            if let Err(err) = conn.with_upgrades().await {
                tracing::debug!(error = %err, "upstream http/1.1 connection ended");
            }
        });
        Ok(sender)
    }

    /// Returns an HTTP/1.1 connection whose response was read to the end.
    ///
    /// Checking whether it is still open also arms a receive on io_uring (on epoll, registers
    /// with the reactor; a peek only if it reported the socket readable since the last read),
    /// so that a close by the upstream while the connection is idle is seen when it is checked
    /// out. The least recently used idle connection is checked
    /// on the way, so that closed or expired ones do not linger while the others are busy.
    pub fn checkin_h1(&self, mut conn: h1::Connection) {
        if !conn.is_quiet() {
            return;
        }
        conn.idle();
        let now = Instant::now();
        let mut idle = self.idle.borrow_mut();
        if let Some((oldest, since)) = idle.front_mut()
            && (now.duration_since(*since) >= self.pool.idle_timeout || !oldest.is_quiet())
        {
            idle.pop_front();
        }
        if idle.len() < self.pool.max_idle {
            idle.push_back((conn, now));
        }
    }

    /// The worker's HTTP/2 connection to this endpoint, opened if needed.
    ///
    /// # Errors
    /// Connect and handshake failures.
    pub async fn h2_sender(&self) -> Result<http2::SendRequest<RequestBody>, ProxyError> {
        if let Some(sender) = self.h2.borrow().as_ref().filter(|s| !s.is_closed()) {
            self.cluster_stats.connection_reuses.inc();
            return Ok(sender.clone());
        }
        let (socket, guard) = self.open_socket().await?;
        let (sender, conn) = http2::Builder::new(LocalExec)
            .timer(TokioTimer::new())
            .initial_stream_window_size(1024 * 1024)
            .initial_connection_window_size(4 * 1024 * 1024)
            .handshake(socket)
            .await
            .map_err(|source| ProxyError::Handshake {
                addr: self.addr,
                source,
            })?;
        tokio::task::spawn_local(async move {
            let _guard = guard;
            if let Err(err) = conn.await {
                tracing::debug!(error = %err, "upstream http/2 connection ended");
            }
        });
        *self.h2.borrow_mut() = Some(sender.clone());
        Ok(sender)
    }

    /// Takes a connection slot and connects; the guard frees the slot when the connection ends.
    async fn open_socket(&self) -> Result<(io::Socket, OpenGuard), ProxyError> {
        if self.open.get() >= self.pool.max_connections {
            return Err(ProxyError::PoolFull { addr: self.addr });
        }
        self.open.set(self.open.get() + 1);
        let guard = OpenGuard(Rc::clone(&self.open));
        self.cluster_stats.pending.inc();
        let socket = io::connect(self.addr, self.connect_timeout).await;
        self.cluster_stats.pending.dec();
        let socket = socket?;
        self.cluster_stats.connections_opened.inc();
        Ok((socket, guard))
    }
}

/// Releases a connection slot when the connection ends.
#[derive(Debug)]
struct OpenGuard(Rc<Cell<usize>>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}
