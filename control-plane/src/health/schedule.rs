//! When checks run: pure functions of the target's place in its batch, its interval, the
//! jitter drawn and the clock.

use std::time::Duration;

use tokio::time::Instant;

/// The gap between the first checks of targets added together: at most 1,000 first checks a
/// second per batch, unless the interval is shorter than the batch needs.
pub(super) const FIRST_CHECK_SPACING: Duration = Duration::from_millis(1);

/// How long after being added the `index`-th of `count` new targets has its first check:
/// evenly spaced over `min(interval, count × 1ms)`.
pub(super) fn first_offset(index: usize, count: usize, interval: Duration) -> Duration {
    if count <= 1 {
        return Duration::ZERO;
    }
    let count_u32 = u32::try_from(count).unwrap_or(u32::MAX);
    let window = interval.min(FIRST_CHECK_SPACING.saturating_mul(count_u32));
    let nanos = window.as_nanos() * index as u128 / count as u128;
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// When the check after the one `due` at `due` runs: one interval (at least 1ms) plus
/// `jitter` later, or `now` if that moment has already passed (a slow check or a wait for a
/// permit skips missed turns instead of bursting to catch up).
pub(super) fn next(due: Instant, interval: Duration, jitter: Duration, now: Instant) -> Instant {
    let next = due + interval.max(Duration::from_millis(1)) + jitter;
    next.max(now)
}

/// A random jitter in `0..=max`, from `unit` in `0.0..1.0`.
pub(super) fn sample(max: Duration, unit: f64) -> Duration {
    max.mul_f64(unit.clamp(0.0, 1.0))
}

/// A duration for people: `1s`, `250ms`, `1.5s`.
pub(super) fn show(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis >= 1000 && millis.is_multiple_of(1000) {
        format!("{}s", millis / 1000)
    } else if millis >= 1 {
        format!("{millis}ms")
    } else {
        format!("{duration:?}")
    }
}
