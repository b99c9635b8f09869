//! A real HTTP upstream for the proxy to forward to: HTTP/1.1 and h2c (prior knowledge) on one
//! loopback port, with behaviour chosen by request path so one server serves many tests.
//!
//! - `/echo`: `200`, streams the request body back as it arrives, then trailers `x-checksum`
//!   (16 hex digits of [`checksum`](crate::checksum())) and `x-body-len`, on HTTP/2 or when
//!   the request has `te: trailers`.
//! - `/bytes/N`: `200`, `N` bytes of [`pattern_byte`](crate::pattern_byte) in 64 KiB frames.
//! - `/status/N`: status `N` (200..=999), empty body.
//! - `/delay/MS`: `200` after `MS` milliseconds.
//! - `/reset-mid-body`: `200` with `content-length: 1048576`, 64 KiB of pattern, then the
//!   HTTP/1.1 connection is closed or the HTTP/2 stream reset (`RST_STREAM`).
//! - `/trailers`: `200`, body `ok`, trailer `x-trailer: yes` (HTTP/2, or HTTP/1.1 with
//!   `te: trailers`).
//! - `/abort`: no response: the HTTP/1.1 connection is closed or the HTTP/2 stream reset.
//! - `Upgrade: websocket` (any path, HTTP/1.1): `101`, then echoes text and binary messages.
//! - any other path: `200`, body `<name>`.
//!
//! Every response carries `x-upstream: <name>`. Except for `/echo` and WebSocket, the request
//! body is read to its end before the response starts. Every request is recorded as a
//! [`SeenRequest`] when its head arrives and updated as its body is read.
//!
//! Dropping the [`Upstream`] closes the listener and aborts every connection it serves.

mod record;
mod respond;
mod server;
mod websocket;

pub use record::{BodyEnd, SeenRequest};
pub use server::{Upstream, UpstreamBuilder};
