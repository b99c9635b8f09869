use std::collections::HashMap;
use std::iter::repeat_n;
use std::net::SocketAddr;

use proptest::prelude::*;
use strait_config::LbPolicy;

use super::{Balancer, hash_key};

const ALL_POLICIES: [LbPolicy; 5] = [
    LbPolicy::RoundRobin,
    LbPolicy::LeastRequest,
    LbPolicy::Random,
    LbPolicy::RingHash,
    LbPolicy::Maglev,
];

/// Endpoints 10.0.x.y:8080 with the given weights.
fn endpoints(weights: &[u32]) -> Vec<(SocketAddr, u32)> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &weight)| {
            let addr = SocketAddr::from(([10, 0, (i / 256) as u8, (i % 256) as u8], 8080));
            (addr, weight)
        })
        .collect()
}

fn idle(_: usize) -> u32 {
    0
}

fn picks(balancer: &mut Balancer, count: usize, rng: &mut fastrand::Rng) -> Vec<usize> {
    (0..count)
        .map(|_| {
            balancer
                .pick(None, idle, rng)
                .expect("endpoints are not empty")
        })
        .collect()
}

/// Each endpoint's share of `count` picks.
fn shares(
    balancer: &mut Balancer,
    count: usize,
    hash: impl Fn(usize) -> Option<u64>,
    in_flight: impl Fn(usize) -> u32 + Copy,
    seed: u64,
) -> Vec<f64> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut counts = vec![0usize; balancer.len()];
    for n in 0..count {
        counts[balancer
            .pick(hash(n), in_flight, &mut rng)
            .expect("endpoints are not empty")] += 1;
    }
    counts.iter().map(|&c| c as f64 / count as f64).collect()
}

fn expected_shares(weights: &[u32]) -> Vec<f64> {
    let total: u32 = weights.iter().sum();
    weights
        .iter()
        .map(|&w| f64::from(w) / f64::from(total))
        .collect()
}

fn assert_shares(actual: &[f64], expected: &[f64], tolerance: f64) {
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (a - e).abs() <= tolerance,
            "endpoint {i}: share {a:.4}, expected {e:.4} ± {tolerance}; all: {actual:?}"
        );
    }
}

/// The address each key maps to.
fn placement(policy: LbPolicy, endpoints: &[(SocketAddr, u32)], keys: &[u64]) -> Vec<SocketAddr> {
    let mut balancer = Balancer::new(policy, endpoints);
    let mut rng = fastrand::Rng::with_seed(0);
    keys.iter()
        .map(|&key| {
            let index = balancer
                .pick(Some(key), idle, &mut rng)
                .expect("endpoints are not empty");
            endpoints[index].0
        })
        .collect()
}

fn keys(count: u64) -> Vec<u64> {
    (0..count)
        .map(|n| hash_key(format!("user-{n}").as_bytes()))
        .collect()
}

fn proptest_config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Shrunk failures are printed; pin them as unit tests here instead of regression files.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// === empty and out-of-range input ===

#[test]
fn every_policy_picks_none_without_endpoints() {
    let mut rng = fastrand::Rng::with_seed(1);
    for policy in ALL_POLICIES {
        let mut balancer = Balancer::new(policy, &[]);
        assert!(balancer.is_empty());
        assert_eq!(balancer.pick(Some(7), idle, &mut rng), None, "{policy:?}");
        assert_eq!(balancer.pick(None, idle, &mut rng), None, "{policy:?}");
    }
}

// === round_robin ===

#[test]
fn round_robin_equal_weights_rotates() {
    let mut balancer = Balancer::new(LbPolicy::RoundRobin, &endpoints(&[1, 1, 1]));
    let mut rng = fastrand::Rng::with_seed(1);
    assert_eq!(
        picks(&mut balancer, 9, &mut rng),
        [0, 1, 2, 0, 1, 2, 0, 1, 2]
    );
}

#[test]
fn round_robin_follows_nginx_smooth_sequence() {
    let mut balancer = Balancer::new(LbPolicy::RoundRobin, &endpoints(&[5, 1, 1]));
    let mut rng = fastrand::Rng::with_seed(1);
    let cycle = [0, 0, 1, 0, 2, 0, 0];
    assert_eq!(picks(&mut balancer, 21, &mut rng), cycle.repeat(3));
}

#[test]
fn round_robin_is_deterministic_and_ignores_hash_and_load() {
    let mut balancer = Balancer::new(LbPolicy::RoundRobin, &endpoints(&[2, 3]));
    let mut rng = fastrand::Rng::with_seed(1);
    let busy_first = |i: usize| if i == 0 { 100 } else { 0 };
    let picked: Vec<usize> = (0..5)
        .map(|n| balancer.pick(Some(n), busy_first, &mut rng).unwrap())
        .collect();
    // NGINX's order for weights 2, 3: b a b a b.
    assert_eq!(picked, [1, 0, 1, 0, 1]);
}

#[test]
fn round_robin_weighted_shares() {
    let weights = [1, 2, 7];
    let mut balancer = Balancer::new(LbPolicy::RoundRobin, &endpoints(&weights));
    let actual = shares(&mut balancer, 100_000, |_| None, idle, 1);
    // Exact: 100,000 picks are 10,000 whole cycles.
    assert_shares(&actual, &expected_shares(&weights), 1e-12);
}

// === random ===

#[test]
fn random_weighted_shares() {
    let weights = [1, 2, 7];
    let mut balancer = Balancer::new(LbPolicy::Random, &endpoints(&weights));
    let actual = shares(&mut balancer, 100_000, |_| None, idle, 1);
    // One standard deviation is at most 0.0015 here; this is over six.
    assert_shares(&actual, &expected_shares(&weights), 0.01);
}

#[test]
fn random_equal_weights_is_uniform() {
    let weights = [4; 5];
    let mut balancer = Balancer::new(LbPolicy::Random, &endpoints(&weights));
    let actual = shares(&mut balancer, 100_000, |_| None, idle, 2);
    assert_shares(&actual, &expected_shares(&weights), 0.01);
}

// === least_request ===

#[test]
fn least_request_weighted_shares_when_idle() {
    let weights = [1, 2, 7];
    let mut balancer = Balancer::new(LbPolicy::LeastRequest, &endpoints(&weights));
    let actual = shares(&mut balancer, 100_000, |_| None, idle, 1);
    assert_shares(&actual, &expected_shares(&weights), 0.01);
}

#[test]
fn least_request_single_endpoint_is_always_picked() {
    let mut balancer = Balancer::new(LbPolicy::LeastRequest, &endpoints(&[5]));
    let mut rng = fastrand::Rng::with_seed(1);
    for _ in 0..100 {
        assert_eq!(balancer.pick(None, |_| 1_000, &mut rng), Some(0));
    }
}

#[test]
fn least_request_of_two_always_picks_the_idle_one() {
    let mut rng = fastrand::Rng::with_seed(1);
    for (in_flight, idle_one) in [([10, 0], 1), ([0, 10], 0)] {
        let mut balancer = Balancer::new(LbPolicy::LeastRequest, &endpoints(&[1, 1]));
        for _ in 0..1_000 {
            assert_eq!(
                balancer.pick(None, |i| in_flight[i], &mut rng),
                Some(idle_one)
            );
        }
    }
}

#[test]
fn least_request_compares_load_per_unit_of_weight() {
    let mut rng = fastrand::Rng::with_seed(1);
    // in_flight / weight: (1/1 vs 5/10) → 1, (2/1 vs 10/10) → 1, (1/1 vs 20/10) → 0.
    for (in_flight, lighter) in [([1, 5], 1), ([2, 10], 1), ([1, 20], 0)] {
        let mut balancer = Balancer::new(LbPolicy::LeastRequest, &endpoints(&[1, 10]));
        for _ in 0..1_000 {
            assert_eq!(
                balancer.pick(None, |i| in_flight[i], &mut rng),
                Some(lighter),
                "in_flight {in_flight:?}"
            );
        }
    }
}

#[test]
fn least_request_never_picks_the_busiest_of_several() {
    let in_flight = [0, 1, 2, 50];
    let mut balancer = Balancer::new(LbPolicy::LeastRequest, &endpoints(&[1, 1, 1, 1]));
    let actual = shares(&mut balancer, 60_000, |_| None, |i| in_flight[i], 1);
    // Of the six equally likely pairs, the endpoint ranked r-th least loaded wins 3 - r.
    assert_shares(&actual, &[3.0 / 6.0, 2.0 / 6.0, 1.0 / 6.0, 0.0], 0.01);
    assert_eq!(
        actual[3], 0.0,
        "the busiest endpoint loses every pair it is in"
    );
}

// === ring_hash and maglev ===

#[test]
fn consistent_hash_without_a_key_picks_at_random_by_weight() {
    let weights = [1, 2, 7];
    for policy in [LbPolicy::RingHash, LbPolicy::Maglev] {
        let mut balancer = Balancer::new(policy, &endpoints(&weights));
        let actual = shares(&mut balancer, 100_000, |_| None, idle, 1);
        assert_shares(&actual, &expected_shares(&weights), 0.01);
    }
}

#[test]
fn consistent_hash_moves_few_keys_when_an_endpoint_leaves() {
    let keys = keys(10_000);
    // Measured over removing each endpoint of 10, 8 and 3: ring_hash moves no other key (the
    // points per unit of weight follow the lightest weight, which did not change); maglev moves
    // at most 0.49% (mean 0.27% for 10), its table being thousands of times the endpoint count.
    for (policy, bound) in [(LbPolicy::RingHash, 0.0), (LbPolicy::Maglev, 0.01)] {
        for size in [10, 8, 3] {
            let all = endpoints(&vec![1; size]);
            let before = placement(policy, &all, &keys);
            for removed in 0..size {
                let mut rest = all.clone();
                let (gone, _) = rest.remove(removed);
                let after = placement(policy, &rest, &keys);
                let others = before.iter().zip(&after).filter(|(b, _)| **b != gone);
                let (stayed, moved) = others.fold((0, 0), |(stayed, moved), (b, a)| {
                    (stayed + 1, moved + usize::from(b != a))
                });
                let moved = moved as f64 / f64::from(stayed);
                assert!(
                    moved <= bound,
                    "{policy:?}: removing {gone} of {size} moved {moved:.4} of other keys"
                );
            }
        }
    }
}

#[test]
fn consistent_hash_respects_weights() {
    let keys = keys(100_000);
    let mut weights = [1; 10];
    weights[0] = 3;
    let endpoints = endpoints(&weights);
    for policy in [LbPolicy::RingHash, LbPolicy::Maglev] {
        let mut counts: HashMap<SocketAddr, usize> = HashMap::new();
        for addr in placement(policy, &endpoints, &keys) {
            *counts.entry(addr).or_default() += 1;
        }
        let heavy = counts[&endpoints[0].0] as f64;
        let light = (keys.len() as f64 - heavy) / 9.0;
        let ratio = heavy / light;
        assert!(
            (2.25..=3.75).contains(&ratio),
            "{policy:?}: weight 3 got {ratio:.3}x the keys of weight 1"
        );
        for (addr, _) in &endpoints[1..] {
            let share = counts[addr] as f64 / light;
            assert!(
                (0.75..=1.25).contains(&share),
                "{policy:?}: {addr} got {share:.3}x its share"
            );
        }
    }
}

#[test]
fn ring_hash_points_scale_with_the_lightest_weight() {
    use super::ring_hash::{RingHash, exponent};
    let ring = |weights: &[u32]| RingHash::new(&endpoints(weights)).points();
    // The lightest endpoint gets the first power-of-two multiple of its weight reaching 256
    // points; the others get their weight times the same factor.
    assert_eq!(ring(&[1; 10]), 10 * 256);
    assert_eq!(ring(&[1; 9]), 9 * 256);
    assert_eq!(ring(&[1, 3]), 4 * 256);
    assert_eq!(ring(&[100, 300]), 400 * 4);
    // Factors below one round each endpoint's points up: 1000 / 2 = 500.
    assert_eq!(ring(&[1000, 1000]), 1_000);
    // A ring over 2^20 points lowers the factor: 3,000 × 500 is too many, 3,000 × 250 fits.
    assert_eq!(exponent(repeat_n(1000, 2_000)), -1);
    assert_eq!(exponent(repeat_n(1000, 3_000)), -2);
    // Down to one point each, however many endpoints.
    assert_eq!(exponent(repeat_n(1000, 1_100_000)), -10);
}

/// Placement is pinned for fixed addresses and keys, including both ends of the ring. The values
/// agree with an independent Python model of both builds. A change remaps keys across a rolling
/// upgrade, so it must be deliberate.
#[test]
fn consistent_hash_placement_is_pinned() {
    let endpoints = endpoints(&[1, 2, 1, 1, 3]);
    let names = [
        "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi",
    ];
    let keys: Vec<u64> = names
        .iter()
        .map(|name| hash_key(name.as_bytes()))
        .chain((0..24).map(|n| hash_key(format!("key-{n}").as_bytes())))
        .chain([0, u64::MAX])
        .collect();
    let index_of = |addrs: Vec<SocketAddr>| -> Vec<usize> {
        addrs
            .iter()
            .map(|addr| endpoints.iter().position(|(a, _)| a == addr).unwrap())
            .collect()
    };
    #[rustfmt::skip]
    let ring = [
        4, 4, 1, 3, 2, 1, 4, 3,
        3, 4, 1, 0, 1, 1, 3, 1, 1, 1, 4, 4, 4, 4, 4, 4, 4, 1, 0, 1, 2, 4, 3, 4,
        4, 4,
    ];
    #[rustfmt::skip]
    let maglev = [
        4, 4, 1, 1, 0, 4, 2, 1,
        4, 2, 0, 4, 1, 1, 4, 1, 1, 1, 4, 2, 0, 0, 1, 1, 0, 3, 1, 4, 4, 1, 1, 2,
        4, 4,
    ];
    assert_eq!(
        index_of(placement(LbPolicy::RingHash, &endpoints, &keys)),
        ring
    );
    assert_eq!(
        index_of(placement(LbPolicy::Maglev, &endpoints, &keys)),
        maglev
    );
}

#[test]
fn ring_hash_wraps_past_the_last_point() {
    for weights in [[1; 3], [1, 2, 3], [5, 1, 1]] {
        let mut balancer = Balancer::new(LbPolicy::RingHash, &endpoints(&weights));
        let mut rng = fastrand::Rng::with_seed(0);
        let top = balancer.pick(Some(u64::MAX), idle, &mut rng);
        let bottom = balancer.pick(Some(0), idle, &mut rng);
        assert_eq!(top, bottom, "weights {weights:?}");
    }
}

// === hash_key ===

/// Golden values, computed once with an independent (Python) FNV-1a + fmix64: a change of hash
/// function remaps every consistent-hash key, so it must fail here first.
#[test]
fn hash_key_is_stable() {
    let golden: [(&[u8], u64); 5] = [
        (b"", 0xefd0_1f60_ba99_2926),
        (b"a", 0x82a2_a958_a9be_ce5b),
        (b"user-42", 0xa395_32c7_ab05_1e8d),
        (b"10.1.2.3", 0xf639_2774_8f53_5d54),
        (&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 0xc5b3_ddbf_ef09_c7d9),
    ];
    for (bytes, expected) in golden {
        assert_eq!(hash_key(bytes), expected, "hash_key({bytes:?})");
    }
}

#[test]
fn hash_key_spreads_similar_keys() {
    // Keys differing in one character land far apart: about half the bits differ.
    let a = hash_key(b"user-1");
    let b = hash_key(b"user-2");
    assert!((16..=48).contains(&(a ^ b).count_ones()), "{a:x} vs {b:x}");
}

// === properties ===

proptest! {
    #![proptest_config(proptest_config(64))]

    #[test]
    fn round_robin_cycles_give_exact_weights(weights in prop::collection::vec(1u32..=1000, 1..6)) {
        let total: u32 = weights.iter().sum();
        let mut balancer = Balancer::new(LbPolicy::RoundRobin, &endpoints(&weights));
        let mut rng = fastrand::Rng::with_seed(0);
        let first = picks(&mut balancer, total as usize, &mut rng);
        let mut counts = vec![0u32; weights.len()];
        for &i in &first {
            counts[i] += 1;
        }
        prop_assert_eq!(&counts, &weights);
        // The state returns to its start after a cycle, so the next cycle repeats it.
        prop_assert_eq!(picks(&mut balancer, total as usize, &mut rng), first);
    }

    #[test]
    fn random_picks_follow_weights(
        weights in prop::collection::vec(1u32..=1000, 1..8),
        seed in any::<u64>(),
    ) {
        const PICKS: usize = 20_000;
        for policy in [LbPolicy::Random, LbPolicy::LeastRequest] {
            let mut balancer = Balancer::new(policy, &endpoints(&weights));
            let actual = shares(&mut balancer, PICKS, |_| None, idle, seed);
            for (i, (a, e)) in actual.iter().zip(expected_shares(&weights)).enumerate() {
                // Five standard deviations, plus a little for tiny shares.
                let tolerance = 5.0 * (e * (1.0 - e) / PICKS as f64).sqrt() + 0.001;
                prop_assert!(
                    (a - e).abs() <= tolerance,
                    "{:?} endpoint {}: share {}, expected {} ± {}", policy, i, a, e, tolerance
                );
            }
        }
    }

    #[test]
    fn picks_are_in_range_whatever_the_input(
        weights in prop::collection::vec(any::<u32>(), 0..20),
        hash in any::<Option<u64>>(),
        load in prop::collection::vec(any::<u32>(), 20),
        seed in any::<u64>(),
    ) {
        let mut rng = fastrand::Rng::with_seed(seed);
        for policy in ALL_POLICIES {
            let mut balancer = Balancer::new(policy, &endpoints(&weights));
            prop_assert_eq!(balancer.len(), weights.len());
            for _ in 0..20 {
                let picked = balancer.pick(hash, |i| load[i], &mut rng);
                match picked {
                    None => prop_assert!(weights.is_empty()),
                    Some(i) => prop_assert!(i < weights.len()),
                }
            }
        }
    }
}

proptest! {
    // Each case builds two Maglev tables, about 15 ms each in a debug build.
    #![proptest_config(proptest_config(24))]

    #[test]
    fn consistent_hash_maps_a_key_to_one_address_whatever_the_order(
        keys in prop::collection::vec(any::<u64>(), 1..200),
        weights in prop::collection::vec(1u32..=20, 1..12),
        rotate in any::<prop::sample::Index>(),
    ) {
        let endpoints = endpoints(&weights);
        let mut reordered = endpoints.clone();
        reordered.reverse();
        reordered.rotate_left(rotate.index(endpoints.len()));
        let mut rng = fastrand::Rng::with_seed(0);
        for policy in [LbPolicy::RingHash, LbPolicy::Maglev] {
            let mut balancer = Balancer::new(policy, &endpoints);
            let mut other = Balancer::new(policy, &reordered);
            for &key in &keys {
                let first = balancer.pick(Some(key), idle, &mut rng).unwrap();
                let again = balancer.pick(Some(key), idle, &mut rng).unwrap();
                let elsewhere = other.pick(Some(key), idle, &mut rng).unwrap();
                prop_assert_eq!(first, again, "{:?} key {}", policy, key);
                prop_assert_eq!(
                    endpoints[first].0, reordered[elsewhere].0, "{:?} key {}", policy, key
                );
            }
        }
    }
}
