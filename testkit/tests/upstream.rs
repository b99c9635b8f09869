//! The upstream against the testkit's own HTTP/1.1 and h2c clients and a WebSocket client.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt as _, Full};
use strait_testkit::body::{read_body_bytes, summarize_body};
use strait_testkit::checksum::to_hex;
use strait_testkit::upstream::BodyEnd;
use strait_testkit::{
    Client, Upstream, assert_eventually, checksum, h2c_client, http1_client, parse_status,
    pattern_body, pattern_checksum, raw_exchange, trace_init, within,
};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tracing::info;

/// Bound on each whole test: every step inside has its own shorter timeout too.
const TEST_LIMIT: Duration = Duration::from_secs(20);

async fn both_clients(upstream: &Upstream) -> [Client; 2] {
    [
        http1_client(upstream.addr())
            .await
            .expect("HTTP/1.1 connect to upstream"),
        h2c_client(upstream.addr())
            .await
            .expect("h2c connect to upstream"),
    ]
}

#[tokio::test]
async fn default_path_answers_with_its_name_over_http1_and_h2c() {
    let _trace = trace_init();
    within(TEST_LIMIT, "test", async {
        let upstream = Upstream::builder().name("a").start().await;
        for client in both_clients(&upstream).await {
            info!(version = ?client.version(), "GET /hello");
            let response = client.get("/hello?x=1").await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.headers()["x-upstream"], "a");
            assert_eq!(read_body_bytes(response.into_body()).await.unwrap(), "a");

            let seen = upstream.last_request().unwrap();
            assert_eq!(seen.version, client.version());
            assert_eq!(seen.path(), "/hello");
            assert_eq!(seen.uri.query(), Some("x=1"));
            assert!(seen.body_complete());
        }
        assert_eq!(upstream.requests_seen(), 2);
        assert_eq!(upstream.connections_seen(), 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_streams_5_mib_back_with_matching_checksum() {
    let _trace = trace_init();
    within(TEST_LIMIT, "test", async {
        let upstream = Upstream::start().await;
        let len = 5 * 1024 * 1024;
        let expected = pattern_checksum(len);
        for client in both_clients(&upstream).await {
            info!(version = ?client.version(), "POST /echo with 5 MiB");
            let req = Request::post("/echo").body(pattern_body(len)).unwrap();
            let response = client.send(req).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let summary = summarize_body(response.into_body()).await.unwrap();
            assert_eq!((summary.len, summary.checksum), (len, expected));

            if client.version() == Version::HTTP_2 {
                let trailers = summary.trailers.expect("h2 echo sends trailers");
                assert_eq!(trailers["x-checksum"], to_hex(expected));
                assert_eq!(trailers["x-body-len"], len.to_string());
            } else {
                assert_eq!(summary.trailers, None, "no te: trailers, no trailers");
            }
            let seen = upstream.last_request().unwrap();
            assert_eq!(seen.body_end, BodyEnd::Complete);
            assert_eq!((seen.body_len, seen.body_checksum), (len, expected));
        }
    })
    .await;
}

#[tokio::test]
async fn echo_sends_trailers_over_http1_when_client_accepts_them() {
    let _trace = trace_init();
    within(TEST_LIMIT, "test", async {
        let upstream = Upstream::start().await;
        let client = http1_client(upstream.addr()).await.unwrap();
        let req = Request::post("/echo")
            .header("te", "trailers")
            .body(Full::new(Bytes::from_static(b"hello")))
            .unwrap();
        let response = client.send(req).await.unwrap();
        assert_eq!(response.headers()["transfer-encoding"], "chunked");
        let summary = summarize_body(response.into_body()).await.unwrap();
        assert_eq!(summary.checksum, checksum(b"hello"));
        let trailers = summary.trailers.expect("chunked echo with te: trailers");
        assert_eq!(trailers["x-checksum"], to_hex(checksum(b"hello")));
    })
    .await;
}

#[tokio::test]
async fn bytes_status_and_delay_paths() {
    let _trace = trace_init();
    within(TEST_LIMIT, "test", async {
        let upstream = Upstream::start().await;
        for client in both_clients(&upstream).await {
            info!(version = ?client.version(), "GET /bytes/200000");
            let response = client.get("/bytes/200000").await.unwrap();
            assert_eq!(response.headers()["content-length"], "200000");
            let summary = summarize_body(response.into_body()).await.unwrap();
            assert_eq!(
                (summary.len, summary.checksum),
                (200_000, pattern_checksum(200_000))
            );

            info!("GET /status/503 and a bad /status");
            assert_eq!(client.get("/status/503").await.unwrap().status(), 503);
            assert_eq!(client.get("/status/204").await.unwrap().status(), 204);
            assert_eq!(client.get("/status/nope").await.unwrap().status(), 400);

            info!("GET /delay/50");
            let start = tokio::time::Instant::now();
            let response = client.get("/delay/50").await.unwrap();
            assert_eq!(response.status(), 200);
            assert!(start.elapsed() >= Duration::from_millis(50));
        }
    })
    .await;
}

#[tokio::test]
async fn trailers_path_sends_trailers_on_h2_and_on_http1_with_te() {
    let _trace = trace_init();
    within(TEST_LIMIT, "test", async {
        let upstream = Upstream::start().await;
        let h2 = h2c_client(upstream.addr()).await.unwrap();
        let body = h2
            .get("/trailers")
            .await
            .unwrap()
            .into_body()
            .collect()
            .await
            .unwrap();
        assert_eq!(body.trailers().unwrap()["x-trailer"], "yes");
        assert_eq!(body.to_bytes(), "ok");

        let h1 = http1_client(upstream.addr()).await.unwrap();
        let req = Request::get("/trailers")
            .header("te", "trailers")
            .body(Full::<Bytes>::default())
            .unwrap();
        let body = h1
            .send(req)
            .await
            .unwrap()
            .into_body()
            .collect()
            .await
            .unwrap();
        assert_eq!(body.trailers().unwrap()["x-trailer"], "yes");
    })
    .await;
}

#[tokio::test]
async fn reset_mid_body_cuts_the_response_after_64_kib() {
    let _trace = trace_init();
    within(TEST_LIMIT, "test", async {
        let upstream = Upstream::start().await;
        for client in both_clients(&upstream).await {
            info!(version = ?client.version(), "GET /reset-mid-body");
            let response = client.get("/reset-mid-body").await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.headers()["content-length"], "1048576");
            let mut body = response.into_body();
            let mut received = 0;
            let error = loop {
                match body.frame().await {
                    Some(Ok(frame)) => received += frame.into_data().map_or(0, |d| d.len()),
                    Some(Err(e)) => break e,
                    None => panic!("body ended cleanly after {received} bytes"),
                }
            };
            info!(%error, received, "body failed as intended");
            assert_eq!(received, 64 * 1024);
        }
    })
    .await;
}

#[tokio::test]
async fn abort_drops_the_exchange_and_abort_first_counts_down() {
    let _trace = trace_init();
    within(TEST_LIMIT, "test", async {
        let upstream = Upstream::builder().abort_first(1).start().await;

        info!("h1: the first request is aborted, the connection closes");
        let h1 = http1_client(upstream.addr()).await.unwrap();
        assert!(h1.get("/").await.is_err());
        assert_eventually!(h1.is_closed());
        let h1 = http1_client(upstream.addr()).await.unwrap();
        assert_eq!(h1.get("/").await.unwrap().status(), 200);
        assert_eq!(upstream.requests_seen(), 2);

        info!("h2: /abort resets the stream, the connection stays usable");
        let h2 = h2c_client(upstream.addr()).await.unwrap();
        assert!(h2.get("/abort").await.is_err());
        assert_eq!(h2.get("/").await.unwrap().status(), 200);
        assert_eq!(upstream.requests_seen(), 4);
        assert_eq!(upstream.connections_seen(), 3);
    })
    .await;
}

#[tokio::test]
async fn records_request_body_progress_and_errors() {
    let _trace = trace_init();
    within(TEST_LIMIT, "test", async {
        let upstream = Upstream::start().await;
        let client = http1_client(upstream.addr()).await.unwrap();
        let req = Request::post("/upload")
            .header("x-test", "1")
            .body(Full::new(Bytes::from_static(b"payload")))
            .unwrap();
        assert_eq!(client.send(req).await.unwrap().status(), 200);
        let seen = upstream.last_request().unwrap();
        assert_eq!(seen.header("x-test"), Some("1"));
        assert_eq!(seen.method, "POST");
        assert_eq!(
            (seen.body_len, seen.body_checksum),
            (7, checksum(b"payload"))
        );
        assert_eq!(seen.body_end, BodyEnd::Complete);

        info!("a client that promises 100 bytes, sends 4 and closes");
        let partial = b"POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nabcd";
        let reply = raw_exchange(upstream.addr(), partial, Duration::from_millis(200)).await;
        assert!(
            reply.unwrap().is_empty(),
            "no response to an incomplete body"
        );
        assert_eventually!(upstream.requests_seen() == 2);
        // raw_exchange closed the socket when it returned; the upstream notices the EOF.
        assert_eventually!(matches!(
            upstream.last_request().unwrap().body_end,
            BodyEnd::Errored(_)
        ));
        assert_eq!(upstream.last_request().unwrap().body_len, 4);
    })
    .await;
}

#[tokio::test]
async fn malformed_request_gets_400_from_raw_exchange() {
    let _trace = trace_init();
    within(TEST_LIMIT, "test", async {
        let upstream = Upstream::start().await;
        let reply = raw_exchange(upstream.addr(), b"NOT HTTP\r\n\r\n", Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(
            parse_status(&reply),
            Some(400),
            "{}",
            String::from_utf8_lossy(&reply)
        );
        assert_eq!(upstream.requests_seen(), 0);
    })
    .await;
}

#[tokio::test]
async fn protocol_restricted_upstreams_refuse_the_other_protocol() {
    let _trace = trace_init();
    within(TEST_LIMIT, "test", async {
        let h1_only = Upstream::builder().http1_only().start().await;
        let h2 = h2c_client(h1_only.addr()).await;
        assert!(h2.is_err() || h2.unwrap().get("/").await.is_err());

        let h2_only = Upstream::builder().h2c_only().start().await;
        let h1 = http1_client(h2_only.addr()).await.unwrap();
        assert!(h1.get("/").await.is_err());
        assert_eq!(h2_only.requests_seen(), 0);
        let h2 = h2c_client(h2_only.addr()).await.unwrap();
        assert_eq!(h2.get("/").await.unwrap().status(), 200);
    })
    .await;
}

#[tokio::test]
async fn websocket_upgrade_echoes_text_and_binary() {
    let _trace = trace_init();
    within(TEST_LIMIT, "test", async {
        let upstream = Upstream::builder().name("ws").start().await;
        let tcp = TcpStream::connect(upstream.addr()).await.unwrap();
        let url = format!("ws://{}/chat", upstream.addr());
        let (mut ws, response) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(response.headers()["x-upstream"], "ws");

        ws.send(Message::text("hello")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
        ws.send(Message::binary(vec![0u8, 1, 2, 255]))
            .await
            .unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::binary(vec![0u8, 1, 2, 255])
        );
        ws.close(None).await.unwrap();
        while let Some(msg) = ws.next().await {
            assert!(
                msg.is_ok_and(|m| m.is_close()),
                "only a close reply after close"
            );
        }
        assert_eq!(upstream.last_request().unwrap().path(), "/chat");
    })
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn dropping_the_upstream_closes_its_port() {
    let _trace = trace_init();
    within(TEST_LIMIT, "test", async {
        let upstream = Upstream::start().await;
        let addr = upstream.addr();
        let client = http1_client(addr).await.unwrap();
        assert_eq!(client.get("/").await.unwrap().status(), 200);
        drop(upstream);
        assert_eventually!(client.is_closed());
        assert!(TcpStream::connect(addr).await.is_err());
    })
    .await;
}
