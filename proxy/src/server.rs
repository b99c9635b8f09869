//! The process: binds every listener once per worker, starts the workers, and shuts them down.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;
use strait_config::Config;
use tokio::sync::watch;

use crate::io;
use crate::snapshot::{Compiled, SharedSnapshot};
use crate::worker::{self, WorkerStats};

/// How to run the data plane.
#[derive(Debug, Clone)]
pub struct Options {
    /// Worker threads; 0 means one per CPU the process may run on.
    pub workers: usize,
    /// Time in-flight requests get to finish on shutdown.
    pub drain_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            workers: 0,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// Why the data plane could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A listener's address could not be bound.
    #[error("listener {listener} could not bind {address}")]
    Bind {
        /// The listener's name.
        listener: String,
        /// The configured address.
        address: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
    /// A worker thread could not be started.
    #[error("worker thread could not start")]
    Spawn(#[source] std::io::Error),
}

/// A running data plane.
#[derive(Debug)]
pub struct Server {
    addrs: Vec<(String, SocketAddr)>,
    snapshot: SharedSnapshot,
    shutdown: watch::Sender<bool>,
    threads: Vec<JoinHandle<()>>,
    stats: Vec<Arc<WorkerStats>>,
}

impl Server {
    /// Binds every listener on every worker and starts the workers.
    ///
    /// # Errors
    /// [`StartError`] when a socket cannot be bound or a thread cannot start.
    pub fn start(config: Config, options: &Options) -> Result<Self, StartError> {
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let workers = match options.workers {
            0 => cores.len().max(1),
            n => n,
        };
        let mut per_worker: Vec<Vec<(usize, String, std::net::TcpListener)>> =
            (0..workers).map(|_| Vec::new()).collect();
        let mut addrs = Vec::new();
        for (index, listener) in config.listeners().iter().enumerate() {
            let sockets = io::bind_reuseport(listener.address(), workers).map_err(|source| {
                StartError::Bind {
                    listener: listener.name().to_owned(),
                    address: listener.address(),
                    source,
                }
            })?;
            let bound = sockets
                .first()
                .and_then(|s| s.local_addr().ok())
                .unwrap_or_else(|| listener.address());
            tracing::info!(listener = listener.name(), address = %bound, workers, "listening");
            addrs.push((listener.name().to_owned(), bound));
            for (w, socket) in sockets.into_iter().enumerate() {
                per_worker[w].push((index, listener.name().to_owned(), socket));
            }
        }

        let snapshot: SharedSnapshot =
            Arc::new(ArcSwap::from_pointee(Compiled::new(1, Arc::new(config))));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut threads = Vec::with_capacity(workers);
        let stats: Vec<_> = (0..workers)
            .map(|_| Arc::new(WorkerStats::default()))
            .collect();
        for (id, listeners) in per_worker.into_iter().enumerate() {
            let worker_stats = Arc::clone(&stats[id]);
            let core = (!cores.is_empty()).then(|| cores[id % cores.len()]);
            let snapshot = Arc::clone(&snapshot);
            let shutdown_rx = shutdown_rx.clone();
            let drain = options.drain_timeout;
            let thread = std::thread::Builder::new()
                .name(format!("strait-worker-{id}"))
                .spawn(move || {
                    if let Some(core) = core {
                        core_affinity::set_for_current(core);
                    }
                    if let Err(err) =
                        worker::run(id, worker_stats, snapshot, listeners, shutdown_rx, drain)
                    {
                        tracing::error!(worker = id, error = %err, "worker failed");
                    }
                })
                .map_err(StartError::Spawn)?;
            threads.push(thread);
        }
        Ok(Self {
            addrs,
            snapshot,
            shutdown,
            threads,
            stats,
        })
    }

    /// The bound address of each listener, by name (the real port when configured as 0).
    pub fn addrs(&self) -> &[(String, SocketAddr)] {
        &self.addrs
    }

    /// The bound address of a listener.
    pub fn addr(&self, listener: &str) -> Option<SocketAddr> {
        self.addrs
            .iter()
            .find(|(n, _)| n == listener)
            .map(|(_, a)| *a)
    }

    /// The active snapshot's version.
    pub fn version(&self) -> u64 {
        self.snapshot.load().version()
    }

    /// Each worker's counters, by worker index.
    pub fn worker_stats(&self) -> &[Arc<WorkerStats>] {
        &self.stats
    }

    /// Number of worker threads.
    pub fn workers(&self) -> usize {
        self.threads.len()
    }

    /// Stops accepting, lets in-flight requests finish within the drain timeout, and waits for
    /// every worker to exit.
    pub fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}
