//! Weighted random picks: a uniform draw below the total weight, located by binary search in the
//! cumulative weights.

/// Cumulative weights of a non-empty endpoint list.
#[derive(Debug, Clone)]
pub(crate) struct WeightedRandom {
    /// `ends[i]` is the sum of the weights of endpoints `0..=i`, so endpoint `i` owns the draws
    /// in `ends[i - 1]..ends[i]`. Strictly increasing, as weights are at least 1.
    ends: Vec<u64>,
    /// All weights are equal, so a uniform index draw suffices.
    uniform: bool,
}

impl WeightedRandom {
    /// `weights` is non-empty and each weight is at least 1.
    pub(crate) fn new(weights: &[u32]) -> Self {
        let ends = weights
            .iter()
            .scan(0u64, |sum, &weight| {
                *sum += u64::from(weight);
                Some(*sum)
            })
            .collect();
        let uniform = weights.windows(2).all(|pair| pair[0] == pair[1]);
        Self { ends, uniform }
    }

    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    pub(crate) fn weight(&self, index: usize) -> u64 {
        self.ends[index] - self.start(index)
    }

    /// Picks an endpoint with probability weight / total.
    pub(crate) fn pick(&self, rng: &mut fastrand::Rng) -> usize {
        if self.uniform {
            return rng.usize(..self.len());
        }
        self.owner(rng.u64(..self.total()))
    }

    /// Picks two different endpoints: the first with probability weight / total, the second the
    /// same way among the rest. Needs at least two endpoints.
    pub(crate) fn pick_two(&self, rng: &mut fastrand::Rng) -> (usize, usize) {
        debug_assert!(self.len() >= 2, "pick_two needs two endpoints");
        if self.uniform {
            let first = rng.usize(..self.len());
            let second = rng.usize(..self.len() - 1);
            return (first, if second >= first { second + 1 } else { second });
        }
        let first = self.owner(rng.u64(..self.total()));
        // Draw over the total without the first endpoint's span, then step over that span.
        let (start, weight) = (self.start(first), self.weight(first));
        let draw = rng.u64(..self.total() - weight);
        let second = self.owner(if draw >= start { draw + weight } else { draw });
        (first, second)
    }

    fn total(&self) -> u64 {
        // `ends` is non-empty (see `new`).
        self.ends[self.ends.len() - 1]
    }

    fn start(&self, index: usize) -> u64 {
        if index == 0 { 0 } else { self.ends[index - 1] }
    }

    /// The endpoint whose span holds `draw`, which is below the total.
    fn owner(&self, draw: u64) -> usize {
        self.ends.partition_point(|&end| end <= draw)
    }
}
