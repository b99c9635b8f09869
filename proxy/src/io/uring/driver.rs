//! The per-worker io_uring driver.
//!
//! One ring per worker, living inside the worker's tokio current-thread runtime: the ring's fd
//! is registered with tokio's reactor, and one reactor task ([`Driver::start`]) drains
//! completions and wakes the tasks waiting on them. Operations push their submission entry and
//! mark the ring dirty; the reactor task submits everything pushed since it last ran in one
//! `io_uring_enter`, so all submissions of a scheduler round share one system call.
//!
//! Buffers, socket addresses and the like are owned by the driver's slot table for as long as
//! the kernel may touch them: an operation whose owner is dropped becomes *orphaned*, is
//! cancelled (`AsyncCancel`), and its memory is freed only when its completion arrives. On
//! drop the driver cancels everything in flight and waits for the completions before freeing.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use io_uring::{IoUring, cqueue, opcode, squeue};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::metrics::Gauge;

/// The user data of cancel requests, whose completions are ignored.
const CANCEL_TAG: u64 = u64::MAX;

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
    /// Completed; the owner has not collected it yet.
    Done { result: i32, buf: Buf },
    /// The owner is gone; freed when the (last) completion arrives. `accepts` marks an
    /// abandoned accept, whose late results are new fds that must be closed.
    Orphaned { buf: Buf, accepts: bool },
    /// A multishot operation: results queue up until collected.
    Multi {
        queue: VecDeque<i32>,
        waker: Option<Waker>,
        armed: bool,
    },
}

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
    reactor: RefCell<Option<Waker>>,
    woken: RefCell<Vec<Waker>>,
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
    pub fn new(entries: u32, gauge: Arc<Gauge>) -> io::Result<Rc<Self>> {
        let ring = IoUring::builder()
            .setup_cqsize(entries * 4)
            // Completions are posted without interrupting the worker with an IPI; it runs the
            // kernel's task work at its next system call, which every scheduler round makes.
            .setup_coop_taskrun()
            .setup_single_issuer()
            .build(entries)?;
        Ok(Rc::new(Self {
            ring: RefCell::new(ring),
            slots: RefCell::new(Slots {
                gauge,
                ..Slots::default()
            }),
            dirty: Cell::new(false),
            reactor: RefCell::new(None),
            woken: RefCell::new(Vec::new()),
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
            loop {
                let result = poll_fn(|cx| driver.poll_reactor(cx, &fd)).await;
                if let Err(err) = result {
                    tracing::error!(error = %err, "io_uring reactor failed");
                    return;
                }
            }
        });
        Ok(())
    }

    /// Operations in flight (including orphaned ones awaiting their completion).
    pub fn in_flight(&self) -> usize {
        self.slots.borrow().in_flight
    }

    fn poll_reactor(&self, cx: &mut Context<'_>, fd: &AsyncFd<RingFd>) -> Poll<io::Result<()>> {
        *self.reactor.borrow_mut() = Some(cx.waker().clone());
        if self.dirty.replace(false) {
            self.ring.borrow().submit()?;
        }
        let mut progressed = false;
        while let Poll::Ready(guard) = fd.poll_read_ready(cx) {
            let mut guard = guard?;
            // Clear first, then drain: a completion posted after the drain raises a new edge.
            guard.clear_ready();
            self.drain();
            progressed = true;
        }
        // Completions can also be posted while submitting; drain without waiting for an edge.
        self.drain();
        if progressed {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn drain(&self) {
        {
            let mut ring = self.ring.borrow_mut();
            let mut slots = self.slots.borrow_mut();
            let mut woken = self.woken.borrow_mut();
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
                match std::mem::take(&mut slots.slots[index]) {
                    Slot::Waiting { waker, buf } => {
                        slots.slots[index] = Slot::Done {
                            result: cqe.result(),
                            buf,
                        };
                        woken.extend(waker);
                    }
                    Slot::Orphaned { buf, accepts } => {
                        if accepts && cqe.result() >= 0 {
                            // SAFETY: a non-negative accept result is a new fd nobody owns.
                            drop(unsafe { OwnedFd::from_raw_fd(cqe.result()) });
                        }
                        if more {
                            slots.slots[index] = Slot::Orphaned { buf, accepts };
                        } else {
                            slots.release(index);
                        }
                    }
                    Slot::Multi {
                        mut queue, waker, ..
                    } => {
                        queue.push_back(cqe.result());
                        slots.slots[index] = Slot::Multi {
                            queue,
                            waker: None,
                            armed: more,
                        };
                        woken.extend(waker);
                    }
                    other => slots.slots[index] = other,
                }
            }
        }
        let wakers = std::mem::take(&mut *self.woken.borrow_mut());
        for waker in &wakers {
            waker.wake_by_ref();
        }
        let mut reuse = wakers;
        reuse.clear();
        *self.woken.borrow_mut() = reuse;
    }

    fn push(&self, entry: &squeue::Entry) {
        let mut ring = self.ring.borrow_mut();
        loop {
            // SAFETY: every pointer in `entry` points into memory owned by the slot table (or is
            // null), which keeps it alive and in place until the operation's completion.
            let pushed = unsafe { ring.submission().push(entry) };
            if pushed.is_ok() {
                break;
            }
            // The queue is full: hand it to the kernel now and try again.
            if let Err(err) = ring.submit() {
                tracing::error!(error = %err, "io_uring submit failed");
                return;
            }
        }
        drop(ring);
        if !self.dirty.replace(true)
            && let Some(reactor) = self.reactor.borrow().as_ref()
        {
            reactor.wake_by_ref();
        }
    }

    /// Starts a single-shot operation. `build` receives the slot's buffer (whose heap memory
    /// stays put until completion) and returns the entry that uses it.
    pub fn submit(&self, buf: Buf, build: impl FnOnce(&mut Buf) -> squeue::Entry) -> OpId {
        let (id, entry) = {
            let mut slots = self.slots.borrow_mut();
            let id = slots.insert(Slot::Waiting { waker: None, buf });
            let (index, _) = split(id);
            let Slot::Waiting { buf, .. } = &mut slots.slots[index] else {
                unreachable!("just inserted a waiting slot")
            };
            (id, build(buf).user_data(id))
        };
        self.push(&entry);
        id
    }

    /// Starts a multishot operation whose results queue up in its slot.
    pub fn submit_multi(&self, entry: squeue::Entry) -> OpId {
        let id = self.slots.borrow_mut().insert(Slot::Multi {
            queue: VecDeque::new(),
            waker: None,
            armed: true,
        });
        self.push(&entry.user_data(id));
        id
    }

    /// The result of a single-shot operation and its buffer back, once completed.
    pub fn poll_op(&self, id: OpId, cx: &mut Context<'_>) -> Poll<(i32, Buf)> {
        let mut slots = self.slots.borrow_mut();
        let Some(index) = slots.live(id) else {
            return Poll::Ready((-libc::ECANCELED, Buf::None));
        };
        match &mut slots.slots[index] {
            Slot::Waiting { waker, .. } => {
                if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
            Slot::Done { .. } => {
                let Slot::Done { result, buf } = std::mem::take(&mut slots.slots[index]) else {
                    unreachable!("matched Done above")
                };
                slots.release(index);
                Poll::Ready((result, buf))
            }
            _ => Poll::Ready((-libc::ECANCELED, Buf::None)),
        }
    }

    /// The next result of a multishot operation; `None` when it stopped (re-arm it).
    pub fn poll_multi(&self, id: OpId, cx: &mut Context<'_>) -> Poll<Option<i32>> {
        let mut slots = self.slots.borrow_mut();
        let Some(index) = slots.live(id) else {
            return Poll::Ready(None);
        };
        let Slot::Multi {
            queue,
            waker,
            armed,
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

    /// Asks the kernel to stop a multishot operation but keeps its slot: results that arrive
    /// before the cancel takes effect still reach [`Self::poll_multi`], which returns `None`
    /// once the operation has ended.
    pub fn stop_multi(&self, id: OpId) {
        let armed = {
            let slots = self.slots.borrow();
            slots
                .live(id)
                .is_some_and(|index| matches!(slots.slots[index], Slot::Multi { armed: true, .. }))
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
            Slot::Done { .. } => slots.release(index),
            Slot::Free => {}
            Slot::Waiting { buf, .. } => {
                slots.slots[index] = Slot::Orphaned {
                    buf,
                    accepts: false,
                };
                drop(slots);
                self.push(&opcode::AsyncCancel::new(id).build().user_data(CANCEL_TAG));
            }
            Slot::Multi { armed, queue, .. } => {
                // Accepted connections nobody will take: close them.
                for fd in queue.into_iter().filter(|fd| *fd >= 0) {
                    // SAFETY: a non-negative accept result is a new fd nobody owns.
                    drop(unsafe { OwnedFd::from_raw_fd(fd) });
                }
                if armed {
                    slots.slots[index] = Slot::Orphaned {
                        buf: Buf::None,
                        accepts: true,
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
        for _ in 0..1_000 {
            let waiting = self
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
            if waiting == 0 {
                break;
            }
            if self.ring.borrow().submit_and_wait(1).is_err() {
                break;
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
    }
}
