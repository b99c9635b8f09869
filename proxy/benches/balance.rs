//! Endpoint picking: [`Balancer::pick`] for every policy over 10 and 1,000 endpoints.
//!
//! Endpoints carry weights 1, 2 and 3 in turn, so the weighted paths are exercised. The
//! consistent-hash policies get a different key hash on each pick (cycled from 4,096 precomputed
//! [`hash_key`]s); `least_request` reads in-flight counts from a slice, as the worker does.
//!
//! Run: `cargo bench -p strait-proxy --bench balance`; results go to benches/RESULTS.md.

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use strait_config::LbPolicy;
use strait_proxy::balance::{Balancer, hash_key};

const SIZES: [usize; 2] = [10, 1000];

const POLICIES: [(&str, LbPolicy); 5] = [
    ("round_robin", LbPolicy::RoundRobin),
    ("least_request", LbPolicy::LeastRequest),
    ("random", LbPolicy::Random),
    ("ring_hash", LbPolicy::RingHash),
    ("maglev", LbPolicy::Maglev),
];

fn endpoints(n: usize) -> Vec<(SocketAddr, u32)> {
    (0..n)
        .map(|i| {
            let [_, _, hi, lo] = u32::try_from(i).unwrap_or(u32::MAX).to_be_bytes();
            let addr = SocketAddr::from((Ipv4Addr::new(10, 0, hi, lo), 8080));
            (addr, u32::try_from(i % 3 + 1).unwrap_or(1))
        })
        .collect()
}

fn bench_pick(c: &mut Criterion) {
    let keys: Vec<u64> = (0..4096u32)
        .map(|i| hash_key(format!("user-{i}").as_bytes()))
        .collect();
    let mut group = c.benchmark_group("balance_pick");
    for n in SIZES {
        let endpoints = endpoints(n);
        let in_flight: Vec<u32> = (0..n).map(|i| u32::try_from(i % 7).unwrap_or(0)).collect();
        for (name, policy) in POLICIES {
            let mut balancer = Balancer::new(policy, &endpoints);
            let mut rng = fastrand::Rng::with_seed(7);
            let mut next = 0usize;
            group.bench_function(BenchmarkId::new(name, n), |b| {
                b.iter(|| {
                    next = (next + 1) % keys.len();
                    let hash = Some(keys[next]);
                    balancer.pick(black_box(hash), |i| in_flight[i], &mut rng)
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_pick);
criterion_main!(benches);
