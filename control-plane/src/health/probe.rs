//! One check of one target: connect, ask, judge. Every probe opens its own connection and
//! drops it when done; the caller bounds the whole probe with the spec's timeout, and
//! cancelling the future closes the connection.

use std::io;
use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{CONNECTION, HOST, USER_AGENT};
use http::{HeaderValue, Request};
use http_body_util::Empty;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::{Outcome, Protocol, Target, grpc};

/// Sent as `user-agent` by HTTP and gRPC checks.
pub(super) const USER_AGENT_VALUE: &str = "strait-health-check";

/// Runs one check; returns its outcome and a detail for people.
pub(super) async fn check(target: &Target) -> (Outcome, String) {
    let result = match &target.check.protocol {
        Protocol::Tcp => connect(target.address)
            .await
            .map(|_| (Outcome::Pass, "connected".to_owned())),
        Protocol::Http {
            path,
            host,
            expected,
        } => {
            let host = host.as_deref().unwrap_or(&target.cluster);
            http(target.address, path, host, expected).await
        }
        Protocol::Grpc { service, authority } => {
            let authority = authority.as_deref().unwrap_or(&target.cluster);
            grpc::check(target.address, authority, service.as_deref()).await
        }
    };
    result.unwrap_or_else(|detail| (Outcome::Fail, detail))
}

pub(super) async fn connect(address: SocketAddr) -> Result<TcpStream, String> {
    let stream = TcpStream::connect(address)
        .await
        .map_err(|err| format!("connect failed: {err}"))?;
    // Checks are one small request each: no point waiting to coalesce writes.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

async fn http(
    address: SocketAddr,
    path: &str,
    host: &str,
    expected: &[std::ops::RangeInclusive<u16>],
) -> Result<(Outcome, String), String> {
    let request = Request::get(path)
        .header(
            HOST,
            HeaderValue::from_str(host).map_err(|_| format!("invalid host {host:?}"))?,
        )
        .header(USER_AGENT, USER_AGENT_VALUE)
        .header(CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|err| format!("invalid request for path {path:?}: {err}"))?;
    let stream = connect(address).await?;
    let (mut sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|err| format!("HTTP handshake failed: {err}"))?;
    tokio::pin!(conn);
    // Drive the connection and the exchange together, without a spawned task: dropping this
    // future (timeout) closes everything. With `connection: close` the connection may finish
    // in the same poll that delivers the response, so a clean end still reads the response.
    let response = sender.send_request(request);
    tokio::pin!(response);
    let response = tokio::select! {
        biased;
        response = &mut response => response,
        ended = &mut conn => match ended {
            Ok(()) => response.await,
            Err(err) => return Err(http_error(&err)),
        },
    };
    let response = response.map_err(|err| http_error(&err))?;
    let status = response.status().as_u16();
    let passed = if expected.is_empty() {
        (200..=299).contains(&status)
    } else {
        expected.iter().any(|range| range.contains(&status))
    };
    let outcome = if passed { Outcome::Pass } else { Outcome::Fail };
    Ok((outcome, format!("status {status}")))
}

fn http_error(err: &hyper::Error) -> String {
    let source = std::error::Error::source(err)
        .and_then(|source| source.downcast_ref::<io::Error>())
        .map(|io| format!(": {io}"))
        .unwrap_or_default();
    format!("HTTP exchange failed: {err}{source}")
}
