//! DNS discovery: a cluster with `discovery: { dns: "localhost:PORT" }` gets the addresses the
//! system resolver gives for the name (here from /etc/hosts), sends them over EDS, and checks
//! their health.

#![allow(clippy::unwrap_used)] // a failure is the test failing

use std::net::SocketAddr;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::HealthStatus;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use prost::Message;
use strait_config::{Format, parse};
use strait_control_plane::server::{ControlPlane, Options};
use strait_testkit::{Upstream, trace_init};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_cluster_gets_the_resolved_addresses_with_their_health() {
    let _trace = trace_init();
    let upstream = Upstream::start().await;
    let port = upstream.addr().port();
    let config = parse(
        &format!(
            "listeners:\n  - name: l\n    address: 127.0.0.1:0\n    virtual_hosts:\n      - name: v\n        domains: [\"*\"]\n        routes:\n          - match: {{ prefix: / }}\n            cluster: web\nclusters:\n  - name: web\n    discovery: {{ dns: \"localhost:{port}\" }}\n    health_check: {{ protocol: tcp, interval: 200ms, timeout: 100ms }}\n"
        ),
        Format::Yaml,
    )
    .unwrap();
    let cp = ControlPlane::start(config, &Options::loopback())
        .await
        .unwrap();
    let expected = SocketAddr::from(([127, 0, 0, 1], port));
    let config = cp.sources().config();
    let cluster = config.cluster("web").unwrap();
    let resolved = strait_testkit::eventually(Duration::from_secs(10), || {
        cp.sources()
            .endpoints(cluster)
            .iter()
            .any(|e| e.address == expected && e.healthy)
    })
    .await;
    assert!(
        resolved,
        "localhost resolved to {expected}, checked healthy: {:?}",
        cp.sources().endpoints(cluster)
    );
    // And it is what EDS carries, once the snapshot is rebuilt.
    let in_eds = strait_testkit::eventually(Duration::from_secs(5), || {
        let snapshot = cp.snapshot();
        let Some(any) = snapshot.resource(strait_config::xds::type_url::ENDPOINT, "web") else {
            return false;
        };
        let Ok(assignment) = ClusterLoadAssignment::decode(any.value.as_slice()) else {
            return false;
        };
        assignment
            .endpoints
            .iter()
            .flat_map(|l| l.lb_endpoints.iter())
            .any(|e| e.health_status == HealthStatus::Healthy as i32)
    })
    .await;
    assert!(in_eds, "EDS carries the resolved, healthy endpoint");
    cp.shutdown().await;
}
