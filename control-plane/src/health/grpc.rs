//! The gRPC health v1 check (`grpc.health.v1.Health/Check`) over h2c, with its two tiny
//! protobuf messages encoded by hand:
//!
//! ```text
//! message HealthCheckRequest  { string service = 1; }
//! message HealthCheckResponse { ServingStatus status = 1; }
//! enum ServingStatus { UNKNOWN = 0; SERVING = 1; NOT_SERVING = 2; SERVICE_UNKNOWN = 3; }
//! ```

use std::net::SocketAddr;

use bytes::{BufMut as _, Bytes, BytesMut};
use http::header::{CONTENT_TYPE, TE, USER_AGENT};
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::Outcome;
use super::probe::{USER_AGENT_VALUE, connect};

const PATH: &str = "/grpc.health.v1.Health/Check";
/// A health response is a few bytes; anything much larger is not one.
const MAX_RESPONSE: usize = 16 * 1024;

/// Asks `address` whether `service` (or the whole server) is serving.
pub(super) async fn check(
    address: SocketAddr,
    authority: &str,
    service: Option<&str>,
) -> Result<(Outcome, String), String> {
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{authority}{PATH}"))
        .header(CONTENT_TYPE, "application/grpc")
        .header(TE, "trailers")
        .header(USER_AGENT, USER_AGENT_VALUE)
        .body(Full::new(frame(&encode_request(service.unwrap_or("")))))
        .map_err(|err| format!("invalid gRPC request for authority {authority:?}: {err}"))?;
    let stream = connect(address).await?;
    let (mut sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .map_err(|err| format!("HTTP/2 handshake failed: {err}"))?;
    tokio::pin!(conn);
    let exchange = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|err| format!("gRPC exchange failed: {err}"))?;
        let (parts, body) = response.into_parts();
        let collected = Limited::new(body, MAX_RESPONSE)
            .collect()
            .await
            .map_err(|err| format!("gRPC response body failed: {err}"))?;
        Ok::<_, String>((parts, collected))
    };
    tokio::pin!(exchange);
    // A connection that ends cleanly may already hold the whole response: read it.
    let (parts, collected) = tokio::select! {
        biased;
        answer = &mut exchange => answer?,
        ended = &mut conn => match ended {
            Ok(()) => exchange.await?,
            Err(err) => return Err(format!("HTTP/2 connection failed: {err}")),
        },
    };
    if parts.status != http::StatusCode::OK {
        return Ok((
            Outcome::Fail,
            format!("HTTP status {}", parts.status.as_u16()),
        ));
    }
    let trailers = collected.trailers().cloned();
    let body = collected.to_bytes();
    // A trailers-only response carries grpc-status in the headers.
    let status = trailers
        .as_ref()
        .and_then(grpc_status)
        .or_else(|| grpc_status(&parts.headers));
    match status {
        None => Ok((Outcome::Fail, "no grpc-status in the response".to_owned())),
        Some((0, _)) => Ok(judge(&body)),
        Some((code, message)) => Ok((
            Outcome::Fail,
            format!("grpc-status {code} ({}){message}", code_name(code)),
        )),
    }
}

/// The outcome of a response body with grpc-status 0.
fn judge(body: &[u8]) -> (Outcome, String) {
    match unframe(body).and_then(decode_status) {
        Some(1) => (Outcome::Pass, "SERVING".to_owned()),
        Some(status) => (Outcome::Fail, status_name(status).to_owned()),
        None => (Outcome::Fail, "malformed HealthCheckResponse".to_owned()),
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<(u32, String)> {
    let code = headers.get("grpc-status")?.to_str().ok()?.parse().ok()?;
    let message = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .filter(|m| !m.is_empty())
        .map(|m| format!(": {}", percent_decode(m)))
        .unwrap_or_default();
    Some((code, message))
}

/// `HealthCheckRequest { service }`: field 1, wire type 2 (length-delimited); empty when the
/// service is empty, as proto3 omits default values.
pub(super) fn encode_request(service: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(service.len() + 6);
    if !service.is_empty() {
        out.put_u8(0x0a);
        put_varint(&mut out, service.len() as u64);
        out.put_slice(service.as_bytes());
    }
    out.freeze()
}

/// The gRPC length-prefixed message: uncompressed flag, 4-byte big-endian length, message.
pub(super) fn frame(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(message.len() + 5);
    out.put_u8(0);
    out.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    out.put_slice(message);
    out.freeze()
}

/// The single uncompressed message in a response body; `None` for anything else.
pub(super) fn unframe(body: &[u8]) -> Option<&[u8]> {
    let (&flag, rest) = body.split_first()?;
    let (length, message) = rest.split_first_chunk::<4>()?;
    let length = usize::try_from(u32::from_be_bytes(*length)).ok()?;
    (flag == 0 && message.len() == length).then_some(message)
}

/// The `status` field of a `HealthCheckResponse` (0 when absent, as in proto3); unknown
/// fields are skipped. `None` for a malformed message.
pub(super) fn decode_status(mut message: &[u8]) -> Option<u64> {
    let mut status = 0;
    while !message.is_empty() {
        let key = take_varint(&mut message)?;
        match (key >> 3, key & 7) {
            (1, 0) => status = take_varint(&mut message)?,
            (_, 0) => {
                take_varint(&mut message)?;
            }
            (_, 1) => message = message.get(8..)?,
            (_, 2) => {
                let len = usize::try_from(take_varint(&mut message)?).ok()?;
                message = message.get(len..)?;
            }
            (_, 5) => message = message.get(4..)?,
            _ => return None,
        }
    }
    Some(status)
}

/// gRPC percent-encodes `grpc-message`; a broken escape is kept as it is.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| text.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn put_varint(out: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        out.put_u8((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

fn take_varint(input: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = input.split_first()?;
        *input = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

fn status_name(status: u64) -> &'static str {
    match status {
        0 => "UNKNOWN",
        1 => "SERVING",
        2 => "NOT_SERVING",
        3 => "SERVICE_UNKNOWN",
        _ => "unknown serving status",
    }
}

fn code_name(code: u32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    usize::try_from(code)
        .ok()
        .and_then(|code| NAMES.get(code))
        .copied()
        .unwrap_or("unknown code")
}
