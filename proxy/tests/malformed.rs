//! Malformed or ambiguous HTTP/1.1 requests get 400/431 and never reach the upstream; the
//! connection is closed where RFC 9112 says so.

#![allow(clippy::unwrap_used)] // test helpers unwrap: a failure is the test failing

mod common;

use std::time::Duration;

use common::{TestProxy, single};
use strait_testkit::{Upstream, parse_status, raw_exchange, trace_init};

struct Case {
    name: &'static str,
    request: Vec<u8>,
    status: u16,
}

fn case(name: &'static str, request: &str, status: u16) -> Case {
    Case {
        name,
        request: request.as_bytes().to_vec(),
        status,
    }
}

fn cases() -> Vec<Case> {
    let mut cases = vec![
        case(
            "content-length with transfer-encoding",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        case(
            "transfer-encoding with content-length",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
            400,
        ),
        case(
            "differing duplicate content-length",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
            400,
        ),
        case(
            "space in header name",
            "GET / HTTP/1.1\r\nHost: a\r\nBad Name: 1\r\n\r\n",
            400,
        ),
        case(
            "control byte in header value",
            "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x01b\r\n\r\n",
            400,
        ),
        case(
            "bad chunk size",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nabc\r\n0\r\n\r\n",
            400,
        ),
        case(
            "unsupported transfer-encoding",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nabc",
            400,
        ),
        case("missing host", "GET / HTTP/1.1\r\n\r\n", 400),
        case(
            "garbage request line",
            "GET/ HTTP/1.1 x\r\nHost: a\r\n\r\n",
            400,
        ),
        case("not http/1.x", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        case(
            "transfer-encoding in http/1.0",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        case(
            "connect method",
            "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\nConnection: close\r\n\r\n",
            405,
        ),
    ];
    let big = "a".repeat(70 * 1024);
    cases.push(Case {
        name: "oversized head",
        request: format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {big}\r\n\r\n").into_bytes(),
        status: 431,
    });
    let many: String = (0..101).map(|i| format!("X-H{i}: v\r\n")).collect();
    cases.push(Case {
        name: "too many header fields",
        request: format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n").into_bytes(),
        status: 431,
    });
    cases
}

#[tokio::test]
async fn malformed_requests_are_rejected_before_the_upstream() {
    let _trace = trace_init();
    let upstream = Upstream::builder().name("a").http1_only().start().await;
    let proxy = TestProxy::start(&single("http1", &[upstream.addr()]), 1);
    let mut failures = Vec::new();
    for case in cases() {
        let response = raw_exchange(proxy.addr(), &case.request, Duration::from_secs(3))
            .await
            .unwrap();
        let status = parse_status(&response);
        if status != Some(case.status) {
            failures.push(format!(
                "{}: expected {}, got {status:?}",
                case.name, case.status
            ));
        }
        if upstream.requests_seen() != 0 {
            failures.push(format!("{}: reached the upstream", case.name));
            break;
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[tokio::test]
async fn a_valid_request_on_the_same_path_does_reach_the_upstream() {
    // The control for the test above: the same proxy and upstream accept a well-formed request.
    let _trace = trace_init();
    let upstream = Upstream::builder().name("a").http1_only().start().await;
    let proxy = TestProxy::start(&single("http1", &[upstream.addr()]), 1);
    let request = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    let response = raw_exchange(proxy.addr(), request, Duration::from_secs(3))
        .await
        .unwrap();
    assert_eq!(parse_status(&response), Some(200));
    assert_eq!(upstream.requests_seen(), 1);
    assert_eq!(upstream.last_request().unwrap().body_len, 3);
}

#[tokio::test]
async fn a_body_that_breaks_after_its_first_chunk_is_400() {
    // The first chunk is read before anything goes upstream; the broken second one fails the
    // upload under way, which is the client's fault, not the upstream's.
    let _trace = trace_init();
    let upstream = Upstream::builder().name("a").http1_only().start().await;
    let proxy = TestProxy::start(&single("http1", &[upstream.addr()]), 1);
    let request = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nZZ\r\nabc\r\n0\r\n\r\n";
    let response = raw_exchange(proxy.addr(), request, Duration::from_secs(3))
        .await
        .unwrap();
    assert_eq!(parse_status(&response), Some(400));
    let text = String::from_utf8_lossy(&response).to_ascii_lowercase();
    assert!(text.contains("x-strait-error: bad_request_body"), "{text}");
    assert!(text.contains("connection: close"), "{text}");
}

/// Mutates `base` a few times: deletes, inserts or replaces bytes, favouring the bytes that
/// matter to HTTP/1.1 framing.
fn mutate(rng: &mut fastrand::Rng, base: &[u8]) -> Vec<u8> {
    const INTERESTING: &[u8] = b"\r\n :;,\t\x00\x7f\xff0123456789abcdefABCDEF-/?";
    let mut message = base.to_vec();
    for _ in 0..rng.usize(1..=6) {
        let at = rng.usize(..message.len());
        match rng.u8(..3) {
            0 if message.len() > 1 => {
                message.remove(at);
            }
            1 => message.insert(at, INTERESTING[rng.usize(..INTERESTING.len())]),
            _ => message[at] = rng.u8(..),
        }
    }
    message
}

#[tokio::test]
async fn mutated_requests_get_an_answer_or_a_close_and_the_proxy_keeps_serving() {
    let _trace = trace_init();
    let yaml = "listeners:\n  - name: l\n    address: 127.0.0.1:0\n    virtual_hosts:\n      - name: v\n        domains: [\"*\"]\n        routes:\n          - match: { prefix: / }\n            direct_response: { status: 200, body: \"ok\" }\n";
    let proxy = TestProxy::start(yaml, 1);
    let bases: [&[u8]; 4] = [
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;e\r\nhello\r\n0\r\nt: 1\r\n\r\n",
        b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    ];
    let mut rng = fastrand::Rng::with_seed(7);
    let mut answered = 0;
    for case in 0..300 {
        let message = mutate(&mut rng, bases[case % bases.len()]);
        let mut stream = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        stream.write_all(&message).await.unwrap();
        // The end of the stream: the proxy answers what it has and closes, whatever it is.
        stream.shutdown().await.unwrap();
        let mut received = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(3), async {
            let mut buf = [0u8; 4096];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => received.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        assert!(
            read.is_ok(),
            "case {case}: no close within 3 s for {:?}",
            String::from_utf8_lossy(&message)
        );
        if let Some(status) = parse_status(&received) {
            answered += 1;
            assert!(
                matches!(status, 200 | 400 | 404 | 405 | 431 | 505),
                "case {case}: {status} for {:?}",
                String::from_utf8_lossy(&message)
            );
        }
    }
    // Most mutations still get a status line (400 mostly): the cases did reach the parser.
    assert!(answered > 200, "{answered} of 300 answered");
    let response = raw_exchange(
        proxy.addr(),
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        Duration::from_secs(3),
    )
    .await
    .unwrap();
    assert_eq!(parse_status(&response), Some(200));
}
