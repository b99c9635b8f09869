//! What the access log needs to know about one request, kept until its response ends.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderValue, Method, Request, Version, header};

use super::access_log::{Entry, LogHandle};
use crate::metrics::RouteStats;

/// One request's access-log fields, owned. Built only when an access log is configured.
#[derive(Debug)]
pub struct LogRecord {
    start_time: SystemTime,
    method: Method,
    authority: String,
    path: String,
    protocol: &'static str,
    /// The response status sent downstream.
    pub status: u16,
    /// Request body bytes received, counted by the request body.
    pub bytes_in: Rc<Cell<u64>>,
    /// Response body bytes sent, counted by the response body.
    pub bytes_out: u64,
    /// The endpoint picked, if any.
    pub upstream: Option<SocketAddr>,
    /// The `x-strait-error` kind, if the proxy answered with an error.
    pub error: Option<&'static str>,
    /// The request id in use.
    pub request_id: Option<HeaderValue>,
    /// The trace id, as 32 lowercase hex digits.
    pub trace_id: Option<[u8; 32]>,
    /// The route's metrics (for its label) and the target slot (for the cluster name).
    pub route: Option<(Arc<RouteStats>, usize)>,
}

impl LogRecord {
    /// Starts a record from the request head.
    pub fn new<B>(req: &Request<B>) -> Self {
        let authority = match req.uri().authority() {
            Some(authority) => authority.as_str().to_owned(),
            None => req
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("")
                .to_owned(),
        };
        let path = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let protocol = match req.version() {
            Version::HTTP_2 => "HTTP/2",
            Version::HTTP_10 => "HTTP/1.0",
            _ => "HTTP/1.1",
        };
        Self {
            start_time: SystemTime::now(),
            method: req.method().clone(),
            authority,
            path,
            protocol,
            status: 0,
            bytes_in: Rc::default(),
            bytes_out: 0,
            upstream: None,
            error: None,
            request_id: None,
            trace_id: None,
            route: None,
        }
    }

    /// Writes the line through `handle`; never waits.
    pub fn log(
        &self,
        handle: &LogHandle,
        duration: Duration,
        worker: usize,
        listener: &str,
        client: SocketAddr,
    ) {
        let (route, cluster) = match &self.route {
            Some((stats, slot)) => (
                stats.route.as_str(),
                stats.slots.get(*slot).map_or("", |(name, _)| name.as_str()),
            ),
            None => ("", ""),
        };
        let trace_id = self
            .trace_id
            .as_ref()
            .and_then(|id| std::str::from_utf8(id).ok());
        handle.log(&Entry {
            start_time: self.start_time,
            duration,
            method: self.method.as_str(),
            authority: &self.authority,
            path: &self.path,
            protocol: self.protocol,
            status: self.status,
            bytes_in: self.bytes_in.get(),
            bytes_out: self.bytes_out,
            upstream: self.upstream,
            error: self.error,
            request_id: self
                .request_id
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
            trace_id: trace_id.unwrap_or(""),
            worker,
            listener,
            route,
            cluster,
            client,
        });
    }
}
