//! `strait demo`: the proxy and two built-in backends on loopback, from an embedded config.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The demo's config as shipped; addresses are replaced with the ports actually bound.
pub const CONFIG: &str = include_str!("../../examples/demo.yaml");

const LISTEN: &str = "127.0.0.1:8080";
const BACKENDS: [(&str, &str); 2] = [
    ("backend-a", "127.0.0.1:18001"),
    ("backend-b", "127.0.0.1:18002"),
];

/// The demo config with the real listener and backend addresses.
pub fn config(listen: SocketAddr, backends: &[SocketAddr; 2]) -> String {
    let mut text = CONFIG.replace(LISTEN, &listen.to_string());
    for ((_, default), actual) in BACKENDS.iter().zip(backends) {
        text = text.replace(default, &actual.to_string());
    }
    text
}

/// Starts the two demo backends on a thread of their own; returns their addresses.
///
/// Each binds its usual port when free, else any free port.
///
/// # Errors
/// When no socket can be bound or the thread cannot start.
pub fn start_backends() -> std::io::Result<[SocketAddr; 2]> {
    let bind = |(_, default): (&str, &str)| {
        std::net::TcpListener::bind(default).or_else(|_| std::net::TcpListener::bind("127.0.0.1:0"))
    };
    serve_backends([bind(BACKENDS[0])?, bind(BACKENDS[1])?])
}

/// Serves the two demo backends on `listeners`, on a thread of their own; returns their
/// addresses.
///
/// # Errors
/// When a listener cannot be made nonblocking or the thread cannot start.
pub fn serve_backends(listeners: [std::net::TcpListener; 2]) -> std::io::Result<[SocketAddr; 2]> {
    for listener in &listeners {
        listener.set_nonblocking(true)?;
    }
    let addrs = [listeners[0].local_addr()?, listeners[1].local_addr()?];
    std::thread::Builder::new()
        .name("demo-backends".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(err) => {
                    tracing::error!(error = %err, "demo backends could not start");
                    return;
                }
            };
            let local = tokio::task::LocalSet::new();
            local.block_on(&runtime, async move {
                let mut tasks = Vec::new();
                for ((name, _), listener) in BACKENDS.iter().zip(listeners) {
                    match TcpListener::from_std(listener) {
                        Ok(listener) => {
                            tasks.push(tokio::task::spawn_local(serve_backend(name, listener)))
                        }
                        Err(err) => tracing::error!(error = %err, "demo backend could not start"),
                    }
                }
                for task in tasks {
                    let _ = task.await;
                }
            });
        })?;
    Ok(addrs)
}

async fn serve_backend(name: &'static str, listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::task::spawn_local(async move {
            let service = service_fn(move |req: Request<Incoming>| async move {
                let (parts, mut upload) = req.into_parts();
                // The request body is read to its end before the answer, as servers that keep
                // connections alive do: hyper's server answers an unread body and then closes
                // the connection without saying so, and a proxy may reuse it in between.
                let mut received = 0_usize;
                while let Some(Ok(frame)) = upload.frame().await {
                    received += frame.data_ref().map_or(0, Bytes::len);
                }
                let size = match received {
                    0 => String::new(),
                    n => format!(" ({n} bytes)"),
                };
                let body = format!("hello from {name}: {} {}{size}\n", parts.method, parts.uri);
                let mut response = Response::new(Full::new(Bytes::from(body)));
                if let Ok(value) = http::HeaderValue::try_from(name) {
                    response.headers_mut().insert("x-backend", value);
                }
                Ok::<_, Infallible>(response)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Picks the demo's listen address: the usual one when free, else any free port.
pub fn listen_addr(wanted: Option<SocketAddr>) -> SocketAddr {
    if let Some(addr) = wanted {
        return addr;
    }
    let default: SocketAddr = LISTEN
        .parse()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
    match std::net::TcpListener::bind(default) {
        Ok(_) => default,
        Err(_) => SocketAddr::from(([127, 0, 0, 1], 0)),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::time::Duration;

    use super::*;

    /// Reads one response with a Content-Length body from `stream`.
    fn read_response(stream: &mut std::net::TcpStream) -> String {
        let mut got = Vec::new();
        let mut buf = [0_u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&got).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let length: usize = text[..end]
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|v| v.trim().parse().ok())
                    .expect("content-length");
                if got.len() >= end + 4 + length {
                    return text;
                }
            }
            let n = stream.read(&mut buf).expect("read within the timeout");
            assert!(n > 0, "closed after {text:?}");
            got.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn a_backend_reads_uploads_and_keeps_the_connection() {
        let listeners = [(); 2].map(|()| std::net::TcpListener::bind("127.0.0.1:0").unwrap());
        let [a, _] = serve_backends(listeners).unwrap();
        let mut stream = std::net::TcpStream::connect(a).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let upload = vec![b'x'; 100_000];
        for round in 0..3 {
            let head = format!(
                "POST /up HTTP/1.1\r\nhost: demo\r\ncontent-length: {}\r\n\r\n",
                upload.len()
            );
            stream.write_all(head.as_bytes()).unwrap();
            stream.write_all(&upload).unwrap();
            let response = read_response(&mut stream);
            assert!(
                response.starts_with("HTTP/1.1 200"),
                "round {round}: {response}"
            );
            assert!(
                response.ends_with("hello from backend-a: POST /up (100000 bytes)\n"),
                "{response}"
            );
            assert!(!response.contains("connection: close"), "{response}");
        }
    }
}
