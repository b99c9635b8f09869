//! The per-worker io_uring driver.
//!
//! One ring per worker, living inside the worker's tokio current-thread runtime: the ring's fd
//! is registered with tokio's reactor, and one reactor task ([`Driver::start`]) drains
//! completions and wakes the tasks waiting on them. Operations push their submission entry and
//! mark the ring dirty; the reactor task submits everything pushed since it last ran in one
//! `io_uring_enter`, so all submissions of a scheduler round share one system call. Sends are
//! submitted at once instead when the worker is lightly loaded (idle most of the last
//! millisecond, as its runtime's park and unpark hooks tell [`Load`]) or the ring is quiet (not
//! entered for `LONE_AFTER`): a response then leaves without waiting for the rest of its round.
//!
//! Buffers, socket addresses and the like are owned by the driver's slot table for as long as
//! the kernel may touch them: an operation whose owner is dropped becomes *orphaned*, is
//! cancelled (`AsyncCancel`), and its memory is freed only when its completion arrives. On
//! drop the driver cancels everything in flight and waits for the completions before freeing.

use std::alloc::{Layout, alloc, alloc_zeroed, dealloc};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use io_uring::types::BufRingEntry;
use io_uring::{IoUring, cqueue, opcode, squeue, types};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

use crate::metrics::Gauge;

/// A send goes to the kernel at once ([`Driver::submit_send`]), not with the reactor's next
/// round, when the ring was last entered longer ago than this, however loaded the worker: a
/// response then waits at most about this long for the rest of its scheduler round. Under load
/// the reactor enters the ring more often than this, and sends share its system call.
const LONE_AFTER: Duration = Duration::from_micros(50);

/// The stretch of time over which [`Load`] measures how busy the worker is.
const LOAD_WINDOW: Duration = Duration::from_millis(1);

/// How busy the worker is: the share of the last [`LOAD_WINDOW`] it spent running rather than
/// parked, from its runtime's park and unpark hooks. A worker that was idle more than half of
/// it is *light*: its sends are submitted at once, each with a system call, for latency
/// (batching them held a burst's responses until its last task had run: the p50 of a
/// fixed-rate load was above epoll's); a busy worker batches them, for CPU.
#[derive(Debug)]
struct Load {
    unparked: Instant,
    parked: Instant,
    busy: Duration,
    idle: Duration,
    heavy: bool,
}

impl Load {
    fn new(now: Instant) -> Self {
        Self {
            unparked: now,
            parked: now,
            busy: Duration::ZERO,
            idle: Duration::ZERO,
            heavy: false,
        }
    }

    /// The worker is about to park: ends a busy stretch, and a window when it is full.
    fn parking(&mut self, now: Instant) {
        self.busy += now.saturating_duration_since(self.unparked);
        if self.busy + self.idle >= LOAD_WINDOW {
            self.heavy = self.busy > self.idle;
            self.busy = Duration::ZERO;
            self.idle = Duration::ZERO;
        }
        self.parked = now;
    }

    /// The worker woke up: ends an idle stretch.
    fn unparked(&mut self, now: Instant) {
        self.idle += now.saturating_duration_since(self.parked);
        self.unparked = now;
    }

    /// Whether the worker counts as lightly loaded at `now`: idle more than half of the last
    /// window, and not running for a whole window since it last woke.
    fn light(&self, now: Instant) -> bool {
        !self.heavy && now.saturating_duration_since(self.unparked) < LOAD_WINDOW
    }
}

/// The user data of cancel requests, whose completions are ignored.
const CANCEL_TAG: u64 = u64::MAX;

/// The pause before the reactor retries a failed round, doubling up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_millis(1);
const RETRY_MAX: Duration = Duration::from_millis(100);

/// How long dropping a driver waits for the completions of the operations it cancelled.
const DROP_WAIT: Duration = Duration::from_secs(1);

/// Memory an operation lends to the kernel until it completes.
#[derive(Debug, Default)]
pub enum Buf {
    /// Nothing.
    #[default]
    None,
    /// A byte buffer (recv into it, send from it).
    Bytes(Vec<u8>),
    /// A socket address (connect).
    Addr(Box<socket2::SockAddr>),
}

#[derive(Debug, Default)]
enum Slot {
    #[default]
    Free,
    /// In flight; the owner waits.
    Waiting { waker: Option<Waker>, buf: Buf },
    /// Completed; the owner has not collected it yet. `flags` name the provided buffer a
    /// buffer-select receive filled, if any.
    Done { result: i32, flags: u32, buf: Buf },
    /// The owner is gone; freed when the (last) completion arrives. `accepts` marks an
    /// abandoned accept, whose late results are new fds that must be closed. The buffer is
    /// only kept, never read: the kernel may still write into it.
    Orphaned { _buf: Buf, accepts: bool },
    /// A multishot operation: results (with their flags) queue up until collected.
    Multi {
        queue: VecDeque<(i32, u32)>,
        waker: Option<Waker>,
        /// The kernel may post more results.
        armed: bool,
        kind: Multi,
        /// A cancel was asked for.
        stopping: bool,
    },
}

/// What a multishot operation yields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Multi {
    /// Accepted connections: each result is a new fd.
    Accept,
    /// Receives into provided buffers: each result holds the buffer its flags name. Results
    /// nobody collects hold buffers, so the kernel is told to stop once [`RECV_HELD`] wait;
    /// the socket's receive buffer then fills and TCP pushes back on the peer. The bound is
    /// soft: the kernel goes on receiving for as long as data arrives before the cancel lands
    /// (at worst until the group runs out, which ends the multishot with ENOBUFS and sends
    /// other sockets' receives to buffers of their own until buffers come back).
    Recv,
}

/// Completions a multishot receive may hold uncollected before it is stopped.
pub(super) const RECV_HELD: usize = 4;

/// Slots, each with a generation: an operation's id (its user data) is the generation in the
/// high 32 bits and the slot index in the low 32. A cancel or a late completion for a slot that
/// has since been reused carries the old generation and so cannot touch the new operation.
#[derive(Debug, Default)]
struct Slots {
    slots: Vec<Slot>,
    generations: Vec<u32>,
    free: Vec<usize>,
    in_flight: usize,
    next_generation: u32,
    gauge: Arc<Gauge>,
}

/// An operation's id: its slot's generation and index.
pub type OpId = u64;

fn split(id: OpId) -> (usize, u32) {
    // Truncation is the point: the low half is the index, the high half the generation.
    #[allow(clippy::cast_possible_truncation)]
    let index = (id & u64::from(u32::MAX)) as usize;
    let generation = u32::try_from(id >> 32).unwrap_or(u32::MAX);
    (index, generation)
}

impl Slots {
    fn insert(&mut self, slot: Slot) -> OpId {
        self.in_flight += 1;
        self.gauge.inc();
        self.next_generation = self.next_generation.wrapping_add(1);
        let generation = self.next_generation;
        let index = match self.free.pop() {
            Some(index) => {
                self.slots[index] = slot;
                self.generations[index] = generation;
                index
            }
            None => {
                self.slots.push(slot);
                self.generations.push(generation);
                self.slots.len() - 1
            }
        };
        (u64::from(generation) << 32) | index as u64
    }

    /// The slot index of `id` if that operation still owns the slot.
    fn live(&self, id: OpId) -> Option<usize> {
        let (index, generation) = split(id);
        (self.generations.get(index) == Some(&generation)).then_some(index)
    }

    fn release(&mut self, index: usize) {
        self.slots[index] = Slot::Free;
        self.free.push(index);
        self.in_flight -= 1;
        self.gauge.dec();
    }
}

/// A worker's ring and the operations in flight on it.
pub struct Driver {
    ring: RefCell<IoUring>,
    slots: RefCell<Slots>,
    dirty: Cell<bool>,
    /// When the ring was last entered to submit.
    entered: Cell<Instant>,
    /// [`LONE_AFTER`], but for tests.
    lone_after: Cell<Duration>,
    load: RefCell<Load>,
    reactor: RefCell<Option<Waker>>,
    woken: RefCell<Vec<Waker>>,
    /// Multishot receives to stop, found while draining (see [`Multi::Recv`]).
    stops: RefCell<Vec<OpId>>,
    /// Sockets receive with multishot receives (see [`Self::recv_multi`]).
    recv_multi: Cell<bool>,
    /// Provided buffers taken by completions and not given back yet.
    buffers_held: Arc<Gauge>,
    /// The provided-buffer rings, small then large: receive buffers shared by every socket of
    /// the worker; declared after `ring` so that the ring is closed before their memory is
    /// freed. Empty when the kernel has no provided-buffer rings (before 5.19): sockets then
    /// receive into buffers of their own.
    bufs: Vec<BufRing>,
    /// The next this many `io_uring_enter` calls fail with EBUSY (tests).
    #[cfg(test)]
    refuse_enters: Cell<u32>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("in_flight", &self.slots.borrow().in_flight)
            .finish()
    }
}

/// The ring's fd, for tokio's reactor.
#[derive(Debug)]
struct RingFd(RawFd);

impl AsRawFd for RingFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

impl Driver {
    /// A ring with `entries` submission entries.
    ///
    /// # Errors
    /// When the kernel refuses io_uring (seccomp EPERM, ENOSYS, `io_uring_disabled`).
    ///
    /// `gauge` follows the number of operations in flight (for the metrics).
    /// `buffers_held` follows the number of provided buffers that completions handed to the
    /// driver and that have not been given back yet (idle, it returns to zero).
    pub fn new(entries: u32, gauge: Arc<Gauge>, buffers_held: Arc<Gauge>) -> io::Result<Rc<Self>> {
        Self::build_with(entries, gauge, buffers_held, true)
    }

    /// A ring without provided buffers (`provided: false`): every receive uses a buffer of its
    /// socket's own, as on kernels without buffer rings.
    #[cfg(test)]
    pub(super) fn build(entries: u32, gauge: Arc<Gauge>, provided: bool) -> io::Result<Rc<Self>> {
        Self::build_with(entries, gauge, Arc::default(), provided)
    }

    fn build_with(
        entries: u32,
        gauge: Arc<Gauge>,
        buffers_held: Arc<Gauge>,
        provided: bool,
    ) -> io::Result<Rc<Self>> {
        let ring = IoUring::builder()
            .setup_cqsize(entries * 4)
            // Completions are posted without interrupting the worker with an IPI; it runs the
            // kernel's task work at its next system call, which every scheduler round makes.
            .setup_coop_taskrun()
            .setup_single_issuer()
            .build(entries)?;
        let mut bufs = Vec::new();
        let groups = [
            (SMALL_GROUP, SMALL_COUNT, SMALL_PROVIDED, 0),
            (LARGE_GROUP, LARGE_COUNT, LARGE_PROVIDED, SMALL_COUNT),
        ];
        for (group, count, size, base) in groups.into_iter().filter(|_| provided) {
            let Some(ring_bufs) = BufRing::new(group, count, size, base) else {
                break;
            };
            // SAFETY: the entries stay allocated and in place until the driver is dropped,
            // which unregisters the group (and closes the ring) before freeing them.
            let registered = unsafe {
                ring.submitter().register_buf_ring_with_flags(
                    ring_bufs.entries.as_ptr() as u64,
                    count,
                    group,
                    0,
                )
            };
            match registered {
                Ok(()) => bufs.push(ring_bufs),
                Err(err) => {
                    tracing::info!(error = %err, group, "no provided-buffer ring; per-socket buffers");
                    break;
                }
            }
        }
        // Multishot receives take provided buffers; a kernel without them says so (EINVAL).
        let recv_multi = !bufs.is_empty();
        Ok(Rc::new(Self {
            ring: RefCell::new(ring),
            slots: RefCell::new(Slots {
                gauge,
                ..Slots::default()
            }),
            dirty: Cell::new(false),
            entered: Cell::new(Instant::now()),
            lone_after: Cell::new(LONE_AFTER),
            load: RefCell::new(Load::new(Instant::now())),
            reactor: RefCell::new(None),
            woken: RefCell::new(Vec::new()),
            stops: RefCell::new(Vec::new()),
            bufs,
            recv_multi: Cell::new(recv_multi),
            buffers_held,
            #[cfg(test)]
            refuse_enters: Cell::new(0),
        }))
    }

    /// Registers the ring with tokio's reactor and spawns the reactor task on the current
    /// `LocalSet`.
    ///
    /// # Errors
    /// When the ring's fd cannot be registered.
    pub fn start(self: &Rc<Self>) -> io::Result<()> {
        let fd = RingFd(self.ring.borrow().as_raw_fd());
        // SAFETY: the ring's fd stays open for as long as the `IoUring` lives, which is the
        // driver's lifetime; the `AsyncFd` lives in the reactor task, which holds an `Rc` of the
        // driver, so the fd outlives its registration.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(|err| err.into_parts().1)?;
        let driver = Rc::clone(self);
        tokio::task::spawn_local(async move {
            // A failed round is retried after a pause that doubles while rounds keep failing:
            // ending the task would leave every operation of the worker waiting forever.
            let mut pause = RETRY_MIN;
            loop {
                match poll_fn(|cx| driver.poll_reactor(cx, &fd)).await {
                    Ok(()) => pause = RETRY_MIN,
                    Err(err) => {
                        tracing::error!(error = %err, retry_in = ?pause, "io_uring reactor round failed");
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(RETRY_MAX);
                    }
                }
            }
        });
        Ok(())
    }

    /// Whether entries were pushed that the kernel has not been given yet.
    pub fn has_unsubmitted(&self) -> bool {
        self.dirty.get()
    }

    /// Gives the kernel every entry pushed so far, now rather than at the reactor's next round.
    ///
    /// An entry names its socket by fd number and the kernel takes its reference to the file
    /// only at submission: an fd closed while an entry for it still waits in the queue would
    /// have that entry run on whatever file next takes the number (another connection's
    /// socket). Whoever closes an fd with operations perhaps not yet submitted calls this first.
    pub fn submit_now(&self) {
        if self.dirty.get() {
            self.submit_at(Instant::now());
        }
    }

    /// [`Self::submit_now`] at `now`, a clock read the caller already made.
    fn submit_at(&self, now: Instant) {
        if !self.dirty.replace(false) {
            return;
        }
        let submitted = match self.ring.try_borrow() {
            Ok(ring) => self.enter(&ring, now).map(drop),
            Err(_) => Err(io::Error::other("ring busy")),
        };
        if let Err(err) = submitted {
            tracing::error!(error = %err, "io_uring submit before a close failed");
            // The reactor's round tries again.
            self.dirty.set(true);
            self.wake_reactor();
        }
    }

    /// Gives the kernel the entries pushed so far if the worker is lightly loaded or the ring
    /// was last entered more than `LONE_AFTER` ago. Returns whether it did.
    fn submit_lone(&self) -> bool {
        let now = Instant::now();
        if self.load.borrow().light(now)
            || now.saturating_duration_since(self.entered.get()) >= self.lone_after.get()
        {
            self.submit_at(now);
            // A send to a socket with room completes within the system call: collected now, its
            // owner's flush is ready without another round (and the ring's fd, empty again,
            // raises no event for the reactor).
            self.drain();
            return true;
        }
        false
    }

    /// Whether the worker is lightly loaded now: a send would be submitted on its own at once
    /// (see [`Self::submit_lone`]), so a socket may as well send with a system call of its own.
    pub fn light(&self) -> bool {
        let load = self.load.borrow();
        // A busy worker asks at every send: no clock read for it.
        !load.heavy && load.light(Instant::now())
    }

    /// The worker's runtime is about to park its thread (tokio's `on_thread_park`).
    pub fn parking(&self) {
        self.load.borrow_mut().parking(Instant::now());
    }

    /// The worker's runtime woke its thread (tokio's `on_thread_unpark`).
    ///
    /// Completions the kernel posted while the thread slept (their task work runs as the wait
    /// returns, often with EINTR) are collected here, so that their tasks run in this round
    /// rather than after another wait that would only report the ring's fd to the reactor.
    pub fn unparked(&self) {
        self.load.borrow_mut().unparked(Instant::now());
        self.collect_posted();
    }

    /// Collects the completions already posted, if any. A system call runs the kernel's
    /// pending task work as it returns, which posts the completions of receives whose data
    /// arrived meanwhile: collected now, their tasks run in this round instead of after the
    /// ring's fd is reported by another wait.
    pub fn collect_posted(&self) {
        let posted = self
            .ring
            .try_borrow_mut()
            .is_ok_and(|mut ring| !ring.completion().is_empty());
        if posted {
            self.drain();
        }
    }

    /// Sets how long after the last entry a send is submitted at once, and whether the worker
    /// counts as busy (tests).
    #[cfg(test)]
    pub(super) fn set_lone_after(&self, after: Duration, heavy: bool) {
        self.lone_after.set(after);
        let mut load = self.load.borrow_mut();
        load.heavy = heavy;
        // Woken "now" for as long as a test runs, however slowly.
        load.unparked = Instant::now() + Duration::from_secs(3600);
    }

    fn enter(&self, ring: &IoUring, now: Instant) -> io::Result<usize> {
        self.entered.set(now);
        #[cfg(test)]
        if let Some(left) = self.refuse_enters.get().checked_sub(1) {
            self.refuse_enters.set(left);
            return Err(io::Error::from_raw_os_error(libc::EBUSY));
        }
        ring.submit()
    }

    /// Operations in flight (including orphaned ones awaiting their completion).
    pub fn in_flight(&self) -> usize {
        self.slots.borrow().in_flight
    }

    /// One round of the reactor: submits what was pushed and collects completions. An error
    /// (the kernel refusing `io_uring_enter`, as with EBUSY while completions overflow) leaves
    /// the entries queued for the next round, after the completions were collected.
    fn poll_reactor(&self, cx: &mut Context<'_>, fd: &AsyncFd<RingFd>) -> Poll<io::Result<()>> {
        {
            let mut reactor = self.reactor.borrow_mut();
            if !reactor.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *reactor = Some(cx.waker().clone());
            }
        }
        let mut entered = Ok(());
        if self.dirty.replace(false)
            && let Err(err) = self.enter(&self.ring.borrow(), Instant::now())
        {
            self.dirty.set(true);
            entered = Err(err);
        }
        let mut progressed = false;
        while let Poll::Ready(guard) = fd.poll_read_ready(cx) {
            let mut guard = match guard {
                Ok(guard) => guard,
                Err(err) => {
                    entered = entered.and(Err(err));
                    break;
                }
            };
            // Clear first, then drain: a completion posted after the drain raises a new edge.
            guard.clear_ready();
            self.drain();
            progressed = true;
        }
        // Completions can also be posted while submitting; drain without waiting for an edge.
        self.drain();
        if entered.is_err() || progressed {
            Poll::Ready(entered)
        } else {
            Poll::Pending
        }
    }

    fn drain(&self) {
        {
            let mut ring = self.ring.borrow_mut();
            let mut slots = self.slots.borrow_mut();
            let mut woken = self.woken.borrow_mut();
            let mut stops = self.stops.borrow_mut();
            for cqe in ring.completion() {
                let user_data = cqe.user_data();
                if user_data == CANCEL_TAG {
                    continue;
                }
                let Some(index) = slots.live(user_data) else {
                    // A completion for a slot already reused: its owner is long gone.
                    continue;
                };
                let more = cqueue::more(cqe.flags());
                if cqueue::buffer_select(cqe.flags()).is_some() {
                    self.buffers_held.inc();
                }
                // In place: a slot is moved only when it changes kind.
                let slot = &mut slots.slots[index];
                match slot {
                    Slot::Waiting { waker, buf } => {
                        woken.extend(waker.take());
                        let buf = std::mem::take(buf);
                        *slot = Slot::Done {
                            result: cqe.result(),
                            flags: cqe.flags(),
                            buf,
                        };
                    }
                    Slot::Orphaned { accepts, .. } => {
                        // A receive nobody waits for any more may still have taken a buffer.
                        self.recycle(cqe.flags());
                        if *accepts && cqe.result() >= 0 {
                            // SAFETY: a non-negative accept result is a new fd nobody owns.
                            drop(unsafe { OwnedFd::from_raw_fd(cqe.result()) });
                        }
                        if !more {
                            slots.release(index);
                        }
                    }
                    Slot::Multi {
                        queue,
                        waker,
                        armed,
                        kind,
                        stopping,
                    } => {
                        queue.push_back((cqe.result(), cqe.flags()));
                        let stop =
                            *kind == Multi::Recv && more && !*stopping && queue.len() >= RECV_HELD;
                        if stop {
                            stops.push(user_data);
                        }
                        *armed = more;
                        *stopping |= stop;
                        woken.extend(waker.take());
                    }
                    Slot::Free | Slot::Done { .. } => {}
                }
            }
        }
        let mut stops = std::mem::take(&mut *self.stops.borrow_mut());
        if !stops.is_empty() {
            for &id in &stops {
                self.push(&opcode::AsyncCancel::new(id).build().user_data(CANCEL_TAG));
            }
            // At once: until the cancel lands the kernel keeps filling buffers for the socket.
            self.submit_now();
            stops.clear();
        }
        *self.stops.borrow_mut() = stops;
        let wakers = std::mem::take(&mut *self.woken.borrow_mut());
        for waker in &wakers {
            waker.wake_by_ref();
        }
        let mut reuse = wakers;
        reuse.clear();
        *self.woken.borrow_mut() = reuse;
    }

    /// Pushes an entry; the reactor's next round submits it.
    fn push(&self, entry: &squeue::Entry) {
        if self.push_quiet(entry) {
            self.wake_reactor();
        }
    }

    fn wake_reactor(&self) {
        if let Some(reactor) = self.reactor.borrow().as_ref() {
            reactor.wake_by_ref();
        }
    }

    /// Pushes an entry without waking the reactor. Returns whether the ring held no unsubmitted
    /// entry before: the caller then sees that this one gets submitted.
    fn push_quiet(&self, entry: &squeue::Entry) -> bool {
        let mut ring = self.ring.borrow_mut();
        loop {
            // SAFETY: every pointer in `entry` points into memory owned by the slot table (or is
            // null), which keeps it alive and in place until the operation's completion.
            let pushed = unsafe { ring.submission().push(entry) };
            if pushed.is_ok() {
                break;
            }
            // The queue is full: hand it to the kernel now and try again.
            if let Err(err) = self.enter(&ring, Instant::now()) {
                drop(ring);
                self.refuse(entry.get_user_data(), &err);
                return false;
            }
        }
        !self.dirty.replace(true)
    }

    /// An entry the kernel could not take (the queue full and `io_uring_enter` failing): its
    /// operation completes with the error, so that its owner sees it rather than wait for a
    /// completion that never comes. A refused cancel leaves its operation to complete by itself.
    fn refuse(&self, id: OpId, err: &io::Error) {
        tracing::error!(error = %err, "io_uring submit failed");
        let result = -err.raw_os_error().unwrap_or(libc::EIO);
        let mut slots = self.slots.borrow_mut();
        let Some(index) = slots.live(id) else {
            return;
        };
        let slot = &mut slots.slots[index];
        let waker = match slot {
            Slot::Waiting { waker, buf } => {
                let waker = waker.take();
                let buf = std::mem::take(buf);
                *slot = Slot::Done {
                    result,
                    flags: 0,
                    buf,
                };
                waker
            }
            Slot::Multi {
                queue,
                waker,
                armed,
                ..
            } => {
                queue.push_back((result, 0));
                *armed = false;
                waker.take()
            }
            Slot::Orphaned { .. } | Slot::Free | Slot::Done { .. } => None,
        };
        drop(slots);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Starts a single-shot operation. `build` receives the slot's buffer (whose heap memory
    /// stays put until completion) and returns the entry that uses it.
    pub fn submit(&self, buf: Buf, build: impl FnOnce(&mut Buf) -> squeue::Entry) -> OpId {
        let (id, entry) = self.waiting(buf, build);
        self.push(&entry);
        id
    }

    /// Starts a send like [`Self::submit`], given to the kernel at once when the worker is
    /// lightly loaded or the ring quiet (`submit_lone`), else with the reactor's next round.
    /// The reactor is woken only in the second case: a send submitted at once left it nothing
    /// to do (two task polls per proxied request at low load).
    pub fn submit_send(&self, buf: Buf, build: impl FnOnce(&mut Buf) -> squeue::Entry) -> OpId {
        let (id, entry) = self.waiting(buf, build);
        let first = self.push_quiet(&entry);
        if !self.submit_lone() && first {
            self.wake_reactor();
        }
        id
    }

    /// A waiting slot for an operation and its entry.
    fn waiting(
        &self,
        buf: Buf,
        build: impl FnOnce(&mut Buf) -> squeue::Entry,
    ) -> (OpId, squeue::Entry) {
        let mut slots = self.slots.borrow_mut();
        let id = slots.insert(Slot::Waiting { waker: None, buf });
        let (index, _) = split(id);
        let Slot::Waiting { buf, .. } = &mut slots.slots[index] else {
            unreachable!("just inserted a waiting slot")
        };
        (id, build(buf).user_data(id))
    }

    /// Starts a multishot operation whose results queue up in its slot.
    pub fn submit_multi(&self, entry: squeue::Entry, kind: Multi) -> OpId {
        let id = self.slots.borrow_mut().insert(Slot::Multi {
            queue: VecDeque::new(),
            waker: None,
            armed: true,
            kind,
            stopping: false,
        });
        self.push(&entry.user_data(id));
        id
    }

    /// The result of a single-shot operation and its buffer back, once completed.
    pub fn poll_op(&self, id: OpId, cx: &mut Context<'_>) -> Poll<(i32, Buf)> {
        self.poll_op_flags(id, cx).map(|(result, flags, buf)| {
            // A caller that ignores the flags did not ask for a provided buffer; hand back
            // any all the same rather than leak it.
            self.recycle(flags);
            (result, buf)
        })
    }

    /// Like [`Self::poll_op`], with the completion's flags: a buffer-select receive's provided
    /// buffer ([`io_uring::cqueue::buffer_select`]) belongs to the caller, who reads it with
    /// [`Self::take_provided`].
    pub fn poll_op_flags(&self, id: OpId, cx: &mut Context<'_>) -> Poll<(i32, u32, Buf)> {
        let mut slots = self.slots.borrow_mut();
        let Some(index) = slots.live(id) else {
            return Poll::Ready((-libc::ECANCELED, 0, Buf::None));
        };
        match &mut slots.slots[index] {
            Slot::Waiting { waker, .. } => {
                if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
            Slot::Done { .. } => {
                let Slot::Done { result, flags, buf } = std::mem::take(&mut slots.slots[index])
                else {
                    unreachable!("matched Done above")
                };
                slots.release(index);
                Poll::Ready((result, flags, buf))
            }
            _ => Poll::Ready((-libc::ECANCELED, 0, Buf::None)),
        }
    }

    /// The next result of a multishot operation and its flags (a receive's provided buffer
    /// belongs to the caller, who reads it with [`Self::take_provided`]); `None` when it
    /// stopped (re-arm it).
    pub fn poll_multi(&self, id: OpId, cx: &mut Context<'_>) -> Poll<Option<(i32, u32)>> {
        let mut slots = self.slots.borrow_mut();
        let Some(index) = slots.live(id) else {
            return Poll::Ready(None);
        };
        let Slot::Multi {
            queue,
            waker,
            armed,
            ..
        } = &mut slots.slots[index]
        else {
            return Poll::Ready(None);
        };
        if let Some(result) = queue.pop_front() {
            return Poll::Ready(Some(result));
        }
        if !*armed {
            slots.release(index);
            return Poll::Ready(None);
        }
        *waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Provided buffers taken by completions and not given back yet (tests).
    #[cfg(test)]
    pub(super) fn buffers_held(&self) -> i64 {
        self.buffers_held.get()
    }

    /// A multishot operation's results waiting to be collected, and whether the kernel may post
    /// more (tests).
    #[cfg(test)]
    pub(super) fn multi_state(&self, id: OpId) -> Option<(usize, bool)> {
        let slots = self.slots.borrow();
        match &slots.slots[slots.live(id)?] {
            Slot::Multi { queue, armed, .. } => Some((queue.len(), *armed)),
            _ => None,
        }
    }

    /// Asks the kernel to stop a multishot operation but keeps its slot: results that arrive
    /// before the cancel takes effect still reach [`Self::poll_multi`], which returns `None`
    /// once the operation has ended.
    pub fn stop_multi(&self, id: OpId) {
        let armed = {
            let mut slots = self.slots.borrow_mut();
            match slots.live(id).map(|index| &mut slots.slots[index]) {
                Some(Slot::Multi {
                    armed: true,
                    stopping,
                    ..
                }) => !std::mem::replace(stopping, true),
                _ => false,
            }
        };
        if armed {
            self.push(&opcode::AsyncCancel::new(id).build().user_data(CANCEL_TAG));
        }
    }

    /// Gives up on an operation: a completed one is freed now; one in flight is cancelled and
    /// its memory freed when its completion arrives.
    pub fn cancel(&self, id: OpId) {
        let mut slots = self.slots.borrow_mut();
        let Some(index) = slots.live(id) else {
            return;
        };
        match std::mem::take(&mut slots.slots[index]) {
            Slot::Done { flags, .. } => {
                slots.release(index);
                self.recycle(flags);
            }
            Slot::Free => {}
            Slot::Waiting { buf, .. } => {
                slots.slots[index] = Slot::Orphaned {
                    _buf: buf,
                    accepts: false,
                };
                drop(slots);
                self.push(&opcode::AsyncCancel::new(id).build().user_data(CANCEL_TAG));
            }
            Slot::Multi {
                armed, queue, kind, ..
            } => {
                for (result, flags) in queue {
                    match kind {
                        // Accepted connections nobody will take: closed.
                        Multi::Accept if result >= 0 => {
                            // SAFETY: a non-negative accept result is a new fd nobody owns.
                            drop(unsafe { OwnedFd::from_raw_fd(result) });
                        }
                        Multi::Accept => {}
                        // Data nobody will read: its buffer goes back.
                        Multi::Recv => self.recycle(flags),
                    }
                }
                if armed {
                    slots.slots[index] = Slot::Orphaned {
                        _buf: Buf::None,
                        accepts: kind == Multi::Accept,
                    };
                    drop(slots);
                    self.push(&opcode::AsyncCancel::new(id).build().user_data(CANCEL_TAG));
                } else {
                    slots.release(index);
                }
            }
            orphaned @ Slot::Orphaned { .. } => slots.slots[index] = orphaned,
        }
    }
}

// === provided buffers ===

/// The group of small provided buffers, which most receives use: request heads, small
/// responses. Buffer ids `0..SMALL_COUNT`.
const SMALL_GROUP: u16 = 0;
/// Small provided buffers per worker (a power of two). Sockets copy out of a buffer and give it
/// back as soon as its receive completes, so only receives completing in the same scheduler
/// round hold one; when they run out, a receive fails with ENOBUFS and the socket retries with a
/// buffer of its own. 64 were too few for h2c (`h2load -c32 -m10`: 320 upstream responses can
/// complete in one round; 0.39 receives per request fell back).
const SMALL_COUNT: u16 = 256;
/// The size of a small provided buffer. A socket whose receive fills one switches to the large
/// group (see [`Driver::buf_group`]).
pub(super) const SMALL_PROVIDED: usize = 4 * 1024;
/// The group of large provided buffers, for sockets that stream (their last receive filled a
/// small buffer). Buffer ids `SMALL_COUNT..SMALL_COUNT + LARGE_COUNT`.
const LARGE_GROUP: u16 = 1;
/// Large provided buffers per worker (a power of two).
const LARGE_COUNT: u16 = 32;
/// 64 KiB moved 1 MiB bodies 44 % faster than 16 KiB (fewer receive round trips). Small and
/// large together take 3 MiB per worker, resident only once the kernel has written to them.
const LARGE_PROVIDED: usize = 64 * 1024;

impl Driver {
    /// Whether sockets receive with multishot receives (Linux 6.0), over the provided buffers.
    pub fn recv_multi(&self) -> bool {
        self.recv_multi.get()
    }

    /// The kernel refused a multishot receive: sockets use single-shot ones from now on.
    pub fn no_recv_multi(&self) {
        if self.recv_multi.replace(false) {
            tracing::info!("no multishot receives; single-shot ones");
        }
    }

    /// The buffer group for a buffer-select receive, when the kernel has provided-buffer rings:
    /// the large one if `large` (and it exists), else the small one.
    pub fn buf_group(&self, large: bool) -> Option<u16> {
        let ring = if large {
            self.bufs.last()
        } else {
            self.bufs.first()
        };
        ring.map(|ring| ring.group)
    }

    fn ring_of(&self, bid: u16) -> Option<&BufRing> {
        self.bufs
            .iter()
            .find(|ring| (ring.base..ring.base + ring.count).contains(&bid))
    }

    /// Calls `f` with the first `len` bytes of the provided buffer that a completion with
    /// `flags` names, then gives the buffer back to the kernel. Without a buffer in `flags`,
    /// `f` gets an empty slice.
    pub fn take_provided<R>(&self, flags: u32, len: usize, f: impl FnOnce(&[u8]) -> R) -> R {
        let Some((bufs, bid)) =
            cqueue::buffer_select(flags).and_then(|bid| Some((self.ring_of(bid)?, bid)))
        else {
            return f(&[]);
        };
        let result = f(bufs.data(bid, len));
        bufs.provide(bid);
        self.buffers_held.dec();
        result
    }

    /// Gives back to the kernel the provided buffer a completion's `flags` name, if any.
    fn recycle(&self, flags: u32) {
        if let Some((bufs, bid)) =
            cqueue::buffer_select(flags).and_then(|bid| Some((self.ring_of(bid)?, bid)))
        {
            bufs.provide(bid);
            self.buffers_held.dec();
        }
    }
}

/// A provided-buffer ring (`IORING_REGISTER_PBUF_RING`): `count` buffers of `size` bytes that
/// the kernel picks from when data arrives for a buffer-select receive, so that a socket
/// waiting for data holds no buffer of its own. Its buffer ids are `base..base + count`, apart
/// from every other ring's, so that a completion's id alone names the ring.
struct BufRing {
    group: u16,
    base: u16,
    /// `count` ring entries, page-aligned; the first entry's reserved field is the tail.
    entries: NonNull<BufRingEntry>,
    count: u16,
    tail: Cell<u16>,
    /// `count * size` bytes; the kernel writes into them, we read what it wrote.
    data: NonNull<u8>,
    size: usize,
}

impl BufRing {
    fn entries_layout(count: u16) -> Option<Layout> {
        Layout::from_size_align(usize::from(count) * size_of::<BufRingEntry>(), 4096).ok()
    }

    fn data_layout(count: u16, size: usize) -> Option<Layout> {
        Layout::from_size_align(usize::from(count).checked_mul(size)?, 4096).ok()
    }

    /// Allocates the ring and its buffers and provides every buffer; `None` if out of memory.
    fn new(group: u16, count: u16, size: usize, base: u16) -> Option<Self> {
        debug_assert!(count.is_power_of_two());
        let entries_layout = Self::entries_layout(count)?;
        let data_layout = Self::data_layout(count, size)?;
        // SAFETY: both layouts have a non-zero size. The data is never read before the kernel
        // wrote it (the buffers' memory stays untouched, and so not resident, until used).
        let (entries, data) = unsafe { (alloc_zeroed(entries_layout), alloc(data_layout)) };
        let (Some(entries), Some(data)) = (NonNull::new(entries), NonNull::new(data)) else {
            // SAFETY: each pointer, if not null, came from `alloc*` with this layout.
            unsafe {
                if !entries.is_null() {
                    dealloc(entries, entries_layout);
                }
                if !data.is_null() {
                    dealloc(data, data_layout);
                }
            }
            return None;
        };
        let ring = Self {
            group,
            base,
            entries: entries.cast(),
            count,
            tail: Cell::new(0),
            data,
            size,
        };
        for bid in base..base + count {
            ring.provide(bid);
        }
        Some(ring)
    }

    /// The first `len` bytes of buffer `bid`.
    fn data(&self, bid: u16, len: usize) -> &[u8] {
        let bid = usize::from(bid.wrapping_sub(self.base) % self.count);
        // SAFETY: the index is below `count`, so the range lies within the data allocation; the kernel
        // handed this buffer over with the completion that named it, wrote `len` bytes to it,
        // and does not touch it again until `provide` gives it back.
        unsafe {
            std::slice::from_raw_parts(self.data.as_ptr().add(bid * self.size), len.min(self.size))
        }
    }

    /// Puts buffer `bid` at the ring's tail, for the kernel to fill again.
    fn provide(&self, bid: u16) {
        let index_of_buf = bid.wrapping_sub(self.base) % self.count;
        let bid = self.base + index_of_buf;
        let tail = self.tail.get();
        let index = usize::from(tail & (self.count - 1));
        // SAFETY: `index < count`, within the entries allocation. The kernel reads only entries
        // between its head and our published tail, and this one is past the tail; the setters
        // leave the first entry's reserved field (the tail) alone.
        let entry = unsafe { &mut *self.entries.as_ptr().add(index) };
        // SAFETY: `index_of_buf < count`, within the data allocation.
        entry.set_addr(unsafe {
            self.data
                .as_ptr()
                .add(usize::from(index_of_buf) * self.size)
        } as u64);
        entry.set_len(u32::try_from(self.size).unwrap_or(u32::MAX));
        entry.set_bid(bid);
        let tail = tail.wrapping_add(1);
        self.tail.set(tail);
        // SAFETY: the tail is the first entry's reserved `u16`, suitably aligned; the kernel
        // reads it with acquire semantics, so the release store publishes the entry above.
        unsafe {
            let tail_ptr = BufRingEntry::tail(self.entries.as_ptr()).cast_mut();
            (*tail_ptr.cast::<AtomicU16>()).store(tail, Ordering::Release);
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        if let (Some(entries), Some(data)) = (
            Self::entries_layout(self.count),
            Self::data_layout(self.count, self.size),
        ) {
            // SAFETY: allocated in `new` with these layouts; the ring was unregistered and
            // closed before this drop (see `Driver`'s field order and `Drop`).
            unsafe {
                dealloc(self.entries.as_ptr().cast(), entries);
                dealloc(self.data.as_ptr(), data);
            }
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The kernel may still write into buffers of operations in flight: cancel them all and
        // wait (bounded) for their completions before the slot table is freed.
        let in_flight: Vec<OpId> = {
            let slots = self.slots.borrow();
            slots
                .slots
                .iter()
                .zip(&slots.generations)
                .enumerate()
                .filter(|(_, (slot, _))| !matches!(slot, Slot::Free | Slot::Done { .. }))
                .map(|(index, (_, generation))| (u64::from(*generation) << 32) | index as u64)
                .collect()
        };
        for id in in_flight {
            let entry = opcode::AsyncCancel::new(id).build().user_data(CANCEL_TAG);
            let mut ring = self.ring.borrow_mut();
            // SAFETY: a cancel entry carries no pointer.
            if unsafe { ring.submission().push(&entry) }.is_err() {
                let _ = ring.submit();
                // SAFETY: as above.
                let _ = unsafe { ring.submission().push(&entry) };
            }
        }
        // Every cancel posts a completion; an operation the kernel never took posts none, so
        // each wait is bounded, and so is the whole.
        let deadline = Instant::now() + DROP_WAIT;
        let tick = types::Timespec::new().nsec(10_000_000);
        let mut waiting = 0;
        for _ in 0..1_000 {
            waiting = self
                .slots
                .borrow()
                .slots
                .iter()
                .filter(|slot| {
                    matches!(
                        slot,
                        Slot::Waiting { .. }
                            | Slot::Orphaned { .. }
                            | Slot::Multi { armed: true, .. }
                    )
                })
                .count();
            if waiting == 0 || Instant::now() >= deadline {
                break;
            }
            let args = types::SubmitArgs::new().timespec(&tick);
            match self.ring.borrow().submitter().submit_with_args(1, &args) {
                Err(err) if err.raw_os_error() != Some(libc::ETIME) => break,
                _ => {}
            }
            let mut ring = self.ring.borrow_mut();
            let mut slots = self.slots.borrow_mut();
            for cqe in ring.completion() {
                if cqe.user_data() == CANCEL_TAG {
                    continue;
                }
                let Some(index) = slots.live(cqe.user_data()) else {
                    continue;
                };
                if !cqueue::more(cqe.flags()) {
                    slots.slots[index] = Slot::Free;
                }
            }
        }
        if waiting > 0 {
            // The kernel may still write into their buffers (and into the provided ones): leak
            // them rather than free memory it could write to.
            tracing::error!(
                waiting,
                "io_uring operations outlived their driver; leaking their buffers"
            );
            std::mem::forget(std::mem::take(&mut self.slots.borrow_mut().slots));
            std::mem::forget(std::mem::take(&mut self.bufs));
            return;
        }
        for bufs in &self.bufs {
            let _ = self
                .ring
                .borrow()
                .submitter()
                .unregister_buf_ring(bufs.group);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `cycles` wake-ups of `busy` each, `idle` apart, from `start`; returns the end.
    fn cycles(load: &mut Load, start: Instant, busy: Duration, idle: Duration, n: u32) -> Instant {
        let mut now = start;
        for _ in 0..n {
            load.unparked(now);
            now += busy;
            load.parking(now);
            now += idle;
        }
        now
    }

    #[test]
    fn a_worker_idle_most_of_the_time_is_light_and_a_busy_one_is_not() {
        let start = Instant::now();
        let mut load = Load::new(start);
        let us = Duration::from_micros;
        // 3,000 requests a second, ~20 µs each: light.
        let now = cycles(&mut load, start, us(20), us(313), 10);
        assert!(load.light(now), "{load:?}");
        // Saturated: 1 µs parks between 100 µs rounds. Light until a window has been seen.
        let now = cycles(&mut load, now, us(100), us(1), 12);
        assert!(!load.light(now), "{load:?}");
        // Idle again: light once a window of mostly idle time has passed.
        let now = cycles(&mut load, now, us(5), us(400), 1);
        assert!(
            !load.light(now),
            "half a window idle is not enough: {load:?}"
        );
        let now = cycles(&mut load, now, us(5), us(400), 3);
        assert!(load.light(now), "{load:?}");
    }

    #[test]
    fn a_worker_running_for_a_whole_window_without_parking_is_not_light() {
        let start = Instant::now();
        let mut load = Load::new(start);
        let now = cycles(
            &mut load,
            start,
            Duration::from_micros(10),
            Duration::from_millis(2),
            1,
        );
        load.unparked(now);
        assert!(load.light(now + Duration::from_micros(900)));
        assert!(!load.light(now + LOAD_WINDOW));
    }

    /// What the kernel completed while the thread was parked is collected when it unparks:
    /// the owner's poll is ready without the reactor's round.
    #[test]
    fn completions_posted_while_parked_are_collected_at_unpark() {
        let driver = Driver::build(8, Arc::new(Gauge::default()), false).expect("ring");
        let id = driver.submit(Buf::None, |_| opcode::Nop::new().build());
        // Submitted without collecting (as a busy worker's reactor round would); the no-op
        // completes within the system call.
        driver.submit_now();
        let mut cx = Context::from_waker(Waker::noop());
        assert!(
            driver.poll_op(id, &mut cx).is_pending(),
            "not collected yet"
        );
        driver.parking();
        driver.unparked();
        let done = driver.poll_op(id, &mut cx);
        assert!(matches!(done, Poll::Ready((0, Buf::None))), "{done:?}");
        assert_eq!(driver.in_flight(), 0);
    }

    /// An entry pushed onto a full queue while the kernel refuses `io_uring_enter` completes
    /// with the error instead of leaving its owner waiting; the entries queued before it are
    /// submitted once the kernel takes them again.
    #[test]
    fn an_entry_the_kernel_refuses_completes_with_the_error() {
        let driver = Driver::build(8, Arc::new(Gauge::default()), false).expect("ring");
        let nop = |_: &mut Buf| opcode::Nop::new().build();
        // No reactor runs: pushed entries wait in the submission queue, which they fill.
        let queued: Vec<OpId> = (0..8).map(|_| driver.submit(Buf::None, nop)).collect();
        driver.refuse_enters.set(u32::MAX);
        let refused = driver.submit(Buf::None, nop);
        let multi = driver.submit_multi(opcode::Nop::new().build(), Multi::Accept);
        let mut cx = Context::from_waker(Waker::noop());
        let done = driver.poll_op(refused, &mut cx);
        assert!(
            matches!(done, Poll::Ready((result, Buf::None)) if result == -libc::EBUSY),
            "{done:?}"
        );
        let first = driver.poll_multi(multi, &mut cx);
        assert_eq!(first, Poll::Ready(Some((-libc::EBUSY, 0))));
        assert_eq!(driver.poll_multi(multi, &mut cx), Poll::Ready(None));
        driver.refuse_enters.set(0);
        driver.submit_now();
        driver.drain();
        for id in queued {
            let done = driver.poll_op(id, &mut cx);
            assert!(matches!(done, Poll::Ready((0, Buf::None))), "{done:?}");
        }
        assert_eq!(driver.in_flight(), 0);
    }

    /// A round whose `io_uring_enter` fails does not end the reactor: the entries stay queued
    /// and go out at a later round, and their operations complete.
    #[test]
    fn the_reactor_retries_a_round_the_kernel_refused() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        tokio::task::LocalSet::new().block_on(&runtime, async {
            let driver = Driver::build(8, Arc::new(Gauge::default()), false).expect("ring");
            driver.start().expect("reactor");
            driver.refuse_enters.set(3);
            let id = driver.submit(Buf::None, |_| opcode::Nop::new().build());
            let done =
                tokio::time::timeout(Duration::from_secs(5), poll_fn(|cx| driver.poll_op(id, cx)))
                    .await;
            assert!(
                matches!(done, Ok((0, Buf::None))),
                "the no-op never completed: {done:?}"
            );
            assert_eq!(driver.refuse_enters.get(), 0, "every refusal was met");
        });
    }
}
