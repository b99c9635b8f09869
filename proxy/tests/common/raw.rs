//! Raw HTTP/1.1 on a TCP stream, for clients that misbehave on purpose: one response read in
//! full, and a request head dribbled until the proxy cuts it off; and an upstream that answers
//! with fixed bytes.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Reads one response with a `content-length` body (within 5 s per read); returns its head
/// (lowercased) and body.
pub async fn read_response(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("response within 5 s")
            .unwrap();
        assert!(n > 0, "closed before a full response");
        data.extend_from_slice(&buf[..n]);
        let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        if data.len() >= end + 4 + length {
            return (head, data[end + 4..end + 4 + length].to_vec());
        }
    }
}

/// Starts a request head, then sends one more byte of it every `every` until the proxy closes
/// the connection; returns how long that took. Fails after 10 s.
pub async fn dribble_until_closed(stream: &mut TcpStream, every: Duration) -> Duration {
    stream.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let started = Instant::now();
    loop {
        tokio::time::sleep(every).await;
        if stream.write_all(b"X").await.is_err() {
            return started.elapsed();
        }
        let mut buf = [0u8; 256];
        let read = tokio::time::timeout(Duration::from_millis(1), stream.read(&mut buf)).await;
        if let Ok(Ok(0) | Err(_)) = read {
            return started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(10), "never cut off");
    }
}

/// Reads until the peer closes (or the stream fails); returns what arrived and how long it
/// took. Fails if the connection is still open after `limit`.
pub async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(started + limit, stream.read(&mut buf)).await {
            Err(_) => panic!("connection still open after {limit:?}"),
            Ok(Ok(0) | Err(_)) => return (received, started.elapsed()),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
}

/// An upstream that reads each request head, then writes `answer` and closes, or without an
/// answer resets the connection (SO_LINGER 0).
pub async fn upstream(answer: Option<&'static [u8]>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            match answer {
                Some(bytes) => {
                    let _ = stream.write_all(bytes).await;
                }
                None => {
                    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                }
            }
            drop(stream);
        }
    });
    addr
}
