//! Large bodies stream both ways through the proxy, checked end to end by checksum.

#![allow(clippy::unwrap_used)] // test helpers unwrap: a failure is the test failing

mod common;

use common::{TestProxy, single};
use http::Request;
use std::time::Duration;
use strait_testkit::{
    Upstream, h2c_client, http1_client, pattern_body, pattern_checksum, read_body_checksum,
    trace_init,
};
use tracing::info;

const LEN: u64 = 50 * 1024 * 1024;

async fn echo_50mib(client: strait_testkit::Client, upstream: &Upstream) {
    let client = client.with_timeout(Duration::from_secs(60));
    let request = Request::post("/echo").body(pattern_body(LEN)).unwrap();
    let response = client.send(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let (len, sum) = tokio::time::timeout(
        Duration::from_secs(60),
        read_body_checksum(response.into_body()),
    )
    .await
    .expect("echo body within 60 s")
    .unwrap();
    assert_eq!(len, LEN);
    assert_eq!(sum, pattern_checksum(LEN));
    let seen = upstream.last_request().unwrap();
    assert_eq!(seen.body_len, LEN);
    assert_eq!(seen.body_checksum, pattern_checksum(LEN));

    let response = client.get(&format!("/bytes/{LEN}")).await.unwrap();
    let (len, sum) = read_body_checksum(response.into_body()).await.unwrap();
    assert_eq!((len, sum), (LEN, pattern_checksum(LEN)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_mib_streams_both_ways_over_http1() {
    let _trace = trace_init();
    let upstream = Upstream::builder().name("a").http1_only().start().await;
    let proxy = TestProxy::start(&single("http1", &[upstream.addr()]), 1);
    info!("HTTP/1.1 downstream and upstream");
    echo_50mib(http1_client(proxy.addr()).await.unwrap(), &upstream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_mib_streams_both_ways_over_http2() {
    let _trace = trace_init();
    let upstream = Upstream::builder().name("a").h2c_only().start().await;
    let proxy = TestProxy::start(&single("http2", &[upstream.addr()]), 1);
    info!("h2c downstream and upstream");
    echo_50mib(h2c_client(proxy.addr()).await.unwrap(), &upstream).await;
}
