//! Deadlines of a worker's upstream exchanges: one timer per worker, not one per request.
//!
//! A tokio timeout per request registered a timer entry in tokio's wheel and removed it when
//! the response came (taking the time driver's lock both times; ~340 instructions per request
//! at saturation in `benches/instructions.sh`). Here a request's deadline is a slot in the worker's table,
//! taken when the exchange first waits and given back when it ends, and the worker's one timer
//! is set to the earliest deadline it knows of. Requests of a route share a timeout, so a new
//! deadline is almost never earlier than the armed one: the timer is re-armed when it fires (at
//! most once per timeout while requests keep coming) or when an earlier deadline arrives, not
//! per request. When it fires it marks every slot whose deadline has passed and wakes its
//! owner, then arms itself for the earliest deadline left, if any.
//!
//! Precision is tokio's timer's: a deadline is reported within a millisecond or so of passing,
//! as a tokio timeout was.

use std::cell::{Cell, RefCell};
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use tokio::time::{Instant, Sleep};

/// The deadlines of a worker's exchanges and the timer that enforces them.
#[derive(Debug, Default)]
pub struct Deadlines {
    table: RefCell<Table>,
    /// The deadline the timer is set to; `None` when it waits for none.
    armed: Cell<Option<Instant>>,
    /// The timer task, woken to arm an earlier deadline.
    timer: RefCell<Option<Waker>>,
    /// Whether the timer task was spawned (on the first deadline).
    spawned: Cell<bool>,
}

#[derive(Debug, Default)]
struct Table {
    slots: Vec<Slot>,
    free: Vec<u32>,
}

#[derive(Debug, Default)]
struct Slot {
    /// Bumped when the slot is given back, so that a stale key finds nothing.
    generation: u32,
    /// `None` while the slot is free.
    deadline: Option<Instant>,
    expired: bool,
    waker: Option<Waker>,
}

/// A taken slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    index: u32,
    generation: u32,
}

/// The deadline passed before the future completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

impl Deadlines {
    /// Runs `fut` until `deadline`, when it is dropped and [`Elapsed`] returned. `None`: no
    /// deadline (a timeout too large to add to the clock).
    pub fn within<F: Future>(self: &Rc<Self>, deadline: Option<Instant>, fut: F) -> Within<F> {
        Within {
            timed: Timed {
                deadlines: Rc::clone(self),
                deadline,
                key: None,
            },
            fut,
        }
    }

    /// Deadlines waiting (tests).
    #[cfg(test)]
    fn waiting(&self) -> usize {
        (self.table.borrow().slots.iter())
            .filter(|slot| slot.deadline.is_some())
            .count()
    }

    /// Takes a slot for `deadline`, arming the timer if it is the earliest.
    fn insert(self: &Rc<Self>, deadline: Instant, waker: &Waker) -> Key {
        let key = {
            let mut table = self.table.borrow_mut();
            let index = match table.free.pop() {
                Some(index) => index,
                None => {
                    table.slots.push(Slot::default());
                    u32::try_from(table.slots.len() - 1).unwrap_or(u32::MAX)
                }
            };
            let slot = &mut table.slots[index as usize];
            slot.deadline = Some(deadline);
            slot.expired = false;
            slot.waker = Some(waker.clone());
            Key {
                index,
                generation: slot.generation,
            }
        };
        if self.armed.get().is_none_or(|armed| deadline < armed) {
            self.armed.set(Some(deadline));
            if self.spawned.replace(true) {
                if let Some(timer) = self.timer.borrow().as_ref() {
                    timer.wake_by_ref();
                }
            } else {
                tokio::task::spawn_local(Rc::clone(self).run());
            }
        }
        key
    }

    /// Whether `key`'s deadline passed; else notes who to wake when it does.
    fn expired(&self, key: Key, waker: &Waker) -> bool {
        let mut table = self.table.borrow_mut();
        let Some(slot) = table.slots.get_mut(key.index as usize) else {
            return false;
        };
        if slot.generation != key.generation {
            return false;
        }
        if slot.expired {
            return true;
        }
        if !slot.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            slot.waker = Some(waker.clone());
        }
        false
    }

    /// Gives `key`'s slot back. The timer stays armed: it finds nothing to do if this was the
    /// earliest deadline, and re-arms itself for the next.
    fn remove(&self, key: Key) {
        let mut table = self.table.borrow_mut();
        let Some(slot) = table.slots.get_mut(key.index as usize) else {
            return;
        };
        if slot.generation != key.generation {
            return;
        }
        slot.generation = slot.generation.wrapping_add(1);
        slot.deadline = None;
        slot.waker = None;
        table.free.push(key.index);
    }

    /// Marks and wakes every slot whose deadline is at or before `now`; returns the earliest
    /// deadline left.
    fn expire(&self, now: Instant) -> Option<Instant> {
        let mut woken = Vec::new();
        let mut next: Option<Instant> = None;
        {
            let mut table = self.table.borrow_mut();
            for slot in &mut table.slots {
                match slot.deadline {
                    Some(deadline) if deadline > now => {
                        next = Some(next.map_or(deadline, |n| n.min(deadline)));
                    }
                    // Due, and not marked at an earlier firing.
                    Some(_) if !slot.expired => {
                        slot.expired = true;
                        woken.extend(slot.waker.take());
                    }
                    _ => {}
                }
            }
        }
        for waker in woken {
            waker.wake();
        }
        next
    }

    /// The timer task: sleeps until the armed deadline, expires what is due, arms the next.
    async fn run(self: Rc<Self>) {
        let mut sleep: Pin<&mut Sleep> = pin!(tokio::time::sleep_until(Instant::now()));
        loop {
            poll_fn(|cx| {
                let mut timer = self.timer.borrow_mut();
                if !timer.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *timer = Some(cx.waker().clone());
                }
                drop(timer);
                let Some(armed) = self.armed.get() else {
                    return Poll::Pending;
                };
                if sleep.deadline() != armed {
                    sleep.as_mut().reset(armed);
                }
                sleep.as_mut().poll(cx)
            })
            .await;
            let next = self.expire(Instant::now());
            self.armed.set(next);
        }
    }
}

/// An exchange's hold on its deadline: taken when it first waits, given back when it ends.
#[derive(Debug)]
struct Timed {
    deadlines: Rc<Deadlines>,
    deadline: Option<Instant>,
    key: Option<Key>,
}

pin_project_lite::pin_project! {
    /// A future run until a deadline: see [`Deadlines::within`]. A struct rather than an
    /// `async` block, which kept the future twice in its state (once captured, once pinned):
    /// the upstream exchange it wraps is the largest part of every request's state.
    #[derive(Debug)]
    pub struct Within<F> {
        timed: Timed,
        #[pin]
        fut: F,
    }
}

impl<F: Future> Future for Within<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        this.timed.poll(this.fut, cx)
    }
}

impl Timed {
    fn poll<F: Future>(
        &mut self,
        fut: Pin<&mut F>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<F::Output, Elapsed>> {
        if let Poll::Ready(output) = fut.poll(cx) {
            return Poll::Ready(Ok(output));
        }
        match (self.key, self.deadline) {
            (Some(key), _) => {
                if self.deadlines.expired(key, cx.waker()) {
                    return Poll::Ready(Err(Elapsed));
                }
            }
            (None, Some(deadline)) => {
                self.key = Some(self.deadlines.insert(deadline, cx.waker()));
            }
            (None, None) => {}
        }
        Poll::Pending
    }
}

impl Drop for Timed {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.deadlines.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// The wrapper adds its own few fields to the future it runs, not a second copy of it (the
    /// request's upstream exchange is the largest part of every request's state).
    #[test]
    fn a_timed_future_holds_its_future_once() {
        let deadlines = Rc::new(Deadlines::default());
        let inner = async {
            let held = [1_u8; 1024];
            std::future::ready(()).await;
            held.iter().map(|&b| usize::from(b)).sum::<usize>()
        };
        let inner_size = size_of_val(&inner);
        let timed = deadlines.within(None, inner);
        assert!(
            size_of_val(&timed) <= inner_size + 64,
            "{} bytes around a future of {inner_size}",
            size_of_val(&timed)
        );
    }

    /// Runs `f` on a paused-clock runtime with a `LocalSet`, for an hour of its clock at most
    /// (a deadline never reported would otherwise hang the test).
    fn local<F: Future>(f: F) -> F::Output {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime");
        let bounded = async { tokio::time::timeout(Duration::from_secs(3600), f).await };
        (tokio::task::LocalSet::new().block_on(&runtime, bounded))
            .expect("the test's clock ran out")
    }

    #[test]
    fn a_future_past_its_deadline_is_stopped_and_one_within_it_completes() {
        local(async {
            let deadlines = Rc::new(Deadlines::default());
            let start = Instant::now();
            let slow = deadlines.within(
                Some(start + Duration::from_millis(100)),
                tokio::time::sleep(Duration::from_secs(5)),
            );
            let quick = deadlines.within(
                Some(start + Duration::from_millis(300)),
                tokio::time::sleep(Duration::from_millis(200)),
            );
            let (slow, quick) = tokio::join!(slow, quick);
            assert_eq!(slow, Err(Elapsed));
            assert_eq!(quick, Ok(()));
            assert_eq!(Instant::now() - start, Duration::from_millis(200));
            assert_eq!(deadlines.waiting(), 0, "every slot given back");
        });
    }

    #[test]
    fn an_earlier_deadline_rearms_the_timer_and_a_later_one_is_kept() {
        local(async {
            let deadlines = Rc::new(Deadlines::default());
            let start = Instant::now();
            let late = tokio::task::spawn_local({
                let deadlines = Rc::clone(&deadlines);
                async move {
                    let r = deadlines
                        .within(
                            Some(start + Duration::from_secs(10)),
                            std::future::pending::<()>(),
                        )
                        .await;
                    (r, Instant::now() - start)
                }
            });
            // Yield so that the late deadline is armed first.
            tokio::task::yield_now().await;
            let early = deadlines
                .within(
                    Some(start + Duration::from_secs(1)),
                    std::future::pending::<()>(),
                )
                .await;
            assert_eq!(early, Err(Elapsed));
            assert_eq!(Instant::now() - start, Duration::from_secs(1));
            let (late, after) = late.await.expect("task");
            assert_eq!(late, Err(Elapsed));
            assert_eq!(
                after,
                Duration::from_secs(10),
                "re-armed for the later deadline"
            );
            assert_eq!(deadlines.waiting(), 0);
        });
    }

    #[test]
    fn a_dropped_exchange_gives_its_slot_back_and_is_never_woken() {
        local(async {
            let deadlines = Rc::new(Deadlines::default());
            let start = Instant::now();
            let done = deadlines
                .within(
                    Some(start + Duration::from_millis(50)),
                    tokio::time::sleep(Duration::from_millis(10)),
                )
                .await;
            assert_eq!(done, Ok(()));
            assert_eq!(deadlines.waiting(), 0);
            // The timer fires for the gone deadline and finds nothing; later ones still work.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let none = deadlines.within(None, tokio::time::sleep(Duration::from_secs(60)));
            assert_eq!(none.await, Ok(()), "no deadline: runs to the end");
            let late = deadlines.within(
                Some(Instant::now() + Duration::from_millis(20)),
                std::future::pending::<()>(),
            );
            assert_eq!(late.await, Err(Elapsed));
        });
    }
}
