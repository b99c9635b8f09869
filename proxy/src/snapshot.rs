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
use strait_config::Config;

use crate::route::RouteTable;
use crate::upstream::ClusterState;

/// A validated config, compiled for serving.
#[derive(Debug)]
pub struct Compiled {
    version: u64,
    config: Arc<Config>,
    listeners: Vec<(String, RouteTable)>,
    clusters: HashMap<String, usize>,
}

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
        }
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
        match self.listeners.get(index) {
            Some((n, table)) if n == name => Some(table),
            _ => self
                .listeners
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t),
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
}

/// Keeps a worker's view current with the shared snapshot.
#[derive(Debug)]
pub struct ViewCache {
    cache: RefCell<Cache<SharedSnapshot, Arc<Compiled>>>,
    current: RefCell<Rc<WorkerView>>,
}

impl ViewCache {
    /// Starts from the shared snapshot's current value.
    pub fn new(shared: SharedSnapshot) -> Self {
        let mut cache = Cache::new(shared);
        let compiled = Arc::clone(cache.load());
        let view = build_view(compiled, &[]);
        Self {
            cache: RefCell::new(cache),
            current: RefCell::new(Rc::new(view)),
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
        let view = Rc::new(build_view(Arc::clone(latest), &current.clusters));
        *self.current.borrow_mut() = Rc::clone(&view);
        view
    }
}

fn build_view(compiled: Arc<Compiled>, old: &[Rc<ClusterState>]) -> WorkerView {
    let clusters = compiled
        .config
        .clusters()
        .iter()
        .map(|def| match old.iter().find(|s| s.def() == def) {
            Some(state) => Rc::clone(state),
            None => Rc::new(ClusterState::new(def)),
        })
        .collect();
    WorkerView { compiled, clusters }
}
