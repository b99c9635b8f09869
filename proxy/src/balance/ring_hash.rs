//! Consistent hashing on a ring, Ketama style.
//!
//! Each endpoint places points on a 64-bit ring: point `j` is the [`hash_key`](super::hash_key)
//! of the address (IP octets, then port) followed by `j` as a big-endian `u64`. A key belongs to
//! the first point at or after its hash, wrapping past the end. The number of points is the
//! endpoint's weight times `2^exp`, one `exp` for the whole ring, chosen so that the lightest
//! endpoint gets at least [`MIN_POINTS`] points and the ring stays under
//! [`MAX_POINTS`].
//!
//! `exp` depends only on the lightest weight (and on the cap, for very large clusters), not on the
//! number of endpoints or the total weight, unlike Envoy's `min_ring_size`. So adding or removing
//! an endpoint leaves every other endpoint's points where they were: only the keys of the removed
//! endpoint, or the keys the new one takes, move.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use super::KeyHasher;

/// Points for the lightest endpoint: its share of keys is off by about `1/sqrt(MIN_POINTS)`.
const MIN_POINTS: u64 = 256;
/// Bound on the whole ring, 12 bytes a point.
const MAX_POINTS: u64 = 1 << 20;
/// At this exponent every weight up to 1000 rounds up to a single point.
const MIN_EXP: i32 = -10;

/// A sorted ring over a non-empty endpoint list. Cloning shares it.
#[derive(Clone)]
pub(crate) struct RingHash {
    /// Point hashes, ascending.
    hashes: Arc<[u64]>,
    /// `owners[i]` is the endpoint index of point `hashes[i]`.
    owners: Arc<[u32]>,
}

impl RingHash {
    /// `endpoints` is non-empty and each weight is in 1..=1000.
    pub(crate) fn new(endpoints: &[(SocketAddr, u32)]) -> Self {
        let exp = exponent(endpoints.iter().map(|&(_, weight)| weight));
        let mut points: Vec<(u64, u32)> = Vec::new();
        for (index, &(addr, weight)) in endpoints.iter().enumerate() {
            // An endpoint list of 2^32 entries would need over 100 GB, so the index fits.
            let index = index as u32;
            for replica in 0..points_for(weight, exp) {
                let mut hasher = KeyHasher::new(0);
                hasher.write_addr(addr);
                hasher.write(&replica.to_be_bytes());
                points.push((hasher.finish(), index));
            }
        }
        // Stable, so on the (2^-64-unlikely) equal hash the earlier endpoint owns the point.
        points.sort_by_key(|&(hash, _)| hash);
        Self {
            hashes: points.iter().map(|&(hash, _)| hash).collect(),
            owners: points.iter().map(|&(_, owner)| owner).collect(),
        }
    }

    /// The endpoint owning the first point at or after `hash`.
    pub(crate) fn pick(&self, hash: u64) -> usize {
        let point = self.hashes.partition_point(|&point| point < hash);
        let point = if point == self.hashes.len() { 0 } else { point };
        self.owners[point] as usize
    }

    #[cfg(test)]
    pub(crate) fn points(&self) -> usize {
        self.hashes.len()
    }
}

impl fmt::Debug for RingHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingHash")
            .field("points", &self.hashes.len())
            .finish_non_exhaustive()
    }
}

/// The smallest exponent giving the lightest weight [`MIN_POINTS`], lowered until the ring fits
/// in [`MAX_POINTS`] (or every endpoint is down to one point).
pub(super) fn exponent(weights: impl Iterator<Item = u32> + Clone) -> i32 {
    // At least 1, so that the loop below ends even for a (clamped-away) weight of 0.
    let lightest = weights.clone().min().unwrap_or(1).max(1);
    let mut exp = MIN_EXP;
    while points_for(lightest, exp) < MIN_POINTS {
        exp += 1;
    }
    let total = |exp| {
        weights
            .clone()
            .map(|weight| points_for(weight, exp))
            .sum::<u64>()
    };
    while exp > MIN_EXP && total(exp) > MAX_POINTS {
        exp -= 1;
    }
    exp
}

/// `weight * 2^exp` points, rounded up, so at least one.
fn points_for(weight: u32, exp: i32) -> u64 {
    let weight = u64::from(weight);
    if exp >= 0 {
        weight << exp
    } else {
        weight.div_ceil(1 << -exp)
    }
}
