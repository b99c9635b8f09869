//! Strait's configuration: the file format, its validation, and the validated model.
//!
//! It sits before the request path: the proxy and control plane call [`load`] or [`parse`]
//! and get either a [`Config`] in which every name resolves and every value is in range, or
//! every [`Problem`] at once (see `docs/config.md`). A [`Snapshot`] pairs a config with its
//! version for reloads, and [`convert`] re-renders a config between YAML and JSON. This crate
//! does no I/O beyond reading the file and has no runtime (no tokio).

#![warn(missing_docs)]

mod code;
mod error;
mod load;
pub mod model;
mod problem;
mod raw;
mod snapshot;
mod validate;
#[cfg(feature = "xds")]
pub mod xds;

pub use error::ConfigError;
pub use load::{Format, convert, load, parse};
pub use model::{
    AccessLog, Action, Admin, Cluster, Config, Discovery, DomainMatch, Endpoint, HashKey,
    HeaderChanges, HealthCheck, HealthProtocol, IoBackend, LbPolicy, Limits, Listener,
    ListenerProtocol, LogField, LogFormat, LogOutput, PathMatch, Pool, Redirect, Route, RouteMatch,
    TemplatePart, Tracing, UpstreamProtocol, ValueMatcher, ValueRule, VirtualHost, WeightedCluster,
};
pub use problem::{Problem, Problems};
pub use snapshot::Snapshot;
