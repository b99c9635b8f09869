//! Idle detection for a worker's open connections: one timer per worker, not one per
//! connection.
//!
//! A connection is *quiet* when no byte moved between two passes of its sweep, and *timed out*
//! when none moved for its `idle_timeout`. Every `tick` the sweep reads the activity counter of
//! each watched connection and wakes only those with something to act on. It replaced a timer
//! per connection, re-armed every tick, that woke each busy keep-alive connection four times a
//! second to poll its whole hyper connection (~2,800 instructions per request at 200 req/s over
//! 32 connections in `benches/instructions.sh`).
//!
//! The sweep's task runs only while it watches connections. A watch is first judged quiet at
//! the second pass after it starts, so it has been quiet for between one and two ticks, as with
//! a timer of its own.
//!
//! HTTP/1.1 watches also enforce the header read timeout: no request may take longer than that
//! to arrive after the previous one's response (or the connection's start). hyper's own timer
//! for it cost a timer registration per request (~1,000 instructions). The wait is counted from
//! the first pass that finds no request in flight, so a connection is closed between the
//! timeout and the timeout plus two ticks after its last response, never before.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::Instant;

use super::Busy;
use crate::io::Activity;

/// What a pass found on a quiet connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// No byte moved since the last pass.
    Quiet,
    /// No byte moved for the idle timeout.
    TimedOut,
    /// No request head arrived within the header read timeout (HTTP/1.1).
    HeadTimeout,
}

/// An HTTP/1.1 connection's wait for its next request head.
#[derive(Debug)]
pub struct HeadWait {
    busy: Busy,
    timeout: Duration,
    /// Requests started at the last pass.
    started: u64,
    /// Since when the connection waits for a head; `None` while a request is in flight.
    since: Option<Instant>,
}

impl HeadWait {
    /// A wait of at most `timeout` for each request head on a connection whose requests `busy`
    /// counts, the first one counted from `since`.
    pub(super) fn new(busy: Busy, timeout: Duration, since: Instant) -> Self {
        Self {
            started: busy.started(),
            busy,
            timeout,
            since: Some(since),
        }
    }

    /// Whether the wait for a head is over at `now`.
    fn expired(&mut self, now: Instant) -> bool {
        let (started, answered) = (self.busy.started(), self.busy.idle());
        if started != self.started || !answered {
            // A request came or is in flight: the next wait starts once none is, at a pass.
            self.started = started;
            self.since = answered.then_some(now);
            return false;
        }
        match self.since {
            Some(since) => now.saturating_duration_since(since) >= self.timeout,
            None => {
                self.since = Some(now);
                false
            }
        }
    }
}

/// The watched connections of one worker whose ticks are equal.
#[derive(Debug)]
pub struct IdleSweep {
    tick: Duration,
    watches: RefCell<Vec<Option<Watch>>>,
    free: RefCell<Vec<usize>>,
    /// Passes made so far.
    passes: Cell<u64>,
    /// Whether the sweep's task is running.
    running: Cell<bool>,
}

#[derive(Debug)]
struct Watch {
    activity: Activity,
    timeout: Duration,
    /// The activity count at the last pass.
    seen: u64,
    /// The number of passes made when the watch started.
    since: u64,
    /// When bytes last moved, as far as the passes know (to a tick).
    last_active: Instant,
    /// HTTP/1.1: quiet passes are reported and request heads timed; else only the idle
    /// timeout is.
    head: Option<HeadWait>,
    /// HTTP/2: the first quiet pass after bytes moved is reported (`Some(false)` until it
    /// is), so that the connection can free its buffers.
    quiet_once: Option<bool>,
    due: Option<Check>,
    waker: Option<Waker>,
}

impl IdleSweep {
    /// A sweep passing every `tick`.
    pub fn new(tick: Duration) -> Self {
        Self {
            tick,
            watches: RefCell::default(),
            free: RefCell::default(),
            passes: Cell::new(0),
            running: Cell::new(false),
        }
    }

    /// The time between two passes.
    pub fn tick(&self) -> Duration {
        self.tick
    }

    /// Watches a connection whose bytes last moved at `last_active`; starts the sweep's task on
    /// the current `LocalSet` if it is not running. With `head` (HTTP/1.1) every quiet pass is
    /// reported, and the header read timeout; without, only the idle timeout.
    pub fn watch(
        self: &Rc<Self>,
        activity: Activity,
        timeout: Duration,
        last_active: Instant,
        head: Option<HeadWait>,
    ) -> IdleWatch {
        self.add(activity, timeout, last_active, head, None)
    }

    /// Watches an HTTP/2 connection: the idle timeout, and the first quiet pass after each
    /// time bytes moved (one wake-up per quiet period, not one per pass).
    pub fn watch_quiet_once(
        self: &Rc<Self>,
        activity: Activity,
        timeout: Duration,
        last_active: Instant,
    ) -> IdleWatch {
        self.add(activity, timeout, last_active, None, Some(false))
    }

    fn add(
        self: &Rc<Self>,
        activity: Activity,
        timeout: Duration,
        last_active: Instant,
        head: Option<HeadWait>,
        quiet_once: Option<bool>,
    ) -> IdleWatch {
        if !self.running.replace(true) {
            tokio::task::spawn_local(Rc::clone(self).run());
        }
        let watch = Watch {
            seen: activity.count(),
            activity,
            timeout,
            since: self.passes.get(),
            last_active,
            head,
            quiet_once,
            due: None,
            waker: None,
        };
        let mut watches = self.watches.borrow_mut();
        let slot = match self.free.borrow_mut().pop() {
            Some(slot) => {
                watches[slot] = Some(watch);
                slot
            }
            None => {
                watches.push(Some(watch));
                watches.len() - 1
            }
        };
        IdleWatch {
            sweep: Rc::clone(self),
            slot,
        }
    }

    async fn run(self: Rc<Self>) {
        loop {
            tokio::time::sleep(self.tick).await;
            if !self.pass(Instant::now()) {
                self.running.set(false);
                return;
            }
        }
    }

    /// One pass at `now`: notes the connections that moved bytes and wakes those that are quiet
    /// or timed out. Returns whether any connection is watched.
    fn pass(&self, now: Instant) -> bool {
        let pass = self.passes.get() + 1;
        self.passes.set(pass);
        let mut woken = Vec::new();
        let mut watched = false;
        for watch in self.watches.borrow_mut().iter_mut().flatten() {
            watched = true;
            let count = watch.activity.count();
            let head_expired = watch.head.as_mut().is_some_and(|head| head.expired(now));
            let due = if head_expired {
                Check::HeadTimeout
            } else if count != watch.seen {
                watch.seen = count;
                watch.last_active = now;
                if let Some(reported) = &mut watch.quiet_once {
                    *reported = false;
                }
                continue;
            } else if now.saturating_duration_since(watch.last_active) >= watch.timeout {
                Check::TimedOut
            } else if watch.head.is_some() && pass >= watch.since + 2 {
                // The first pass may follow the start at once; the second is a tick after it.
                Check::Quiet
            } else if watch.quiet_once == Some(false) && pass >= watch.since + 2 {
                watch.quiet_once = Some(true);
                Check::Quiet
            } else {
                continue;
            };
            watch.due = Some(due);
            woken.extend(watch.waker.take());
        }
        for waker in woken {
            waker.wake();
        }
        watched
    }
}

/// One connection's place in an [`IdleSweep`]; leaves it when dropped.
#[derive(Debug)]
pub struct IdleWatch {
    sweep: Rc<IdleSweep>,
    slot: usize,
}

impl IdleWatch {
    /// Resolves at the next pass that finds the connection quiet (if reported) or timed out.
    pub async fn check(&self) -> Check {
        poll_fn(|cx| self.poll_check(cx)).await
    }

    fn poll_check(&self, cx: &Context<'_>) -> Poll<Check> {
        let mut watches = self.sweep.watches.borrow_mut();
        let Some(Some(watch)) = watches.get_mut(self.slot) else {
            return Poll::Pending;
        };
        if let Some(due) = watch.due.take() {
            return Poll::Ready(due);
        }
        if !watch
            .waker
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            watch.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// When bytes last moved, to a tick.
    pub fn last_active(&self) -> Instant {
        self.sweep.watches.borrow()[self.slot]
            .as_ref()
            .map_or_else(Instant::now, |w| w.last_active)
    }
}

impl Drop for IdleWatch {
    fn drop(&mut self) {
        if let Some(watch) = self.sweep.watches.borrow_mut().get_mut(self.slot) {
            *watch = None;
        }
        self.sweep.free.borrow_mut().push(self.slot);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    use tokio::task::{LocalEnterGuard, LocalSet};

    use super::*;
    use crate::downstream::tests::Count;

    const TICK: Duration = Duration::from_millis(250);

    /// Polls `watch` with `count`'s waker.
    fn poll(watch: &IdleWatch, count: &Arc<Count>) -> Poll<Check> {
        let waker = Waker::from(Arc::clone(count));
        watch.poll_check(&Context::from_waker(&waker))
    }

    fn woken(count: &Count) -> usize {
        count.0.load(Ordering::Relaxed)
    }

    /// A sweep whose task is spawned, never run (the test makes the passes), and a start time.
    struct Fixture {
        sweep: Rc<IdleSweep>,
        start: Instant,
        _inside: LocalEnterGuard,
        _local: LocalSet,
    }

    impl Fixture {
        fn new() -> Self {
            let local = LocalSet::new();
            Self {
                _inside: local.enter(),
                _local: local,
                sweep: Rc::new(IdleSweep::new(TICK)),
                start: Instant::now(),
            }
        }
    }

    /// An HTTP/1.1 connection's head wait that never expires in a test.
    fn h1(since: Instant) -> Option<HeadWait> {
        Some(HeadWait::new(
            Busy::default(),
            Duration::from_secs(3600),
            since,
        ))
    }

    #[test]
    fn a_head_that_does_not_come_within_the_timeout_is_reported_however_busy_the_bytes() {
        let Fixture { sweep, start, .. } = &Fixture::new();
        let start = *start;
        let activity = Activity::default();
        let head = HeadWait::new(Busy::default(), Duration::from_secs(1), start);
        let watch = sweep.watch(activity.clone(), Duration::from_secs(60), start, Some(head));
        let wakes = Arc::<Count>::default();
        assert!(poll(&watch, &wakes).is_pending());
        // A client dribbling its head keeps the bytes moving: no quiet pass, no idle timeout.
        for n in 1..=3 {
            activity.bump();
            assert!(sweep.pass(start + TICK * n));
        }
        assert_eq!(woken(&wakes), 0);
        activity.bump();
        assert!(sweep.pass(start + TICK * 4));
        assert_eq!(poll(&watch, &wakes), Poll::Ready(Check::HeadTimeout));
    }

    #[test]
    fn the_head_wait_restarts_after_each_request_and_pauses_while_one_is_in_flight() {
        let Fixture { sweep, start, .. } = &Fixture::new();
        let start = *start;
        let (activity, busy) = (Activity::default(), Busy::default());
        let head = HeadWait::new(busy.clone(), Duration::from_secs(1), start);
        let watch = sweep.watch(activity.clone(), Duration::from_secs(60), start, Some(head));
        let wakes = Arc::<Count>::default();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let expect_none = |ms: u64| {
            activity.bump(); // bytes keep moving: only the head wait can fire
            assert!(sweep.pass(at(ms)));
            assert!(poll(&watch, &wakes).is_pending(), "at {ms} ms");
        };
        expect_none(750);
        // A request starts and ends between two passes: the wait restarts at the next pass.
        drop(busy.enter());
        expect_none(1000);
        expect_none(1750);
        // A request in flight for longer than the timeout.
        let guard = busy.enter();
        expect_none(2000);
        expect_none(3500);
        drop(guard);
        // The wait starts at the first pass that finds it answered, not before.
        expect_none(3750);
        expect_none(4500);
        activity.bump();
        assert!(sweep.pass(at(4750)));
        assert_eq!(poll(&watch, &wakes), Poll::Ready(Check::HeadTimeout));
    }

    #[test]
    fn a_quiet_connection_is_reported_from_its_second_pass_and_a_busy_one_never() {
        // The sweep's task is spawned, never run: the test makes the passes.
        let Fixture { sweep, start, .. } = &Fixture::new();
        let start = *start;
        let (quiet, busy) = (Activity::default(), Activity::default());
        let quiet_watch = sweep.watch(quiet, Duration::from_secs(60), start, h1(start));
        let busy_watch = sweep.watch(busy.clone(), Duration::from_secs(60), start, h1(start));
        let (quiet_wakes, busy_wakes) = (Arc::<Count>::default(), Arc::<Count>::default());
        assert!(poll(&quiet_watch, &quiet_wakes).is_pending());
        assert!(poll(&busy_watch, &busy_wakes).is_pending());

        // The first pass may come right after the start: nobody is judged yet.
        busy.bump();
        assert!(sweep.pass(start + Duration::from_millis(1)));
        assert_eq!((woken(&quiet_wakes), woken(&busy_wakes)), (0, 0));
        assert!(poll(&quiet_watch, &quiet_wakes).is_pending());

        for n in 1..=3 {
            busy.bump();
            assert!(sweep.pass(start + TICK * n));
            assert_eq!(woken(&quiet_wakes), 1, "woken once, then not re-armed");
            assert_eq!(
                woken(&busy_wakes),
                0,
                "a connection moving bytes is left alone"
            );
        }
        assert_eq!(poll(&quiet_watch, &quiet_wakes), Poll::Ready(Check::Quiet));
        assert!(
            poll(&quiet_watch, &quiet_wakes).is_pending(),
            "reported once"
        );
        assert_eq!(busy_watch.last_active(), start + TICK * 3);
        assert_eq!(quiet_watch.last_active(), start);
    }

    #[test]
    fn the_timeout_is_reported_even_when_quiet_passes_are_not() {
        // The sweep's task is spawned, never run: the test makes the passes.
        let Fixture { sweep, start, .. } = &Fixture::new();
        let start = *start;
        let activity = Activity::default();
        let watch = sweep.watch(activity.clone(), Duration::from_secs(1), start, None);
        let wakes = Arc::<Count>::default();
        assert!(poll(&watch, &wakes).is_pending());
        for n in 1..=3 {
            assert!(sweep.pass(start + TICK * n));
        }
        assert_eq!(woken(&wakes), 0, "quiet passes are not reported");
        // Bytes moved: the timeout counts from this pass.
        activity.bump();
        assert!(sweep.pass(start + TICK * 4));
        assert!(sweep.pass(start + TICK * 7));
        assert_eq!(woken(&wakes), 0);
        assert!(sweep.pass(start + TICK * 8));
        assert_eq!(woken(&wakes), 1);
        assert_eq!(poll(&watch, &wakes), Poll::Ready(Check::TimedOut));
    }

    #[test]
    fn an_http2_watch_hears_of_each_quiet_period_once() {
        // The sweep's task is spawned, never run: the test makes the passes.
        let Fixture { sweep, start, .. } = &Fixture::new();
        let start = *start;
        let activity = Activity::default();
        let watch = sweep.watch_quiet_once(activity.clone(), Duration::from_secs(60), start);
        let wakes = Arc::<Count>::default();
        assert!(poll(&watch, &wakes).is_pending());
        assert!(sweep.pass(start + TICK));
        assert_eq!(woken(&wakes), 0, "not on the pass right after the start");
        for n in 2..=5 {
            assert!(sweep.pass(start + TICK * n));
        }
        assert_eq!(
            woken(&wakes),
            1,
            "one report for the quiet period, not one per pass"
        );
        assert_eq!(poll(&watch, &wakes), Poll::Ready(Check::Quiet));
        assert!(poll(&watch, &wakes).is_pending());
        assert!(sweep.pass(start + TICK * 6));
        assert_eq!(woken(&wakes), 1);
        // Bytes moved: the next quiet pass is reported again.
        activity.bump();
        assert!(sweep.pass(start + TICK * 7));
        assert_eq!(woken(&wakes), 1);
        assert!(sweep.pass(start + TICK * 8));
        assert_eq!(woken(&wakes), 2);
        assert_eq!(poll(&watch, &wakes), Poll::Ready(Check::Quiet));
    }

    /// The sweep's task ends once nothing is watched, and the next watch starts it again.
    #[test]
    fn the_sweep_stops_when_nothing_is_watched_and_starts_again_for_the_next_watch() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        LocalSet::new().block_on(&runtime, async {
            let sweep = Rc::new(IdleSweep::new(Duration::from_millis(20)));
            let quiet = |sweep: &Rc<IdleSweep>| {
                let start = Instant::now();
                sweep.watch(
                    Activity::default(),
                    Duration::from_secs(60),
                    start,
                    h1(start),
                )
            };
            let first = quiet(&sweep);
            let check = tokio::time::timeout(Duration::from_secs(5), first.check()).await;
            assert_eq!(check, Ok(Check::Quiet), "the running sweep reports");
            drop(first);
            tokio::time::timeout(Duration::from_secs(5), async {
                while sweep.running.get() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await
            .expect("the task ends within 5 s of the last watch leaving");
            let second = quiet(&sweep);
            assert!(sweep.running.get());
            let check = tokio::time::timeout(Duration::from_secs(5), second.check()).await;
            assert_eq!(check, Ok(Check::Quiet), "the restarted sweep reports");
        });
    }

    #[test]
    fn a_dropped_watch_frees_its_slot_and_an_empty_sweep_says_so() {
        // The sweep's task is spawned, never run: the test makes the passes.
        let Fixture { sweep, start, .. } = &Fixture::new();
        let start = *start;
        let first = sweep.watch(Activity::default(), TICK, start, None);
        let second = sweep.watch(Activity::default(), TICK, start, None);
        drop(first);
        let third = sweep.watch(Activity::default(), TICK, start, None);
        assert_eq!(third.slot, 0, "the freed slot is reused");
        assert_eq!(sweep.watches.borrow().len(), 2);
        assert!(sweep.pass(start + TICK));
        drop((second, third));
        assert!(!sweep.pass(start + TICK * 2), "nothing is watched any more");
    }
}
