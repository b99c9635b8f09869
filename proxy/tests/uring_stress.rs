//! The io_uring backend under churn: 10,000 connections opened and closed, with clients that
//! reset mid-request and requests cancelled while their upstream call is in flight. Afterwards
//! the process's open fds, the driver's in-flight operations and its provided buffers held are
//! back where they started.
//! Runs on io_uring regardless of STRAIT_TEST_IO (it is the backend under test); it fails
//! where io_uring is unavailable, which CI's machines do not allow.

#![allow(clippy::unwrap_used)] // test helpers unwrap: a failure is the test failing

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::TestProxy;
use strait_proxy::IoMode;
use strait_testkit::{Upstream, trace_init};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

async fn one_connection(addr: SocketAddr, kind: usize) {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return;
    };
    match kind % 4 {
        // A full exchange, then close.
        0 => {
            let _ = stream
                .write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                .await;
            let mut sink = Vec::new();
            let _ =
                tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut sink)).await;
        }
        // A reset in the middle of the request head.
        1 => {
            let _ = stream
                .write_all(b"GET / HTTP/1.1\r\nHost: a\r\nX-Half: ")
                .await;
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
        }
        // A request whose upstream call is in flight when the client resets.
        2 => {
            let _ = stream
                .write_all(b"GET /delay/200 HTTP/1.1\r\nHost: a\r\n\r\n")
                .await;
            tokio::time::sleep(Duration::from_millis(5)).await;
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
        }
        // Connect and leave at once.
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_connections_leave_no_fd_or_operation_behind() {
    let _trace = trace_init();
    let upstream = Upstream::builder().name("a").http1_only().start().await;
    // No idle upstream connections are kept, so every fd the churn opens must be closed again.
    let clusters = format!(
        "- name: up\n  connect_timeout: 1s\n  pool: {{ max_idle: 0 }}\n  endpoints: [\"{}\"]\n",
        upstream.addr()
    );
    let yaml = common::config("- match: { prefix: / }\n  cluster: up\n", &clusters);
    let proxy = TestProxy::start_with(&yaml, 1, IoMode::Uring);
    let addr = proxy.addr();
    let shard = std::sync::Arc::clone(&proxy.server().shards()[0]);

    // Warm up (first-use allocations, the admin thread), then take the baseline.
    one_connection(addr, 0).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let fds_before = open_fds();
    let ops_before = shard.io_ops_in_flight.get();
    let held_before = shard.io_buffers_held.get();

    const TOTAL: usize = 10_000;
    const PARALLEL: usize = 50;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..TOTAL {
        if tasks.len() >= PARALLEL {
            tasks.join_next().await;
        }
        tasks.spawn(one_connection(addr, i));
    }
    while tasks.join_next().await.is_some() {}

    // Cancelled operations complete asynchronously; upstream calls for reset clients end when
    // their delay does. Wait (bounded) for everything to settle.
    let settled = strait_testkit::eventually(Duration::from_secs(20), || {
        open_fds() <= fds_before
            && shard.io_ops_in_flight.get() <= ops_before
            && shard.io_buffers_held.get() <= held_before
    })
    .await;
    assert!(
        settled,
        "fds {} (before {fds_before}), io_uring operations {} (before {ops_before}), \
         provided buffers held {} (before {held_before})",
        open_fds(),
        shard.io_ops_in_flight.get(),
        shard.io_buffers_held.get()
    );
    assert!(
        upstream.requests_seen() > TOTAL / 4,
        "full exchanges reached the upstream"
    );
    assert_eq!(shard.io_ops_in_flight.get(), ops_before);
    assert_eq!(held_before, 0, "an idle worker holds no provided buffer");
    assert_eq!(
        shard.io_buffers_held.get(),
        0,
        "every provided buffer went back"
    );
}
