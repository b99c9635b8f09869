//! The process: binds every listener once per worker, starts the workers, and shuts them down.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;
use strait_config::Config;
use tokio::sync::watch;

use crate::admin::{Admin, AdminState, ConfigSource};
use crate::io::{self, Backend};
use crate::metrics::{Collected, Globals, Shard};
use crate::observe::AccessLogger;
use crate::snapshot::{Compiled, SharedSnapshot};
use crate::worker;

/// How to run the data plane.
#[derive(Debug, Clone)]
pub struct Options {
    /// Worker threads; 0 means one per CPU the process may run on.
    pub workers: usize,
    /// Time in-flight requests get to finish on shutdown.
    pub drain_timeout: Duration,
    /// Whether requests are recorded in the metrics (on unless benchmarking their cost).
    pub metrics: bool,
    /// The socket I/O backend.
    pub io: IoMode,
    /// Where the admin API listens; none without one.
    pub admin: Option<SocketAddr>,
    /// The document the config was loaded from, shown by the admin API's `/config`.
    pub source: Option<ConfigSource>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            workers: 0,
            drain_timeout: Duration::from_secs(10),
            metrics: true,
            io: IoMode::Auto,
            admin: None,
            source: None,
        }
    }
}

/// Which socket I/O backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoMode {
    /// io_uring where the kernel allows it, else epoll.
    #[default]
    Auto,
    /// io_uring, or fail to start.
    Uring,
    /// epoll (tokio).
    Epoll,
}

impl IoMode {
    /// Picks the backend, probing io_uring once.
    ///
    /// # Errors
    /// [`StartError::Uring`] when io_uring was asked for and cannot be used.
    pub fn resolve(self) -> Result<Backend, StartError> {
        match self {
            Self::Epoll => Ok(Backend::Epoll),
            Self::Uring => match io::uring::probe() {
                Ok(()) => Ok(Backend::Uring),
                Err(reason) => Err(StartError::Uring { reason }),
            },
            Self::Auto => match io::uring::probe() {
                Ok(()) => Ok(Backend::Uring),
                Err(reason) => {
                    tracing::info!(%reason, "io_uring unavailable; using epoll");
                    Ok(Backend::Epoll)
                }
            },
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
    /// A worker did not report ready in time.
    #[error("worker {worker} did not start")]
    WorkerStart {
        /// The worker's index.
        worker: usize,
    },
    /// io_uring was required and the kernel does not allow it.
    #[error("io_uring is not available: {reason}")]
    Uring {
        /// What the probe found.
        reason: String,
    },
    /// The access log's output could not be opened.
    #[error("access log could not be opened")]
    AccessLog(#[source] std::io::Error),
    /// The admin API's address could not be bound.
    #[error("admin API could not bind {address}")]
    AdminBind {
        /// The configured address.
        address: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
}

/// A running data plane.
#[derive(Debug)]
pub struct Server {
    addrs: Vec<(String, SocketAddr)>,
    snapshot: SharedSnapshot,
    shutdown: watch::Sender<bool>,
    threads: Vec<JoinHandle<()>>,
    shards: Vec<Arc<Shard>>,
    ready: Arc<AtomicBool>,
    globals: Arc<Globals>,
    admin: Option<Admin>,
    logger: Option<AccessLogger>,
}

impl Server {
    /// Binds every listener on every worker and starts the workers.
    ///
    /// # Errors
    /// [`StartError`] when a socket cannot be bound or a thread cannot start.
    pub fn start(config: Config, options: &Options) -> Result<Self, StartError> {
        let backend = options.io.resolve()?;
        tracing::info!(backend = backend.name(), "socket I/O backend");
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

        let logger = match config.access_log() {
            Some(access_log) => Some(AccessLogger::new(access_log).map_err(StartError::AccessLog)?),
            None => None,
        };
        let snapshot: SharedSnapshot =
            Arc::new(ArcSwap::from_pointee(Compiled::new(1, Arc::new(config))));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let mut threads = Vec::with_capacity(workers);
        let shards: Vec<_> = (0..workers).map(|id| Arc::new(Shard::new(id))).collect();
        for (id, listeners) in per_worker.into_iter().enumerate() {
            let shard = Arc::clone(&shards[id]);
            let metrics = options.metrics;
            let started = started_tx.clone();
            let log = logger.as_ref().map(AccessLogger::handle);
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
                    if let Err(err) = worker::run(
                        id,
                        shard,
                        metrics,
                        backend,
                        log,
                        snapshot,
                        listeners,
                        shutdown_rx,
                        drain,
                        started,
                    ) {
                        tracing::error!(worker = id, error = %err, "worker failed");
                    }
                })
                .map_err(StartError::Spawn)?;
            threads.push(thread);
        }
        drop(started_tx);
        for worker in 0..workers {
            if started_rx.recv_timeout(Duration::from_secs(10)).is_err() {
                let _ = shutdown.send(true);
                return Err(StartError::WorkerStart { worker });
            }
        }

        let globals = Arc::new(Globals {
            config_version: AtomicU64::new(snapshot.load().version()),
            reloads_applied: AtomicU64::new(0),
            reloads_rejected: AtomicU64::new(0),
            io_backend: backend.name(),
            access_log: logger
                .as_ref()
                .map(|l| Arc::new(l.counts()) as Arc<dyn crate::metrics::LineCounts>),
        });
        let ready = Arc::new(AtomicBool::new(false));
        let admin = match options.admin {
            Some(address) => {
                let state = Arc::new(AdminState {
                    snapshot: Arc::clone(&snapshot),
                    source: options.source.clone(),
                    collected: Collected::new(shards.clone(), Arc::clone(&globals)),
                    shards: shards.clone(),
                    ready: Arc::clone(&ready),
                });
                match Admin::start(address, state) {
                    Ok(admin) => Some(admin),
                    Err(source) => {
                        let _ = shutdown.send(true);
                        return Err(StartError::AdminBind { address, source });
                    }
                }
            }
            None => None,
        };
        // Every listener is bound and every worker accepts: ready for traffic.
        ready.store(true, Ordering::Release);
        Ok(Self {
            addrs,
            snapshot,
            shutdown,
            threads,
            shards,
            ready,
            globals,
            admin,
            logger,
        })
    }

    /// The admin API's bound address, when it runs.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(Admin::addr)
    }

    /// Whether the proxy reports ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Process-wide metric values.
    pub fn globals(&self) -> &Arc<Globals> {
        &self.globals
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

    /// Each worker's metrics shard, by worker index.
    pub fn shards(&self) -> &[Arc<Shard>] {
        &self.shards
    }

    /// Number of worker threads.
    pub fn workers(&self) -> usize {
        self.threads.len()
    }

    /// Stops accepting, lets in-flight requests finish within the drain timeout, and waits for
    /// every worker to exit.
    pub fn shutdown(self) {
        // Not ready first, so load balancers polling /ready stop sending.
        self.ready.store(false, Ordering::Release);
        let _ = self.shutdown.send(true);
        for thread in self.threads {
            let _ = thread.join();
        }
        drop(self.admin);
        // The workers' log handles are gone with them: the writer drains and stops.
        if let Some(logger) = self.logger
            && let Err(err) = logger.flush_and_stop(Duration::from_secs(5))
        {
            tracing::warn!(error = %err, "access log did not finish writing");
        }
    }
}
