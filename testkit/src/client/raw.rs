//! Raw TCP exchanges for requests no HTTP client would send.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Connects to `addr`, writes `request`, and reads until the peer closes or `timeout` (counted
/// from the start) elapses; returns whatever was read.
///
/// The write side stays open, as a client waiting for a response would leave it. A reset
/// while reading ends the read like a close does. Reaching the timeout is not an error: a
/// proxy that keeps the connection open after answering is normal.
///
/// # Errors
///
/// Fails if connecting or writing fails or does not finish within `timeout`.
pub async fn raw_exchange(
    addr: SocketAddr,
    request: &[u8],
    timeout: Duration,
) -> anyhow::Result<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut stream = tokio::time::timeout_at(deadline, TcpStream::connect(addr))
        .await
        .with_context(|| format!("connect to {addr} timed out"))?
        .with_context(|| format!("connect to {addr}"))?;
    tokio::time::timeout_at(deadline, stream.write_all(request))
        .await
        .with_context(|| format!("write to {addr} timed out"))?
        .with_context(|| format!("write to {addr}"))?;

    let mut received = Vec::new();
    // On the heap: a stack buffer would make this future large (clippy `large_futures`).
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) | Ok(Ok(0)) => break,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Ok(Err(e)) if e.kind() == ErrorKind::ConnectionReset => break,
            Ok(Err(e)) => return Err(e).with_context(|| format!("read from {addr}")),
        }
    }
    Ok(received)
}

/// The status code of an HTTP/1.x response starting at `response[0]`
/// (`HTTP/1.1 400 Bad Request\r\n…` gives `Some(400)`).
pub fn parse_status(response: &[u8]) -> Option<u16> {
    let rest = response
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| response.strip_prefix(b"HTTP/1.0 "))?;
    let (code, after) = rest.split_at_checked(3)?;
    if !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if !matches!(after.first(), Some(b' ' | b'\r') | None) {
        return None;
    }
    std::str::from_utf8(code).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_status_table() {
        let cases: &[(&[u8], Option<u16>)] = &[
            (b"HTTP/1.1 200 OK\r\n\r\n", Some(200)),
            (b"HTTP/1.0 400 Bad Request\r\n", Some(400)),
            (b"HTTP/1.1 204\r\n", Some(204)),
            (b"HTTP/1.1 431", Some(431)),
            (b"HTTP/1.1 2000 OK\r\n", None),
            (b"HTTP/1.1 2x0 OK\r\n", None),
            (b"HTTP/2 200\r\n", None),
            (b"", None),
            (b"garbage", None),
        ];
        for (input, expected) in cases {
            assert_eq!(
                parse_status(input),
                *expected,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }
}
