//! What the proxy reports about the requests it serves: access logs and trace sampling.
//!
//! The proxy writes one access-log line per request from its workers through a bounded queue to
//! one writer; these types say where, in which shape, and how much to buffer. The writer itself
//! lives in the proxy.

use std::path::PathBuf;

/// The access log: where each request's line goes and what it looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLog {
    pub(crate) output: LogOutput,
    pub(crate) format: LogFormat,
    pub(crate) queue_size: usize,
}

impl AccessLog {
    /// Where lines are written.
    pub fn output(&self) -> &LogOutput {
        &self.output
    }
    /// The shape of each line. Default [`LogFormat::Json`].
    pub fn format(&self) -> &LogFormat {
        &self.format
    }
    /// Lines buffered between the workers and the writer, 1..=1000000. Default 65536. When the
    /// queue is full, new lines are dropped and counted instead of slowing requests down.
    pub fn queue_size(&self) -> usize {
        self.queue_size
    }
}

/// Where access-log lines are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogOutput {
    /// The proxy's standard output. The default.
    Stdout,
    /// The proxy's standard error.
    Stderr,
    /// A file, appended to and created if missing. The path is absolute.
    File(PathBuf),
}

/// The shape of an access-log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line with every [`LogField`], keyed by [`LogField::as_str`]. The
    /// default.
    Json,
    /// One line per request, rendered from a template.
    Text(Vec<TemplatePart>),
}

/// A piece of a text access-log template: `{field}` placeholders and the text between them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplatePart {
    /// Text written as is; `{{` and `}}` in the template are `{` and `}` here.
    Literal(String),
    /// The value of a field.
    Field(LogField),
}

/// A value recorded for each request in the access log.
///
/// Names are stable: they are the JSON keys and the text template's placeholders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogField {
    /// When the request head was received (RFC 3339, UTC).
    StartTime,
    /// Milliseconds, to the microsecond, from receiving the request head to the end of the
    /// response.
    DurationMs,
    /// The request method.
    Method,
    /// The request's `Host` or `:authority`.
    Authority,
    /// The request path with its query.
    Path,
    /// The downstream protocol: `HTTP/1.1` or `HTTP/2`.
    Protocol,
    /// The response status sent downstream.
    Status,
    /// Request body bytes received from downstream.
    BytesIn,
    /// Response body bytes sent downstream.
    BytesOut,
    /// The endpoint (`ip:port`) that served the request, when one was picked.
    Upstream,
    /// The `x-strait-error` kind, when the proxy could not complete the request.
    Error,
    /// The request's ID (`x-request-id`).
    RequestId,
    /// The W3C trace ID.
    TraceId,
    /// The index of the worker thread that served the request.
    Worker,
    /// The name of the listener that accepted the request.
    Listener,
    /// The name of the matched route, when it has one.
    Route,
    /// The cluster the request was forwarded to.
    Cluster,
    /// The downstream client's address (`ip:port`).
    Client,
}

impl LogField {
    /// Every field, in the order the JSON format writes them.
    pub const ALL: [Self; 18] = [
        Self::StartTime,
        Self::DurationMs,
        Self::Method,
        Self::Authority,
        Self::Path,
        Self::Protocol,
        Self::Status,
        Self::BytesIn,
        Self::BytesOut,
        Self::Upstream,
        Self::Error,
        Self::RequestId,
        Self::TraceId,
        Self::Worker,
        Self::Listener,
        Self::Route,
        Self::Cluster,
        Self::Client,
    ];

    /// The field's name: its JSON key and its `{name}` placeholder.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StartTime => "start_time",
            Self::DurationMs => "duration_ms",
            Self::Method => "method",
            Self::Authority => "authority",
            Self::Path => "path",
            Self::Protocol => "protocol",
            Self::Status => "status",
            Self::BytesIn => "bytes_in",
            Self::BytesOut => "bytes_out",
            Self::Upstream => "upstream",
            Self::Error => "error",
            Self::RequestId => "request_id",
            Self::TraceId => "trace_id",
            Self::Worker => "worker",
            Self::Listener => "listener",
            Self::Route => "route",
            Self::Cluster => "cluster",
            Self::Client => "client",
        }
    }

    /// The field with this name, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|field| field.as_str() == name)
    }
}

/// Distributed tracing (W3C Trace Context).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tracing {
    pub(crate) sample_rate: f64,
}

impl Tracing {
    /// The share of new traces (requests without an incoming `traceparent`) marked sampled,
    /// 0.0..=1.0. Default 1.0. Incoming `traceparent` headers keep their own decision.
    pub fn sample_rate(&self) -> f64 {
        self.sample_rate
    }
}

impl Default for Tracing {
    fn default() -> Self {
        Self { sample_rate: 1.0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_round_trip_and_are_unique() {
        for field in LogField::ALL {
            assert_eq!(LogField::from_name(field.as_str()), Some(field));
        }
        let mut names: Vec<&str> = LogField::ALL.iter().map(|f| f.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), LogField::ALL.len());
        assert_eq!(LogField::from_name("Method"), None);
    }
}
