//! Least request by the power of two choices, as in Envoy: sample two different endpoints by
//! weight and take the one with fewer in-flight requests per unit of weight, the first sampled on
//! ties.
//!
//! Sampling two rather than scanning all keeps picks O(log n) and avoids every worker herding
//! onto the same idle endpoint. Because the pair is distinct, the most loaded endpoint is never
//! picked while another is strictly less loaded; and because ties go to the first sample, idle
//! endpoints receive exactly their weighted share. With equal weights this is plain P2C.

use super::random::WeightedRandom;

/// Least-request state over a non-empty endpoint list.
#[derive(Debug, Clone)]
pub(crate) struct LeastRequest {
    weights: WeightedRandom,
}

impl LeastRequest {
    /// `weights` is non-empty and each weight is at least 1.
    pub(crate) fn new(weights: &[u32]) -> Self {
        Self {
            weights: WeightedRandom::new(weights),
        }
    }

    pub(crate) fn pick(&self, in_flight: impl Fn(usize) -> u32, rng: &mut fastrand::Rng) -> usize {
        if self.weights.len() == 1 {
            return 0;
        }
        let (first, second) = self.weights.pick_two(rng);
        // Compare in_flight / weight without division: both products fit in u64.
        let first_load = u64::from(in_flight(first)) * self.weights.weight(second);
        let second_load = u64::from(in_flight(second)) * self.weights.weight(first);
        if second_load < first_load {
            second
        } else {
            first
        }
    }
}
