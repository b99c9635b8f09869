//! Finds HTTP/1.1 request heads that carry both `Content-Length` and `Transfer-Encoding`.
//!
//! RFC 9112 §6.1 lets a server either reject such a request or process it as chunked and close
//! the connection; hyper does the latter and hides the `Content-Length` from the service. Since
//! the pair is the classic request-smuggling vector, Strait rejects it with 400, like HAProxy
//! and Envoy. [`FramingGuard`] watches the bytes [`crate::io::Socket`] reads on an HTTP/1
//! connection, follows the message framing (heads, `Content-Length` bodies, chunked bodies) and
//! records the first offending head; the request path asks whether the request it serves is
//! that head. It only follows well-formed framing: at anything else it stops, because hyper
//! rejects the message and closes the connection anyway. It also stops on HTTP/2 and after an
//! upgrade.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Shared between the socket (writer) and the request path (reader) of one connection.
#[derive(Debug, Default)]
pub struct FramingGuard {
    /// 1-based index of the first head with both headers; 0 when none.
    first_ambiguous: AtomicU64,
    stopped: AtomicBool,
}

impl FramingGuard {
    /// Whether the `index`-th request head (1-based) carried both framing headers.
    pub fn is_ambiguous(&self, index: u64) -> bool {
        self.first_ambiguous.load(Ordering::Acquire) == index
    }

    /// Stops watching (the connection switched protocols).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }

    fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    fn flag(&self, index: u64) {
        if self.first_ambiguous.load(Ordering::Relaxed) == 0 {
            self.first_ambiguous.store(index, Ordering::Release);
        }
    }
}

const CONTENT_LENGTH: &[u8] = b"content-length";
const H2_PREFACE: &[u8] = b"PRI ";
const TRANSFER_ENCODING: &[u8] = b"transfer-encoding";

/// The scanner's position in the byte stream; owned by the socket.
#[derive(Debug, Default)]
pub struct FramingScanner {
    state: State,
    heads: u64,
    has_cl: bool,
    has_te: bool,
    length: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the first byte: the HTTP/2 preface or a request line.
    #[default]
    Start,
    /// Matching the start of the HTTP/2 preface.
    Preface { at: usize },
    /// In the request line.
    RequestLine,
    /// At the start of a header line, or of the empty line ending the head.
    LineStart,
    /// Matching a header name: how many bytes matched, and which names still can.
    Name { at: usize, cl: bool, te: bool },
    /// In a `Content-Length` value.
    Length,
    /// Skipping the rest of a line.
    SkipLine,
    /// Saw `\r` of the empty line.
    HeadEndLf,
    /// Skipping this many body bytes.
    Body,
    /// In a chunk-size line (hex digits).
    ChunkSize { digits: u8 },
    /// Past the chunk size: extensions, up to `\n`.
    ChunkExt,
    /// In chunk data.
    ChunkData,
    /// Expecting the `\r\n` after chunk data.
    ChunkDataEnd { cr: bool },
    /// In the trailer section after the last chunk, at a line start.
    TrailerLineStart,
    /// Inside a trailer field line.
    TrailerSkip,
    /// Stopped: framing we do not follow, or not HTTP/1.
    Off,
}

impl FramingScanner {
    /// Follows `bytes`, the next bytes read from the connection.
    pub fn scan(&mut self, bytes: &[u8], guard: &FramingGuard) {
        if self.state == State::Off {
            return;
        }
        if guard.is_stopped() {
            self.state = State::Off;
            return;
        }
        let mut i = 0;
        while i < bytes.len() {
            // Most bytes of a head are skipped up to the next line: find it with memchr
            // instead of stepping the state machine one byte at a time.
            if let Some(next) = self.after_newline() {
                match memchr::memchr(b'\n', &bytes[i..]) {
                    Some(at) => {
                        i += at + 1;
                        self.state = next;
                        continue;
                    }
                    None => return,
                }
            }
            let b = bytes[i];
            i += 1;
            self.state = match self.state {
                State::Off => return,
                // "PRI " starts the HTTP/2 preface (h2c with prior knowledge): not ours.
                State::Start | State::Preface { .. } if self.preface_byte(b) => {
                    if let State::Preface { at } = self.state {
                        if at + 1 == H2_PREFACE.len() {
                            State::Off
                        } else {
                            State::Preface { at: at + 1 }
                        }
                    } else {
                        State::Preface { at: 1 }
                    }
                }
                State::Start | State::Preface { .. } | State::RequestLine => match b {
                    b'\n' => State::LineStart,
                    _ => State::RequestLine,
                },
                State::LineStart => match b {
                    b'\r' => State::HeadEndLf,
                    b'\n' => self.head_end(guard),
                    _ => self.name_byte(0, true, true, b),
                },
                State::Name { at, cl, te } => match b {
                    b':' => match (
                        cl && at == CONTENT_LENGTH.len(),
                        te && at == TRANSFER_ENCODING.len(),
                    ) {
                        (true, _) => {
                            self.has_cl = true;
                            self.length = 0;
                            State::Length
                        }
                        (_, true) => {
                            self.has_te = true;
                            State::SkipLine
                        }
                        _ => State::SkipLine,
                    },
                    b'\n' => State::LineStart,
                    _ => self.name_byte(at, cl, te, b),
                },
                State::Length => match b {
                    b'0'..=b'9' => {
                        self.length = self
                            .length
                            .saturating_mul(10)
                            .saturating_add(u64::from(b - b'0'));
                        State::Length
                    }
                    b' ' | b'\t' | b'\r' => State::Length,
                    b'\n' => State::LineStart,
                    _ => State::Off, // a list or garbage: hyper decides
                },
                State::SkipLine => match b {
                    b'\n' => State::LineStart,
                    _ => State::SkipLine,
                },
                State::HeadEndLf => match b {
                    b'\n' => self.head_end(guard),
                    _ => State::Off,
                },
                State::Body => {
                    // Skip as much of the body as this read holds, in one step.
                    let take = (self.length).min((bytes.len() - i + 1) as u64);
                    self.length -= take;
                    i += take as usize - 1;
                    if self.length == 0 {
                        State::Start
                    } else {
                        State::Body
                    }
                }
                State::ChunkSize { digits } => match hex(b) {
                    Some(d) if digits < 15 => {
                        self.length = self.length * 16 + u64::from(d);
                        State::ChunkSize { digits: digits + 1 }
                    }
                    None if digits > 0 && b == b'\n' => self.chunk_start(),
                    None if digits > 0 && matches!(b, b';' | b'\r' | b' ' | b'\t') => {
                        State::ChunkExt
                    }
                    _ => State::Off,
                },
                State::ChunkExt => match b {
                    b'\n' => self.chunk_start(),
                    _ => State::ChunkExt,
                },
                State::ChunkData => {
                    let take = (self.length).min((bytes.len() - i + 1) as u64);
                    self.length -= take;
                    i += take as usize - 1;
                    if self.length == 0 {
                        State::ChunkDataEnd { cr: false }
                    } else {
                        State::ChunkData
                    }
                }
                State::ChunkDataEnd { cr } => match b {
                    b'\r' if !cr => State::ChunkDataEnd { cr: true },
                    b'\n' => {
                        self.length = 0;
                        State::ChunkSize { digits: 0 }
                    }
                    _ => State::Off,
                },
                State::TrailerLineStart => match b {
                    b'\r' => State::TrailerLineStart,
                    b'\n' => State::Start,
                    // A trailer field: skip it, then look for the next line start.
                    _ => {
                        let rest = &bytes[i..];
                        match rest.iter().position(|&c| c == b'\n') {
                            Some(at) => {
                                i += at + 1;
                                State::TrailerLineStart
                            }
                            None => {
                                i = bytes.len();
                                State::TrailerSkip
                            }
                        }
                    }
                },
                State::TrailerSkip => match b {
                    b'\n' => State::TrailerLineStart,
                    _ => State::TrailerSkip,
                },
            };
        }
    }

    /// For the states that skip to the end of the line: the state after its `\n`.
    fn after_newline(&self) -> Option<State> {
        match self.state {
            State::RequestLine | State::SkipLine => Some(State::LineStart),
            State::ChunkExt => Some(self.chunk_start()),
            State::TrailerSkip => Some(State::TrailerLineStart),
            _ => None,
        }
    }

    fn preface_byte(&self, b: u8) -> bool {
        let at = match self.state {
            State::Preface { at } => at,
            _ => 0,
        };
        H2_PREFACE.get(at) == Some(&b)
    }

    fn name_byte(&self, at: usize, cl: bool, te: bool, b: u8) -> State {
        let lower = b.to_ascii_lowercase();
        let cl = cl && CONTENT_LENGTH.get(at) == Some(&lower);
        let te = te && TRANSFER_ENCODING.get(at) == Some(&lower);
        if cl || te {
            State::Name { at: at + 1, cl, te }
        } else {
            State::SkipLine
        }
    }

    fn head_end(&mut self, guard: &FramingGuard) -> State {
        self.heads += 1;
        let (cl, te) = (self.has_cl, self.has_te);
        self.has_cl = false;
        self.has_te = false;
        if cl && te {
            guard.flag(self.heads);
            // hyper closes the connection after this request; nothing more to follow.
            return State::Off;
        }
        if te {
            self.length = 0;
            State::ChunkSize { digits: 0 }
        } else if cl && self.length > 0 {
            State::Body
        } else {
            State::Start
        }
    }

    fn chunk_start(&self) -> State {
        if self.length == 0 {
            State::TrailerLineStart
        } else {
            State::ChunkData
        }
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(chunks: &[&[u8]]) -> (FramingScanner, FramingGuard) {
        let guard = FramingGuard::default();
        let mut scanner = FramingScanner::default();
        for chunk in chunks {
            scanner.scan(chunk, &guard);
        }
        (scanner, guard)
    }

    #[test]
    fn flags_the_head_with_both_framing_headers() {
        let stream = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n\
            POST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc\
            POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\n\
            POST /d HTTP/1.1\r\ncontent-LENGTH: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        // Every split point gives the same answer.
        for split in 0..stream.len() {
            let (scanner, guard) = scan_all(&[&stream[..split], &stream[split..]]);
            assert!(guard.is_ambiguous(4), "split at {split}: {scanner:?}");
            assert!(!guard.is_ambiguous(3));
        }
    }

    #[test]
    fn well_formed_streams_are_not_flagged() {
        let stream =
            b"POST / HTTP/1.1\r\nContent-Length: 30\r\n\r\nTransfer-Encoding: chunked\r\n\r\n\
            GET / HTTP/1.1\r\nX-Content-Length: 1\r\nTransfer-Encodings: x\r\n\r\n";
        let (scanner, guard) = scan_all(&[stream]);
        assert!(!guard.is_ambiguous(1) && !guard.is_ambiguous(2));
        assert_eq!(scanner.heads, 2);
        assert_eq!(scanner.state, State::Start);
    }

    #[test]
    fn stops_on_http2_and_on_request() {
        let (scanner, _) = scan_all(&[b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"]);
        assert_eq!(scanner.state, State::Off);
        let guard = FramingGuard::default();
        guard.stop();
        let mut scanner = FramingScanner::default();
        scanner.scan(b"GET / HTTP/1.1\r\n", &guard);
        assert_eq!(scanner.state, State::Off);
    }
}
