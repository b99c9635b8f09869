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
use std::time::Duration;

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

    /// Sweeps the idle pools of every endpoint ([`EndpointPool::sweep`]).
    pub fn sweep(&self, now: Instant) {
        for endpoint in &self.endpoints {
            endpoint.sweep(now);
        }
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
    connect_timeout: Duration,
    pool: strait_config::Pool,
    /// Idle HTTP/1.1 connections, the most recently used last.
    idle: RefCell<VecDeque<(h1::Connection, Instant)>>,
    purge: Cell<Purge>,
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
            purge: Cell::new(Purge::new(Instant::now())),
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

    /// A usable idle HTTP/1.1 connection, if the pool has one; with `None` the caller opens
    /// one ([`Self::connect_h1`]). A request counts as needing a connection either way (for
    /// the purge). Never waits: the common case costs no future state of its own.
    pub fn checkout_h1(&self) -> Option<h1::Connection> {
        let now = Instant::now();
        let found = loop {
            let Some((mut conn, since)) = self.idle.borrow_mut().pop_back() else {
                break None;
            };
            // A connection the upstream closed (or wrote to) while idle is dropped here.
            if now.duration_since(since) >= self.pool.idle_timeout || !conn.is_quiet() {
                continue;
            }
            self.cluster_stats.connection_reuses.inc();
            break Some(conn);
        };
        self.taken();
        found
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
    /// out or swept. Once per `pool.purge_interval` the connections no request needed are
    /// thinned ([`Purge`]); expired and closed ones are left to the sweep.
    pub fn checkin_h1(&self, mut conn: h1::Connection) {
        if !conn.is_quiet() {
            return;
        }
        conn.idle();
        let now = Instant::now();
        let mut idle = self.idle.borrow_mut();
        self.thin(&mut idle, now);
        if idle.len() < self.pool.max_idle {
            idle.push_back((conn, now));
        }
    }

    /// Closes idle connections that expired or that the upstream closed (or wrote to), and
    /// thins the pool once its purge interval has passed. The worker calls it every
    /// [`SWEEP_PERIOD`], so that a pool no request touches still shrinks and closes what the
    /// upstream closed.
    pub fn sweep(&self, now: Instant) {
        let mut idle = self.idle.borrow_mut();
        if idle.is_empty() {
            return;
        }
        idle.retain_mut(|(conn, since)| {
            now.duration_since(*since) < self.pool.idle_timeout && conn.is_quiet()
        });
        self.thin(&mut idle, now);
    }

    /// Closes what [`Purge`] finds surplus, least recently used first.
    fn thin(&self, idle: &mut VecDeque<(h1::Connection, Instant)>, now: Instant) {
        let mut purge = self.purge.get();
        let surplus = purge.surplus(now, self.pool.purge_interval, idle.len());
        self.purge.set(purge);
        if surplus > 0 {
            // The front holds the least recently used; dropping a connection closes it.
            idle.drain(..surplus);
            self.cluster_stats
                .connections_purged
                .add(u64::try_from(surplus).unwrap_or(u64::MAX));
        }
    }

    /// Notes the idle connections left after a checkout, for the purge.
    fn taken(&self) {
        let mut purge = self.purge.get();
        purge.taken(self.idle.borrow().len());
        self.purge.set(purge);
    }

    /// The worker's open HTTP/2 connection to this endpoint, if it has one; with `None` the
    /// caller opens one ([`Self::connect_h2`]).
    pub fn h2_sender(&self) -> Option<http2::SendRequest<RequestBody>> {
        let sender = self
            .h2
            .borrow()
            .as_ref()
            .filter(|s| !s.is_closed())
            .cloned();
        if sender.is_some() {
            self.cluster_stats.connection_reuses.inc();
        }
        sender
    }

    /// Opens the worker's HTTP/2 connection to this endpoint.
    ///
    /// # Errors
    /// Connect and handshake failures.
    pub async fn connect_h2(&self) -> Result<http2::SendRequest<RequestBody>, ProxyError> {
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

/// How often each worker sweeps its idle pools ([`EndpointPool::sweep`]).
pub const SWEEP_PERIOD: Duration = Duration::from_secs(1);

/// Thins a pool's idle connections down to what the load uses (HAProxy's `pool-purge-delay`).
///
/// Idle connections are taken most recently used first, so those no request needed sit at the
/// front of the list. `low`, the fewest idle connections seen during the current interval,
/// counts them: at the end of each interval half of them (rounded down) are closed. A pool a
/// burst filled shrinks by halves once the load is lower, while one whose connections all serve
/// keeps them. The last unused connection is left to `idle_timeout`, so that sparse traffic (a
/// request now and then) still finds one open. Checked at checkins and by the worker's sweep.
#[derive(Debug, Clone, Copy)]
struct Purge {
    low: usize,
    since: Instant,
}

impl Purge {
    /// The first interval starts at `now` with an empty pool.
    fn new(now: Instant) -> Self {
        Self { low: 0, since: now }
    }

    /// A checkout left `idle` connections in the pool.
    fn taken(&mut self, idle: usize) {
        self.low = self.low.min(idle);
    }

    /// At a checkin with `idle` connections in the pool: how many of the least recently used to
    /// close now. Starts the next interval once `interval` has passed.
    fn surplus(&mut self, now: Instant, interval: Duration, idle: usize) -> usize {
        if now.duration_since(self.since) < interval {
            return 0;
        }
        let close = self.low.min(idle) / 2;
        self.low = idle - close;
        self.since = now;
        close
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::Purge;

    const INTERVAL: Duration = Duration::from_secs(5);

    #[test]
    fn connections_every_interval_uses_are_kept() {
        let start = Instant::now();
        let mut purge = Purge::new(start);
        // 100 idle after a burst; each interval, the load takes all 100 at once.
        for i in 1..=5 {
            purge.taken(0);
            assert_eq!(purge.surplus(start + INTERVAL * i, INTERVAL, 100), 0);
        }
    }

    #[test]
    fn unused_connections_are_halved_each_interval() {
        let start = Instant::now();
        let mut purge = Purge::new(start);
        // The first interval only learns the pool's size.
        assert_eq!(purge.surplus(start + INTERVAL, INTERVAL, 100), 0);
        // Then the load never needs more than 10 at a time: 90 sit unused.
        let mut idle = 100;
        let mut closed = Vec::new();
        for i in 2..=12 {
            purge.taken(idle - 10);
            let close = purge.surplus(start + INTERVAL * i, INTERVAL, idle);
            idle -= close;
            closed.push(close);
        }
        assert_eq!(closed, [45, 22, 11, 6, 3, 1, 1, 0, 0, 0, 0]);
        assert_eq!(idle, 11);
    }

    #[test]
    fn nothing_is_closed_before_the_interval_ends() {
        let start = Instant::now();
        let mut purge = Purge::new(start);
        assert_eq!(purge.surplus(start + INTERVAL, INTERVAL, 8), 0);
        let almost = start + INTERVAL * 2 - Duration::from_millis(1);
        assert_eq!(purge.surplus(almost, INTERVAL, 8), 0);
        assert_eq!(purge.surplus(start + INTERVAL * 2, INTERVAL, 8), 4);
    }

    #[test]
    fn connections_closed_meanwhile_are_not_counted_twice() {
        let start = Instant::now();
        let mut purge = Purge::new(start);
        assert_eq!(purge.surplus(start + INTERVAL, INTERVAL, 20), 0);
        // No checkout during the interval, but 16 expired or were closed by the upstream.
        assert_eq!(purge.surplus(start + INTERVAL * 2, INTERVAL, 4), 2);
    }

    #[test]
    fn the_last_unused_connection_is_left_to_the_idle_timeout() {
        let start = Instant::now();
        let mut purge = Purge::new(start);
        assert_eq!(purge.surplus(start + INTERVAL, INTERVAL, 1), 0);
        // A whole interval without a request: one unused connection stays.
        assert_eq!(purge.surplus(start + INTERVAL * 2, INTERVAL, 1), 0);
        assert_eq!(purge.surplus(start + INTERVAL * 3, INTERVAL, 1), 0);
    }
}
