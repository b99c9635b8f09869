//! HTTP/2 frames (RFC 9113 §4, §6): the 9-byte frame header, the frame types and flags the
//! server reads and writes, and writers for the frames it sends.
//!
//! Reading is split in two: [`Head::parse`] reads a frame header, and the connection takes the
//! payload once all of it is buffered, checking each type's length and flags as it handles it.

use bytes::{BufMut, BytesMut};

/// The length of a frame header.
pub const HEAD_LEN: usize = 9;
/// The largest frame payload until the peer allows more (RFC 9113 §4.2), and the largest this
/// server accepts (it never raises its SETTINGS_MAX_FRAME_SIZE).
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 16_384;
/// The largest window (RFC 9113 §6.9.1).
pub const MAX_WINDOW: i64 = (1 << 31) - 1;
/// The window of a stream and of the connection before any setting or update (RFC 9113 §6.9.2).
pub const DEFAULT_WINDOW: i64 = 65_535;

/// Frame types (RFC 9113 §6).
pub mod kind {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const PRIORITY: u8 = 0x2;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PUSH_PROMISE: u8 = 0x5;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
}

/// Frame flags (RFC 9113 §6).
pub mod flag {
    pub const END_STREAM: u8 = 0x1;
    /// SETTINGS and PING.
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
}

/// Settings identifiers (RFC 9113 §6.5.2).
pub mod setting {
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    pub const ENABLE_PUSH: u16 = 0x2;
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
}

/// Error codes (RFC 9113 §7), as RST_STREAM and GOAWAY carry them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reason(pub u32);

impl Reason {
    pub const NO_ERROR: Self = Self(0x0);
    pub const PROTOCOL_ERROR: Self = Self(0x1);
    pub const INTERNAL_ERROR: Self = Self(0x2);
    pub const FLOW_CONTROL_ERROR: Self = Self(0x3);
    pub const STREAM_CLOSED: Self = Self(0x5);
    pub const FRAME_SIZE_ERROR: Self = Self(0x6);
    pub const REFUSED_STREAM: Self = Self(0x7);
    pub const CANCEL: Self = Self(0x8);
    pub const COMPRESSION_ERROR: Self = Self(0x9);
    pub const ENHANCE_YOUR_CALM: Self = Self(0xb);

    /// The code's name in RFC 9113, for logs.
    pub fn name(self) -> &'static str {
        match self.0 {
            0x0 => "NO_ERROR",
            0x1 => "PROTOCOL_ERROR",
            0x2 => "INTERNAL_ERROR",
            0x3 => "FLOW_CONTROL_ERROR",
            0x4 => "SETTINGS_TIMEOUT",
            0x5 => "STREAM_CLOSED",
            0x6 => "FRAME_SIZE_ERROR",
            0x7 => "REFUSED_STREAM",
            0x8 => "CANCEL",
            0x9 => "COMPRESSION_ERROR",
            0xa => "CONNECT_ERROR",
            0xb => "ENHANCE_YOUR_CALM",
            0xc => "INADEQUATE_SECURITY",
            0xd => "HTTP_1_1_REQUIRED",
            _ => "unknown",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({:#x})", self.name(), self.0)
    }
}

/// A frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// The payload's length.
    pub len: u32,
    pub kind: u8,
    pub flags: u8,
    /// The stream, without the reserved bit.
    pub stream: u32,
}

impl Head {
    /// Reads a frame header from the start of `buf`, if it holds one.
    pub fn parse(buf: &[u8]) -> Option<Self> {
        let head: &[u8; HEAD_LEN] = buf.get(..HEAD_LEN)?.try_into().ok()?;
        Some(Self {
            len: u32::from_be_bytes([0, head[0], head[1], head[2]]),
            kind: head[3],
            flags: head[4],
            stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
        })
    }

    /// Whether the frame has `flag`.
    pub fn has(self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// Appends a frame header.
pub fn put_head(dst: &mut BytesMut, len: usize, kind: u8, flags: u8, stream: u32) {
    debug_assert!(len < 1 << 24, "frame payloads are under 16 MiB");
    let len = u32::try_from(len).unwrap_or(0).to_be_bytes();
    dst.put_slice(&[len[1], len[2], len[3], kind, flags]);
    dst.put_u32(stream & 0x7fff_ffff);
}

/// Appends a SETTINGS frame with `settings`.
pub fn put_settings(dst: &mut BytesMut, settings: &[(u16, u32)]) {
    put_head(dst, settings.len() * 6, kind::SETTINGS, 0, 0);
    for &(id, value) in settings {
        dst.put_u16(id);
        dst.put_u32(value);
    }
}

/// Appends the acknowledgement of the peer's SETTINGS.
pub fn put_settings_ack(dst: &mut BytesMut) {
    put_head(dst, 0, kind::SETTINGS, flag::ACK, 0);
}

/// Appends the answer to a PING.
pub fn put_ping_ack(dst: &mut BytesMut, data: [u8; 8]) {
    put_head(dst, 8, kind::PING, flag::ACK, 0);
    dst.put_slice(&data);
}

/// Appends a GOAWAY naming the last stream this side may process.
pub fn put_goaway(dst: &mut BytesMut, last_stream: u32, reason: Reason) {
    put_head(dst, 8, kind::GOAWAY, 0, 0);
    dst.put_u32(last_stream & 0x7fff_ffff);
    dst.put_u32(reason.0);
}

/// Appends a RST_STREAM.
pub fn put_reset(dst: &mut BytesMut, stream: u32, reason: Reason) {
    put_head(dst, 4, kind::RST_STREAM, 0, stream);
    dst.put_u32(reason.0);
}

/// Appends a WINDOW_UPDATE of `increment` (1..=2^31-1) for `stream` (0: the connection).
pub fn put_window_update(dst: &mut BytesMut, stream: u32, increment: u32) {
    put_head(dst, 4, kind::WINDOW_UPDATE, 0, stream);
    dst.put_u32(increment & 0x7fff_ffff);
}

/// Iterates over the parameters of a SETTINGS payload (a multiple of 6 bytes).
pub fn settings(payload: &[u8]) -> impl Iterator<Item = (u16, u32)> + '_ {
    payload.chunks_exact(6).map(|entry| {
        (
            u16::from_be_bytes([entry[0], entry[1]]),
            u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]),
        )
    })
}

/// A frame's payload without its padding (RFC 9113 §6.1, §6.2): the range of the rest, or
/// `None` when the padding is as long as the payload or longer (a PROTOCOL_ERROR).
pub fn unpadded(head: Head, payload: &[u8]) -> Option<std::ops::Range<usize>> {
    if !head.has(flag::PADDED) {
        return Some(0..payload.len());
    }
    let (&pad, _) = payload.split_first()?;
    let end = payload.len().checked_sub(usize::from(pad))?;
    (end >= 1).then_some(1..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_header_reads_back_as_written_without_the_reserved_bit() {
        let mut buf = BytesMut::new();
        put_head(
            &mut buf,
            0x01_02_03,
            kind::HEADERS,
            flag::END_HEADERS,
            0x8000_0005,
        );
        assert_eq!(&buf[..], &[1, 2, 3, 1, 4, 0, 0, 0, 5]);
        assert_eq!(
            Head::parse(&buf),
            Some(Head {
                len: 0x01_02_03,
                kind: kind::HEADERS,
                flags: flag::END_HEADERS,
                stream: 5
            })
        );
        assert_eq!(Head::parse(&buf[..8]), None, "a header needs nine bytes");
        let mut reserved = buf.to_vec();
        reserved[5] |= 0x80;
        assert_eq!(Head::parse(&reserved).map(|head| head.stream), Some(5));
    }

    #[test]
    fn settings_round_trip_and_the_ack_is_empty() {
        let mut buf = BytesMut::new();
        put_settings(
            &mut buf,
            &[
                (setting::MAX_CONCURRENT_STREAMS, 100),
                (setting::INITIAL_WINDOW_SIZE, 1 << 20),
            ],
        );
        let head = Head::parse(&buf).unwrap();
        assert_eq!(
            (head.len, head.kind, head.flags, head.stream),
            (12, kind::SETTINGS, 0, 0)
        );
        let read: Vec<_> = settings(&buf[HEAD_LEN..]).collect();
        assert_eq!(read, [(3, 100), (4, 1 << 20)]);
        let mut ack = BytesMut::new();
        put_settings_ack(&mut ack);
        assert_eq!(&ack[..], &[0, 0, 0, 4, 1, 0, 0, 0, 0]);
    }

    #[test]
    fn control_frames_have_their_exact_layout() {
        let mut buf = BytesMut::new();
        put_goaway(&mut buf, 7, Reason::ENHANCE_YOUR_CALM);
        assert_eq!(
            &buf[..],
            &[0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0xb]
        );
        buf.clear();
        put_reset(&mut buf, 3, Reason::CANCEL);
        assert_eq!(&buf[..], &[0, 0, 4, 3, 0, 0, 0, 0, 3, 0, 0, 0, 8]);
        buf.clear();
        put_window_update(&mut buf, 0, 0x0100_0000);
        assert_eq!(&buf[..], &[0, 0, 4, 8, 0, 0, 0, 0, 0, 1, 0, 0, 0]);
        buf.clear();
        put_ping_ack(&mut buf, *b"12345678");
        assert_eq!(&buf[..9], &[0, 0, 8, 6, 1, 0, 0, 0, 0]);
        assert_eq!(&buf[9..], b"12345678");
    }

    #[test]
    fn padding_is_stripped_and_too_much_of_it_is_an_error() {
        let padded = Head {
            len: 6,
            kind: kind::DATA,
            flags: flag::PADDED,
            stream: 1,
        };
        assert_eq!(unpadded(padded, &[2, b'a', b'b', b'c', 0, 0]), Some(1..4));
        assert_eq!(unpadded(padded, &[0]), Some(1..1), "no padding, no data");
        assert_eq!(
            unpadded(padded, &[1]),
            None,
            "padding as long as the payload"
        );
        assert_eq!(
            unpadded(padded, &[5, 0, 0]),
            None,
            "padding past the payload"
        );
        assert_eq!(unpadded(padded, &[]), None, "no pad length");
        let plain = Head { flags: 0, ..padded };
        assert_eq!(unpadded(plain, b"abc"), Some(0..3));
    }
}
