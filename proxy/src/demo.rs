//! `strait demo`: the proxy and two built-in backends on loopback, from an embedded config.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
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
    let mut listeners = Vec::new();
    for (_, default) in BACKENDS {
        let listener = std::net::TcpListener::bind(default)
            .or_else(|_| std::net::TcpListener::bind("127.0.0.1:0"))?;
        listener.set_nonblocking(true)?;
        listeners.push(listener);
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
                let body = format!("hello from {name}: {} {}\n", req.method(), req.uri());
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
