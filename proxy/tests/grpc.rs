//! gRPC calls of every kind through the proxy, with status, details and metadata intact.

#![allow(clippy::unwrap_used)] // test helpers unwrap: a failure is the test failing

mod common;

use bytes::Bytes;
use common::{TestProxy, single};
use futures_util::StreamExt;
use strait_testkit::{EchoClient, GrpcEcho, trace_init};
use tonic::{Code, Request};
use tracing::info;

async fn client_via_proxy() -> (GrpcEcho, TestProxy, EchoClient) {
    let upstream = GrpcEcho::start().await;
    let proxy = TestProxy::start(&single("http2", &[upstream.addr()]), 1);
    let uri = format!("http://{}", proxy.addr()).parse().unwrap();
    let client = EchoClient::connect(uri).await.unwrap();
    (upstream, proxy, client)
}

#[tokio::test]
async fn unary_call_keeps_metadata_and_errors() {
    let _trace = trace_init();
    let (upstream, _proxy, mut client) = client_via_proxy().await;

    let mut request = Request::new(Bytes::from_static(b"hello"));
    request
        .metadata_mut()
        .insert("x-echo", "m1".parse().unwrap());
    let response = client.unary(request).await.unwrap();
    assert_eq!(response.metadata().get("x-echo").unwrap(), "m1");
    assert_eq!(response.get_ref(), &Bytes::from_static(b"hello"));

    info!("an error status with details and metadata comes back intact");
    let mut request = Request::new(Bytes::from_static(b"fail"));
    request
        .metadata_mut()
        .insert("x-echo", "m2".parse().unwrap());
    let status = client.unary(request).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(status.message(), "told to fail");
    assert_eq!(status.details(), b"detail-bytes");
    assert_eq!(status.metadata().get("x-echo-trailer").unwrap(), "m2");
    assert_eq!(upstream.calls_seen(), 2);
}

#[tokio::test]
async fn streaming_calls_of_every_kind() {
    let _trace = trace_init();
    let (_upstream, _proxy, mut client) = client_via_proxy().await;

    info!("server streaming");
    let response = client
        .server_stream(Bytes::from_static(&[5, b'x']))
        .await
        .unwrap();
    let messages: Vec<_> = response.into_inner().collect().await;
    assert_eq!(messages.len(), 5);
    assert!(
        messages
            .iter()
            .all(|m| m.as_ref().unwrap().as_ref() == [5, b'x'])
    );

    info!("client streaming");
    let parts = futures_util::stream::iter([&b"ab"[..], b"cd", b"ef"].map(Bytes::from_static));
    let response = client.client_stream(parts).await.unwrap();
    assert_eq!(response.into_inner(), Bytes::from_static(b"abcdef"));

    info!("bidi: each echo arrives before the next message is sent");
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let outbound = tokio_stream_from(rx);
    let response = client.bidi(outbound).await.unwrap();
    let mut inbound = response.into_inner();
    for i in 0..10u8 {
        tx.send(Bytes::from(vec![i; 3])).await.unwrap();
        let echo = tokio::time::timeout(std::time::Duration::from_secs(5), inbound.next())
            .await
            .expect("echo in time")
            .unwrap()
            .unwrap();
        assert_eq!(echo.as_ref(), [i; 3]);
    }
    drop(tx);
    assert!(
        inbound.next().await.is_none(),
        "stream ends with OK after the client half-closes"
    );
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Bytes>,
) -> impl futures_util::Stream<Item = Bytes> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Interop: a gRPC client not written here (Python grpcio, gRPC's C core) through the proxy's
/// HTTP/2 server. Needs `python3` with `grpcio` (CI installs it); `STRAIT_SKIP_GRPCIO=1` skips.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_client_calls_of_every_kind() {
    let _trace = trace_init();
    if std::env::var_os("STRAIT_SKIP_GRPCIO").is_some() {
        eprintln!("STRAIT_SKIP_GRPCIO is set: not running the grpcio interop test");
        return;
    }
    let upstream = GrpcEcho::start().await;
    let proxy = TestProxy::start(&single("http2", &[upstream.addr()]), 1);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/grpc/grpcio_client.py");
    let addr = proxy.addr().to_string();
    let run = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args([script, &addr])
            .output()
    });
    let output = tokio::time::timeout(std::time::Duration::from_secs(60), run)
        .await
        .expect("the grpcio client ends within 60 s")
        .unwrap()
        .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the grpcio client failed (pip install grpcio, or set STRAIT_SKIP_GRPCIO=1):\n{stderr}"
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "ok");
    // 1 unary + 1 failing + 1 large + 3 streams + 64 concurrent.
    assert_eq!(upstream.calls_seen(), 70);
}
