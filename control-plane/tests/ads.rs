//! The ADS protocol as strait-cp speaks it, seen by a raw client: state of the world, version
//! and nonce per type, ACK and NACK, unchanged types not sent again, make-before-break order.

#![allow(clippy::unwrap_used)] // a failure is the test failing

use std::net::SocketAddr;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use strait_config::xds::type_url;
use strait_config::{Format, parse};
use strait_control_plane::server::{ControlPlane, Options};
use tokio::sync::mpsc;

fn config(endpoint: &str, timeout: &str) -> strait_config::Config {
    parse(
        &format!(
            "listeners:\n  - name: l\n    address: 127.0.0.1:8080\n    virtual_hosts:\n      - name: v\n        domains: [\"*\"]\n        routes:\n          - match: {{ prefix: / }}\n            cluster: up\n            timeout: {timeout}\nclusters:\n  - name: up\n    endpoints: [\"{endpoint}\"]\n"
        ),
        Format::Yaml,
    )
    .unwrap()
}

struct Client {
    tx: mpsc::UnboundedSender<DiscoveryRequest>,
    inbound: tonic::Streaming<DiscoveryResponse>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Self {
        let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let inbound = client
            .stream_aggregated_resources(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Self { tx, inbound }
    }

    fn send(&self, type_url: &str, names: &[&str], version: &str, nonce: &str, nack: Option<&str>) {
        self.tx
            .send(DiscoveryRequest {
                version_info: version.to_owned(),
                node: Some(Node {
                    id: "test-node".into(),
                    ..Default::default()
                }),
                resource_names: names.iter().map(|n| (*n).to_owned()).collect(),
                type_url: type_url.to_owned(),
                response_nonce: nonce.to_owned(),
                error_detail: nack.map(|m| RpcStatus {
                    code: 3,
                    message: m.to_owned(),
                    details: vec![],
                }),
                ..Default::default()
            })
            .unwrap();
    }

    async fn next(&mut self) -> DiscoveryResponse {
        tokio::time::timeout(Duration::from_secs(5), self.inbound.message())
            .await
            .expect("a response in time")
            .unwrap()
            .unwrap()
    }

    /// Asserts that nothing arrives for a while (what must not be sent again).
    async fn quiet(&mut self) {
        let next = tokio::time::timeout(Duration::from_millis(500), self.inbound.message()).await;
        assert!(next.is_err(), "unexpected response: {next:?}");
    }
}

#[tokio::test]
async fn ack_nack_and_unchanged_types_not_resent() {
    let cp = ControlPlane::start(config("127.0.0.1:7001", "5s"), &Options::loopback())
        .await
        .unwrap();
    let mut client = Client::connect(cp.xds_addr()).await;

    client.send(type_url::CLUSTER, &[], "", "", None);
    let cds = client.next().await;
    assert_eq!(cds.type_url, type_url::CLUSTER);
    assert_eq!(cds.resources.len(), 1);
    client.send(type_url::ENDPOINT, &["up"], "", "", None);
    let eds = client.next().await;
    assert_eq!(eds.type_url, type_url::ENDPOINT);
    assert_eq!(eds.resources.len(), 1);
    client.send(type_url::CLUSTER, &[], &cds.version_info, &cds.nonce, None);
    client.send(
        type_url::ENDPOINT,
        &["up"],
        &eds.version_info,
        &eds.nonce,
        None,
    );
    client.send(type_url::LISTENER, &[], "", "", None);
    let lds = client.next().await;
    assert_eq!(lds.type_url, type_url::LISTENER);
    // NACK the listeners: the reason is kept and shown, and the version is not sent again.
    client.send(
        type_url::LISTENER,
        &[],
        "",
        &lds.nonce,
        Some("listener l: no thanks"),
    );
    client.send(type_url::ROUTE, &["l"], "", "", None);
    let rds = client.next().await;
    assert_eq!(rds.type_url, type_url::ROUTE);
    client.send(type_url::ROUTE, &["l"], &rds.version_info, &rds.nonce, None);
    client.quiet().await;

    let nodes = cp.nodes().all();
    let node = &nodes["test-node"];
    assert_eq!(node.streams, 1);
    let cds_status = &node.types[type_url::CLUSTER];
    assert_eq!(cds_status.acked.as_deref(), Some(cds.version_info.as_str()));
    let nack = node.types[type_url::LISTENER].nack.as_ref().unwrap();
    assert_eq!(nack.message, "listener l: no thanks");
    assert_eq!(nack.version, lds.version_info);
    let shown = http_get(cp.admin_addr(), "/nodes").await;
    assert!(shown.contains("listener l: no thanks"), "{shown}");

    // Only the endpoints change: only EDS is sent.
    cp.set_config(config("127.0.0.1:7002", "5s"));
    let eds2 = client.next().await;
    assert_eq!(eds2.type_url, type_url::ENDPOINT);
    assert_ne!(eds2.version_info, eds.version_info);
    client.send(
        type_url::ENDPOINT,
        &["up"],
        &eds2.version_info,
        &eds2.nonce,
        None,
    );
    client.quiet().await;

    // Routes and endpoints change together: EDS before RDS (make before break), and the
    // NACKed listeners, unchanged, are still not sent.
    cp.set_config(config("127.0.0.1:7003", "9s"));
    let first = client.next().await;
    let second = client.next().await;
    assert_eq!(
        (first.type_url.as_str(), second.type_url.as_str()),
        (type_url::ENDPOINT, type_url::ROUTE)
    );
    cp.shutdown().await;
}

async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    out
}
