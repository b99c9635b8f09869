use bytes::{Bytes, BytesMut};

use super::{DEFAULT_TABLE_SIZE, DecodeError, Decoder, Encoder, STATIC_TABLE, huffman};
use super::{static_field_index, static_name_index};

/// (name, value, sensitive) as delivered by [`Decoder::decode`].
type Field = (Vec<u8>, Vec<u8>, bool);

fn hex(text: &str) -> Bytes {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect::<Vec<u8>>()
        .into()
}

fn decode(decoder: &mut Decoder, block: &[u8]) -> Result<Vec<Field>, DecodeError> {
    let mut fields = Vec::new();
    decoder.decode(
        &Bytes::copy_from_slice(block),
        &mut |name, value, sensitive| {
            fields.push((name.to_vec(), value.to_vec(), sensitive));
        },
    )?;
    Ok(fields)
}

fn decode_err(block: &[u8]) -> DecodeError {
    decode(&mut Decoder::new(DEFAULT_TABLE_SIZE), block).unwrap_err()
}

fn fields(list: &[(&str, &str)]) -> Vec<Field> {
    list.iter()
        .map(|&(name, value)| (name.into(), value.into(), false))
        .collect()
}

/// A literal with incremental indexing and a literal name; both strings under 127 bytes.
fn indexed_literal(name: &str, value: &str) -> Vec<u8> {
    let mut block = vec![0x40, u8::try_from(name.len()).unwrap()];
    block.extend_from_slice(name.as_bytes());
    block.push(u8::try_from(value.len()).unwrap());
    block.extend_from_slice(value.as_bytes());
    block
}

/// Decodes RFC 7541 example blocks in order, checking fields and table size after each, then
/// the table contents by indexing entries 62.. and the first index past the table.
fn check_examples(
    max_table_size: usize,
    blocks: [&str; 3],
    expected: [&[(&str, &str)]; 3],
    sizes: [usize; 3],
    final_table: &[(&str, &str)],
) {
    let mut decoder = Decoder::new(max_table_size);
    for ((block, want), size) in blocks.into_iter().zip(expected).zip(sizes) {
        assert_eq!(decode(&mut decoder, &hex(block)).unwrap(), fields(want));
        assert_eq!(decoder.table_size(), size);
    }
    let indexes: Vec<u8> = (0..final_table.len())
        .map(|i| 0xbe + u8::try_from(i).unwrap())
        .collect();
    assert_eq!(decode(&mut decoder, &indexes).unwrap(), fields(final_table));
    let past = 62 + final_table.len();
    assert_eq!(
        decode(&mut decoder, &[0x80 | u8::try_from(past).unwrap()]),
        Err(DecodeError::IndexOutOfRange(past))
    );
}

// === RFC 7541 Appendix C ===

#[test]
fn c_2_1_literal_with_indexing() {
    let mut decoder = Decoder::new(DEFAULT_TABLE_SIZE);
    let block = hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572");
    let got = decode(&mut decoder, &block).unwrap();
    assert_eq!(got, fields(&[("custom-key", "custom-header")]));
    assert_eq!(decoder.table_size(), 55);
}

#[test]
fn c_2_2_literal_without_indexing() {
    let mut decoder = Decoder::new(DEFAULT_TABLE_SIZE);
    let got = decode(&mut decoder, &hex("040c 2f73 616d 706c 652f 7061 7468")).unwrap();
    assert_eq!(got, fields(&[(":path", "/sample/path")]));
    assert_eq!(decoder.table_size(), 0);
}

#[test]
fn c_2_3_literal_never_indexed() {
    let mut decoder = Decoder::new(DEFAULT_TABLE_SIZE);
    let block = hex("1008 7061 7373 776f 7264 0673 6563 7265 74");
    let got = decode(&mut decoder, &block).unwrap();
    assert_eq!(got, vec![(b"password".to_vec(), b"secret".to_vec(), true)]);
    assert_eq!(decoder.table_size(), 0);
}

#[test]
fn c_2_4_indexed_field() {
    let mut decoder = Decoder::new(DEFAULT_TABLE_SIZE);
    assert_eq!(
        decode(&mut decoder, &hex("82")).unwrap(),
        fields(&[(":method", "GET")])
    );
    assert_eq!(decoder.table_size(), 0);
}

const REQUESTS: [&[(&str, &str)]; 3] = [
    &[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "www.example.com"),
    ],
    &[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "www.example.com"),
        ("cache-control", "no-cache"),
    ],
    &[
        (":method", "GET"),
        (":scheme", "https"),
        (":path", "/index.html"),
        (":authority", "www.example.com"),
        ("custom-key", "custom-value"),
    ],
];

const REQUESTS_TABLE: &[(&str, &str)] = &[
    ("custom-key", "custom-value"),
    ("cache-control", "no-cache"),
    (":authority", "www.example.com"),
];

#[test]
fn c_3_requests_without_huffman() {
    let blocks = [
        "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
        "8286 84be 5808 6e6f 2d63 6163 6865",
        "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
    ];
    check_examples(
        DEFAULT_TABLE_SIZE,
        blocks,
        REQUESTS,
        [57, 110, 164],
        REQUESTS_TABLE,
    );
}

#[test]
fn c_4_requests_with_huffman() {
    let blocks = [
        "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
        "8286 84be 5886 a8eb 1064 9cbf",
        "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
    ];
    check_examples(
        DEFAULT_TABLE_SIZE,
        blocks,
        REQUESTS,
        [57, 110, 164],
        REQUESTS_TABLE,
    );
}

const RESPONSES: [&[(&str, &str)]; 3] = [
    &[
        (":status", "302"),
        ("cache-control", "private"),
        ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
        ("location", "https://www.example.com"),
    ],
    &[
        (":status", "307"),
        ("cache-control", "private"),
        ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
        ("location", "https://www.example.com"),
    ],
    &[
        (":status", "200"),
        ("cache-control", "private"),
        ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
        ("location", "https://www.example.com"),
        ("content-encoding", "gzip"),
        (
            "set-cookie",
            "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
        ),
    ],
];

const RESPONSES_TABLE: &[(&str, &str)] = &[
    (
        "set-cookie",
        "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
    ),
    ("content-encoding", "gzip"),
    ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
];

#[test]
fn c_5_responses_without_huffman() {
    let blocks = [
        "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133
         2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70
         6c65 2e63 6f6d",
        "4803 3330 37c1 c0bf",
        "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d
         54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049
         5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e
         3d31",
    ];
    check_examples(256, blocks, RESPONSES, [222, 222, 215], RESPONSES_TABLE);
}

#[test]
fn c_6_responses_with_huffman() {
    let blocks = [
        "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
         2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
        "4883 640e ffc1 c0bf",
        "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab
         77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f
         9587 3160 65c0 03ed 4ee5 b106 3d50 07",
    ];
    check_examples(256, blocks, RESPONSES, [222, 222, 215], RESPONSES_TABLE);
}

// === dynamic table size updates and eviction ===

#[test]
fn size_update_above_the_limit_is_rejected() {
    let mut decoder = Decoder::new(100);
    // 31 + 70 = 101
    assert_eq!(
        decode(&mut decoder, &[0x3f, 0x46]),
        Err(DecodeError::TableSizeUpdateTooLarge {
            requested: 101,
            max: 100
        })
    );
    assert_eq!(decode(&mut Decoder::new(100), &[0x3f, 0x45]), Ok(vec![]));
}

#[test]
fn size_update_after_a_field_is_rejected() {
    assert_eq!(
        decode_err(&[0x82, 0x20]),
        DecodeError::TableSizeUpdateNotFirst
    );
}

#[test]
fn two_size_updates_at_the_start_are_allowed() {
    let mut decoder = Decoder::new(DEFAULT_TABLE_SIZE);
    decode(&mut decoder, &indexed_literal("k1", "v1")).unwrap();
    assert_eq!(decoder.table_size(), 36);
    // Size 0 (evicts everything), then 4096 = 31 + 0x61 + (0x1f << 7), then :method GET.
    let got = decode(&mut decoder, &[0x20, 0x3f, 0xe1, 0x1f, 0x82]).unwrap();
    assert_eq!(got, fields(&[(":method", "GET")]));
    assert_eq!(decoder.table_size(), 0);
    assert_eq!(
        decode(&mut decoder, &[0xbe]),
        Err(DecodeError::IndexOutOfRange(62))
    );
    // The table may grow again up to the new limit.
    decode(&mut decoder, &indexed_literal("k2", "v2")).unwrap();
    assert_eq!(
        decode(&mut decoder, &[0xbe]).unwrap(),
        fields(&[("k2", "v2")])
    );
}

#[test]
fn size_update_evicts_the_oldest_entries() {
    let mut decoder = Decoder::new(DEFAULT_TABLE_SIZE);
    decode(&mut decoder, &indexed_literal("k1", "v1")).unwrap();
    decode(&mut decoder, &indexed_literal("k2", "v2")).unwrap();
    assert_eq!(decoder.table_size(), 72);
    // 31 + 9 = 40: room for one 36-octet entry.
    decode(&mut decoder, &[0x3f, 0x09]).unwrap();
    assert_eq!(decoder.table_size(), 36);
    assert_eq!(
        decode(&mut decoder, &[0xbe]).unwrap(),
        fields(&[("k2", "v2")])
    );
    assert_eq!(
        decode(&mut decoder, &[0xbf]),
        Err(DecodeError::IndexOutOfRange(63))
    );
}

#[test]
fn insert_evicts_the_oldest_entries() {
    let mut decoder = Decoder::new(80);
    for (name, value) in [("k1", "v1"), ("k2", "v2"), ("k3", "v3")] {
        decode(&mut decoder, &indexed_literal(name, value)).unwrap();
    }
    assert_eq!(decoder.table_size(), 72);
    let got = decode(&mut decoder, &[0xbe, 0xbf]).unwrap();
    assert_eq!(got, fields(&[("k3", "v3"), ("k2", "v2")]));
    assert_eq!(
        decode(&mut decoder, &[0xc0]),
        Err(DecodeError::IndexOutOfRange(64))
    );
}

#[test]
fn entry_larger_than_the_table_empties_it() {
    let mut decoder = Decoder::new(40);
    decode(&mut decoder, &indexed_literal("k1", "v1")).unwrap();
    assert_eq!(decoder.table_size(), 36);
    // 1 + 8 + 32 = 41 > 40: delivered, but the table ends up empty.
    let got = decode(&mut decoder, &indexed_literal("k", "12345678")).unwrap();
    assert_eq!(got, fields(&[("k", "12345678")]));
    assert_eq!(decoder.table_size(), 0);
    assert_eq!(
        decode(&mut decoder, &[0xbe]),
        Err(DecodeError::IndexOutOfRange(62))
    );
}

#[test]
fn indexed_name_refers_to_a_dynamic_entry() {
    let mut decoder = Decoder::new(DEFAULT_TABLE_SIZE);
    decode(&mut decoder, &indexed_literal("x-id", "1")).unwrap();
    // Incremental indexing with name index 62, then never indexed with name index 63.
    let block = [0x7e, 0x01, b'2', 0x1f, 0x30, 0x01, b'3'];
    let got = decode(&mut decoder, &block).unwrap();
    let want = vec![
        (b"x-id".to_vec(), b"2".to_vec(), false),
        (b"x-id".to_vec(), b"3".to_vec(), true),
    ];
    assert_eq!(got, want);
    assert_eq!(decoder.table_size(), 2 * (4 + 1 + 32));
}

// === malformed blocks ===

#[test]
fn truncated_integer_is_rejected() {
    assert_eq!(decode_err(&[0xff]), DecodeError::Truncated);
    assert_eq!(decode_err(&[0xff, 0x80]), DecodeError::Truncated);
    assert_eq!(decode_err(&[0x0f]), DecodeError::Truncated);
}

#[test]
fn index_zero_is_rejected() {
    assert_eq!(decode_err(&[0x80]), DecodeError::IndexZero);
}

#[test]
fn index_past_the_table_is_rejected() {
    assert_eq!(decode_err(&[0xbe]), DecodeError::IndexOutOfRange(62));
    // Literal with name index 15 + 47 = 62.
    assert_eq!(
        decode_err(&[0x0f, 0x2f, 0x00]),
        DecodeError::IndexOutOfRange(62)
    );
    // 127 + 0 + (1 << 7): a redundant zero group is fine.
    assert_eq!(
        decode_err(&[0xff, 0x80, 0x01]),
        DecodeError::IndexOutOfRange(255)
    );
}

#[test]
fn overflowing_integer_is_rejected() {
    assert_eq!(
        decode_err(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]),
        DecodeError::IntegerOverflow
    );
    // 2^32 as a string length: one past the limit.
    assert_eq!(
        decode_err(&[0x04, 0x7f, 0x81, 0xff, 0xff, 0xff, 0x0f]),
        DecodeError::IntegerOverflow
    );
    // Six continuation octets, even if all zero.
    assert_eq!(
        decode_err(&[0x3f, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00]),
        DecodeError::IntegerOverflow
    );
    // Five are accepted: a size update to 31.
    let mut decoder = Decoder::new(DEFAULT_TABLE_SIZE);
    assert_eq!(
        decode(&mut decoder, &[0x3f, 0x80, 0x80, 0x80, 0x80, 0x00]),
        Ok(vec![])
    );
}

#[test]
fn string_length_past_the_end_is_rejected() {
    assert_eq!(
        decode_err(&[0x04, 0x05, b'/', b'a']),
        DecodeError::Truncated
    );
    assert_eq!(decode_err(&[0x04]), DecodeError::Truncated);
    assert_eq!(decode_err(&[0x40, 0x01]), DecodeError::Truncated);
    // 2^32 - 1, the largest integer accepted, as a length.
    assert_eq!(
        decode_err(&[0x04, 0x7f, 0x80, 0xff, 0xff, 0xff, 0x0f]),
        DecodeError::Truncated
    );
}

#[test]
fn bad_huffman_padding_is_rejected() {
    // Eight ones of padding.
    assert_eq!(decode_err(&[0x04, 0x81, 0xff]), DecodeError::HuffmanPadding);
    // 'a' (00011) padded with zeros.
    assert_eq!(decode_err(&[0x04, 0x81, 0x18]), DecodeError::HuffmanPadding);
    // 'a' padded with ones is fine.
    let got = decode(&mut Decoder::new(DEFAULT_TABLE_SIZE), &[0x04, 0x81, 0x1f]).unwrap();
    assert_eq!(got, fields(&[(":path", "a")]));
    // A string ending inside the 30-bit code of byte 10 (no symbol ends in its first 8 ones).
    let mut out = BytesMut::new();
    assert_eq!(
        huffman::decode(&[0xff, 0xff], &mut out),
        Err(DecodeError::HuffmanPadding)
    );
}

#[test]
fn huffman_eos_in_a_string_is_rejected() {
    assert_eq!(
        decode_err(&[0x04, 0x84, 0xff, 0xff, 0xff, 0xff]),
        DecodeError::HuffmanEos
    );
    // 'a' (00011), EOS (30 ones), five ones of padding.
    let mut out = BytesMut::new();
    let got = huffman::decode(&[0x1f, 0xff, 0xff, 0xff, 0xff], &mut out);
    assert_eq!(got, Err(DecodeError::HuffmanEos));
}

// === zero copy ===

#[test]
fn raw_literal_value_is_a_slice_of_the_block() {
    let block = hex("040c 2f73 616d 706c 652f 7061 7468 4182 1c7f");
    let mut values = Vec::new();
    Decoder::new(DEFAULT_TABLE_SIZE)
        .decode(&block, &mut |_, value, _| values.push(value))
        .unwrap();
    let [raw, coded] = &values[..] else {
        panic!("expected two fields, got {values:?}");
    };
    assert_eq!(&raw[..], b"/sample/path");
    assert_eq!(raw.as_ptr_range(), block[2..14].as_ptr_range());
    assert_eq!(&coded[..], b"ab");
    let block_range = block.as_ptr_range();
    assert!(!block_range.contains(&coded.as_ptr()));
}

// === encoder ===

fn encode(encoder: &mut Encoder, list: &[(&[u8], &[u8], bool)]) -> Vec<u8> {
    let mut dst = BytesMut::new();
    encoder.begin(&mut dst);
    for &(name, value, sensitive) in list {
        encoder.field(name, value, sensitive, &mut dst);
    }
    dst.to_vec()
}

#[test]
fn encoder_indexes_static_entries() {
    let mut encoder = Encoder::new();
    let list: [(&[u8], &[u8], bool); 6] = [
        (b":method", b"GET", false),
        (b":path", b"/", false),
        (b":scheme", b"https", true),
        (b"accept-encoding", b"gzip, deflate", false),
        (b"content-length", b"", false),
        (b":authority", b"", false),
    ];
    assert_eq!(
        encode(&mut encoder, &list),
        [0x82, 0x84, 0x87, 0x90, 0x9c, 0x81]
    );
    for (index, entry) in STATIC_TABLE.iter().enumerate() {
        let name_index = static_name_index(&entry.name).unwrap();
        assert_eq!(&STATIC_TABLE[name_index - 1].name, &entry.name);
        assert!(
            STATIC_TABLE[..name_index - 1]
                .iter()
                .all(|e| e.name != entry.name)
        );
        assert_eq!(
            static_field_index(name_index, &entry.value),
            Some(index + 1)
        );
    }
}

#[test]
fn encoder_sends_static_names_as_indexed_names() {
    let mut encoder = Encoder::new();
    let list: [(&[u8], &[u8], bool); 4] = [
        (b":path", b"/x", false),
        (b":method", b"PUT", false),
        (b"authorization", b"s", true),
        (b"content-type", b"text/plain", false),
    ];
    let mut want = vec![0x04, 0x02, b'/', b'x', 0x02, 0x03, b'P', b'U', b'T'];
    want.extend_from_slice(&[0x1f, 0x08, 0x01, b's', 0x0f, 0x10, 0x0a]);
    want.extend_from_slice(b"text/plain");
    assert_eq!(encode(&mut encoder, &list), want);
}

#[test]
fn encoder_sends_other_names_as_literals() {
    let mut encoder = Encoder::new();
    let list: [(&[u8], &[u8], bool); 2] = [(b"x-a", b"b", false), (b"x-token", b"", true)];
    let mut want = vec![0x00, 0x03, b'x', b'-', b'a', 0x01, b'b', 0x10, 0x07];
    want.extend_from_slice(b"x-token");
    want.push(0x00);
    assert_eq!(encode(&mut encoder, &list), want);
}

#[test]
fn encoder_writes_status() {
    let mut encoder = Encoder::new();
    let mut dst = BytesMut::new();
    for status in [200, 204, 206, 304, 400, 404, 500] {
        encoder.status(status, &mut dst);
    }
    assert_eq!(&dst[..], [0x88, 0x89, 0x8a, 0x8b, 0x8c, 0x8d, 0x8e]);
    dst.clear();
    encoder.status(302, &mut dst);
    encoder.status(7, &mut dst);
    assert_eq!(&dst[..], [0x08, 0x03, b'3', b'0', b'2', 0x08, 0x01, b'7']);
}

#[test]
fn encoder_sends_one_size_update_after_a_peer_change() {
    let mut encoder = Encoder::new();
    assert_eq!(encode(&mut encoder, &[]), Vec::<u8>::new());
    encoder.peer_table_size_changed();
    encoder.peer_table_size_changed();
    assert_eq!(
        encode(&mut encoder, &[(b":method", b"GET", false)]),
        [0x20, 0x82]
    );
    assert_eq!(encode(&mut encoder, &[]), Vec::<u8>::new());
}

#[test]
fn encoder_output_round_trips_through_the_decoder() {
    let long_value = vec![b'v'; 20_000];
    let name_127 = vec![b'n'; 127];
    let name_128 = vec![b'm'; 128];
    let all_bytes: Vec<u8> = (0..=255).collect();
    let list: Vec<(&[u8], &[u8], bool)> = vec![
        (b":method", b"POST", false),
        (b":scheme", b"https", false),
        (b":authority", b"example.com", false),
        (b":path", b"/index.html", false),
        (b"cookie", b"a=b", true),
        (b"x-long", &long_value, false),
        (&name_127, b"127", false),
        (&name_128, b"", true),
        (b"x-bytes", &all_bytes, false),
        (b"www-authenticate", b"basic", false),
    ];
    let mut encoder = Encoder::new();
    encoder.peer_table_size_changed();
    let mut decoder = Decoder::new(DEFAULT_TABLE_SIZE);
    for _ in 0..2 {
        let mut dst = BytesMut::new();
        encoder.begin(&mut dst);
        encoder.status(418, &mut dst);
        encoder.status(204, &mut dst);
        for &(name, value, sensitive) in &list {
            encoder.field(name, value, sensitive, &mut dst);
        }
        let mut want: Vec<Field> = vec![
            (b":status".to_vec(), b"418".to_vec(), false),
            (b":status".to_vec(), b"204".to_vec(), false),
        ];
        want.extend(list.iter().map(|&(n, v, s)| (n.to_vec(), v.to_vec(), s)));
        assert_eq!(decode(&mut decoder, &dst).unwrap(), want);
        assert_eq!(decoder.table_size(), 0);
    }
}

// === Huffman ===

#[test]
fn huffman_matches_rfc_7541_examples() {
    let cases = [
        ("www.example.com", "f1e3 c2e5 f23a 6ba0 ab90 f4ff"),
        ("no-cache", "a8eb 1064 9cbf"),
        ("custom-key", "25a8 49e9 5ba9 7d7f"),
        ("custom-value", "25a8 49e9 5bb8 e8b4 bf"),
        ("302", "6402"),
        ("private", "aec3 771a 4b"),
        (
            "Mon, 21 Oct 2013 20:13:21 GMT",
            "d07a be94 1054 d444 a820 0595 040b 8166 e082 a62d 1bff",
        ),
        (
            "https://www.example.com",
            "9d29 ad17 1863 c78f 0b97 c8e9 ae82 ae43 d3",
        ),
        ("gzip", "9bd9 ab"),
        ("", ""),
    ];
    for (text, code) in cases {
        let code = hex(code);
        let mut encoded = BytesMut::new();
        huffman::encode(text.as_bytes(), &mut encoded);
        assert_eq!(encoded, code, "{text}");
        assert_eq!(huffman::encoded_len(text.as_bytes()), code.len(), "{text}");
        let mut decoded = BytesMut::new();
        huffman::decode(&code, &mut decoded).unwrap();
        assert_eq!(decoded, text.as_bytes());
    }
}

/// xorshift64: a fixed, dependency-free sequence for property-style loops.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> usize {
        usize::try_from(self.next() % n).unwrap()
    }
}

#[test]
fn huffman_round_trips_random_strings() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for case in 0..3000 {
        let len = rng.below(80);
        // Half the cases draw from printable ASCII, half from all bytes.
        let printable = case % 2 == 0;
        let src: Vec<u8> = (0..len)
            .map(|_| {
                let byte = if printable {
                    0x20 + rng.below(0x5f)
                } else {
                    rng.below(256)
                };
                u8::try_from(byte).unwrap()
            })
            .collect();
        let mut encoded = BytesMut::new();
        huffman::encode(&src, &mut encoded);
        assert_eq!(encoded.len(), huffman::encoded_len(&src), "{src:?}");
        let mut decoded = BytesMut::new();
        huffman::decode(&encoded, &mut decoded).unwrap();
        assert_eq!(decoded, src);
    }
}
