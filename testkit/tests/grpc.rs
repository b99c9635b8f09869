//! The gRPC echo server against its own tonic client: all four call kinds, metadata and
//! error details.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use http::uri::PathAndQuery;
use strait_testkit::grpc::{BytesCodec, fail_status};
use strait_testkit::{EchoClient, GrpcEcho, trace_init, within};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request};
use tracing::info;

const TEST_LIMIT: Duration = Duration::from_secs(20);

async fn client(server: &GrpcEcho) -> EchoClient {
    EchoClient::connect(server.uri())
        .await
        .expect("connecting to a local gRPC server")
}

#[tokio::test]
async fn unary_echoes_message_metadata_and_trailer() {
    let _trace = trace_init();
    within(TEST_LIMIT, "test", async {
        let server = GrpcEcho::start_named("g1").await;
        let mut client = client(&server).await;
        let mut req = Request::new(Bytes::from_static(b"hello"));
        req.metadata_mut().insert("x-echo", "abc".parse().unwrap());
        let response = client.unary(req).await.unwrap();
        assert_eq!(response.get_ref(), "hello");
        let metadata = response.metadata();
        assert_eq!(metadata.get("x-echo").unwrap(), "abc");
        assert_eq!(metadata.get("x-echo-trailer").unwrap(), "abc");
        assert_eq!(metadata.get("x-upstream").unwrap(), "g1");
        assert_eq!(server.calls_seen(), 1);

        info!("empty messages are valid");
        let response = client.unary(Bytes::new()).await.unwrap();
        assert!(response.get_ref().is_empty());
    })
    .await;
}

#[tokio::test]
async fn unary_fail_returns_status_with_details_and_metadata() {
    let _trace = trace_init();
    within(TEST_LIMIT, "test", async {
        let server = GrpcEcho::start().await;
        let mut client = client(&server).await;
        let mut req = Request::new(Bytes::from_static(b"fail"));
        req.metadata_mut().insert("x-echo", "why".parse().unwrap());
        let status = client.unary(req).await.unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(status.message(), "told to fail");
        assert_eq!(status.details(), b"detail-bytes");
        assert_eq!(status.details(), fail_status().details());
        assert_eq!(status.metadata().get("x-echo-trailer").unwrap(), "why");
    })
    .await;
}

#[tokio::test]
async fn server_stream_sends_first_byte_copies() {
    let _trace = trace_init();
    within(TEST_LIMIT, "test", async {
        let server = GrpcEcho::start().await;
        let mut client = client(&server).await;
        let mut req = Request::new(Bytes::from_static(b"\x03abc"));
        req.metadata_mut().insert("x-echo", "s".parse().unwrap());
        let response = client.server_stream(req).await.unwrap();
        assert_eq!(response.metadata().get("x-echo").unwrap(), "s");
        let mut stream = response.into_inner();
        let mut copies = Vec::new();
        while let Some(msg) = stream.message().await.unwrap() {
            copies.push(msg);
        }
        assert_eq!(copies, vec![Bytes::from_static(b"\x03abc"); 3]);
        let trailers = stream.trailers().await.unwrap().unwrap();
        assert_eq!(trailers.get("x-echo-trailer").unwrap(), "s");

        info!("first byte 0 gives an empty stream");
        let mut stream = client
            .server_stream(Bytes::from_static(b"\x00"))
            .await
            .unwrap()
            .into_inner();
        assert!(stream.message().await.unwrap().is_none());
    })
    .await;
}

#[tokio::test]
async fn client_stream_concatenates() {
    let _trace = trace_init();
    within(TEST_LIMIT, "test", async {
        let server = GrpcEcho::start().await;
        let mut client = client(&server).await;
        let parts = ["ab", "", "cd", "e"].map(|s: &'static str| Bytes::from_static(s.as_bytes()));
        let response = client
            .client_stream(futures_util::stream::iter(parts))
            .await
            .unwrap();
        assert_eq!(response.get_ref(), "abcde");
    })
    .await;
}

#[tokio::test]
async fn bidi_echoes_each_message_as_it_arrives() {
    let _trace = trace_init();
    within(TEST_LIMIT, "test", async {
        let server = GrpcEcho::start().await;
        let mut client = client(&server).await;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut echoes = client
            .bidi(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        for msg in ["one", "two", "three"] {
            info!(msg, "send and wait for its echo before sending the next");
            tx.send(Bytes::from(msg)).await.unwrap();
            assert_eq!(echoes.message().await.unwrap().unwrap(), msg);
        }
        drop(tx);
        assert!(echoes.message().await.unwrap().is_none());
    })
    .await;
}

#[tokio::test]
async fn bidi_fail_ends_call_with_status_after_echoes() {
    let _trace = trace_init();
    within(TEST_LIMIT, "test", async {
        let server = GrpcEcho::start().await;
        let mut client = client(&server).await;
        let mut req = Request::new(futures_util::stream::iter(
            ["a", "fail", "never"].map(|s: &'static str| Bytes::from_static(s.as_bytes())),
        ));
        req.metadata_mut().insert("x-echo", "b".parse().unwrap());
        let mut echoes = client.bidi(req).await.unwrap().into_inner();
        assert_eq!(echoes.next().await.unwrap().unwrap(), "a");
        let status = echoes.next().await.unwrap().unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(status.details(), b"detail-bytes");
        assert_eq!(status.metadata().get("x-echo-trailer").unwrap(), "b");
        assert!(echoes.next().await.is_none());
    })
    .await;
}

#[tokio::test]
async fn unknown_method_is_unimplemented() {
    let _trace = trace_init();
    within(TEST_LIMIT, "test", async {
        let server = GrpcEcho::start().await;
        let channel = tonic::transport::Endpoint::from(server.uri())
            .connect()
            .await
            .unwrap();
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.unwrap();
        let status = grpc
            .unary(
                Request::new(Bytes::new()),
                PathAndQuery::from_static("/strait.test.Echo/Nope"),
                BytesCodec,
            )
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unimplemented);
    })
    .await;
}
