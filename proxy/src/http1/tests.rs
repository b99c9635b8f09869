use http::header::HeaderName;

use super::*;

#[test]
fn chunk_sizes_are_hex_with_optional_extensions() {
    assert_eq!(chunk_size(b"1a\r"), Some(26));
    assert_eq!(chunk_size(b"0"), Some(0));
    assert_eq!(chunk_size(b"A;name=value\r"), Some(10));
    assert_eq!(chunk_size(b"5 ;x\r"), Some(5));
    assert_eq!(chunk_size(b"\r"), None);
    assert_eq!(chunk_size(b"5x\r"), None);
    assert_eq!(chunk_size(b"-5\r"), None);
    assert_eq!(chunk_size(b"1000000000000000\r"), None);
}

/// Names of a sequence of heads through one cache: each equal to a fresh parse.
fn names_of(cache: &mut Names, head: &[&str]) -> Vec<HeaderName> {
    (head.iter().enumerate())
        .map(|(index, raw)| {
            let (name, known) = cache.name(index, raw.as_bytes()).expect("valid name");
            assert_eq!(known, Known::of(&name));
            assert_eq!(name, HeaderName::from_bytes(raw.as_bytes()).expect("valid"));
            name
        })
        .collect()
}

#[test]
fn a_head_with_the_last_heads_names_reuses_them_and_a_changed_one_is_parsed() {
    // A hit hands back the kept name: a custom name then shares its bytes with the kept one.
    let shared = |a: &HeaderName, b: &HeaderName| a.as_str().as_ptr() == b.as_str().as_ptr();
    let mut cache = Names::default();
    let head = ["Server", "X-Custom-One", "Content-Length", "x-two"];
    let first = names_of(&mut cache, &head);
    let again = names_of(&mut cache, &head);
    assert_eq!(first, again);
    assert!(shared(&first[1], &again[1]), "reused");
    assert!(shared(&first[3], &again[3]), "reused");
    // Another spelling of the same name, or another order: parsed, and kept for the next head.
    let head = ["Server", "x-custom-one", "x-two", "Content-Length"];
    let changed = names_of(&mut cache, &head);
    assert!(!shared(&first[1], &changed[1]), "parsed");
    assert!(!shared(&first[3], &changed[2]), "parsed");
    let third = names_of(&mut cache, &head);
    assert!(shared(&changed[1], &third[1]), "reused");
    assert!(shared(&changed[2], &third[2]), "reused");
    // A shorter head, then a longer one: the names past the change are parsed again.
    names_of(&mut cache, &["Server"]);
    names_of(
        &mut cache,
        &["Server", "Date", "x-custom-one", "x-two", "x-three"],
    );
    assert_eq!(cache.names.len(), 5);
    let err = cache.name(5, b"bad name");
    assert_eq!(err, Err("invalid header name"));
}

#[test]
fn the_name_cache_keeps_a_bounded_number_of_names_and_bytes() {
    let mut cache = Names::default();
    let many: Vec<String> = (0..50).map(|i| format!("x-field-{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    names_of(&mut cache, &many);
    names_of(&mut cache, &many);
    assert_eq!(cache.names.len(), Names::MAX);
    let long: Vec<String> = (0..20)
        .map(|i| format!("x-{i}-{}", "n".repeat(100)))
        .collect();
    let long: Vec<&str> = long.iter().map(String::as_str).collect();
    names_of(&mut cache, &long);
    assert!(cache.raw.len() <= Names::MAX_RAW, "{}", cache.raw.len());
    assert!(cache.names.len() < 20, "{}", cache.names.len());
}

/// Decodes one body framed by `framing` whose first `split` bytes are already buffered and the
/// rest arrives on the socket; returns its data, its trailers and what is left after it.
async fn decode_split(
    wire: &[u8],
    split: usize,
    framing: BodyFraming,
) -> (Vec<u8>, Option<HeaderMap>, Vec<u8>) {
    use tokio::io::AsyncWriteExt as _;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    let mut socket = Socket::tcp(server);
    let mut buf = BytesMut::from(&wire[..split]);
    client.write_all(&wire[split..]).await.unwrap();
    // The end of the stream after the wire, so that a decoder reading past the body fails.
    client.shutdown().await.unwrap();
    let mut framing = framing;
    let (mut data, mut trailers) = (Vec::new(), None);
    let limit = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let frame = tokio::time::timeout_at(
            limit,
            std::future::poll_fn(|cx| poll_body(&mut framing, &mut socket, &mut buf, cx)),
        )
        .await
        .expect("decoded within 5 s");
        match frame {
            None => break,
            Some(Ok(frame)) => match frame.into_data() {
                Ok(bytes) => data.extend_from_slice(&bytes),
                Err(frame) => trailers = frame.into_trailers().ok(),
            },
            Some(Err(err)) => panic!("split at {split}: {err}"),
        }
    }
    assert_eq!(framing, BodyFraming::Empty);
    (data, trailers, buf.to_vec())
}

#[tokio::test]
async fn bodies_decode_the_same_at_every_split_point() {
    let next = b"GET /next HTTP/1.1\r\n\r\n";
    let chunked = [
        &b"5;ext=1\r\nhello\r\n1A\r\n"[..],
        &[b'x'; 26][..],
        b"\r\n0\r\nx-checksum: 42\r\n\r\n",
        next,
    ]
    .concat();
    let length = [&b"twelve bytes"[..], next].concat();
    for (wire, framing, body) in [
        (
            &chunked,
            BodyFraming::Chunked(Chunk::Size),
            [&b"hello"[..], &[b'x'; 26]].concat(),
        ),
        (&length, BodyFraming::Length(12), b"twelve bytes".to_vec()),
    ] {
        // Split at most a few bytes into the next request, which the decoder must not take.
        for split in 0..=wire.len() - next.len() + 3 {
            let (data, trailers, rest) = decode_split(wire, split, framing).await;
            assert_eq!(data, body, "split at {split}");
            if framing != BodyFraming::Length(12) {
                let trailers = trailers.unwrap_or_else(|| panic!("trailers, split at {split}"));
                assert_eq!(trailers.get("x-checksum").unwrap(), "42");
            }
            // Whatever of the next request was read stays in the buffer, in order.
            assert!(next.starts_with(&rest), "split at {split}: {rest:?}");
        }
    }
}

#[test]
fn content_lengths_are_up_to_nineteen_digits() {
    assert_eq!(parse_length(b"0"), Some(0));
    assert_eq!(parse_length(b"1024"), Some(1024));
    assert_eq!(parse_length(b"007"), Some(7));
    assert_eq!(
        parse_length(b"9999999999999999999"),
        Some(9_999_999_999_999_999_999)
    );
    for bad in [
        &b""[..],
        b"18446744073709551615",
        b"+1",
        b"-1",
        b" 1",
        b"1 ",
        b"1a",
        b"0x10",
        b"1/",
        b"1:",
    ] {
        assert_eq!(
            parse_length(bad),
            None,
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}
