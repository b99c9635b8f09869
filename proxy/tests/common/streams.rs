//! Long-lived streams that must survive a reload or an upgrade: a WebSocket tunnel and a gRPC
//! bidi stream, both through the proxy, echoing each round.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use strait_testkit::EchoClient;
use tokio_tungstenite::tungstenite::Message;

type WebSocket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// A WebSocket on the route `/chat` and a gRPC bidi stream, opened through `addr`.
pub struct LongLived {
    ws: WebSocket,
    _grpc: EchoClient,
    tx: tokio::sync::mpsc::Sender<Bytes>,
    inbound: tonic::Streaming<Bytes>,
}

impl LongLived {
    pub async fn open(addr: SocketAddr) -> Self {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (ws, response) = tokio::time::timeout(
            Duration::from_secs(5),
            tokio_tungstenite::client_async(format!("ws://{addr}/chat"), stream),
        )
        .await
        .expect("websocket handshake in time")
        .unwrap();
        assert_eq!(response.status(), 101);
        let mut grpc = EchoClient::connect(format!("http://{addr}").parse().unwrap())
            .await
            .unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(1);
        let outbound = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let inbound = grpc.bidi(outbound).await.unwrap().into_inner();
        Self {
            ws,
            _grpc: grpc,
            tx,
            inbound,
        }
    }

    /// One message each way on both streams.
    pub async fn echo(&mut self, round: u8) {
        self.ws
            .send(Message::text(format!("ws {round}")))
            .await
            .unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(5), self.ws.next())
            .await
            .expect("websocket echo in time")
            .unwrap()
            .unwrap();
        assert_eq!(reply, Message::text(format!("ws {round}")));
        self.tx.send(Bytes::from(vec![round; 4])).await.unwrap();
        let echo = tokio::time::timeout(Duration::from_secs(5), self.inbound.next())
            .await
            .expect("grpc echo in time")
            .unwrap()
            .unwrap();
        assert_eq!(echo.as_ref(), [round; 4]);
    }

    /// Ends both: the gRPC stream half-closes and must end with OK; the WebSocket closes.
    pub async fn close(mut self) {
        drop(self.tx);
        let end = tokio::time::timeout(Duration::from_secs(5), self.inbound.next())
            .await
            .expect("bidi stream ends in time");
        assert!(end.is_none(), "the bidi stream ends with OK: {end:?}");
        self.ws.close(None).await.unwrap();
    }
}
