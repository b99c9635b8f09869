//! The compiled snapshot the workers serve from, and each worker's view of it.
//!
//! The control thread compiles a validated [`Config`] into a [`Compiled`] snapshot (route tables
//! per listener, cluster indexes) and stores it in an `ArcSwap`. Each worker keeps a
//! [`WorkerView`]: the snapshot plus its own per-cluster state, refreshed when the snapshot
//! changes. Reading the view costs one atomic load and no reference-count traffic between cores.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use arc_swap::{ArcSwap, Cache};
use strait_config::{Action, Config};

use crate::metrics::{RouteStats, Shard};
use crate::route::RouteTable;
use crate::upstream::ClusterState;

/// A validated config, compiled for serving.
#[derive(Debug)]
pub struct Compiled {
    version: u64,
    config: Arc<Config>,
    listeners: Vec<(String, RouteTable)>,
    clusters: HashMap<String, usize>,
    /// Route metrics for each worker's shard, by worker index, resolved off the workers (see
    /// [`Compiled::with_stats`]); empty when compiled without the shards.
    route_stats: Vec<RouteStatsTable>,
}

/// Route metrics by listener, virtual host and route index, in config order.
type RouteStatsTable = Vec<Vec<Vec<Arc<RouteStats>>>>;

impl Compiled {
    /// Compiles a config.
    pub fn new(version: u64, config: Arc<Config>) -> Self {
        let listeners = config
            .listeners()
            .iter()
            .map(|l| (l.name().to_owned(), RouteTable::new(l)))
            .collect();
        let clusters = config
            .clusters()
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name().to_owned(), i))
            .collect();
        Self {
            version,
            config,
            listeners,
            clusters,
            route_stats: Vec::new(),
        }
    }

    /// Compiles a config and registers its route metrics in every worker's shard, so that a
    /// worker picking up the snapshot has nothing to look up.
    pub fn with_stats(version: u64, config: Arc<Config>, shards: &[Arc<Shard>]) -> Self {
        let mut compiled = Self::new(version, config);
        compiled.route_stats = shards
            .iter()
            .map(|shard| route_stats(&compiled.config, shard))
            .collect();
        compiled
    }

    /// The snapshot's version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The config it was compiled from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The route table of the listener at `index`, checked against its name.
    pub fn routes(&self, index: usize, name: &str) -> Option<&RouteTable> {
        self.listener_position(index, name)
            .map(|i| &self.listeners[i].1)
    }

    /// The position of the listener `name`, trying `hint` first (its position when the
    /// connection was accepted; a reload may have moved it).
    pub fn listener_position(&self, hint: usize, name: &str) -> Option<usize> {
        match self.listeners.get(hint) {
            Some((n, _)) if n == name => Some(hint),
            _ => self.listeners.iter().position(|(n, _)| n == name),
        }
    }

    /// The index of a cluster by name.
    pub fn cluster_index(&self, name: &str) -> Option<usize> {
        self.clusters.get(name).copied()
    }
}

/// The shared, swappable snapshot.
pub type SharedSnapshot = Arc<ArcSwap<Compiled>>;

/// One worker's view: the snapshot and the worker's state for each of its clusters.
#[derive(Debug)]
pub struct WorkerView {
    compiled: Arc<Compiled>,
    clusters: Vec<Rc<ClusterState>>,
    /// The worker's index: its route metrics in `compiled`.
    worker: usize,
    /// Route metrics resolved by the worker, when `compiled` has none for it.
    routes: Option<RouteStatsTable>,
}

impl WorkerView {
    /// The snapshot.
    pub fn compiled(&self) -> &Compiled {
        &self.compiled
    }

    /// The worker's state of the cluster at `index`.
    pub fn cluster(&self, index: usize) -> Option<&Rc<ClusterState>> {
        self.clusters.get(index)
    }

    /// The worker's state of every cluster.
    pub fn clusters(&self) -> &[Rc<ClusterState>] {
        &self.clusters
    }

    /// The metrics of a route, by the listener (its position hint and name) and its route
    /// table's indexes.
    pub fn route_stats(
        &self,
        listener: usize,
        name: &str,
        vhost: usize,
        route: usize,
    ) -> Option<&Arc<RouteStats>> {
        let table = match &self.routes {
            Some(table) => table,
            None => self.compiled.route_stats.get(self.worker)?,
        };
        let listener = self.compiled.listener_position(listener, name)?;
        table.get(listener)?.get(vhost)?.get(route)
    }
}

/// Keeps a worker's view current with the shared snapshot.
#[derive(Debug)]
pub struct ViewCache {
    cache: RefCell<Cache<SharedSnapshot, Arc<Compiled>>>,
    current: RefCell<Rc<WorkerView>>,
    /// The last view that had each listener a newer snapshot removed: that listener's
    /// connections drain on it (at most [`RETIRED`] kept).
    retired: RefCell<Vec<(String, Rc<WorkerView>)>>,
    shard: Arc<Shard>,
}

/// How many removed listeners' last views a worker keeps for their draining connections.
const RETIRED: usize = 16;

impl ViewCache {
    /// Starts from the shared snapshot's current value.
    pub fn new(shared: SharedSnapshot, shard: Arc<Shard>) -> Self {
        let mut cache = Cache::new(shared);
        let compiled = Arc::clone(cache.load());
        let view = build_view(compiled, &[], &shard);
        Self {
            cache: RefCell::new(cache),
            current: RefCell::new(Rc::new(view)),
            retired: RefCell::new(Vec::new()),
            shard,
        }
    }

    /// The current view, rebuilt if the snapshot changed. Per-worker state of clusters whose
    /// definition did not change is carried over.
    pub fn view(&self) -> Rc<WorkerView> {
        let mut cache = self.cache.borrow_mut();
        let latest = cache.load();
        let current = Rc::clone(&self.current.borrow());
        if Arc::ptr_eq(&current.compiled, latest) {
            return current;
        }
        let view = Rc::new(build_view(
            Arc::clone(latest),
            &current.clusters,
            &self.shard,
        ));
        let mut retired = self.retired.borrow_mut();
        for (index, listener) in current.compiled.config().listeners().iter().enumerate() {
            if latest.routes(index, listener.name()).is_none() {
                retired.retain(|(name, _)| name != listener.name());
                if retired.len() == RETIRED {
                    retired.remove(0);
                }
                retired.push((listener.name().to_owned(), Rc::clone(&current)));
            }
        }
        *self.current.borrow_mut() = Rc::clone(&view);
        view
    }

    /// The last view that had `listener`, when a newer config removed it: requests still
    /// arriving on its draining connections are routed as they were.
    pub fn retired(&self, listener: &str) -> Option<Rc<WorkerView>> {
        self.retired
            .borrow()
            .iter()
            .find(|(name, _)| name == listener)
            .map(|(_, view)| Rc::clone(view))
    }
}

fn build_view(compiled: Arc<Compiled>, old: &[Rc<ClusterState>], shard: &Shard) -> WorkerView {
    let old: HashMap<&str, &Rc<ClusterState>> = old.iter().map(|s| (s.def().name(), s)).collect();
    let clusters = compiled
        .config
        .clusters()
        .iter()
        .map(|def| match old.get(def.name()) {
            Some(state) if state.def() == def => Rc::clone(state),
            state => Rc::new(ClusterState::rebuild(def, shard, state.map(|s| &***s))),
        })
        .collect();
    let routes = (compiled.route_stats.len() <= shard.worker())
        .then(|| route_stats(&compiled.config, shard));
    WorkerView {
        compiled,
        clusters,
        worker: shard.worker(),
        routes,
    }
}

/// Registers (or finds) the metrics of every route of `config` in `shard`.
fn route_stats(config: &Config, shard: &Shard) -> RouteStatsTable {
    config
        .listeners()
        .iter()
        .map(|listener| {
            listener
                .virtual_hosts()
                .iter()
                .map(|vhost| {
                    vhost
                        .routes()
                        .iter()
                        .enumerate()
                        .map(|(i, route)| {
                            let label = match route.name() {
                                Some(name) => name.to_owned(),
                                None => format!("{}/{i}", vhost.name()),
                            };
                            let targets: Vec<&str> = match route.action() {
                                Action::Cluster(name) => vec![name.as_str()],
                                Action::WeightedClusters(split) => {
                                    split.iter().map(|c| c.cluster()).collect()
                                }
                                _ => vec![""],
                            };
                            shard.route(listener.name(), &label, &targets)
                        })
                        .collect()
                })
                .collect()
        })
        .collect()
}
