//! Observability of each request: the access log and W3C trace context.
//!
//! Sits at both ends of the request path: [`trace`] reads the downstream's `traceparent` before
//! the request is forwarded and writes the proxy's own span into the upstream request; once the
//! response has ended, the worker logs an [`Entry`] through its [`LogHandle`], which formats the
//! line on the worker and hands it to the [`AccessLogger`]'s writer thread without ever waiting.
//! [`json`] holds the hand-written string escaping and timestamps both log formats use.

pub mod access_log;
pub mod json;
pub mod record;
#[cfg(test)]
mod tests;
pub mod trace;

pub use access_log::{AccessLogger, Counts, Entry, LogHandle, Totals};
pub use record::LogRecord;
pub use trace::{TraceContext, parse_traceparent, propagate, traceparent_value};
