//! One worker's metrics.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{Counter, Gauge, Histogram};

/// The status class index (0 for 1xx … 4 for 5xx) of a status code.
#[inline]
pub fn status_class(status: u16) -> usize {
    usize::from(status / 100).clamp(1, 5) - 1
}

/// All metrics one worker writes.
#[derive(Debug)]
pub struct Shard {
    worker: usize,
    /// Requests received by this worker.
    pub requests: Counter,
    /// io_uring operations in flight (or awaiting their cancellation) on this worker's ring.
    pub io_ops_in_flight: Arc<Gauge>,
    /// io_uring provided buffers holding received data not read yet on this worker.
    pub io_buffers_held: Arc<Gauge>,
    listeners: Mutex<Vec<Arc<ListenerStats>>>,
    routes: Mutex<Registry<RouteStats>>,
    clusters: Mutex<Registry<ClusterStats>>,
}

/// Stats in registration order (as the scrape lists them), indexed by key: a reload of a
/// config with many routes looks each one up once.
#[derive(Debug)]
struct Registry<T> {
    list: Vec<Arc<T>>,
    index: HashMap<String, usize>,
}

impl<T> Default for Registry<T> {
    fn default() -> Self {
        Self {
            list: Vec::new(),
            index: HashMap::new(),
        }
    }
}

impl<T> Registry<T> {
    fn get_or_insert(&mut self, key: String, make: impl FnOnce() -> T) -> Arc<T> {
        if let Some(&i) = self.index.get(&key) {
            return Arc::clone(&self.list[i]);
        }
        let stats = Arc::new(make());
        self.index.insert(key, self.list.len());
        self.list.push(Arc::clone(&stats));
        stats
    }
}

/// Per listener, per worker.
#[derive(Debug)]
pub struct ListenerStats {
    /// The listener's name.
    pub name: String,
    /// Connections accepted.
    pub connections_total: Counter,
    /// Connections open now.
    pub connections_active: Gauge,
    /// Time from request head received to response body sent.
    pub duration: Histogram,
    /// Responses to requests that matched no route, by status class.
    pub unrouted: [Counter; 5],
    /// HTTP/2 streams reset by the client before their response ended.
    pub http2_client_resets: Counter,
    /// HTTP/2 streams the proxy reset: malformed requests, the client's stream errors,
    /// streams past the concurrency limit, response bodies that failed upstream.
    pub http2_proxy_resets: Counter,
    /// HTTP/2 connections the proxy ended with GOAWAY and an error code (protocol errors,
    /// floods, reset limits).
    pub http2_connection_errors: Counter,
}

/// Per route, per worker: responses by target cluster and status class.
#[derive(Debug)]
pub struct RouteStats {
    /// The listener's name.
    pub listener: String,
    /// The route's name, or `<virtual host>/<index>` when it has none.
    pub route: String,
    /// One slot per target cluster of the route's action (one empty name for redirects and
    /// direct responses): the cluster's name and responses by status class.
    pub slots: Vec<(String, [Counter; 5])>,
}

/// Per cluster, per worker.
#[derive(Debug)]
pub struct ClusterStats {
    /// The cluster's name.
    pub name: String,
    /// Time from sending the request upstream to receiving the response head.
    pub upstream_duration: Histogram,
    /// Upstream connections opened.
    pub connections_opened: Counter,
    /// Requests sent on an already open connection.
    pub connection_reuses: Counter,
    /// Idle connections closed by the pool's purge (load no longer needed them).
    pub connections_purged: Counter,
    /// Connects that failed (refused, unreachable, handshake).
    pub connect_failures: Counter,
    /// Connects that timed out.
    pub connect_timeouts: Counter,
    /// Requests whose response head did not arrive within the route timeout.
    pub timeouts: Counter,
    /// Requests the upstream reset or closed before responding.
    pub resets: Counter,
    /// Requests waiting for a connection.
    pub pending: Gauge,
    /// Requests sent and not finished.
    pub active: Gauge,
    endpoints: Mutex<Vec<Arc<EndpointStats>>>,
}

/// Per endpoint of a cluster, per worker.
#[derive(Debug)]
pub struct EndpointStats {
    /// The endpoint's address.
    pub addr: SocketAddr,
    /// Its weight in the current config.
    pub weight: Gauge,
    /// Requests in flight to it.
    pub in_flight: Gauge,
    /// Requests sent to it.
    pub requests: Counter,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The lists are only appended to; a panic elsewhere leaves them usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shard {
    /// An empty shard for `worker`.
    pub fn new(worker: usize) -> Self {
        Self {
            worker,
            requests: Counter::default(),
            io_ops_in_flight: Arc::default(),
            io_buffers_held: Arc::default(),
            listeners: Mutex::default(),
            routes: Mutex::default(),
            clusters: Mutex::default(),
        }
    }

    /// The worker's index.
    pub fn worker(&self) -> usize {
        self.worker
    }

    /// The stats of a listener, registered on first use. Not for the request path.
    pub fn listener(&self, name: &str) -> Arc<ListenerStats> {
        let mut list = lock(&self.listeners);
        if let Some(found) = list.iter().find(|l| l.name == name) {
            return Arc::clone(found);
        }
        let stats = Arc::new(ListenerStats {
            name: name.to_owned(),
            connections_total: Counter::default(),
            connections_active: Gauge::default(),
            duration: Histogram::default(),
            unrouted: Default::default(),
            http2_client_resets: Counter::default(),
            http2_proxy_resets: Counter::default(),
            http2_connection_errors: Counter::default(),
        });
        list.push(Arc::clone(&stats));
        stats
    }

    /// The stats of a route with these target clusters, registered on first use.
    pub fn route(&self, listener: &str, route: &str, clusters: &[&str]) -> Arc<RouteStats> {
        let mut key = String::with_capacity(listener.len() + route.len() + 16);
        for part in [listener, route].iter().chain(clusters) {
            key.push_str(part);
            key.push('\0');
        }
        lock(&self.routes).get_or_insert(key, || RouteStats {
            listener: listener.to_owned(),
            route: route.to_owned(),
            slots: clusters
                .iter()
                .map(|c| ((*c).to_owned(), Default::default()))
                .collect(),
        })
    }

    /// The stats of a cluster, registered on first use.
    pub fn cluster(&self, name: &str) -> Arc<ClusterStats> {
        lock(&self.clusters).get_or_insert(name.to_owned(), || ClusterStats {
            name: name.to_owned(),
            upstream_duration: Histogram::default(),
            connections_opened: Counter::default(),
            connection_reuses: Counter::default(),
            connections_purged: Counter::default(),
            connect_failures: Counter::default(),
            connect_timeouts: Counter::default(),
            timeouts: Counter::default(),
            resets: Counter::default(),
            pending: Gauge::default(),
            active: Gauge::default(),
            endpoints: Mutex::default(),
        })
    }

    /// Every listener's stats.
    pub fn listeners(&self) -> Vec<Arc<ListenerStats>> {
        lock(&self.listeners).clone()
    }

    /// Every route's stats.
    pub fn routes(&self) -> Vec<Arc<RouteStats>> {
        lock(&self.routes).list.clone()
    }

    /// Every cluster's stats.
    pub fn clusters(&self) -> Vec<Arc<ClusterStats>> {
        lock(&self.clusters).list.clone()
    }
}

impl ClusterStats {
    /// The stats of one endpoint, registered on first use; its weight is updated.
    pub fn endpoint(&self, addr: SocketAddr, weight: u32) -> Arc<EndpointStats> {
        let mut list = lock(&self.endpoints);
        let stats = match list.iter().find(|e| e.addr == addr) {
            Some(found) => Arc::clone(found),
            None => {
                let stats = Arc::new(EndpointStats {
                    addr,
                    weight: Gauge::default(),
                    in_flight: Gauge::default(),
                    requests: Counter::default(),
                });
                list.push(Arc::clone(&stats));
                stats
            }
        };
        stats.weight.set(i64::from(weight));
        stats
    }

    /// Every endpoint's stats.
    pub fn endpoints(&self) -> Vec<Arc<EndpointStats>> {
        lock(&self.endpoints).clone()
    }
}
