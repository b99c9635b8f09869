//! Why the proxy could not complete a request, and what the client gets for it.
//!
//! [`ProxyError`] is the one place where a failure is classified: who is at fault, whether a
//! retry is allowed, the status the downstream client receives, and a stable kind used in the
//! `x-strait-error` response header, logs and (later) metrics.

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;

/// The response header that names the cause of a proxy-generated error.
pub const ERROR_HEADER: &str = "x-strait-error";

/// Why the proxy could not complete a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// No virtual host or route matched the request.
    #[error("no route for host {host:?} path {path:?}")]
    NoRoute {
        /// The request's host, as matched.
        host: String,
        /// The request's path.
        path: String,
    },
    /// The cluster has no endpoints to send to.
    #[error("cluster {cluster} has no ready endpoints")]
    NoReadyEndpoints {
        /// The cluster's name.
        cluster: String,
    },
    /// Every connection slot to the endpoint is taken.
    #[error("connection pool to {addr} is full")]
    PoolFull {
        /// The endpoint.
        addr: SocketAddr,
    },
    /// The TCP connect did not finish in time.
    #[error("connect to {addr} timed out after {after:?}")]
    ConnectTimeout {
        /// The endpoint.
        addr: SocketAddr,
        /// The cluster's connect timeout.
        after: Duration,
    },
    /// The TCP connect failed.
    #[error("connect to {addr} failed")]
    ConnectFailed {
        /// The endpoint.
        addr: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
    /// The HTTP handshake with the upstream failed.
    #[error("handshake with {addr} failed")]
    Handshake {
        /// The endpoint.
        addr: SocketAddr,
        /// The HTTP error.
        source: hyper::Error,
    },
    /// The upstream closed or reset the connection before its response head.
    #[error("upstream {addr} closed the connection before responding")]
    UpstreamClosed {
        /// The endpoint.
        addr: SocketAddr,
        /// The HTTP or socket error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The upstream's response head is not valid HTTP.
    #[error("upstream {addr} sent an invalid response: {reason}")]
    UpstreamInvalid {
        /// The endpoint.
        addr: SocketAddr,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The upstream did not send its response head within the route timeout.
    #[error("upstream {addr} did not respond within {after:?}")]
    UpstreamTimeout {
        /// The endpoint.
        addr: SocketAddr,
        /// The route timeout.
        after: Duration,
    },
    /// The downstream request body was malformed or ended early before anything was sent.
    #[error("request body could not be read")]
    BadRequestBody {
        /// What was wrong with it.
        source: crate::body::BodyError,
    },
    /// An HTTP/1.x request head that is malformed or over the listener's limits: answered by
    /// the connection itself, which then closes.
    #[error("bad request head: {reason}")]
    BadRequestHead {
        /// 400, 431 (over `max_header_bytes` or `max_headers`) or 505 (not HTTP/1.x).
        status: StatusCode,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The method is not proxied (CONNECT: Strait is not a forward proxy).
    #[error("method {method} is not supported")]
    MethodNotAllowed {
        /// The request's method.
        method: http::Method,
    },
    /// The request cannot be forwarded as given (for example an unusable Host).
    #[error("bad request: {reason}")]
    BadRequest {
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Who caused a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The client sent something wrong.
    Downstream,
    /// The backend failed.
    Upstream,
    /// The proxy itself (limits, pools).
    Proxy,
    /// The configuration (no route, empty cluster).
    Config,
}

/// Whether a failed request may be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Never: the request may have had effects, or retrying cannot help.
    Never,
    /// Only when the method is idempotent.
    IfIdempotent,
    /// Always: the request never reached an upstream.
    Always,
}

impl ProxyError {
    /// Who is at fault.
    pub fn fault(&self) -> Fault {
        match self {
            Self::NoRoute { .. } | Self::NoReadyEndpoints { .. } => Fault::Config,
            Self::PoolFull { .. } => Fault::Proxy,
            Self::ConnectTimeout { .. }
            | Self::ConnectFailed { .. }
            | Self::Handshake { .. }
            | Self::UpstreamClosed { .. }
            | Self::UpstreamInvalid { .. }
            | Self::UpstreamTimeout { .. } => Fault::Upstream,
            Self::BadRequestBody { .. }
            | Self::BadRequestHead { .. }
            | Self::BadRequest { .. }
            | Self::MethodNotAllowed { .. } => Fault::Downstream,
        }
    }

    /// Whether the request may be retried.
    pub fn retry(&self) -> Retry {
        match self {
            Self::ConnectTimeout { .. }
            | Self::ConnectFailed { .. }
            | Self::Handshake { .. }
            | Self::PoolFull { .. } => Retry::Always,
            Self::UpstreamClosed { .. }
            | Self::UpstreamInvalid { .. }
            | Self::UpstreamTimeout { .. } => Retry::IfIdempotent,
            Self::NoRoute { .. }
            | Self::NoReadyEndpoints { .. }
            | Self::BadRequestBody { .. }
            | Self::BadRequestHead { .. }
            | Self::BadRequest { .. }
            | Self::MethodNotAllowed { .. } => Retry::Never,
        }
    }

    /// The status the downstream client receives: the only mapping from failures to statuses.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NoRoute { .. } => StatusCode::NOT_FOUND,
            Self::NoReadyEndpoints { .. } | Self::PoolFull { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::ConnectFailed { .. }
            | Self::Handshake { .. }
            | Self::UpstreamClosed { .. }
            | Self::UpstreamInvalid { .. } => StatusCode::BAD_GATEWAY,
            Self::ConnectTimeout { .. } | Self::UpstreamTimeout { .. } => {
                StatusCode::GATEWAY_TIMEOUT
            }
            Self::BadRequestBody { .. } | Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::BadRequestHead { status, .. } => *status,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// A stable label for the `x-strait-error` header, logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NoRoute { .. } => "no_route",
            Self::NoReadyEndpoints { .. } => "no_endpoint",
            Self::PoolFull { .. } => "pool_full",
            Self::ConnectTimeout { .. } => "connect_timeout",
            Self::ConnectFailed { .. } => "connect_failed",
            Self::Handshake { .. } => "upstream_handshake",
            Self::UpstreamClosed { .. } => "upstream_reset",
            Self::UpstreamInvalid { .. } => "upstream_invalid_response",
            Self::UpstreamTimeout { .. } => "upstream_timeout",
            Self::BadRequestBody { .. } => "bad_request_body",
            Self::BadRequest { .. } => "bad_request",
            Self::BadRequestHead { status, .. } => match *status {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "request_head_too_large",
                StatusCode::HTTP_VERSION_NOT_SUPPORTED => "http_version_not_supported",
                _ => "bad_request",
            },
            Self::MethodNotAllowed { .. } => "method_not_allowed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_error_table() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let cases = [
            (
                ProxyError::NoRoute {
                    host: "h".into(),
                    path: "/".into(),
                },
                404,
                "no_route",
            ),
            (
                ProxyError::NoReadyEndpoints {
                    cluster: "c".into(),
                },
                503,
                "no_endpoint",
            ),
            (
                ProxyError::ConnectFailed {
                    addr,
                    source: std::io::ErrorKind::ConnectionRefused.into(),
                },
                502,
                "connect_failed",
            ),
            (
                ProxyError::ConnectTimeout {
                    addr,
                    after: Duration::from_secs(1),
                },
                504,
                "connect_timeout",
            ),
            (
                ProxyError::UpstreamInvalid {
                    addr,
                    reason: "malformed response head",
                },
                502,
                "upstream_invalid_response",
            ),
            (
                ProxyError::UpstreamTimeout {
                    addr,
                    after: Duration::from_secs(1),
                },
                504,
                "upstream_timeout",
            ),
        ];
        for (err, status, kind) in cases {
            assert_eq!(err.status().as_u16(), status, "{err}");
            assert_eq!(err.kind(), kind);
        }
    }
}
