//! The xDS conversion, both ways: every valid example config survives config → xDS → config
//! unchanged, and what Strait cannot honour is refused with the resource and field named.
#![cfg(feature = "xds")]
#![allow(clippy::unwrap_used)] // a failure is the test failing

use std::path::Path;

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::listener::v3 as listener;
use strait_config::xds::{self, EdsEndpoint, Resources};
use strait_config::{Config, Format, parse};

/// One listener and one cluster with two endpoints.
fn small() -> Config {
    parse(
        "listeners:\n  - name: l\n    address: 127.0.0.1:8080\n    virtual_hosts:\n      - name: v\n        domains: [\"*\"]\n        routes:\n          - match: { prefix: / }\n            cluster: up\nclusters:\n  - name: up\n    endpoints: [\"127.0.0.1:7001\", \"127.0.0.1:7002\"]\n",
        Format::Yaml,
    )
    .unwrap()
}

fn load(name: &str) -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/cases/valid")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    parse(&text, Format::from_path(&path)).unwrap()
}

/// The model as text, with what xDS does not carry left out: clusters from EDS say so, the
/// control plane's own settings (discovery, health checks, xds/registry) stay with it.
fn comparable(config: &Config) -> (String, Vec<String>) {
    let listeners = format!("{:?}", config.listeners());
    let clusters = config
        .clusters()
        .iter()
        .map(|c| {
            format!(
                "{} {:?} {:?} {:?} {:?} {:?} {:?}",
                c.name(),
                c.protocol(),
                c.lb(),
                c.hash_key(),
                c.endpoints(),
                c.connect_timeout(),
                c.pool()
            )
        })
        .collect();
    (listeners, clusters)
}

#[test]
fn every_valid_example_survives_the_round_trip() {
    for name in [
        "full.yaml",
        "minimal.yaml",
        "observability.yaml",
        "split.json",
        "io.yaml",
    ] {
        let config = load(name);
        let resources = xds::to_resources(&config);
        assert!(xds::missing(&resources).is_empty(), "{name}");
        let back = xds::from_resources(&resources).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(comparable(&back), comparable(&config), "{name}");
        for cluster in back.clusters() {
            assert_eq!(cluster.discovery(), Some(&strait_config::Discovery::Eds));
        }
        // And once more: the resources of the round-tripped config are the same resources.
        assert_eq!(
            xds::to_resources(&back),
            resources,
            "{name}: resources are stable"
        );
    }
}

#[test]
fn unhealthy_endpoints_are_left_out_and_an_empty_cluster_is_valid() {
    let config = small();
    let mut resources = xds::to_resources(&config);
    let cluster = resources.clusters[0].name.clone();
    resources.assignments = vec![xds::load_assignment(
        &cluster,
        &[
            EdsEndpoint {
                address: "127.0.0.1:7001".parse().unwrap(),
                weight: 2,
                healthy: true,
            },
            EdsEndpoint {
                address: "127.0.0.1:7002".parse().unwrap(),
                weight: 1,
                healthy: false,
            },
        ],
    )];
    let back = xds::from_resources(&resources).unwrap();
    let endpoints = back.cluster(&cluster).unwrap().endpoints();
    assert_eq!(endpoints.len(), 1);
    assert_eq!(endpoints[0].address(), "127.0.0.1:7001".parse().unwrap());
    assert_eq!(endpoints[0].weight(), 2);

    resources.assignments = vec![xds::load_assignment(&cluster, &[])];
    let back = xds::from_resources(&resources).unwrap();
    assert!(back.cluster(&cluster).unwrap().endpoints().is_empty());
}

#[test]
fn missing_routes_and_endpoints_hold_a_listener_back() {
    let config = small();
    let mut resources = xds::to_resources(&config);
    resources.routes.clear();
    resources.assignments.clear();
    let missing = xds::missing(&resources);
    assert!(
        missing
            .iter()
            .any(|m| m.starts_with("route configuration ")),
        "{missing:?}"
    );
    assert!(
        missing
            .iter()
            .any(|m| m.starts_with("endpoints of cluster ")),
        "{missing:?}"
    );
}

#[test]
fn what_strait_cannot_honour_is_refused_by_resource_and_field() {
    let config = load("minimal.yaml");
    let mut resources = xds::to_resources(&config);
    let chain = &mut resources.listeners[0].filter_chains[0];
    chain.transport_socket = Some(core::TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        ..Default::default()
    });
    resources.listeners.push(listener::Listener {
        name: "two-chains".into(),
        filter_chains: vec![Default::default(), Default::default()],
        ..Default::default()
    });
    let err = xds::from_resources(&resources).unwrap_err().to_string();
    assert!(err.contains("2 xDS problems"), "{err}");
    assert!(
        err.contains("transport_socket: TLS is not supported"),
        "{err}"
    );
    assert!(
        err.contains(
            "listener two-chains: filter_chains: exactly one filter chain is supported, got 2"
        ),
        "{err}"
    );
}

#[test]
fn an_invalid_config_in_resources_gets_the_validator_problems() {
    let config = small();
    let mut resources: Resources = xds::to_resources(&config);
    resources.clusters.clear();
    resources.assignments.clear();
    let err = xds::from_resources(&resources).unwrap_err().to_string();
    assert!(
        err.contains("E0203"),
        "a route names a missing cluster: {err}"
    );
}

#[test]
fn resources_encode_to_the_same_bytes_every_time() {
    use prost::Message;
    // Versions are hashes of the encoded resources: an unchanged config must not look changed.
    let config = load("full.yaml");
    let first = xds::to_resources(&config);
    for _ in 0..20 {
        let again = xds::to_resources(&config);
        for (a, b) in first.listeners.iter().zip(&again.listeners) {
            assert_eq!(a.encode_to_vec(), b.encode_to_vec());
        }
        for (a, b) in first.clusters.iter().zip(&again.clusters) {
            assert_eq!(a.encode_to_vec(), b.encode_to_vec());
        }
        for (a, b) in first.routes.iter().zip(&again.routes) {
            assert_eq!(a.encode_to_vec(), b.encode_to_vec());
        }
    }
}
