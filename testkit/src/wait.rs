//! Bounded waits for tests: every await in a test has a deadline, and conditions are polled
//! instead of slept on.
//!
//! Deadlines use [`tokio::time`], so they work under `#[tokio::test(start_paused = true)]`
//! (time auto-advances while the runtime is idle).

use std::time::Duration;

use tokio::time::Instant;

/// The deadline used by helpers that take no explicit timeout: generous for a loaded CI
/// machine, short enough that a hung test fails quickly.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How often [`eventually`] re-checks its condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// Awaits `fut`, panicking if it takes longer than `limit`.
///
/// `what` names the step in the panic message (`"upstream response"`).
///
/// # Panics
///
/// Panics when `limit` elapses first.
#[track_caller]
pub fn within<F: Future>(limit: Duration, what: &str, fut: F) -> impl Future<Output = F::Output> {
    let caller = std::panic::Location::caller();
    let what = what.to_owned();
    async move {
        match tokio::time::timeout(limit, fut).await {
            Ok(out) => out,
            Err(_) => panic!("timed out after {limit:?} waiting for {what} (at {caller})"),
        }
    }
}

/// Polls `cond` every [`POLL_INTERVAL`] until it returns `true` or `limit` elapses.
///
/// Returns whether the condition became true. The condition is checked once more at the
/// deadline, so a `limit` of zero still checks it once.
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL_INTERVAL.min(deadline - Instant::now())).await;
    }
}

/// Asserts that a condition becomes true within a timeout, polling it every few milliseconds.
///
/// Must be used inside an async context (it awaits). Forms:
///
/// ```no_run
/// # async fn example(upstream: strait_testkit::Upstream) {
/// use std::time::Duration;
///
/// use strait_testkit::assert_eventually;
///
/// assert_eventually!(upstream.requests_seen() == 2);
/// assert_eventually!(upstream.requests_seen() == 2, "retry reached {}", upstream.name());
/// assert_eventually!(upstream.requests_seen() == 2, within = Duration::from_secs(1));
/// # }
/// ```
///
/// The default timeout is [`DEFAULT_TIMEOUT`].
#[macro_export]
macro_rules! assert_eventually {
    (@run $cond:expr, $limit:expr, $($msg:tt)+) => {{
        let limit: ::std::time::Duration = $limit;
        if !$crate::wait::eventually(limit, || $cond).await {
            panic!(
                "condition `{}` still false after {:?}: {}",
                stringify!($cond),
                limit,
                format_args!($($msg)+),
            );
        }
    }};
    ($cond:expr, within = $limit:expr $(,)?) => {
        $crate::assert_eventually!(@run $cond, $limit, "")
    };
    ($cond:expr $(,)?) => {
        $crate::assert_eventually!(@run $cond, $crate::wait::DEFAULT_TIMEOUT, "")
    };
    ($cond:expr, $($msg:tt)+) => {
        $crate::assert_eventually!(@run $cond, $crate::wait::DEFAULT_TIMEOUT, $($msg)+)
    };
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn eventually_sees_condition_turn_true() {
        let polls = AtomicUsize::new(0);
        let ok = eventually(Duration::from_secs(1), || {
            polls.fetch_add(1, Ordering::Relaxed) >= 3
        })
        .await;
        assert!(ok);
        assert_eq!(polls.load(Ordering::Relaxed), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn eventually_gives_up_at_deadline() {
        let start = Instant::now();
        assert!(!eventually(Duration::from_millis(100), || false).await);
        assert_eq!(start.elapsed(), Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn assert_eventually_accepts_all_forms() {
        assert_eventually!(true);
        assert_eventually!(1 + 1 == 2, "arithmetic {}", "works");
        assert_eventually!(true, within = Duration::from_millis(1));
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "still false after 10s: nope")]
    async fn assert_eventually_panics_with_message() {
        assert_eventually!(false, "nope");
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "timed out after 1s waiting for forever")]
    async fn within_panics_on_timeout() {
        within(
            Duration::from_secs(1),
            "forever",
            std::future::pending::<()>(),
        )
        .await;
    }
}
