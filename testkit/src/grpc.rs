//! A real gRPC upstream and client over tonic, without protobuf.
//!
//! Messages are raw [`bytes::Bytes`] ([`BytesCodec`]), so no `protoc` or codegen is needed and
//! tests can send any payload. The service is `strait.test.Echo`:
//!
//! - `Unary` echoes the message; the message `fail` gets [`fail_status`].
//! - `ServerStream` sends `N` copies of the message, `N` being its first byte (0 if empty).
//! - `ClientStream` answers with all received messages concatenated.
//! - `Bidi` echoes each message as it arrives; `fail` ends the call with [`fail_status`]
//!   after the echoes so far (in trailers, after headers and messages).
//!
//! For every method, request metadata `x-echo` comes back as response header `x-echo` and
//! trailer `x-echo-trailer` (in the single header block when the call fails without messages:
//! gRPC's trailers-only response). Every response carries header `x-upstream: <name>`.

mod client;
mod codec;
mod server;

pub use client::EchoClient;
pub use codec::BytesCodec;
pub use server::{
    BIDI, CLIENT_STREAM, EchoService, GrpcEcho, SERVER_STREAM, SERVICE_NAME, UNARY, fail_status,
};
