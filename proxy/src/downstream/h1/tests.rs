use super::*;

const LIMITS: HeadLimits = HeadLimits {
    max_bytes: 1024,
    max_fields: 8,
};

/// Parses `head` on a connection with no socket (parsing reads none).
fn parse_one(head: &str, limits: HeadLimits) -> Result<Option<Head>, ProxyError> {
    let io = Rc::new(RefCell::new(Io::new(None, BytesMut::from(head.as_bytes()))));
    let parsed = parse(&mut io.borrow_mut(), &io, limits);
    match parsed {
        Ok(head) => Ok(head),
        Err(Failed::Head(err)) => Err(err),
        Err(Failed::Io(err)) => panic!("{err}"),
    }
}

fn rejected(head: &str, limits: HeadLimits) -> (u16, String) {
    match parse_one(head, limits) {
        Err(err) => (err.status().as_u16(), err.to_string()),
        Ok(_) => panic!("accepted: {head:?}"),
    }
}

#[test]
fn request_heads_are_framed_and_kept_alive_as_rfc_9112_says() {
    let framing = |head: &str| {
        let parsed = parse_one(head, LIMITS).unwrap().unwrap();
        let Incoming::Right(body) = parsed.request.body() else {
            panic!("not an HTTP/1.1 body");
        };
        let framing = body.io.borrow().body;
        (framing, parsed.keep_alive)
    };
    assert_eq!(
        framing("GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
        (BodyFraming::Empty, true)
    );
    assert_eq!(
        framing("POST / HTTP/1.1\r\nContent-Length: 12\r\nConnection: close\r\n\r\n"),
        (BodyFraming::Length(12), false)
    );
    assert_eq!(
        framing("POST / HTTP/1.1\r\nContent-Length: 7, 7\r\n\r\n"),
        (BodyFraming::Length(7), true)
    );
    assert_eq!(
        framing("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
        (BodyFraming::Chunked(Chunk::Size), true)
    );
    assert_eq!(
        framing("GET / HTTP/1.0\r\n\r\n"),
        (BodyFraming::Empty, false)
    );
    assert_eq!(
        framing("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"),
        (BodyFraming::Empty, true)
    );
    for (head, status) in [
        (
            "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            400,
        ),
        ("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
        (
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            400,
        ),
        (
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n",
            400,
        ),
        ("GET / HTTP/3.0\r\n\r\n", 505),
        ("GET /\x7f HTTP/1.1\r\n\r\n", 400),
    ] {
        assert_eq!(rejected(head, LIMITS).0, status, "{head:?}");
    }
}

#[test]
fn head_limits_give_431_on_the_stack_and_on_the_heap() {
    let fields = |n: usize| {
        let many: String = (0..n).map(|i| format!("x-{i}: v\r\n")).collect();
        format!("GET / HTTP/1.1\r\n{many}\r\n")
    };
    assert!(parse_one(&fields(8), LIMITS).unwrap().is_some());
    assert_eq!(rejected(&fields(9), LIMITS).0, 431);
    let wide = HeadLimits {
        max_bytes: 64 * 1024,
        max_fields: STACK_FIELDS + 20,
    };
    let parsed = parse_one(&fields(STACK_FIELDS + 20), wide)
        .unwrap()
        .unwrap();
    assert_eq!(parsed.request.headers().len(), STACK_FIELDS + 20);
    assert_eq!(rejected(&fields(STACK_FIELDS + 21), wide).0, 431);
    let long = format!("GET / HTTP/1.1\r\nx-long: {}\r\n\r\n", "a".repeat(1024));
    assert_eq!(rejected(&long, LIMITS).0, 431);
}

#[test]
fn a_partial_head_waits_and_the_next_request_stays_in_the_buffer() {
    assert!(
        parse_one("GET / HTTP/1.1\r\nHost:", LIMITS)
            .unwrap()
            .is_none()
    );
    // RFC 9112 §2.2: empty lines before a request line (after a body, say) are passed over.
    let parsed = parse_one("\r\n\r\nGET /x HTTP/1.1\r\n\r\n", LIMITS)
        .unwrap()
        .unwrap();
    assert_eq!(parsed.request.uri(), "/x");
    let io = Rc::new(RefCell::new(Io::new(
        None,
        BytesMut::from(&b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n"[..]),
    )));
    let Ok(Some(first)) = parse(&mut io.borrow_mut(), &io, LIMITS) else {
        panic!("first request");
    };
    assert_eq!(first.request.uri(), "/a");
    assert_eq!(&io.borrow().buf[..], b"GET /b HTTP/1.1\r\n\r\n");
    let Ok(Some(second)) = parse(&mut io.borrow_mut(), &io, LIMITS) else {
        panic!("second request");
    };
    assert_eq!(second.request.uri(), "/b");
    assert!(io.borrow().buf.is_empty());
}

#[test]
fn expect_continue_and_upgrades_are_noted() {
    let parsed = parse_one(
        "POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
        LIMITS,
    )
    .unwrap()
    .unwrap();
    let Incoming::Right(body) = parsed.request.body() else {
        panic!("not an HTTP/1.1 body");
    };
    assert_eq!(body.io.borrow().continue_left, CONTINUE.len());
    // Nothing is owed for a request without a body.
    let parsed = parse_one("GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n", LIMITS)
        .unwrap()
        .unwrap();
    let Incoming::Right(body) = parsed.request.body() else {
        panic!("not an HTTP/1.1 body");
    };
    assert_eq!(body.io.borrow().continue_left, 0);
    let upgrade = |head: &str| parse_one(head, LIMITS).unwrap().unwrap().upgrade;
    assert!(upgrade(
        "GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    ));
    assert!(!upgrade("GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"));
    assert!(!upgrade(
        "GET / HTTP/1.0\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    ));
}

/// The head of `response`, as text.
fn encoded(
    response: Response<ResponseBody>,
    version: Version,
    head_request: bool,
    keep_alive: bool,
) -> (String, Framing, bool) {
    let (parts, body) = response.into_parts();
    let (head, framing, keep_alive) = encode_head(&parts, &body, version, head_request, keep_alive);
    (
        String::from_utf8(head.to_vec()).unwrap(),
        framing,
        keep_alive,
    )
}

#[test]
fn responses_are_framed_by_their_known_length_or_chunked() {
    let (head, framing, keep) = encoded(
        Response::new(ResponseBody::full("hello")),
        Version::HTTP_11,
        false,
        true,
    );
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("content-length: 5\r\n"), "{head}");
    assert!(head.contains("date: "), "{head}");
    assert!(head.ends_with("\r\n\r\n"), "{head}");
    assert_eq!((framing, keep), (Framing::Length(5), true));

    // A stale or duplicate length from the response's fields is replaced by the body's.
    let mut response = Response::new(ResponseBody::full("hello"));
    response
        .headers_mut()
        .append(header::CONTENT_LENGTH, HeaderValue::from_static("9"));
    response.headers_mut().insert(
        header::DATE,
        HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
    );
    let (head, framing, _) = encoded(response, Version::HTTP_11, false, true);
    assert_eq!(head.matches("content-length").count(), 1, "{head}");
    assert!(head.contains("content-length: 5\r\n"), "{head}");
    assert_eq!(head.matches("date: ").count(), 1, "{head}");
    assert_eq!(framing, Framing::Length(5));

    // HEAD and 304 keep their fields and send no body.
    let mut response = Response::new(ResponseBody::empty());
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("42"));
    let (head, framing, _) = encoded(response, Version::HTTP_11, true, true);
    assert!(head.contains("content-length: 42\r\n"), "{head}");
    assert_eq!(framing, Framing::Empty);
    // Bodies of unknown length (chunked, or close-delimited on HTTP/1.0) come from upstreams:
    // tests/http1.rs and tests/streaming.rs.
}

#[test]
fn connection_close_in_a_response_ends_the_connection() {
    let mut response = Response::new(ResponseBody::empty());
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    let (head, _, keep) = encoded(response, Version::HTTP_11, false, true);
    assert!(!keep);
    assert_eq!(head.matches("connection").count(), 1, "{head}");
    let (head, _, keep) = encoded(
        Response::new(ResponseBody::empty()),
        Version::HTTP_10,
        false,
        true,
    );
    assert!(keep);
    assert!(head.starts_with("HTTP/1.0 200 OK\r\n"), "{head}");
    assert!(head.contains("connection: keep-alive\r\n"), "{head}");
}

#[test]
fn a_head_parses_only_once_complete_whatever_the_split() {
    let head = "POST /upload?x=1 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nX-Long: 0123456789\r\n\r\n";
    for end in 0..head.len() {
        assert!(
            parse_one(&head[..end], LIMITS).unwrap().is_none(),
            "complete at {end}"
        );
    }
    let parsed = parse_one(head, LIMITS).unwrap().unwrap();
    assert_eq!(parsed.request.uri(), "/upload?x=1");
    assert_eq!(parsed.request.headers()["x-long"], "0123456789");
}

#[test]
fn the_field_set_of_a_parsed_request_is_exactly_that_of_its_map() {
    let limits = HeadLimits {
        max_bytes: 4096,
        max_fields: 32,
    };
    for lines in crate::headers::field_line_sets() {
        let head = format!("GET / HTTP/1.1\r\n{lines}\r\n");
        let Ok(Some(parsed)) = parse_one(&head, limits) else {
            panic!("not parsed: {head:?}");
        };
        let Incoming::Right(body) = parsed.request.body() else {
            panic!("not this server's body");
        };
        assert_eq!(
            body.fields(),
            FieldSet::of_map(parsed.request.headers()),
            "{head:?}"
        );
    }
}
