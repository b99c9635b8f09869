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
