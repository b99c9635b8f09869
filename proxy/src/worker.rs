//! A worker: one thread, pinned to one core, with its own current-thread runtime, its own
//! `SO_REUSEPORT` socket per listener, its own upstream pools and its own view of the snapshot.
//!
//! Tasks are spawned on the worker's `LocalSet` and may be `!Send`. The only cross-thread
//! state a worker reads is the snapshot (through `arc-swap`), the shutdown signal and the
//! listener changes a reload sends ([`Command`]).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::deadline::Deadlines;
use crate::downstream::{self, ConnTracker, IdleSweep, ListenerDrain, StopFlag};
use crate::forward::Downstream;
use crate::io::uring::{Driver, UringListener};
use crate::io::{self, Backend, Socket};
use crate::metrics::{ListenerStats, Shard};
use crate::observe::LogHandle;
use crate::snapshot::{SharedSnapshot, ViewCache};
use crate::upstream::SWEEP_PERIOD;

/// Runs hyper's background tasks (HTTP/2 streams, connections) on the worker's `LocalSet`.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: Future + 'static,
{
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(fut);
    }
}

/// The state one worker thread owns.
#[derive(Debug)]
pub struct Worker {
    /// The worker's index, 0-based.
    pub id: usize,
    /// The worker's view of the shared snapshot.
    pub views: ViewCache,
    /// The worker's random source (load balancing, weighted splits, request ids).
    pub rng: RefCell<fastrand::Rng>,
    /// The worker's metrics shard (also reachable through `views`).
    pub shard: Arc<Shard>,
    /// Whether requests are recorded in the metrics.
    pub metrics: bool,
    /// The access log, when configured.
    pub log: Option<LogHandle>,
    /// The idle sweeps of the worker's connections, one per tick in use.
    pub idle_sweeps: RefCell<Vec<Rc<IdleSweep>>>,
    /// The deadlines of the worker's upstream exchanges (route timeouts).
    pub deadlines: Rc<Deadlines>,
}

impl Worker {
    /// The worker's idle sweep for connections whose shortest idle or header read timeout is
    /// `shortest`: one timer for all of them.
    pub fn idle_sweep(&self, shortest: Duration) -> Rc<IdleSweep> {
        let tick = shortest.min(downstream::PARK_AFTER);
        let mut sweeps = self.idle_sweeps.borrow_mut();
        // Sweeps of ticks no listener uses any more (after reloads) are dropped here.
        sweeps.retain(|sweep| sweep.tick() == tick || Rc::strong_count(sweep) > 1);
        if let Some(sweep) = sweeps.iter().find(|sweep| sweep.tick() == tick) {
            return Rc::clone(sweep);
        }
        let sweep = Rc::new(IdleSweep::new(tick));
        sweeps.push(Rc::clone(&sweep));
        sweep
    }
}

/// A change to a worker's listeners, sent by the control thread on a config reload.
#[derive(Debug)]
pub enum Command {
    /// Start accepting on a listener's sockets (this worker's share of them).
    Add {
        /// The listener's name.
        name: String,
        /// Bound, listening sockets.
        sockets: Vec<std::net::TcpListener>,
    },
    /// Stop accepting on a listener and drain its connections; `done` is sent once the
    /// worker no longer accepts on it.
    Remove {
        /// The listener's name.
        name: String,
        /// Acknowledges the removal.
        done: std::sync::mpsc::Sender<()>,
    },
}

/// What a worker starts with.
#[derive(Debug)]
pub struct Start {
    /// The worker's index.
    pub id: usize,
    /// The worker's metrics shard.
    pub shard: Arc<Shard>,
    /// Whether requests are recorded in the metrics.
    pub metrics: bool,
    /// The socket I/O backend.
    pub backend: Backend,
    /// The access log, when configured.
    pub log: Option<LogHandle>,
    /// The shared snapshot.
    pub snapshot: SharedSnapshot,
    /// The worker's sockets of each listener, by listener name.
    pub listeners: Vec<(String, Vec<std::net::TcpListener>)>,
    /// Listener changes from reloads.
    pub commands: tokio::sync::mpsc::UnboundedReceiver<Command>,
    /// Turns true when the process shuts down.
    pub shutdown: watch::Receiver<bool>,
    /// Time connections get to finish once their listener stops.
    pub drain_timeout: Duration,
    /// Told once every listener accepts.
    pub started: std::sync::mpsc::Sender<()>,
}

/// One listener's accept loops on this worker, and how to stop them.
struct Accepting {
    stop: Rc<StopFlag>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Accepting {
    /// Stops accepting; resolves once the accept loops ended. Connections already accepted
    /// see the stop and drain.
    async fn stop(self) {
        self.stop.stop();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Runs a worker on the current thread until `shutdown` turns true and its connections drain
/// (or `drain_timeout` passes).
pub fn run(start: Start) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_park(io::worker_parking)
        .on_thread_unpark(io::worker_unparked)
        .build()?;
    let local = tokio::task::LocalSet::new();
    // The worker's own work (its listeners, the commands of reloads, the drain) runs as a task
    // of the `LocalSet`, and `block_on` only waits for that task: the future `block_on` runs is
    // polled at every wake-up of the worker (every I/O event), and polling `work`'s `select!`
    // there cost a lock of the shutdown `watch`, an mpsc check and a random draw each time.
    local.block_on(&runtime, async move {
        match tokio::task::spawn_local(work(start)).await {
            Ok(result) => result,
            Err(err) => match err.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(err) => Err(std::io::Error::other(err)),
            },
        }
    })
}

/// The worker's work on its thread: see [`run`].
async fn work(start: Start) -> std::io::Result<()> {
    let Start {
        id,
        shard,
        metrics,
        backend,
        log,
        snapshot,
        listeners,
        mut commands,
        mut shutdown,
        drain_timeout,
        started,
    } = start;
    let driver = match backend {
        Backend::Uring => {
            let driver = Driver::new(
                1024,
                Arc::clone(&shard.io_ops_in_flight),
                Arc::clone(&shard.io_buffers_held),
            )?;
            driver.start()?;
            Some(driver)
        }
        Backend::Epoll => None,
    };
    io::set_thread_driver(driver.clone());
    let worker = Rc::new(Worker {
        id,
        views: ViewCache::new(snapshot, Arc::clone(&shard)),
        rng: RefCell::new(fastrand::Rng::new()),
        shard,
        metrics,
        log,
        idle_sweeps: RefCell::default(),
        deadlines: Rc::default(),
    });
    tokio::task::spawn_local(sweep_pools(Rc::clone(&worker)));
    let tracker = ConnTracker::default();
    let spawn = |name: String, sockets: Vec<std::net::TcpListener>| {
        let stop = Rc::new(StopFlag::default());
        let name: Rc<str> = Rc::from(name);
        let drain = Rc::new(ListenerDrain {
            stop: Rc::clone(&stop),
            timeout: drain_timeout,
            tracker: tracker.clone(),
        });
        let mut tasks = Vec::with_capacity(sockets.len());
        for socket in sockets {
            let acceptor = match &driver {
                Some(driver) => Acceptor::Uring(UringListener::new(Rc::clone(driver), socket)),
                None => match TcpListener::from_std(socket) {
                    Ok(listener) => Acceptor::Tokio(listener),
                    Err(err) => {
                        // The loops already started end with the listener.
                        stop.stop();
                        return Err(err);
                    }
                },
            };
            tasks.push(tokio::task::spawn_local(accept_loop(
                Rc::clone(&worker),
                Rc::clone(&name),
                acceptor,
                Rc::clone(&drain),
            )));
        }
        Ok::<_, std::io::Error>(Accepting { stop, tasks })
    };
    let mut accepting: HashMap<String, Accepting> = HashMap::new();
    for (name, sockets) in listeners {
        let loops = spawn(name.clone(), sockets)?;
        accepting.insert(name, loops);
    }
    let _ = started.send(());
    loop {
        tokio::select! {
            // A dropped sender also means shut down.
            _ = shutdown.wait_for(|stop| *stop) => break,
            command = commands.recv() => match command {
                Some(Command::Add { name, sockets }) => {
                    tracing::info!(worker = id, listener = %name, "listener added");
                    match spawn(name.clone(), sockets) {
                        Ok(loops) => {
                            if let Some(old) = accepting.insert(name, loops) {
                                tokio::task::spawn_local(old.stop());
                            }
                        }
                        Err(err) => {
                            tracing::error!(worker = id, listener = %name, error = %err, "listener could not start");
                        }
                    }
                }
                Some(Command::Remove { name, done }) => {
                    tracing::info!(worker = id, listener = %name, "listener removed; draining");
                    let old = accepting.remove(&name);
                    tokio::task::spawn_local(async move {
                        if let Some(old) = old {
                            old.stop().await;
                        }
                        let _ = done.send(());
                    });
                }
                None => break,
            },
        }
    }
    for (_, loops) in accepting.drain() {
        loops.stop().await;
    }
    tracing::debug!(worker = id, open = tracker.open(), "draining connections");
    // Connections close themselves within the drain timeout; the margin covers a response
    // being written when the deadline hits.
    if tokio::time::timeout(drain_timeout + Duration::from_secs(1), tracker.drained())
        .await
        .is_err()
    {
        tracing::warn!(
            worker = id,
            open = tracker.open(),
            "drain deadline passed; closing"
        );
    }
    io::set_thread_driver(None);
    Ok(())
}

/// Every [`SWEEP_PERIOD`], closes the worker's idle upstream connections that expired, that the
/// upstream closed, or that the pool's purge finds surplus, whether requests come or not. Ends
/// with the worker's `LocalSet`.
async fn sweep_pools(worker: Rc<Worker>) {
    let mut tick = tokio::time::interval(SWEEP_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let view = worker.views.view();
        let now = tokio::time::Instant::now();
        for cluster in view.clusters() {
            cluster.sweep(now);
        }
    }
}

/// A worker's listening socket on either backend.
#[derive(Debug)]
enum Acceptor {
    Tokio(TcpListener),
    Uring(UringListener),
}

impl Acceptor {
    async fn accept(&mut self) -> std::io::Result<(Socket, std::net::SocketAddr)> {
        match self {
            Self::Tokio(listener) => {
                let (stream, peer) = listener.accept().await?;
                // Small responses must not wait for Nagle's algorithm.
                let _ = stream.set_nodelay(true);
                Ok((Socket::tcp(stream), peer))
            }
            Self::Uring(listener) => {
                let (socket, peer) = listener.accept().await?;
                Ok((Socket::uring(socket), peer))
            }
        }
    }

    /// Stops accepting without losing a connection the kernel already handed over: io_uring's
    /// multishot accept is cancelled and what it accepted before the cancel is returned. The
    /// socket itself closes when this worker's descriptor is the last one (another worker, or
    /// a newer process after an upgrade, may still accept on it).
    async fn close(self) -> Vec<(Socket, std::net::SocketAddr)> {
        match self {
            Self::Tokio(_) => Vec::new(),
            Self::Uring(listener) => listener
                .close()
                .await
                .into_iter()
                .map(|(socket, peer)| (Socket::uring(socket), peer))
                .collect(),
        }
    }
}

/// Builds the per-connection state and serves it.
struct Serving {
    index: usize,
    version: u64,
    builder: Rc<downstream::Builder>,
    idle_timeout: Duration,
    sweep: Rc<IdleSweep>,
}

impl Serving {
    /// The listener's index and limits in the current snapshot (rebuilt when it changes).
    fn refresh(current: Option<Self>, worker: &Worker, name: &str) -> Self {
        let view = worker.views.view();
        let compiled = view.compiled();
        if let Some(current) = current
            && current.version == compiled.version()
        {
            return current;
        }
        let found = compiled
            .config()
            .listeners()
            .iter()
            .enumerate()
            .find(|(_, l)| l.name() == name);
        let index = found.map_or(usize::MAX, |(i, _)| i);
        let limits = found.map(|(_, l)| l.limits().clone()).unwrap_or_default();
        Self {
            index,
            version: compiled.version(),
            builder: Rc::new(downstream::builder(&limits)),
            idle_timeout: limits.idle_timeout,
            sweep: worker.idle_sweep(limits.idle_timeout.min(limits.header_read_timeout)),
        }
    }
}

async fn accept_loop(
    worker: Rc<Worker>,
    name: Rc<str>,
    mut listener: Acceptor,
    drain: Rc<ListenerDrain>,
) {
    let stats = worker.shard.listener(&name);
    let mut serving = None;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = drain.stop.stopped() => break,
        };
        match accepted {
            Ok((socket, peer)) => {
                let current = Serving::refresh(serving.take(), &worker, &name);
                serve(&worker, &name, &stats, &drain, &current, socket, peer);
                serving = Some(current);
            }
            Err(err) => {
                // EMFILE/ENFILE and the like: back off briefly instead of spinning.
                tracing::warn!(error = %err, listener = &*name, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    let late = listener.close().await;
    if !late.is_empty() {
        let current = Serving::refresh(serving.take(), &worker, &name);
        for (socket, peer) in late {
            serve(&worker, &name, &stats, &drain, &current, socket, peer);
        }
    }
}

fn serve(
    worker: &Rc<Worker>,
    name: &Rc<str>,
    stats: &Arc<ListenerStats>,
    drain: &Rc<ListenerDrain>,
    serving: &Serving,
    socket: Socket,
    peer: std::net::SocketAddr,
) {
    stats.connections_total.inc();
    let conn = Rc::new(Downstream {
        worker: Rc::clone(worker),
        listener_index: serving.index,
        listener: Rc::clone(name),
        peer,
        client_ip: crate::headers::client_ip_value(peer.ip()),
        upgrade: RefCell::default(),
        stats: Arc::clone(stats),
        drain: Rc::clone(drain),
        closing: Cell::new(false),
        http2: Cell::new(false),
    });
    tokio::task::spawn_local(downstream::serve(
        Rc::clone(&serving.builder),
        conn,
        socket,
        serving.idle_timeout,
        Rc::clone(&serving.sweep),
        drain.tracker.track(),
    ));
}
