//! A worker: one thread, pinned to one core, with its own current-thread runtime, its own
//! `SO_REUSEPORT` socket per listener, its own upstream pools and its own view of the snapshot.
//!
//! Tasks are spawned on the worker's `LocalSet` and may be `!Send`. The only cross-thread
//! state a worker reads is the snapshot (through `arc-swap`) and the shutdown signal.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::downstream::{self, ConnTracker};
use crate::forward::Downstream;
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

/// Counters one worker writes and anyone may read (tests, and the admin API later).
///
/// Only the owning worker writes its slot, with a relaxed load and store (no read-modify-write,
/// no bus lock); the alignment keeps each worker's slot on its own cache line.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct WorkerStats {
    connections: AtomicU64,
    requests: AtomicU64,
}

impl WorkerStats {
    /// Downstream connections accepted.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Downstream requests received.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn bump(counter: &AtomicU64) {
        counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    /// Counts an accepted connection (owning worker only).
    pub fn count_connection(&self) {
        Self::bump(&self.connections);
    }

    /// Counts a request (owning worker only).
    pub fn count_request(&self) {
        Self::bump(&self.requests);
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
    /// The worker's counters.
    pub stats: Arc<WorkerStats>,
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
    stats: Arc<WorkerStats>,
    snapshot: SharedSnapshot,
    listeners: Vec<(usize, String, std::net::TcpListener)>,
    shutdown: watch::Receiver<bool>,
    drain_timeout: Duration,
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let worker = Rc::new(Worker {
            id,
            views: ViewCache::new(snapshot),
            rng: RefCell::new(fastrand::Rng::new()),
            stats,
        });
        let tracker = ConnTracker::default();
        let mut accepting = Vec::new();
        for (index, name, socket) in listeners {
            let listener = TcpListener::from_std(socket)?;
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
        Ok(())
    })
}

async fn accept_loop(
    worker: Rc<Worker>,
    index: usize,
    name: Rc<str>,
    listener: TcpListener,
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
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                worker.stats.count_connection();
                let _ = stream.set_nodelay(true);
                let conn = Rc::new(Downstream {
                    worker: Rc::clone(&worker),
                    listener_index: index,
                    listener: Rc::clone(&name),
                    peer,
                    framing: Arc::default(),
                    requests: Cell::new(0),
                });
                tokio::task::spawn_local(downstream::serve(
                    Rc::clone(&builder),
                    conn,
                    stream,
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
