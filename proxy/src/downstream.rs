//! Serving one downstream connection: HTTP/1.1 and h2c on one port, with the listener's limits.
//!
//! HTTP/1.1 is served by [`h1`], which enforces the head limits: a request head over
//! `max_header_bytes` or with more than `max_headers` fields gets 431, a malformed head 400 and
//! a closed connection. HTTP/2 is served by [`h2`], with its stream, header-list and
//! reset-flood limits. The worker's idle sweep
//! ([`IdleSweep`]) closes an HTTP/1.1 connection whose request head did not arrive within
//! `header_read_timeout` (counted from the previous response on a kept-alive connection), and
//! gracefully any connection that moves no byte for `idle_timeout`, as is every connection of a
//! listener that drains (a reload removed it, or the process shuts down or hands over to a new
//! binary).
//!
//! Idle HTTP/1.1 connections are *parked*: once quiet for [`PARK_AFTER`], the connection's
//! future, read buffer and name cache are dropped and only the socket waits for the next
//! request, so that an idle keep-alive connection costs about 2 KiB.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use hyper::rt::{Read, ReadBuf};
use strait_config::Limits;
use tokio::sync::Notify;
use tokio::time::Instant;

pub mod h1;
pub mod h2;
mod idle;

pub use idle::IdleSweep;

use self::idle::{Check, HeadWait};
use crate::forward::Downstream;
use crate::io::{Activity, Socket};
use crate::metrics::ListenerStats;

/// How long an HTTP/1.1 connection must stay quiet (no request in flight, no byte moved, its
/// reader waiting) before it is parked: its state and buffers are dropped and only the socket
/// stays, waiting for the next request. Between 1× and 2× this in practice (it is
/// checked by the worker's [`IdleSweep`] of this period).
pub const PARK_AFTER: Duration = Duration::from_millis(250);

/// The client preface of HTTP/2 with prior knowledge (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The connection builders for a listener's limits: HTTP/1.1 and h2c on one port.
#[derive(Debug)]
pub struct Builder {
    h1: h1::HeadLimits,
    h2: h2::Limits,
    /// The bound on the wait for a request head, which a parked connection keeps.
    header_read_timeout: Duration,
}

/// The connection builders for a listener's limits.
pub fn builder(limits: &Limits) -> Builder {
    // The header read timeout is the worker's idle sweep's.
    let h1 = h1::HeadLimits {
        max_bytes: limits.max_header_bytes,
        max_fields: limits.max_headers,
    };
    let h2 = h2::Limits {
        max_streams: limits.http2_max_concurrent_streams,
        max_header_list: limits.max_header_bytes,
        max_fields: limits.max_headers,
        max_client_resets: limits.http2_max_pending_accept_reset_streams,
        max_local_resets: limits.http2_max_local_error_reset_streams,
    };
    Builder {
        h1,
        h2,
        header_read_timeout: limits.header_read_timeout,
    }
}

/// What the connections of one listener on one worker share to drain.
#[derive(Debug)]
pub struct ListenerDrain {
    /// Set when the listener stops (removed by a reload, or the process shuts down).
    pub stop: Rc<StopFlag>,
    /// Time connections get to finish once `stop` turns true; then they are closed.
    pub timeout: Duration,
    /// Counts the worker's open connections and tunnels.
    pub tracker: ConnTracker,
}

/// Serves a connection until it ends, is idle for `idle_timeout`, or its listener drains.
///
/// An HTTP/1.1 connection that stays quiet for [`PARK_AFTER`] is parked: its future, read
/// buffer and name cache are dropped and the socket waits alone for the next request. Part of
/// a head read before the park is kept, so nothing is lost.
///
/// Draining: HTTP/2 gets GOAWAY (in-flight streams finish); an HTTP/1.1 connection answers its
/// next response with `Connection: close`, or is closed once quiet for [`PARK_AFTER`] (a
/// client between two requests would otherwise race the close); whatever is still open at the
/// drain deadline is closed.
pub async fn serve(
    builder: Rc<Builder>,
    conn: Rc<Downstream>,
    socket: Socket,
    idle_timeout: Duration,
    sweep: Rc<IdleSweep>,
    _tracked: Tracked,
) {
    conn.stats.connections_active.inc();
    let _active = ActiveConnection(Arc::clone(&conn.stats));
    let activity = Activity::default();
    let mut socket = socket.with_activity(activity.clone());
    let shutdown = Rc::clone(&conn.drain.stop);
    let drain_timeout = conn.drain.timeout;
    let state = Rc::clone(&conn);
    let busy = Busy::default();
    // When bytes last moved, as the sweep knows it (kept across parks).
    let mut last_active = Instant::now();
    // Armed when the listener starts draining.
    let deadline = tokio::time::sleep(Duration::MAX);
    tokio::pin!(deadline);
    let mut draining = false;
    let start_draining = |deadline: Pin<&mut tokio::time::Sleep>| {
        state.closing.set(true);
        deadline.reset(Instant::now() + drain_timeout);
    };

    // Every select below polls the connection first (`biased`): when a request and a drain or
    // an idle tick are ready in the same wake-up, the request is read (and answered with
    // `Connection: close`) rather than the connection closed under it.
    let h2 = {
        // Pinned once: the sniff reads bytes it gives back only when it completes.
        let sniffing = sniff(&mut socket);
        tokio::pin!(sniffing);
        let quiet_for = tokio::time::sleep(idle_timeout);
        tokio::pin!(quiet_for);
        loop {
            tokio::select! {
                biased;
                detected = &mut sniffing => match detected {
                    Ok(h2) => break h2,
                    Err(err) => {
                        tracing::debug!(error = %err, "downstream connection failed before a request");
                        return;
                    }
                },
                // A connection accepted as its listener stops (io_uring hands over what its
                // multishot accept took before the cancel) or just before may carry its first
                // request already: it is read and answered with `Connection: close`. One that
                // sends nothing is closed after a tick.
                () = shutdown.stopped(), if !draining => {
                    draining = true;
                    start_draining(deadline.as_mut());
                    quiet_for.as_mut().reset(Instant::now() + sweep.tick());
                }
                () = &mut quiet_for => return,
            }
        }
    };
    if h2 {
        state.http2.set(true);
        // Boxed, like the HTTP/1.1 connection below, so that the task of a connection stays
        // small while parked (a future is as large as its largest state).
        let connection = Box::new(h2::Connection::new(socket, conn, busy, builder.h2));
        let mut running = Box::pin(connection.run());
        let mut closing = false;
        // A quiet connection frees its buffers; one idle for the timeout is closed.
        let idle = sweep.watch_quiet_once(activity, idle_timeout, last_active);
        if draining {
            // The drain began while the preface was read: GOAWAY at once, as below.
            closing = true;
            connection.graceful_shutdown();
        }
        loop {
            tokio::select! {
                biased;
                result = running.as_mut() => {
                    if let Err(err) = result {
                        tracing::debug!(error = %err, "downstream connection ended with an error");
                    }
                    return;
                }
                () = shutdown.stopped(), if !draining => {
                    draining = true;
                    start_draining(deadline.as_mut());
                    if !closing {
                        closing = true;
                        connection.graceful_shutdown();
                    }
                }
                () = &mut deadline, if draining => {
                    tracing::debug!("drain deadline passed; closing the connection");
                    return;
                }
                check = idle.check(), if !closing => {
                    if check == Check::Quiet {
                        connection.release_idle();
                        continue;
                    }
                    // GOAWAY; a client that then neither finishes nor reads is cut off at
                    // the drain timeout.
                    closing = true;
                    connection.graceful_shutdown();
                    if !draining {
                        draining = true;
                        deadline.as_mut().reset(Instant::now() + drain_timeout);
                    }
                }
            }
        }
    }

    // When a request head was partly received before a park: the header read timeout then
    // counts from its start, not from the unpark (a client dribbling a head cannot outlive the
    // timeout by pausing).
    let mut head_since: Option<Instant> = None;
    let connection = h1::Connection::new(socket, conn, busy.clone(), builder.h1);
    loop {
        let mut running = Box::pin(connection.run());
        // The wait for a head counts from the last response (or the connection's start), as
        // while parked.
        let head = HeadWait::new(
            busy.clone(),
            builder.header_read_timeout,
            head_since.unwrap_or(last_active),
        );
        let idle = sweep.watch(activity.clone(), idle_timeout, last_active, Some(head));
        loop {
            tokio::select! {
                biased;
                result = running.as_mut() => {
                    if let Err(err) = result {
                        tracing::debug!(error = %err, "downstream connection ended with an error");
                    }
                    return;
                }
                () = shutdown.stopped(), if !draining => {
                    // The next response carries `Connection: close`; a quiet connection is
                    // closed at the next tick.
                    draining = true;
                    start_draining(deadline.as_mut());
                }
                () = &mut deadline, if draining => {
                    tracing::debug!("drain deadline passed; closing the connection");
                    return;
                }
                check = idle.check() => match check {
                    Check::TimedOut => connection.close_when_idle(),
                    Check::Quiet if draining => connection.close_when_idle(),
                    Check::Quiet if busy.idle() && activity.is_waiting_for_peer() => break,
                    Check::Quiet => {}
                    Check::HeadTimeout => {
                        tracing::debug!("no request head within the header read timeout");
                        return;
                    }
                },
            }
        }
        // Parked: only the socket (and part of a head, if one came) is left, and the sweep no
        // longer watches it. Dropped while it waits for a head, the future loses nothing.
        last_active = idle.last_active();
        drop(idle);
        drop(running);
        head_since = if connection.park() {
            // The wait started around the last byte moved (the end of the previous response,
            // or the start of this head).
            Some(head_since.unwrap_or(last_active))
        } else {
            None
        };
        let head_deadline = head_since.unwrap_or(last_active) + builder.header_read_timeout;
        tokio::select! {
            biased;
            ready = poll_fn(|cx| connection.poll_read_ready(cx)) => {
                if let Err(err) = ready {
                    tracing::debug!(error = %err, "parked downstream connection failed");
                    return;
                }
            }
            // A parked connection is quiet: a draining listener closes it.
            () = shutdown.stopped() => return,
            // The wait for the next request head is bounded by the header read timeout, which
            // started when the last response went out; a parked connection keeps that bound.
            () = tokio::time::sleep_until((last_active + idle_timeout).min(head_deadline)) => return,
        }
        // Bytes arrived: the connection starts active.
        last_active = Instant::now();
    }
}

/// Reads until the bytes read either start the HTTP/2 preface in full (`true`) or cannot
/// (`false`, HTTP/1.x); gives them back to the socket for the protocol to read.
async fn sniff(socket: &mut Socket) -> std::io::Result<bool> {
    let mut buf = [0; H2_PREFACE.len()];
    let mut filled = 0;
    let h2 = loop {
        let mut read = ReadBuf::new(&mut buf[filled..]);
        poll_fn(|cx| Pin::new(&mut *socket).poll_read(cx, read.unfilled())).await?;
        let n = read.filled().len();
        if n == 0 {
            break false; // end of stream: hyper sees it and closes
        }
        filled += n;
        if buf[..filled] != H2_PREFACE[..filled] {
            break false;
        }
        if filled == H2_PREFACE.len() {
            break true;
        }
    };
    socket.unread(Bytes::copy_from_slice(&buf[..filled]));
    Ok(h2)
}

/// Counts the requests of a connection: those started, and those whose response is not sent
/// in full yet.
#[derive(Debug, Clone, Default)]
struct Busy(Rc<Requests>);

#[derive(Debug, Default)]
struct Requests {
    started: Cell<u64>,
    in_flight: Cell<usize>,
}

impl Busy {
    fn enter(&self) -> BusyGuard {
        self.0.started.set(self.0.started.get().wrapping_add(1));
        self.0.in_flight.set(self.0.in_flight.get() + 1);
        BusyGuard(Rc::clone(&self.0))
    }

    fn idle(&self) -> bool {
        self.0.in_flight.get() == 0
    }

    /// Requests started so far.
    fn started(&self) -> u64 {
        self.0.started.get()
    }
}

/// One request in flight on its connection, until its response body is dropped.
#[derive(Debug)]
pub struct BusyGuard(Rc<Requests>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0
            .in_flight
            .set(self.0.in_flight.get().saturating_sub(1));
    }
}

/// Counts a worker's open downstream connections, to wait for them to drain.
#[derive(Debug, Clone, Default)]
pub struct ConnTracker {
    open: Rc<Cell<usize>>,
    zero: Rc<Notify>,
}

/// One tracked connection; dropping it counts the connection closed.
#[derive(Debug)]
pub struct Tracked(ConnTracker);

impl ConnTracker {
    /// Counts a new connection.
    pub fn track(&self) -> Tracked {
        self.open.set(self.open.get() + 1);
        Tracked(self.clone())
    }

    /// Open connections.
    pub fn open(&self) -> usize {
        self.open.get()
    }

    /// Resolves once no connection is open.
    pub async fn drained(&self) {
        loop {
            let notified = self.zero.notified();
            if self.open.get() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let open = self.0.open.get().saturating_sub(1);
        self.0.open.set(open);
        if open == 0 {
            self.0.zero.notify_waiters();
        }
    }
}

/// A listener's stop on one worker: set once by the worker, awaited by its accept loops and
/// connections, which all run on the worker's thread.
///
/// tokio's `watch` serves threads and takes a lock on every poll of a waiting receiver; every
/// connection polls its listener's stop each time it wakes (in its `select!`), so the lock was
/// paid on the request path. Here a waiter keeps its waker in a slot of the flag's own.
#[derive(Debug, Default)]
pub struct StopFlag {
    stopped: Cell<bool>,
    wakers: RefCell<Vec<Option<Waker>>>,
    free: RefCell<Vec<usize>>,
}

impl StopFlag {
    /// Whether [`Self::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        self.stopped.get()
    }

    /// Sets the flag and wakes every waiter.
    pub fn stop(&self) {
        self.stopped.set(true);
        let wakers: Vec<Waker> = self
            .wakers
            .borrow_mut()
            .iter_mut()
            .filter_map(Option::take)
            .collect();
        for waker in wakers {
            waker.wake();
        }
    }

    /// Resolves once the flag is set.
    pub fn stopped(self: &Rc<Self>) -> Stopped {
        Stopped {
            flag: Rc::clone(self),
            slot: None,
        }
    }
}

/// Waits for a [`StopFlag`]; see [`StopFlag::stopped`].
#[derive(Debug)]
pub struct Stopped {
    flag: Rc<StopFlag>,
    slot: Option<usize>,
}

impl Future for Stopped {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.flag.stopped.get() {
            return Poll::Ready(());
        }
        let mut wakers = self.flag.wakers.borrow_mut();
        match self.slot {
            Some(slot) => {
                if let Some(waiting) = wakers.get_mut(slot)
                    && !waiting.as_ref().is_some_and(|w| w.will_wake(cx.waker()))
                {
                    *waiting = Some(cx.waker().clone());
                }
            }
            None => {
                let waker = Some(cx.waker().clone());
                let slot = match self.flag.free.borrow_mut().pop() {
                    Some(slot) => {
                        wakers[slot] = waker;
                        slot
                    }
                    None => {
                        wakers.push(waker);
                        wakers.len() - 1
                    }
                };
                drop(wakers);
                self.slot = Some(slot);
            }
        }
        Poll::Pending
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            if let Some(waiting) = self.flag.wakers.borrow_mut().get_mut(slot) {
                *waiting = None;
            }
            self.flag.free.borrow_mut().push(slot);
        }
    }
}

/// Counts a connection open in its listener's gauge until dropped.
struct ActiveConnection(Arc<ListenerStats>);

impl Drop for ActiveConnection {
    fn drop(&mut self) {
        self.0.connections_active.dec();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    use super::*;

    /// Counts its wake-ups.
    #[derive(Default)]
    pub(super) struct Count(pub(super) AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn a_stop_flag_wakes_every_waiter_once_and_frees_the_slots_of_dropped_ones() {
        let flag = Rc::new(StopFlag::default());
        let counts: Vec<Arc<Count>> = (0..3).map(|_| Arc::default()).collect();
        let mut waiting: Vec<Pin<Box<Stopped>>> =
            (0..3).map(|_| Box::pin(flag.stopped())).collect();
        for (stopped, count) in waiting.iter_mut().zip(&counts) {
            let waker = Waker::from(Arc::clone(count));
            let mut cx = Context::from_waker(&waker);
            assert!(stopped.as_mut().poll(&mut cx).is_pending());
            // Polled again with the same waker: still one slot.
            assert!(stopped.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(flag.wakers.borrow().len(), 3);
        // A dropped waiter's slot is reused and never woken.
        drop(waiting.remove(1));
        let reused = Arc::<Count>::default();
        let mut late = Box::pin(flag.stopped());
        let waker = Waker::from(Arc::clone(&reused));
        assert!(
            late.as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
        );
        assert_eq!(flag.wakers.borrow().len(), 3, "the freed slot was reused");

        flag.stop();
        assert!(flag.is_stopped());
        let woken: Vec<usize> = counts.iter().map(|c| c.0.load(Ordering::Relaxed)).collect();
        assert_eq!(woken, [1, 0, 1]);
        assert_eq!(reused.0.load(Ordering::Relaxed), 1);
        let noop = Waker::noop();
        for stopped in &mut waiting {
            assert!(
                stopped
                    .as_mut()
                    .poll(&mut Context::from_waker(noop))
                    .is_ready()
            );
        }
        let mut fresh = flag.stopped();
        assert!(
            Pin::new(&mut fresh)
                .poll(&mut Context::from_waker(noop))
                .is_ready(),
            "a waiter made after the stop is ready at once"
        );
    }
}
