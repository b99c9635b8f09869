//! The process: binds every listener once per worker, starts the workers, and shuts them down.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;
use strait_config::{Config, Format};
use tokio::sync::watch;

use crate::admin::{Admin, AdminState, ConfigSource};
use crate::io::{self, Backend};
use crate::metrics::{Collected, Globals, Shard};
use crate::observe::AccessLogger;
use crate::reload::{self, Applied, BoundListener, ReloadError, Reloader};
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
    /// How long `/ready` reports not ready before the listeners stop accepting on shutdown.
    pub pre_drain_delay: Duration,
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
            pre_drain_delay: Duration::ZERO,
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
    /// The config asks for what only the control plane does.
    #[error("{0}")]
    Unsupported(String),
    /// The admin API's address could not be bound.
    #[error("admin API could not bind {address}")]
    AdminBind {
        /// The configured address.
        address: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
}

/// Listening sockets taken over from a running `strait` (see [`crate::upgrade`]).
#[derive(Debug, Default)]
pub struct Inherited {
    /// The listeners, with every socket the old process accepted on.
    pub listeners: Vec<BoundListener>,
    /// The admin API's listening socket.
    pub admin: Option<std::net::TcpListener>,
}

/// A running data plane.
#[derive(Debug)]
pub struct Server {
    reloader: Arc<Reloader>,
    shutdown: watch::Sender<bool>,
    threads: Vec<JoinHandle<()>>,
    shards: Vec<Arc<Shard>>,
    ready: Arc<AtomicBool>,
    globals: Arc<Globals>,
    admin: Option<Admin>,
    logger: Option<AccessLogger>,
    pre_drain_delay: Duration,
}

impl Server {
    /// Binds every listener on every worker (or takes the sockets `options.inherited` holds)
    /// and starts the workers.
    ///
    /// # Errors
    /// [`StartError`] when a socket cannot be bound or a thread cannot start.
    pub fn start(config: Config, options: &Options) -> Result<Self, StartError> {
        Self::start_with(config, options, Inherited::default())
    }

    /// [`Server::start`], serving on sockets taken over from a running process where a
    /// listener's name and configured address match.
    ///
    /// # Errors
    /// [`StartError`] when a socket cannot be bound or a thread cannot start.
    pub fn start_with(
        config: Config,
        options: &Options,
        mut inherited: Inherited,
    ) -> Result<Self, StartError> {
        let unsupported = reload::unsupported(&config);
        if !unsupported.is_empty() {
            return Err(StartError::Unsupported(unsupported.join("\n")));
        }
        let backend = options.io.resolve()?;
        tracing::info!(backend = backend.name(), "socket I/O backend");
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let workers = match options.workers {
            0 => cores.len().max(1),
            n => n,
        };
        let mut per_worker: Vec<Vec<(String, Vec<std::net::TcpListener>)>> =
            (0..workers).map(|_| Vec::new()).collect();
        let mut bound_listeners = Vec::new();
        for listener in config.listeners() {
            let taken = inherited
                .listeners
                .iter()
                .position(|l| l.name == listener.name() && l.address == listener.address())
                .map(|i| inherited.listeners.swap_remove(i));
            let bind_error = |source| StartError::Bind {
                listener: listener.name().to_owned(),
                address: listener.address(),
                source,
            };
            let (bound, sockets) = match taken {
                Some(taken) => {
                    let mut sockets = taken.sockets;
                    if sockets.len() < workers {
                        // More workers than the old process had: join its SO_REUSEPORT group.
                        let more = io::bind_reuseport(taken.bound, workers - sockets.len())
                            .map_err(bind_error)?;
                        sockets.extend(more);
                    }
                    tracing::info!(listener = listener.name(), address = %taken.bound, sockets = sockets.len(), "listening on inherited sockets");
                    (taken.bound, sockets)
                }
                None => {
                    let sockets =
                        io::bind_reuseport(listener.address(), workers).map_err(bind_error)?;
                    let bound = sockets
                        .first()
                        .and_then(|s| s.local_addr().ok())
                        .unwrap_or_else(|| listener.address());
                    tracing::info!(listener = listener.name(), address = %bound, workers, "listening");
                    (bound, sockets)
                }
            };
            let dups = sockets
                .iter()
                .map(std::net::TcpListener::try_clone)
                .collect::<std::io::Result<Vec<_>>>()
                .map_err(bind_error)?;
            for (w, sockets) in reload::distribute(sockets, workers).into_iter().enumerate() {
                per_worker[w].push((listener.name().to_owned(), sockets));
            }
            bound_listeners.push(BoundListener {
                name: listener.name().to_owned(),
                address: listener.address(),
                bound,
                sockets: dups,
            });
        }
        for unused in &inherited.listeners {
            tracing::info!(listener = %unused.name, address = %unused.bound, "inherited listener is not in the config; closing it");
        }

        let logger = match config.access_log() {
            Some(access_log) => Some(AccessLogger::new(access_log).map_err(StartError::AccessLog)?),
            None => None,
        };
        let shards: Vec<_> = (0..workers).map(|id| Arc::new(Shard::new(id))).collect();
        let snapshot: SharedSnapshot = Arc::new(ArcSwap::from_pointee(Compiled::with_stats(
            1,
            Arc::new(config),
            &shards,
        )));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let mut threads = Vec::with_capacity(workers);
        let mut commands = Vec::with_capacity(workers);
        for (id, listeners) in per_worker.into_iter().enumerate() {
            let (command_tx, command_rx) = tokio::sync::mpsc::unbounded_channel();
            commands.push(command_tx);
            let start = worker::Start {
                id,
                shard: Arc::clone(&shards[id]),
                metrics: options.metrics,
                backend,
                log: logger.as_ref().map(AccessLogger::handle),
                snapshot: Arc::clone(&snapshot),
                listeners,
                commands: command_rx,
                shutdown: shutdown_rx.clone(),
                drain_timeout: options.drain_timeout,
                started: started_tx.clone(),
            };
            let core = (!cores.is_empty()).then(|| cores[id % cores.len()]);
            let thread = std::thread::Builder::new()
                .name(format!("strait-worker-{id}"))
                .spawn(move || {
                    if let Some(core) = core {
                        core_affinity::set_for_current(core);
                    }
                    if let Err(err) = worker::run(start) {
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
        let reloader = Arc::new(Reloader::new(
            Arc::clone(&snapshot),
            Arc::clone(&globals),
            shards.clone(),
            commands,
            bound_listeners,
            options.source.clone(),
        ));
        let ready = Arc::new(AtomicBool::new(false));
        let admin = match options.admin {
            Some(address) => {
                let state = Arc::new(AdminState {
                    snapshot: Arc::clone(&snapshot),
                    reloader: Arc::clone(&reloader),
                    collected: Collected::new(shards.clone(), Arc::clone(&globals)),
                    shards: shards.clone(),
                    ready: Arc::clone(&ready),
                });
                let started = match inherited.admin.take() {
                    Some(listener) => Admin::start_on(listener, state),
                    None => Admin::start(address, state),
                };
                match started {
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
            reloader,
            shutdown,
            threads,
            shards,
            ready,
            globals,
            admin,
            logger,
            pre_drain_delay: options.pre_drain_delay,
        })
    }

    /// The admin API's bound address, when it runs.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(Admin::addr)
    }

    /// A duplicate of the admin API's listening socket, to hand to a new binary.
    pub fn admin_listener(&self) -> Option<std::io::Result<std::net::TcpListener>> {
        self.admin.as_ref().map(Admin::duplicate_listener)
    }

    /// Whether the proxy reports ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Process-wide metric values.
    pub fn globals(&self) -> &Arc<Globals> {
        &self.globals
    }

    /// Applies configs to this server.
    pub fn reloader(&self) -> &Arc<Reloader> {
        &self.reloader
    }

    /// Validates and applies a new config (see [`Reloader::apply`]).
    ///
    /// # Errors
    /// [`ReloadError`]; the active config keeps serving.
    pub fn reload(&self, text: &str, format: Format) -> Result<Applied, ReloadError> {
        self.reloader.apply(text, format)
    }

    /// The bound address of each listener, by name (the real port when configured as 0).
    pub fn addrs(&self) -> Vec<(String, SocketAddr)> {
        self.reloader.addrs()
    }

    /// The bound address of a listener.
    pub fn addr(&self, listener: &str) -> Option<SocketAddr> {
        self.addrs()
            .into_iter()
            .find(|(n, _)| n == listener)
            .map(|(_, a)| a)
    }

    /// The active snapshot's version.
    pub fn version(&self) -> u64 {
        self.reloader.snapshot().load().version()
    }

    /// Each worker's metrics shard, by worker index.
    pub fn shards(&self) -> &[Arc<Shard>] {
        &self.shards
    }

    /// Number of worker threads.
    pub fn workers(&self) -> usize {
        self.threads.len()
    }

    /// Graceful shutdown: `/ready` turns false, then after the pre-drain delay (time for load
    /// balancers to stop sending) the listeners stop accepting and connections drain: HTTP/2
    /// GOAWAY, `Connection: close` on HTTP/1.1, idle connections closed, all within the drain
    /// timeout. Waits for every worker to exit.
    pub fn shutdown(self) {
        let delay = self.pre_drain_delay;
        self.shutdown_after(delay);
    }

    /// [`Server::shutdown`] without the pre-drain delay: a newer process already serves the
    /// same sockets.
    pub fn hand_over(self) {
        self.shutdown_after(Duration::ZERO);
    }

    fn shutdown_after(self, delay: Duration) {
        // Not ready first, so load balancers polling /ready stop sending.
        self.ready.store(false, Ordering::Release);
        if !delay.is_zero() {
            tracing::info!(
                seconds = delay.as_secs_f64(),
                "not ready; waiting before draining"
            );
            std::thread::sleep(delay);
        }
        self.reloader.close_listeners();
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
