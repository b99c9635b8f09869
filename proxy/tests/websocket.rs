//! An HTTP/1.1 Upgrade (WebSocket) is tunnelled once the upstream answers 101.

#![allow(clippy::unwrap_used)] // test helpers unwrap: a failure is the test failing

mod common;

use common::{TestProxy, single};
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use strait_testkit::{Upstream, trace_init};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn websocket_echo_through_the_proxy() {
    let _trace = trace_init();
    let upstream = Upstream::builder().name("ws").start().await;
    let proxy = TestProxy::start(&single("http1", &[upstream.addr()]), 1);
    let stream = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let url = format!("ws://{}/chat", proxy.addr());
    let (mut ws, response) = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::client_async(url, stream),
    )
    .await
    .expect("handshake in time")
    .unwrap();
    assert_eq!(response.status(), 101);
    for i in 0..5 {
        ws.send(Message::text(format!("ping {i}"))).await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(reply, Message::text(format!("ping {i}")));
    }
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(reply, Message::binary(vec![1u8, 2, 3]));
    let seen = upstream.last_request().unwrap();
    assert_eq!(seen.header("upgrade"), Some("websocket"));
}
