//! Real servers and clients on loopback for Strait's integration tests (dev only).
//!
//! Everything binds `127.0.0.1:0`, runs on whatever tokio runtime the test uses, and bounds
//! every wait with a timeout. Nothing here proxies: these are the *downstream* clients and
//! *upstream* servers that sit on either side of the proxy under test.
//!
//! - [`upstream`]: an HTTP/1.1 + h2c server whose behaviour is chosen by path, and that
//!   records every request it sees.
//! - [`grpc`]: a tonic echo service and client over raw bytes (no protobuf).
//! - [`fault`]: TCP endpoints that refuse, stall or reset connections.
//! - [`client`]: one-connection HTTP/1.1 and h2c clients, and raw-bytes exchanges.
//! - [`body`] and [`mod@checksum`]: deterministic streaming bodies and an FNV-1a 64 checksum.
//! - [`wait`]: bounded waits ([`wait::within`], [`assert_eventually!`]).
//! - [`trace_init`]: test logging.

pub mod body;
pub mod checksum;
pub mod client;
pub mod fault;
pub mod grpc;
mod task;
mod trace;
pub mod upstream;
pub mod wait;

pub use body::{
    pattern_body, pattern_byte, pattern_checksum, read_body_bytes, read_body_checksum,
    summarize_body,
};
pub use checksum::{Checksum, checksum};
pub use client::{Client, h2c_client, http1_client, parse_status, raw_exchange};
pub use fault::{BlackHole, ClosedPort, ResetServer};
pub use grpc::{EchoClient, GrpcEcho};
pub use trace::{Trace, trace_init};
pub use upstream::{SeenRequest, Upstream};
pub use wait::{DEFAULT_TIMEOUT, eventually, within};
