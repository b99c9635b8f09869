//! Downstream clients: what a user's client would send to the proxy.
//!
//! - [`Client`]: one HTTP/1.1 or h2c (prior knowledge) connection built on
//!   `hyper::client::conn`, so a test controls exactly which connection carries a request.
//! - [`raw_exchange`]: bytes in, bytes out over one TCP connection, for malformed requests
//!   that no HTTP client would send; [`parse_status`] reads the status from the reply.

mod conn;
mod raw;

pub use conn::{Client, h2c_client, http1_client};
pub use raw::{parse_status, raw_exchange};
