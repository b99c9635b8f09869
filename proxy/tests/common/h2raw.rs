//! Raw HTTP/2 frames on a TCP stream, for clients that break the protocol on purpose.
//!
//! Request heads are HPACK-encoded here by hand (literal fields without indexing, never
//! Huffman-coded), independently of the proxy's encoder; response heads are decoded with the
//! proxy's decoder, which its unit tests check against RFC 7541's examples.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use strait_proxy::http2::hpack;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PUSH_PROMISE: u8 = 0x5;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

pub const PROTOCOL_ERROR: u32 = 0x1;
pub const FLOW_CONTROL_ERROR: u32 = 0x3;
pub const STREAM_CLOSED: u32 = 0x5;
pub const FRAME_SIZE_ERROR: u32 = 0x6;
pub const REFUSED_STREAM: u32 = 0x7;
pub const COMPRESSION_ERROR: u32 = 0x9;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// One frame as read.
#[derive(Debug)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The error code of a RST_STREAM or GOAWAY.
    pub fn code(&self) -> u32 {
        let at = if self.kind == GOAWAY { 4 } else { 0 };
        u32::from_be_bytes(self.payload[at..at + 4].try_into().unwrap())
    }
}

/// What became of a stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A response head: its status and fields.
    Response(u16, Vec<(String, String)>),
    /// RST_STREAM with this code.
    Reset(u32),
}

/// An HTTP/2 client speaking raw frames.
pub struct RawH2 {
    stream: TcpStream,
    buf: Vec<u8>,
    decoder: hpack::Decoder,
}

impl RawH2 {
    /// Connects and sends the preface and an empty SETTINGS.
    pub async fn connect(addr: SocketAddr) -> Self {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        let mut client = Self {
            stream,
            buf: Vec::new(),
            decoder: hpack::Decoder::new(hpack::DEFAULT_TABLE_SIZE),
        };
        client.send(SETTINGS, 0, 0, &[]).await;
        client
    }

    /// Sends one frame.
    pub async fn send(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
        let mut frame = vec![len[1], len[2], len[3], kind, flags];
        frame.extend_from_slice(&stream.to_be_bytes());
        frame.extend_from_slice(payload);
        // The proxy may close the connection as the frame goes out.
        let _ = self.stream.write_all(&frame).await;
    }

    /// Sends a request head in one HEADERS frame.
    pub async fn headers(&mut self, stream: u32, fields: &[(&str, &str)], end_stream: bool) {
        let block = block(fields);
        let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
        self.send(HEADERS, flags, stream, &block).await;
    }

    /// Reads the next frame; `None` once the connection is closed. Fails after 5 s.
    pub async fn next(&mut self) -> Option<Frame> {
        loop {
            if self.buf.len() >= 9 {
                let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
                if self.buf.len() >= 9 + len {
                    let head: Vec<u8> = self.buf.drain(..9).collect();
                    let payload = self.buf.drain(..len).collect();
                    return Some(Frame {
                        kind: head[3],
                        flags: head[4],
                        stream: u32::from_be_bytes(head[5..9].try_into().unwrap()) & 0x7fff_ffff,
                        payload,
                    });
                }
            }
            let mut chunk = vec![0; 16 * 1024];
            let read = tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut chunk))
                .await
                .expect("a frame or the connection's end within 5 s");
            match read {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Reads until GOAWAY (its error code) or the end of the connection (`None`). Decodes the
    /// header blocks on the way.
    pub async fn goaway(&mut self) -> Option<u32> {
        while let Some(frame) = self.next().await {
            if frame.kind == GOAWAY {
                return Some(frame.code());
            }
            self.note(&frame);
        }
        None
    }

    /// Reads until the stream gets a response head or is reset.
    pub async fn outcome(&mut self, stream: u32) -> Outcome {
        loop {
            let frame = self.next().await.expect("connection open");
            assert_ne!(
                frame.kind,
                GOAWAY,
                "GOAWAY {:#x} while waiting for stream {stream}",
                frame.code()
            );
            let head = self.note(&frame);
            if frame.stream != stream {
                continue;
            }
            if frame.kind == RST_STREAM {
                return Outcome::Reset(frame.code());
            }
            if let Some(fields) = head {
                let status = fields
                    .iter()
                    .find(|(name, _)| name == ":status")
                    .map(|(_, value)| value.parse().unwrap())
                    .expect(":status");
                return Outcome::Response(status, fields);
            }
        }
    }

    /// The `:status` of a HEADERS frame's block (decoded, so the table stays in step).
    pub fn status(&mut self, frame: &Frame) -> u16 {
        let fields = self.note(frame).expect("a HEADERS frame");
        let (_, status) = fields
            .iter()
            .find(|(name, _)| name == ":status")
            .expect(":status");
        status.parse().unwrap()
    }

    /// Decodes a HEADERS frame's block (the proxy sends each in one frame) to keep the
    /// decoder's table in step.
    fn note(&mut self, frame: &Frame) -> Option<Vec<(String, String)>> {
        if frame.kind != HEADERS {
            return None;
        }
        assert!(frame.flags & END_HEADERS != 0, "one frame per block");
        let mut fields = Vec::new();
        self.decoder
            .decode(
                &Bytes::copy_from_slice(&frame.payload),
                &mut |name, value, _| {
                    fields.push((
                        String::from_utf8_lossy(name).into_owned(),
                        String::from_utf8_lossy(&value).into_owned(),
                    ));
                },
            )
            .unwrap();
        Some(fields)
    }
}

/// A GET request's pseudo-header fields for `path`.
pub fn get(path: &str) -> Vec<(&str, &str)> {
    vec![
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", "a"),
        (":path", path),
    ]
}

/// A header block of literal fields without indexing (RFC 7541 §6.2.2), new names, no Huffman.
pub fn block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in fields {
        block.push(0);
        string(&mut block, name.as_bytes());
        string(&mut block, value.as_bytes());
    }
    block
}

/// A string literal: its length as an integer with a 7-bit prefix (RFC 7541 §5.1), then its bytes.
fn string(block: &mut Vec<u8>, text: &[u8]) {
    let mut n = text.len();
    if n < 127 {
        block.push(n as u8);
    } else {
        block.push(127);
        n -= 127;
        while n >= 128 {
            block.push((n % 128) as u8 | 0x80);
            n /= 128;
        }
        block.push(n as u8);
    }
    block.extend_from_slice(text);
}
