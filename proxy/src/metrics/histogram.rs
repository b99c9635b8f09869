//! A fixed-bucket latency histogram, single writer.

use std::time::Duration;

use super::Counter;

/// Upper bounds of the buckets, in seconds (the last, +Inf, is implicit).
pub const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Bucket bounds in microseconds, for the comparison on the request path.
const BOUNDS_US: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

/// Observations per bucket (not cumulative; +Inf last) and their sum in microseconds.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [Counter; 15],
    sum_us: Counter,
}

impl Histogram {
    /// Records one duration. Only the owning worker calls this.
    #[inline]
    pub fn observe(&self, duration: Duration) {
        let us = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        let index = BOUNDS_US
            .iter()
            .position(|&bound| us <= bound)
            .unwrap_or(BOUNDS_US.len());
        self.buckets[index].inc();
        self.sum_us.add(us);
    }

    /// Adds this histogram's counts into `counts` (non-cumulative, 15 entries) and returns the
    /// sum in microseconds.
    pub fn add_into(&self, counts: &mut [u64; 15]) -> u64 {
        for (total, bucket) in counts.iter_mut().zip(&self.buckets) {
            *total += bucket.get();
        }
        self.sum_us.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_bucket() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(400)); // <= 0.5 ms
        h.observe(Duration::from_micros(500)); // <= 0.5 ms (inclusive bound)
        h.observe(Duration::from_millis(3)); // <= 5 ms
        h.observe(Duration::from_secs(60)); // +Inf
        let mut counts = [0; 15];
        let sum = h.add_into(&mut counts);
        assert_eq!(counts[0], 2);
        assert_eq!(counts[3], 1);
        assert_eq!(counts[14], 1);
        assert_eq!(counts.iter().sum::<u64>(), 4);
        assert_eq!(sum, 400 + 500 + 3_000 + 60_000_000);
    }
}
