//! HTTP/2's wire format (RFC 9113, RFC 7541), for the proxy's own HTTP/2 server
//! ([`crate::downstream::h2`]): frames and HPACK. Pure code: no I/O, no connection state.

pub mod frame;
pub mod hpack;
