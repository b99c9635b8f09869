//! The TCP-level fault endpoints, seen from the testkit's clients.

use std::io::ErrorKind;
use std::time::Duration;

use strait_testkit::{
    BlackHole, ClosedPort, ResetServer, assert_eventually, http1_client, raw_exchange, trace_init,
    within,
};
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;
use tracing::info;

const TEST_LIMIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn closed_port_refuses_connections() {
    let _trace = trace_init();
    within(TEST_LIMIT, "test", async {
        let closed = ClosedPort::new();
        let error = TcpStream::connect(closed.addr()).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::ConnectionRefused);
        assert!(http1_client(closed.addr()).await.is_err());
    })
    .await;
}

#[tokio::test]
async fn black_hole_accepts_and_never_answers() {
    let _trace = trace_init();
    within(TEST_LIMIT, "test", async {
        let hole = BlackHole::start().await;
        let client = http1_client(hole.addr())
            .await
            .unwrap()
            .with_timeout(Duration::from_millis(200));
        info!("a GET times out waiting for the response head");
        let start = tokio::time::Instant::now();
        let error = client.get("/").await.unwrap_err();
        assert!(start.elapsed() >= Duration::from_millis(200));
        assert!(error.to_string().contains("no response head"), "{error:#}");
        assert_eq!(hole.connections_seen(), 1);

        info!("raw bytes get no reply before the timeout");
        let reply = raw_exchange(
            hole.addr(),
            b"GET / HTTP/1.1\r\n\r\n",
            Duration::from_millis(100),
        )
        .await
        .unwrap();
        assert!(reply.is_empty());
        assert_eq!(hole.connections_seen(), 2);
    })
    .await;
}

#[tokio::test]
async fn reset_server_resets_each_connection() {
    let _trace = trace_init();
    within(TEST_LIMIT, "test", async {
        let reset = ResetServer::start().await;
        let mut stream = TcpStream::connect(reset.addr()).await.unwrap();
        assert_eventually!(reset.connections_seen() == 1);
        // The RST makes the next read fail with ECONNRESET rather than end cleanly.
        let mut buf = [0u8; 64];
        let error = stream.read(&mut buf).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::ConnectionReset);

        let client = http1_client(reset.addr()).await.unwrap();
        assert!(client.get("/").await.is_err());
        assert_eq!(reset.connections_seen(), 2);
    })
    .await;
}
