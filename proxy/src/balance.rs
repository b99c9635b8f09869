//! Endpoint picking: which endpoint of a cluster serves the next request.
//!
//! Sits between route and upstream in the request path: the route names a cluster, the cluster's
//! [`Balancer`] picks an endpoint index, and upstream connects to that endpoint. This is pure
//! logic: no I/O, no clock, no shared state. Each worker owns its balancers and passes in what a
//! pick depends on (the request's key hash, in-flight counts, a random generator), so tests replay
//! exact sequences with a seeded [`fastrand::Rng`].
//!
//! Consistent-hash placement (`ring_hash`, `maglev`) depends only on the endpoints' addresses and
//! weights, never on their order, the process or the Rust release, so every worker and every
//! proxy maps a key to the same endpoint. [`hash_key`] is the one hash function behind it.

use std::net::SocketAddr;

use strait_config::LbPolicy;

mod least_request;
mod maglev;
mod random;
mod ring_hash;
mod round_robin;
#[cfg(test)]
mod tests;

use self::least_request::LeastRequest;
use self::maglev::Maglev;
use self::random::WeightedRandom;
use self::ring_hash::RingHash;
use self::round_robin::RoundRobin;

/// The largest endpoint weight; the config model allows 1..=1000.
const MAX_WEIGHT: u32 = 1000;

/// Picks endpoints of one cluster for one worker.
///
/// Built once per cluster and snapshot. Cloning shares the precomputed ring or Maglev table, so
/// one build can serve every worker; each clone keeps its own round-robin position.
#[derive(Debug, Clone)]
pub struct Balancer {
    len: usize,
    policy: Policy,
}

/// Per-policy state. Every variant but `Empty` holds at least one endpoint.
#[derive(Debug, Clone)]
enum Policy {
    Empty,
    RoundRobin(RoundRobin),
    LeastRequest(LeastRequest),
    Random(WeightedRandom),
    /// Requests without a key hash fall back to the weighted random pick.
    RingHash(RingHash, WeightedRandom),
    Maglev(Maglev, WeightedRandom),
}

impl Balancer {
    /// Builds a balancer over `endpoints`, given as (address, weight) in cluster order. Picks
    /// return indices into this slice.
    ///
    /// `ring_hash` builds its ring and `maglev` its 65,537-entry table here, so this is the
    /// expensive step (about a millisecond for `maglev`); picks are cheap. Weights outside
    /// 1..=1000, which the config rejects, are clamped into it.
    pub fn new(policy: LbPolicy, endpoints: &[(SocketAddr, u32)]) -> Self {
        let endpoints: Vec<(SocketAddr, u32)> = endpoints
            .iter()
            .map(|&(addr, weight)| (addr, weight.clamp(1, MAX_WEIGHT)))
            .collect();
        let policy = if endpoints.is_empty() {
            Policy::Empty
        } else {
            let weights: Vec<u32> = endpoints.iter().map(|&(_, weight)| weight).collect();
            match policy {
                LbPolicy::RoundRobin => Policy::RoundRobin(RoundRobin::new(&weights)),
                LbPolicy::LeastRequest => Policy::LeastRequest(LeastRequest::new(&weights)),
                LbPolicy::Random => Policy::Random(WeightedRandom::new(&weights)),
                LbPolicy::RingHash => {
                    Policy::RingHash(RingHash::new(&endpoints), WeightedRandom::new(&weights))
                }
                LbPolicy::Maglev => {
                    Policy::Maglev(Maglev::new(&endpoints), WeightedRandom::new(&weights))
                }
            }
        };
        Self {
            len: endpoints.len(),
            policy,
        }
    }

    /// Picks an endpoint and returns its index, or `None` when the cluster has no endpoints.
    ///
    /// - `hash` is the request's [`hash_key`], used by `ring_hash` and `maglev`; without it they
    ///   pick at random by weight. Other policies ignore it.
    /// - `in_flight(i)` is the number of requests in flight to endpoint `i`, used by
    ///   `least_request` for the two endpoints it samples. Other policies never call it.
    /// - `rng` is the only source of randomness.
    pub fn pick(
        &mut self,
        hash: Option<u64>,
        in_flight: impl Fn(usize) -> u32,
        rng: &mut fastrand::Rng,
    ) -> Option<usize> {
        let index = match &mut self.policy {
            Policy::Empty => return None,
            Policy::RoundRobin(rr) => rr.pick(),
            Policy::LeastRequest(lr) => lr.pick(in_flight, rng),
            Policy::Random(random) => random.pick(rng),
            Policy::RingHash(ring, fallback) => match hash {
                Some(hash) => ring.pick(hash),
                None => fallback.pick(rng),
            },
            Policy::Maglev(table, fallback) => match hash {
                Some(hash) => table.pick(hash),
                None => fallback.pick(rng),
            },
        };
        Some(index)
    }

    /// The number of endpoints.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no endpoints, so every pick returns `None`.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Hashes a request's hash key (a header or cookie value, or the client IP's octets) for
/// [`Balancer::pick`].
///
/// FNV-1a over the bytes, then MurmurHash3's 64-bit finalizer so that every input bit reaches
/// every output bit. The value for given bytes is the same on every run, platform and release;
/// a golden test pins it, because a change would remap every key across a rolling upgrade.
pub fn hash_key(bytes: &[u8]) -> u64 {
    let mut hasher = KeyHasher::new(0);
    hasher.write(bytes);
    hasher.finish()
}

/// The streaming form of [`hash_key`], with a seed for independent hash families (Maglev's
/// offset and skip). Seed 0 gives [`hash_key`].
#[derive(Debug, Clone)]
struct KeyHasher {
    state: u64,
}

impl KeyHasher {
    const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

    fn new(seed: u64) -> Self {
        Self {
            state: Self::FNV_OFFSET_BASIS ^ fmix64(seed),
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.state ^= u64::from(byte);
            self.state = self.state.wrapping_mul(Self::FNV_PRIME);
        }
    }

    /// Writes the address as its IP octets then its port, big-endian. Unlike its `Display` form,
    /// this encoding cannot change with the Rust release.
    fn write_addr(&mut self, addr: SocketAddr) {
        match addr {
            SocketAddr::V4(v4) => self.write(&v4.ip().octets()),
            SocketAddr::V6(v6) => self.write(&v6.ip().octets()),
        }
        self.write(&addr.port().to_be_bytes());
    }

    fn finish(&self) -> u64 {
        fmix64(self.state)
    }
}

/// MurmurHash3's 64-bit finalizer: a bijection with full avalanche. `fmix64(0) == 0`.
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

/// A total order on addresses that, like [`KeyHasher::write_addr`], is ours rather than std's:
/// IPv4 before IPv6, then octets, then port.
fn addr_order(addr: &SocketAddr) -> (u8, [u8; 16], u16) {
    match addr {
        SocketAddr::V4(v4) => (4, v4.ip().to_ipv6_compatible().octets(), v4.port()),
        SocketAddr::V6(v6) => (6, v6.ip().octets(), v6.port()),
    }
}
