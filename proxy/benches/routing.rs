//! Route lookup: [`RouteTable::find`] on tables of 1, 100 and 10,000 routes.
//!
//! Each table is one listener with one `*` virtual host, compiled from generated YAML through
//! `strait_config::parse`, as the proxy builds it. Routes alternate prefix (`/svcN/`) and exact
//! (`/svcN/exact`) paths; tables of 100 routes or more also hold four regex routes
//! (`/reN/[0-9]+`) spread through the file. The requests match the first route, the one in the
//! middle, the last one, or none (which also tries every regex).
//!
//! Run: `cargo bench -p strait-proxy --bench routing`; results go to benches/RESULTS.md.

use std::fmt::Write as _;
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::HeaderMap;
use strait_config::{Format, parse};
use strait_proxy::route::{Request, RouteTable};

const SIZES: [usize; 3] = [1, 100, 10_000];

/// The path kind of route `i` in a table of `n` routes.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Prefix,
    Exact,
    Regex,
}

fn kind(i: usize, n: usize) -> Kind {
    // Four regexes, at 1/8, 3/8, 5/8 and 7/8 of the table, never first, middle or last.
    if n >= 100 && i % (n / 4) == n / 8 {
        Kind::Regex
    } else if i % 2 == 1 {
        Kind::Exact
    } else {
        Kind::Prefix
    }
}

/// The YAML of a listener with `n` routes, all sending to one cluster.
fn config_yaml(n: usize) -> String {
    let mut text = String::from(
        "listeners:\n  - name: bench\n    address: 127.0.0.1:0\n    virtual_hosts:\n      - name: all\n        domains: [\"*\"]\n        routes:\n",
    );
    for i in 0..n {
        let matcher = match kind(i, n) {
            Kind::Prefix => format!("prefix: /svc{i}/"),
            Kind::Exact => format!("path: /svc{i}/exact"),
            Kind::Regex => format!("regex: \"/re{i}/[0-9]+\""),
        };
        // Writing to a String cannot fail.
        let _ = writeln!(
            text,
            "          - match: {{ {matcher} }}\n            cluster: origin"
        );
    }
    text.push_str("clusters:\n  - name: origin\n    endpoints: [\"127.0.0.1:1\"]\n");
    text
}

/// A path that route `i` matches (and no earlier route does).
fn path_for(i: usize, n: usize) -> String {
    match kind(i, n) {
        Kind::Prefix => format!("/svc{i}/item/42"),
        Kind::Exact => format!("/svc{i}/exact"),
        Kind::Regex => format!("/re{i}/12345"),
    }
}

fn table(n: usize) -> RouteTable {
    let config = parse(&config_yaml(n), Format::Yaml)
        .unwrap_or_else(|e| panic!("generated config is invalid: {}", e.render("bench")));
    RouteTable::new(&config.listeners()[0])
}

fn bench_find(c: &mut Criterion) {
    let headers = HeaderMap::new();
    let mut group = c.benchmark_group("route_find");
    for n in SIZES {
        let table = table(n);
        let mut cases = vec![("first", Some(0))];
        if n > 1 {
            cases.push(("middle", Some(n / 2)));
            cases.push(("last", Some(n - 1)));
        }
        cases.push(("none", None));
        for (name, target) in cases {
            let path = target.map_or_else(|| "/nothing/here".to_owned(), |i| path_for(i, n));
            let req = Request {
                host: "api.example.com",
                path: &path,
                query: None,
                method: "GET",
                headers: &headers,
            };
            let found = table.find(&req).map(|(_, route, _)| route);
            assert_eq!(found, target, "{name} of {n} routes: {path}");
            group.bench_with_input(BenchmarkId::new(name, n), &req, |b, req| {
                b.iter(|| black_box(table.find(black_box(req))).map(|(_, i, _)| i));
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_find);
criterion_main!(benches);
