//! Interop: gRPC's own xDS resolver (Python grpcio, `xds:///echo`, a bootstrap file pointing at
//! strait-cp) gets the echo service's endpoints from strait-cp and spreads calls over them.
//!
//! Needs `python3` with `grpcio` (`pip install grpcio`; CI installs it). Set
//! `STRAIT_SKIP_GRPCIO=1` to skip where it cannot be had.

#![allow(clippy::unwrap_used)] // a failure is the test failing

use std::collections::BTreeMap;
use std::process::Command;

use strait_config::{Format, parse};
use strait_control_plane::server::{ControlPlane, Options};
use strait_testkit::{GrpcEcho, trace_init};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_proxyless_client_spreads_calls_over_strait_cp_endpoints() {
    let _trace = trace_init();
    if std::env::var_os("STRAIT_SKIP_GRPCIO").is_some() {
        eprintln!("STRAIT_SKIP_GRPCIO is set: not running the grpcio interop test");
        return;
    }
    let one = GrpcEcho::start_named("echo-1").await;
    let two = GrpcEcho::start_named("echo-2").await;
    let config = parse(
        &format!(
            "listeners:\n  - name: main\n    address: 127.0.0.1:0\n    virtual_hosts:\n      - name: echo\n        domains: [echo]\n        routes:\n          - match: {{ prefix: / }}\n            cluster: echo\nclusters:\n  - name: echo\n    protocol: http2\n    endpoints: [\"{}\", \"{}\"]\n",
            one.addr(),
            two.addr()
        ),
        Format::Yaml,
    )
    .unwrap();
    let cp = ControlPlane::start(config, &Options::loopback())
        .await
        .unwrap();

    let dir = std::env::temp_dir().join(format!("strait-grpc-xds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bootstrap = dir.join("bootstrap.json");
    std::fs::write(
        &bootstrap,
        serde_json::json!({
            "xds_servers": [{
                "server_uri": cp.xds_addr().to_string(),
                "channel_creds": [{ "type": "insecure" }],
                "server_features": ["xds_v3"],
            }],
            "node": { "id": "grpc-python", "cluster": "interop" },
        })
        .to_string(),
    )
    .unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/grpc/xds_client.py");
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .args(["echo", "40"])
            .env("GRPC_XDS_BOOTSTRAP", &bootstrap)
            .output()
    })
    .await
    .unwrap()
    .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the grpcio client failed (pip install grpcio, or set STRAIT_SKIP_GRPCIO=1):\n{stderr}"
    );
    let seen: BTreeMap<String, u32> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(seen.values().sum::<u32>(), 40, "{seen:?}");
    assert!(
        seen.get("echo-1").is_some_and(|n| *n >= 10)
            && seen.get("echo-2").is_some_and(|n| *n >= 10),
        "calls spread over both endpoints (round robin): {seen:?}"
    );
    let node = cp
        .nodes()
        .all()
        .remove("grpc-python")
        .expect("the client connected");
    for (kind, status) in &node.types {
        assert!(status.nack.is_none(), "{kind}: NACK {:?}", status.nack);
    }
    cp.shutdown().await;
}
