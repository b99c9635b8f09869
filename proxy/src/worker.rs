//! A worker: one thread, pinned to one core, with its own current-thread runtime, its own
//! `SO_REUSEPORT` socket per listener, its own upstream pools and its own view of the snapshot.
//!
//! Tasks are spawned on the worker's `LocalSet` and may be `!Send`. The only cross-thread
//! state a worker reads is the snapshot (through `arc-swap`) and the shutdown signal.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::downstream::{self, ConnTracker};
use crate::forward::Downstream;
use crate::io::uring::{Driver, UringListener};
use crate::io::{self, Backend, Socket};
use crate::metrics::Shard;
use crate::observe::LogHandle;
use crate::snapshot::{SharedSnapshot, ViewCache};

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
}

/// One listener's socket, handed to a worker.
#[derive(Debug)]
pub struct WorkerListener {
    /// The listener's index in the snapshot it was bound for.
    pub index: usize,
    /// The listener's name.
    pub name: Rc<str>,
    /// The bound, listening socket.
    pub socket: std::net::TcpListener,
}

/// Runs a worker on the current thread until `shutdown` turns true and its connections drain
/// (or `drain_timeout` passes).
pub fn run(
    id: usize,
    shard: Arc<Shard>,
    metrics: bool,
    backend: Backend,
    log: Option<LogHandle>,
    snapshot: SharedSnapshot,
    listeners: Vec<(usize, String, std::net::TcpListener)>,
    shutdown: watch::Receiver<bool>,
    drain_timeout: Duration,
    started: std::sync::mpsc::Sender<()>,
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let driver = match backend {
            Backend::Uring => {
                let driver = Driver::new(1024, Arc::clone(&shard.io_ops_in_flight))?;
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
        });
        let tracker = ConnTracker::default();
        let mut accepting = Vec::new();
        for (index, name, socket) in listeners {
            let listener = match &driver {
                Some(driver) => Acceptor::Uring(UringListener::new(Rc::clone(driver), socket)),
                None => Acceptor::Tokio(TcpListener::from_std(socket)?),
            };
            let name: Rc<str> = Rc::from(name);
            accepting.push(tokio::task::spawn_local(accept_loop(
                Rc::clone(&worker),
                index,
                name,
                listener,
                tracker.clone(),
                shutdown.clone(),
            )));
        }
        let _ = started.send(());
        let mut shutdown = shutdown;
        // A dropped sender also means shut down.
        let _ = shutdown.wait_for(|stop| *stop).await;
        for task in accepting {
            let _ = task.await;
        }
        tracing::debug!(worker = id, open = tracker.open(), "draining connections");
        if tokio::time::timeout(drain_timeout, tracker.drained())
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
    })
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
}

async fn accept_loop(
    worker: Rc<Worker>,
    index: usize,
    name: Rc<str>,
    mut listener: Acceptor,
    tracker: ConnTracker,
    mut shutdown: watch::Receiver<bool>,
) {
    let view = worker.views.view();
    let limits = view
        .compiled()
        .config()
        .listeners()
        .iter()
        .find(|l| l.name() == &*name)
        .map(|l| l.limits().clone())
        .unwrap_or_default();
    let builder = Rc::new(downstream::builder(&limits));
    let stats = worker.shard.listener(&name);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        match accepted {
            Ok((socket, peer)) => {
                stats.connections_total.inc();
                let conn = Rc::new(Downstream {
                    worker: Rc::clone(&worker),
                    listener_index: index,
                    listener: Rc::clone(&name),
                    peer,
                    framing: Arc::default(),
                    requests: Cell::new(0),
                    stats: Arc::clone(&stats),
                });
                tokio::task::spawn_local(downstream::serve(
                    Rc::clone(&builder),
                    conn,
                    socket,
                    limits.idle_timeout,
                    tracker.track(),
                    shutdown.clone(),
                ));
            }
            Err(err) => {
                // EMFILE/ENFILE and the like: back off briefly instead of spinning.
                tracing::warn!(error = %err, listener = &*name, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
