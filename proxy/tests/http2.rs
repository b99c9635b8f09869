//! The proxy's own HTTP/2 server (RFC 9113) against clients that break the protocol, flood it
//! or read slowly: malformed requests are reset and never reach an upstream, protocol errors
//! end the connection with the right GOAWAY, limits hold, windows are followed both ways, and
//! a client's reset cancels its upstream request.

#![allow(clippy::unwrap_used)] // test helpers unwrap: a failure is the test failing

mod common;

use std::time::Duration;

use common::h2raw::{self, Outcome, RawH2, block, get};
use common::{TestProxy, sample, scrape, single, with_limits};
use http_body_util::BodyExt;
use strait_testkit::{Upstream, eventually, h2c_client, pattern_byte, trace_init};
use tokio::time::Instant;

const LIMIT: Duration = Duration::from_secs(5);

/// A frame to send: type, flags, stream, payload.
type RawFrame = (u8, u8, u32, Vec<u8>);

#[tokio::test]
async fn malformed_requests_are_reset_and_never_reach_the_upstream() {
    let _trace = trace_init();
    let upstream = Upstream::start().await;
    let proxy = TestProxy::start(&single("http1", &[upstream.addr()]), 1);
    let mut client = RawH2::connect(proxy.addr()).await;
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut fields = get("/");
        fields.extend_from_slice(extra);
        fields
    };
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("upper-case name", with(&[("X-Upper", "1")])),
        ("connection", with(&[("connection", "keep-alive")])),
        ("keep-alive", with(&[("keep-alive", "timeout=5")])),
        (
            "transfer-encoding",
            with(&[("transfer-encoding", "chunked")]),
        ),
        ("upgrade", with(&[("upgrade", "websocket")])),
        ("te other than trailers", with(&[("te", "gzip")])),
        ("leading space in a value", with(&[("x-a", " b")])),
        ("unknown pseudo-field", with(&[(":protocol", "websocket")])),
        (
            "pseudo-field after a regular one",
            vec![
                (":method", "GET"),
                (":scheme", "http"),
                ("x-a", "b"),
                (":path", "/"),
            ],
        ),
        ("repeated :path", with(&[(":path", "/again")])),
        (
            "no :path",
            vec![(":method", "GET"), (":scheme", "http"), (":authority", "a")],
        ),
        (
            "no :scheme",
            vec![(":method", "GET"), (":authority", "a"), (":path", "/")],
        ),
        (
            "empty :path",
            vec![(":method", "GET"), (":scheme", "http"), (":path", "")],
        ),
        (
            "content-length with no body",
            with(&[("content-length", "5")]),
        ),
        (
            "two content-lengths",
            with(&[("content-length", "1"), ("content-length", "2")]),
        ),
    ];
    let mut id = 1;
    for (what, fields) in &cases {
        client.headers(id, fields, true).await;
        assert_eq!(
            client.outcome(id).await,
            Outcome::Reset(h2raw::PROTOCOL_ERROR),
            "{what}"
        );
        id += 2;
    }
    // The connection survives, and a valid request is the first the upstream sees (a request
    // forwarded before it would have arrived first).
    client.headers(id, &with(&[("x-fine", "yes")]), true).await;
    let Outcome::Response(status, _) = client.outcome(id).await else {
        panic!("the valid request was reset");
    };
    assert_eq!(status, 200);
    assert_eq!(
        upstream.requests_seen(),
        1,
        "only the valid request reached the upstream"
    );
    id += 2;

    // A body longer than its content-length.
    client
        .headers(id, &with(&[("content-length", "3")]), false)
        .await;
    client
        .send(h2raw::DATA, h2raw::END_STREAM, id, b"abcde")
        .await;
    assert_eq!(
        client.outcome(id).await,
        Outcome::Reset(h2raw::PROTOCOL_ERROR),
        "body past its length"
    );
    id += 2;
    // Shorter than its content-length.
    client
        .headers(id, &with(&[("content-length", "9")]), false)
        .await;
    client
        .send(h2raw::DATA, h2raw::END_STREAM, id, b"abc")
        .await;
    assert_eq!(
        client.outcome(id).await,
        Outcome::Reset(h2raw::PROTOCOL_ERROR),
        "body short of its length"
    );
    id += 2;
    // The connection still serves.
    client.headers(id, &get("/"), true).await;
    assert!(matches!(
        client.outcome(id).await,
        Outcome::Response(200, _)
    ));
    let metrics = scrape(&proxy).await;
    assert_eq!(
        sample(
            &metrics,
            r#"strait_http2_streams_reset_total{listener="test",by="proxy"}"#
        ),
        Some((cases.len() + 2) as f64),
        "every reset counted"
    );
}

#[tokio::test]
async fn protocol_errors_end_the_connection_with_their_goaway() {
    let _trace = trace_init();
    let upstream = Upstream::start().await;
    let proxy = TestProxy::start(&single("http1", &[upstream.addr()]), 1);
    let open = block(&get("/delay/1000"));
    let cases: Vec<(&str, Vec<RawFrame>, u32)> = vec![
        (
            "DATA on stream 0",
            vec![(h2raw::DATA, 0, 0, b"x".to_vec())],
            h2raw::PROTOCOL_ERROR,
        ),
        (
            "DATA on an idle stream",
            vec![(h2raw::DATA, 0, 9, b"x".to_vec())],
            h2raw::PROTOCOL_ERROR,
        ),
        (
            "a frame over 16 KiB",
            vec![(0xfa, 0, 0, vec![0; 16_385])],
            h2raw::FRAME_SIZE_ERROR,
        ),
        (
            "SETTINGS of 5 bytes",
            vec![(h2raw::SETTINGS, 0, 0, vec![0; 5])],
            h2raw::FRAME_SIZE_ERROR,
        ),
        (
            "PING of 7 bytes",
            vec![(h2raw::PING, 0, 0, vec![0; 7])],
            h2raw::FRAME_SIZE_ERROR,
        ),
        (
            "connection window past 2^31-1",
            vec![(
                h2raw::WINDOW_UPDATE,
                0,
                0,
                0x7fff_ffff_u32.to_be_bytes().to_vec(),
            )],
            h2raw::FLOW_CONTROL_ERROR,
        ),
        (
            "WINDOW_UPDATE of 0",
            vec![(h2raw::WINDOW_UPDATE, 0, 0, vec![0; 4])],
            h2raw::PROTOCOL_ERROR,
        ),
        (
            "an index past the HPACK tables",
            vec![(
                h2raw::HEADERS,
                h2raw::END_HEADERS | h2raw::END_STREAM,
                1,
                vec![0xff, 0x40],
            )],
            h2raw::COMPRESSION_ERROR,
        ),
        (
            "CONTINUATION without HEADERS",
            vec![(h2raw::CONTINUATION, h2raw::END_HEADERS, 1, open.clone())],
            h2raw::PROTOCOL_ERROR,
        ),
        (
            "a header block interrupted",
            vec![
                (h2raw::HEADERS, 0, 1, open.clone()),
                (h2raw::PING, 0, 0, vec![0; 8]),
            ],
            h2raw::PROTOCOL_ERROR,
        ),
        (
            "PUSH_PROMISE",
            vec![(h2raw::PUSH_PROMISE, h2raw::END_HEADERS, 1, vec![0; 4])],
            h2raw::PROTOCOL_ERROR,
        ),
        (
            "HEADERS on an even stream",
            vec![(
                h2raw::HEADERS,
                h2raw::END_HEADERS | h2raw::END_STREAM,
                2,
                open.clone(),
            )],
            h2raw::PROTOCOL_ERROR,
        ),
        (
            "empty DATA frames without end",
            std::iter::once((h2raw::HEADERS, h2raw::END_HEADERS, 1, open.clone()))
                .chain((0..200).map(|_| (h2raw::DATA, 0, 1, Vec::new())))
                .collect(),
            h2raw::ENHANCE_YOUR_CALM,
        ),
        (
            "an endless header block",
            std::iter::once((h2raw::HEADERS, 0, 1, open.clone()))
                .chain((0..20).map(|_| (h2raw::CONTINUATION, 0, 1, vec![0x40; 16_384])))
                .collect(),
            h2raw::ENHANCE_YOUR_CALM,
        ),
    ];
    let count = cases.len();
    for (what, frames, code) in cases {
        let mut client = RawH2::connect(proxy.addr()).await;
        for (kind, flags, stream, payload) in frames {
            client.send(kind, flags, stream, &payload).await;
        }
        assert_eq!(client.goaway().await, Some(code), "{what}");
        assert!(
            client.next().await.is_none(),
            "{what}: the connection closes after GOAWAY"
        );
    }
    // Only the stream the empty DATA frames follow was a request (it may have gone upstream
    // before the flood ended its connection).
    assert!(
        upstream.requests_seen() <= 1,
        "{} requests went upstream",
        upstream.requests_seen()
    );
    let metrics = scrape(&proxy).await;
    assert_eq!(
        sample(
            &metrics,
            r#"strait_http2_connection_errors_total{listener="test"}"#
        ),
        Some(count as f64),
        "every connection error counted"
    );
}

#[tokio::test]
async fn oversized_header_lists_get_431_and_streams_past_the_limit_are_refused() {
    let _trace = trace_init();
    let upstream = Upstream::start().await;
    let proxy = TestProxy::start(&single("http1", &[upstream.addr()]), 1);
    let mut client = RawH2::connect(proxy.addr()).await;

    // 70 KiB of fields (the limit is 64 KiB), in HEADERS and CONTINUATION frames.
    let big = "v".repeat(14 * 1024);
    let mut fields = get("/");
    let names = ["x-a", "x-b", "x-c", "x-d", "x-e"];
    fields.extend(names.iter().map(|name| (*name, big.as_str())));
    let encoded = block(&fields);
    let (first, rest) = encoded.split_at(16_384);
    client
        .send(h2raw::HEADERS, h2raw::END_STREAM, 1, first)
        .await;
    let chunks: Vec<&[u8]> = rest.chunks(16_384).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let flags = if i + 1 == chunks.len() {
            h2raw::END_HEADERS
        } else {
            0
        };
        client.send(h2raw::CONTINUATION, flags, 1, chunk).await;
    }
    let Outcome::Response(status, response) = client.outcome(1).await else {
        panic!("reset instead of 431");
    };
    assert_eq!(status, 431);
    assert!(
        response
            .iter()
            .any(|(name, value)| name == "x-strait-error" && value == "request_head_too_large"),
        "{response:?}"
    );

    // More than 100 fields.
    let many: Vec<String> = (0..101).map(|i| format!("x-{i}")).collect();
    let mut fields = get("/");
    fields.extend(many.iter().map(|name| (name.as_str(), "1")));
    client.headers(3, &fields, true).await;
    assert!(matches!(client.outcome(3).await, Outcome::Response(431, _)));

    // 100 streams may be open at once; the 101st is refused.
    let waiting = get("/delay/2000");
    for i in 0..100 {
        client.headers(5 + 2 * i, &waiting, true).await;
    }
    client.headers(205, &waiting, true).await;
    assert_eq!(
        client.outcome(205).await,
        Outcome::Reset(h2raw::REFUSED_STREAM)
    );
    assert!(
        eventually(LIMIT, || upstream.requests_seen() == 100).await,
        "the 100 streams reached the upstream, not the 431s: {}",
        upstream.requests_seen()
    );
}

#[tokio::test]
async fn response_bodies_wait_for_a_slow_readers_window() {
    let _trace = trace_init();
    let upstream = Upstream::start().await;
    let proxy = TestProxy::start(&single("http1", &[upstream.addr()]), 1);
    let tcp = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    // Windows of 1 KiB: the proxy may send no more until the client gives them back.
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(1024)
        .initial_connection_window_size(1024)
        .handshake::<_, bytes::Bytes>(tcp)
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let request = http::Request::get(format!("http://{}/bytes/300000", proxy.addr()))
        .body(())
        .unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    let response = tokio::time::timeout(LIMIT, response)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut received = Vec::new();
    let started = Instant::now();
    while let Some(chunk) = tokio::time::timeout(LIMIT, body.data()).await.unwrap() {
        let chunk = chunk.unwrap();
        assert!(
            chunk.len() <= 1024,
            "a frame past the window: {}",
            chunk.len()
        );
        received.extend_from_slice(&chunk);
        body.flow_control().release_capacity(chunk.len()).unwrap();
        assert!(started.elapsed() < Duration::from_secs(20), "too slow");
    }
    assert_eq!(received.len(), 300_000);
    assert!(
        received
            .iter()
            .enumerate()
            .all(|(i, &b)| b == pattern_byte(i as u64)),
        "the body arrives intact"
    );
}

#[tokio::test]
async fn a_client_reset_cancels_its_upstream_request() {
    let _trace = trace_init();
    let upstream = Upstream::builder().name("a").http1_only().start().await;
    let proxy = TestProxy::start(&single("http1", &[upstream.addr()]), 1);
    let mut client = RawH2::connect(proxy.addr()).await;
    client.headers(1, &get("/delay/4000"), true).await;
    assert!(
        eventually(LIMIT, || upstream.requests_seen() == 1).await,
        "the request never reached the upstream"
    );
    assert_eq!(upstream.connections_open(), 1);
    client
        .send(h2raw::RST_STREAM, 0, 1, &8_u32.to_be_bytes())
        .await;
    let reset = Instant::now();
    assert!(
        eventually(LIMIT, || upstream.connections_open() == 0).await,
        "the upstream connection stayed open"
    );
    assert!(
        reset.elapsed() < Duration::from_secs(2),
        "{:?}",
        reset.elapsed()
    );
    // The connection goes on.
    client.headers(3, &get("/"), true).await;
    assert!(matches!(client.outcome(3).await, Outcome::Response(200, _)));
    let metrics = scrape(&proxy).await;
    assert_eq!(
        sample(
            &metrics,
            r#"strait_http2_streams_reset_total{listener="test",by="client"}"#
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn responses_carry_date_and_length_and_no_connection_fields() {
    let _trace = trace_init();
    let upstream = Upstream::start().await;
    let proxy = TestProxy::start(&single("http1", &[upstream.addr()]), 1);
    let client = h2c_client(proxy.addr()).await.unwrap();
    let response = client.get("/bytes/5000").await.unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert!(headers.contains_key(http::header::DATE), "{headers:?}");
    assert_eq!(headers[http::header::CONTENT_LENGTH], "5000");
    for name in ["connection", "keep-alive", "transfer-encoding"] {
        assert!(!headers.contains_key(name), "{name} sent: {headers:?}");
    }
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), 5000);
    let head = client
        .send(
            http::Request::head(format!("http://{}/bytes/5000", proxy.addr()))
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()[http::header::CONTENT_LENGTH],
        "5000",
        "HEAD keeps the length"
    );
    assert!(
        head.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .is_empty()
    );
    for status in [204, 304] {
        let response = client.get(&format!("/status/{status}")).await.unwrap();
        assert_eq!(response.status(), status);
        assert!(
            !response
                .headers()
                .contains_key(http::header::CONTENT_LENGTH),
            "{status} with a length: {:?}",
            response.headers()
        );
    }
}

#[tokio::test]
async fn a_drain_sends_goaway_and_lets_open_streams_finish() {
    let _trace = trace_init();
    let upstream = Upstream::start().await;
    let proxy = TestProxy::start(&single("http1", &[upstream.addr()]), 1);
    let mut client = RawH2::connect(proxy.addr()).await;
    client.headers(1, &get("/delay/300"), true).await;
    assert!(
        eventually(LIMIT, || upstream.requests_seen() == 1).await,
        "the request never reached the upstream"
    );
    let stopping = tokio::task::spawn_blocking(move || proxy.stop());
    let mut goaway = None;
    let mut status = None;
    let mut ended = false;
    while let Some(frame) = client.next().await {
        match frame.kind {
            h2raw::GOAWAY => {
                assert!(status.is_none(), "GOAWAY comes before the response");
                let last = u32::from_be_bytes(frame.payload[..4].try_into().unwrap());
                goaway = Some((last, frame.code()));
            }
            h2raw::HEADERS => status = Some(client.status(&frame)),
            h2raw::DATA if frame.flags & h2raw::END_STREAM != 0 => ended = true,
            _ => {}
        }
    }
    assert_eq!(goaway, Some((1, 0)), "GOAWAY NO_ERROR naming stream 1");
    assert_eq!(status, Some(200), "the open stream was answered");
    assert!(ended, "its body ended before the connection closed");
    tokio::time::timeout(LIMIT, stopping)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_requests_fields_are_its_own_on_a_busy_connection() {
    let _trace = trace_init();
    let upstream = Upstream::start().await;
    let proxy = TestProxy::start(&single("http1", &[upstream.addr()]), 1);
    // Header maps of responses are reused for later requests' heads on the connection, and
    // the names of a request's fields for the next request's (when its raw names match).
    let client = h2c_client(proxy.addr()).await.unwrap();
    for i in 0..3 {
        let request = http::Request::get(format!("http://{}/bytes/10", proxy.addr()))
            .header("x-turn", i.to_string())
            .header(format!("x-name-{i}"), "named")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let response = client.send(request).await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.headers().contains_key("x-upstream"));
        response.into_body().collect().await.unwrap();
        let seen = upstream.last_request().unwrap();
        assert_eq!(seen.headers["x-turn"], i.to_string().as_str());
        let named: Vec<_> = (seen.headers.keys())
            .filter(|name| name.as_str().starts_with("x-name-"))
            .collect();
        assert_eq!(named, [format!("x-name-{i}").as_str()], "request {i}");
        for name in ["x-upstream", "date", "content-length"] {
            assert!(
                !seen.headers.contains_key(name),
                "request {i} carried the response's {name}: {:?}",
                seen.headers
            );
        }
    }
}

#[tokio::test]
async fn a_client_that_cancels_now_and_then_is_not_cut_off() {
    let _trace = trace_init();
    let upstream = Upstream::start().await;
    let proxy = TestProxy::start(&single("http1", &[upstream.addr()]), 1);
    let mut client = RawH2::connect(proxy.addr()).await;
    // Three times the reset limit (50), each cancel between answered requests.
    let mut id = 1;
    for _ in 0..150 {
        client.headers(id, &get("/"), true).await;
        assert!(
            matches!(client.outcome(id).await, Outcome::Response(200, _)),
            "stream {id}"
        );
        client.headers(id + 2, &get("/delay/1000"), true).await;
        client
            .send(h2raw::RST_STREAM, 0, id + 2, &8_u32.to_be_bytes())
            .await;
        id += 4;
    }
    client.headers(id, &get("/"), true).await;
    assert!(matches!(
        client.outcome(id).await,
        Outcome::Response(200, _)
    ));
}

#[tokio::test]
async fn a_stalled_stream_does_not_keep_an_idle_connection_open() {
    let _trace = trace_init();
    let upstream = Upstream::start().await;
    let proxy = TestProxy::start(&with_limits("idle_timeout: 300ms", upstream.addr()), 1);
    // The client never gives window back: the response stalls after 64 KiB and nothing moves.
    let mut client = RawH2::connect(proxy.addr()).await;
    client.headers(1, &get("/bytes/1000000"), true).await;
    assert!(matches!(client.outcome(1).await, Outcome::Response(200, _)));
    let active = r#"strait_downstream_connections_active{listener="test",worker="0"}"#;
    assert_eq!(sample(&scrape(&proxy).await, active), Some(1.0));
    // Idle: GOAWAY, then, with the stream still open, closed at the drain timeout (2 s).
    let mut closed = false;
    for _ in 0..60 {
        if sample(&scrape(&proxy).await, active) == Some(0.0) {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(closed, "the stalled connection stayed open");
    assert_eq!(client.goaway().await, Some(0), "GOAWAY NO_ERROR came first");
}

/// A small deterministic generator (xorshift64*), so that a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[tokio::test]
async fn random_frames_never_take_the_proxy_down() {
    let _trace = trace_init();
    let upstream = Upstream::start().await;
    let proxy = TestProxy::start(&single("http1", &[upstream.addr()]), 1);
    let valid = block(&get("/"));
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let (mut answered, mut reset, mut refused) = (0, 0, 0);
    // 1,000 connections of up to 12 frames each: mostly well-formed frames of every type
    // (requests with and without bodies, data, window updates, settings, pings, priorities,
    // resets), and now and then one with any type, flags, stream and payload.
    for connection in 0..1000 {
        let mut client = RawH2::connect(proxy.addr()).await;
        let mut next_stream = 1;
        for _ in 0..=rng.below(12) {
            let open = next_stream.max(3) - 2;
            let frame: (u8, u8, u32, Vec<u8>) = match rng.below(9) {
                0 | 1 => {
                    let id = next_stream;
                    next_stream += 2;
                    let end = if rng.below(2) == 0 {
                        h2raw::END_STREAM
                    } else {
                        0
                    };
                    (h2raw::HEADERS, h2raw::END_HEADERS | end, id, valid.clone())
                }
                2 => {
                    let len = rng.below(100) as usize;
                    let end = if rng.below(2) == 0 {
                        h2raw::END_STREAM
                    } else {
                        0
                    };
                    (h2raw::DATA, end, open, vec![b'x'; len])
                }
                3 => {
                    let increment = 1 + rng.below(100_000) as u32;
                    let stream = if rng.below(2) == 0 { 0 } else { open };
                    (
                        h2raw::WINDOW_UPDATE,
                        0,
                        stream,
                        increment.to_be_bytes().to_vec(),
                    )
                }
                4 => {
                    let mut payload = vec![0, 4]; // SETTINGS_INITIAL_WINDOW_SIZE
                    payload.extend_from_slice(&(rng.below(1 << 20) as u32).to_be_bytes());
                    payload.extend_from_slice(&[0, 1]); // SETTINGS_HEADER_TABLE_SIZE
                    payload.extend_from_slice(&(rng.below(8192) as u32).to_be_bytes());
                    (h2raw::SETTINGS, 0, 0, payload)
                }
                5 => (h2raw::PING, 0, 0, rng.next().to_be_bytes().to_vec()),
                6 => (0x2, 0, open, vec![0, 0, 0, 0, 16]), // PRIORITY
                7 => (h2raw::RST_STREAM, 0, open, 8_u32.to_be_bytes().to_vec()),
                _ => {
                    let payload: Vec<u8> = match rng.below(3) {
                        0 => (0..rng.below(40)).map(|_| rng.next() as u8).collect(),
                        1 => valid[..rng.below(valid.len() as u64) as usize].to_vec(),
                        _ => Vec::new(),
                    };
                    let stream = [0, 1, 2, 3, 5][rng.below(5) as usize];
                    (rng.below(11) as u8, rng.next() as u8, stream, payload)
                }
            };
            client.send(frame.0, frame.1, frame.2, &frame.3).await;
        }
        // Whatever the proxy answered, the connection ends or stays usable; read until
        // it goes quiet or closes.
        let mut frames = 0;
        while frames < 64 {
            match tokio::time::timeout(Duration::from_millis(20), client.next()).await {
                Ok(Some(frame)) => {
                    frames += 1;
                    match frame.kind {
                        h2raw::HEADERS => answered += 1,
                        h2raw::RST_STREAM => reset += 1,
                        h2raw::GOAWAY if frame.code() != 0 => refused += 1,
                        _ => {}
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        assert!(frames < 64, "connection {connection}: endless frames");
    }
    // The mix reached every kind of outcome: answered streams, stream errors, connection
    // errors.
    assert!(
        answered > 100 && reset > 10 && refused > 50,
        "answered {answered}, reset {reset}, connection errors {refused}"
    );
    // The proxy still serves, on HTTP/2 and HTTP/1.1.
    let h2 = h2c_client(proxy.addr()).await.unwrap();
    assert_eq!(h2.get("/").await.unwrap().status(), 200);
    let h1 = strait_testkit::http1_client(proxy.addr()).await.unwrap();
    assert_eq!(h1.get("/").await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_quiet_connection_frees_its_buffers_and_serves_again() {
    let _trace = trace_init();
    let upstream = Upstream::start().await;
    let proxy = TestProxy::start(&single("http1", &[upstream.addr()]), 1);
    let client = h2c_client(proxy.addr()).await.unwrap();
    for round in 0..3 {
        let response = client.get("/bytes/200000").await.unwrap();
        assert_eq!(response.status(), 200, "round {round}");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.len(), 200_000, "round {round}");
        assert!(
            body.iter()
                .enumerate()
                .all(|(i, &b)| b == pattern_byte(i as u64))
        );
        // Quiet for three of the idle sweep's ticks (250 ms): the connection frees its
        // buffers (downstream::PARK_AFTER) and makes them again for the next request.
        tokio::time::sleep(strait_proxy::downstream::PARK_AFTER * 3).await;
    }
    assert_eq!(upstream.requests_seen(), 3);
}
