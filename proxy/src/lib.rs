//! Strait's data plane: a thread-per-core HTTP/1.1, HTTP/2 and gRPC reverse proxy.
//!
//! The request path, in module order: a [`worker`] accepts on its own `SO_REUSEPORT` socket
//! ([`io`]); [`downstream`] serves the connection (HTTP/1.1 or h2c); [`forward`] routes the request
//! ([`route`]), applies header semantics ([`headers`]), picks an endpoint ([`balance`]) and sends it
//! through the worker's pools ([`upstream`]), streaming bodies both ways ([`body`]). Failures are
//! classified in [`error`]. [`server`] starts the workers; [`snapshot`] is the config they serve;
//! [`reload`] swaps it and the listeners at run time; [`upgrade`] hands the listening sockets
//! to a new binary.
//! Configuration parsing and validation live in `strait-config`, not here.

pub mod admin;
pub mod balance;
pub mod body;
pub mod deadline;
pub mod demo;
pub mod downstream;
pub mod error;
pub mod forward;
pub mod headers;
pub mod http1;
pub mod http2;
pub mod io;
pub mod metrics;
pub mod observe;
pub mod reload;
pub mod route;
pub mod server;
pub mod snapshot;
pub mod upgrade;
pub mod upstream;
pub mod worker;
pub mod xds_client;

pub use error::ProxyError;
pub use server::{IoMode, Options, Server, StartError};
