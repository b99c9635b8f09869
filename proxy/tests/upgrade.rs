//! Binary upgrade under load: a second `strait` takes the listening sockets of the first over
//! its upgrade socket, the first drains and exits 0, and no request fails on the way. A
//! WebSocket tunnel and a gRPC bidi stream opened before keep working until they close.

#![allow(clippy::unwrap_used)] // test helpers unwrap: a failure is the test failing

mod common;

use std::time::Duration;

use common::load::Load;
use common::process::{spawn_run, temp_dir};
use common::streams::LongLived;
use http_body_util::BodyExt;
use strait_testkit::{GrpcEcho, Upstream, http1_client, trace_init};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_hands_over_the_sockets_without_a_failed_request() {
    let _trace = trace_init();
    let up = Upstream::builder().name("up").start().await;
    let ws_up = Upstream::builder().name("ws").start().await;
    let grpc_up = GrpcEcho::start().await;
    let dir = temp_dir("upgrade");
    let config = dir.join("strait.yaml");
    std::fs::write(
        &config,
        format!(
            r#"listeners:
  - name: main
    address: 127.0.0.1:0
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: {{ prefix: /strait.test.Echo/ }}
            cluster: grpc
          - match: {{ prefix: /chat }}
            cluster: ws
          - match: {{ prefix: / }}
            cluster: up
clusters:
  - name: up
    endpoints: ["{}"]
  - name: ws
    endpoints: ["{}"]
  - name: grpc
    protocol: http2
    endpoints: ["{}"]
"#,
            up.addr(),
            ws_up.addr(),
            grpc_up.addr()
        ),
    )
    .unwrap();
    let socket = dir.join("upgrade.sock");
    let socket_arg = socket.to_str().unwrap();

    let io = common::process::io_arg();
    let common_args = ["--workers", "2", "--drain-timeout", "30", "--io", io];
    let (old, old_log) = spawn_run(
        &config,
        &[&common_args[..], &["--upgrade-socket", socket_arg]].concat(),
    );
    let addr = old_log.bound_address();
    old_log.wait_for(&["accepting binary upgrades"], Duration::from_secs(10));
    let admin_line = old_log.wait_for(&["admin API listening"], Duration::from_secs(10));

    let mut streams = LongLived::open(addr).await;
    streams.echo(0).await;

    let load = Load::start(addr, "/", 8, true);
    load.wait_for(500).await;

    let (new, new_log) = spawn_run(
        &config,
        &[
            &common_args[..],
            &["--upgrade-from", socket_arg, "--upgrade-socket", socket_arg],
        ]
        .concat(),
    );
    new_log.wait_for(&["took over from the old process"], Duration::from_secs(20));
    old_log.wait_for(
        &["took over the listening sockets; draining"],
        Duration::from_secs(5),
    );
    new_log.wait_for(
        &["listening on inherited sockets", "main"],
        Duration::from_secs(1),
    );
    // The admin API moved with its socket.
    let admin_addr = admin_line[admin_line.find("address=").unwrap() + 8..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    new_log.wait_for(
        &["admin API listening", &admin_addr],
        Duration::from_secs(1),
    );

    // Traffic goes on: the old process's kept-alive connections end with Connection: close
    // and reconnect to the new one.
    load.wait_for(1_000).await;
    streams.echo(1).await;
    let report = load.finish().await;
    report.assert_no_failure("binary upgrade");
    assert!(
        report.closed_cleanly >= 8,
        "every connection of the old process was closed cleanly: {}",
        report.closed_cleanly
    );

    // The long-lived streams still belong to the old process, which waits for them.
    streams.echo(2).await;
    streams.close().await;
    // Well within its 30 s drain deadline: it exits because its last connections closed.
    let exit = old.wait(Duration::from_secs(15)).await;
    assert_eq!(exit.code(), Some(0), "the old process drains and exits 0");

    // The new process serves on its own, and accepts the next upgrade.
    let client = http1_client(addr).await.unwrap();
    let response = client.get("/").await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"up");
    assert!(
        socket.exists(),
        "the new process listens for the next upgrade"
    );
    let mut new = new;
    new.signal("TERM");
    assert_eq!(new.wait(Duration::from_secs(35)).await.code(), Some(0));
}
