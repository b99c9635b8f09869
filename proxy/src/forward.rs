//! The request path of one request: route, act, pick an endpoint, send upstream, answer.
//!
//! [`handle`] never fails: every [`ProxyError`] becomes a response with the error's status, an
//! `x-strait-error` header naming the cause and a one-line body.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{Request, Response, StatusCode, Version};
use http_body::Body;
use http_body_util::BodyExt;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use strait_config::{Action, HashKey, PathMatch, Redirect, Route, UpstreamProtocol};
use tokio::time::Instant;

use crate::balance;
use crate::body::{Completion, Incoming, Release, RequestBody, ResponseBody, UpstreamBody};
use crate::deadline::{Deadlines, Elapsed};
use crate::downstream::{BusyGuard, ListenerDrain, h1 as server};
use crate::error::{ERROR_HEADER, Fault, ProxyError};
use crate::headers::{self, Added, FieldSet, Known};
use crate::metrics::{ListenerStats, status_class};
use crate::observe::{LogRecord, TraceContext, trace};
use crate::route;
use crate::snapshot::WorkerView;
use crate::upstream::{ClusterState, EndpointPool, h1};
use crate::worker::Worker;

/// What a request needs to know about the connection it arrived on.
#[derive(Debug)]
pub struct Downstream {
    /// The worker serving it.
    pub worker: Rc<Worker>,
    /// The listener's index in the snapshot.
    pub listener_index: usize,
    /// The listener's name.
    pub listener: Rc<str>,
    /// The client's address.
    pub peer: SocketAddr,
    /// The client's IP address as a header value, for `X-Forwarded-For`.
    pub client_ip: HeaderValue,
    /// The socket of the HTTP/1.1 request in flight that asks for an upgrade, once its `101`
    /// is written.
    pub upgrade: RefCell<Option<server::Upgrade>>,
    /// The listener's metrics on this worker.
    pub stats: Arc<ListenerStats>,
    /// How the listener's connections drain.
    pub drain: Rc<ListenerDrain>,
    /// Set when the listener drains: HTTP/1.1 responses then carry `Connection: close`.
    pub closing: Cell<bool>,
    /// Whether the connection speaks HTTP/2 (known from its first request).
    pub http2: Cell<bool>,
}

/// What the request path learnt about a request, for its metrics.
#[derive(Debug, Default)]
struct Exchange {
    view: Option<Rc<WorkerView>>,
    /// Virtual host, route and target slot indexes.
    route: Option<(usize, usize, usize)>,
    cluster: Option<Rc<ClusterState>>,
    upstream: Option<SocketAddr>,
    request_id: Option<HeaderValue>,
    trace: Option<TraceContext>,
    /// Request body bytes, counted when an access log wants them.
    bytes_in: Option<Rc<Cell<u64>>>,
}

impl Exchange {
    /// Counts the response in its route's (or the listener's unrouted) status class.
    fn record_status(&self, conn: &Downstream, status: StatusCode) {
        let class = status_class(status.as_u16());
        let slot = match (&self.view, self.route) {
            (Some(view), Some((vhost, route, slot))) => view
                .route_stats(conn.listener_index, &conn.listener, vhost, route)
                .and_then(|stats| stats.slots.get(slot)),
            _ => None,
        };
        match slot {
            Some((_, classes)) => classes[class].inc(),
            None => conn.stats.unrouted[class].inc(),
        }
    }

    /// Counts an upstream failure against its cluster.
    fn record_error(&self, err: &ProxyError) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        let stats = cluster.stats();
        match err {
            ProxyError::ConnectFailed { .. } | ProxyError::Handshake { .. } => {
                stats.connect_failures.inc();
            }
            ProxyError::ConnectTimeout { .. } => stats.connect_timeouts.inc(),
            ProxyError::UpstreamTimeout { .. } => stats.timeouts.inc(),
            ProxyError::UpstreamClosed { .. } | ProxyError::UpstreamInvalid { .. } => {
                stats.resets.inc();
            }
            _ => {}
        }
    }
}

/// Serves one request; errors become responses. `busy` marks the connection busy until the
/// response is sent.
///
/// This and the functions it awaits are plain functions returning an `async` block, with the
/// work before their first wait done outside it: an `async fn` keeps each argument twice in its
/// state (rust-lang/rust#62958), and this state is part of every request's task, copied
/// whole when HTTP/2 spawns a stream's task. Rare waits (connecting, upgrades) are boxed.
pub fn handle(
    conn: Rc<Downstream>,
    req: Request<Incoming>,
    busy: BusyGuard,
) -> impl Future<Output = Result<Response<ResponseBody>, Infallible>> {
    let start = Instant::now();
    let metrics = conn.worker.metrics;
    if metrics {
        conn.worker.shard.requests.inc();
    }
    let version = req.version();
    if version == Version::HTTP_2 {
        conn.http2.set(true);
    }
    let mut exchange = Exchange::default();
    let log = conn
        .worker
        .log
        .as_ref()
        .map(|_| Box::new(LogRecord::new(&req)));
    if let Some(log) = &log {
        exchange.bytes_in = Some(Rc::clone(&log.bytes_in));
    }
    async move {
        let response = forward(&conn, req, &mut exchange).await;
        let mut response = respond(&conn, response, exchange, log, start, version);
        response.body_mut().hold(busy);
        Ok(response)
    }
}

/// Finishes a request's response: the error response if it failed, metrics and log record.
fn respond(
    conn: &Rc<Downstream>,
    response: Result<Response<ResponseBody>, ProxyError>,
    mut exchange: Exchange,
    mut log: Option<Box<LogRecord>>,
    start: Instant,
    version: Version,
) -> Response<ResponseBody> {
    let metrics = conn.worker.metrics;
    let mut error_kind = None;
    let mut response = match response {
        Ok(response) => response,
        Err(err) => {
            tracing::debug!(error = %err, kind = err.kind(), "request failed");
            if metrics {
                exchange.record_error(&err);
            }
            error_kind = Some(err.kind());
            error_response(&err, version)
        }
    };
    if conn.closing.get()
        && version != Version::HTTP_2
        && response.status() != StatusCode::SWITCHING_PROTOCOLS
    {
        // The listener drains: this is the connection's last response.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if metrics {
        exchange.record_status(conn, response.status());
    }
    if let Some(log) = log.as_mut() {
        log.status = response.status().as_u16();
        log.error = error_kind;
        log.upstream = exchange.upstream;
        log.request_id = exchange.request_id.take();
        log.trace_id = exchange.trace.as_ref().map(trace::trace_id_hex);
        log.route = match (&exchange.view, exchange.route) {
            (Some(view), Some((vhost, route, slot))) => view
                .route_stats(conn.listener_index, &conn.listener, vhost, route)
                .map(|stats| (Arc::clone(stats), slot)),
            _ => None,
        };
    }
    if metrics || log.is_some() {
        let completion = Completion::new(Rc::clone(conn), start, metrics, log);
        response.body_mut().on_complete(completion);
    }
    response
}

/// Builds the response for a proxy error.
pub fn error_response(err: &ProxyError, version: Version) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(format!("{err}\n")));
    *response.status_mut() = err.status();
    *response.version_mut() = version;
    let headers = response.headers_mut();
    headers.insert(ERROR_HEADER, HeaderValue::from_static(err.kind()));
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    // After a request the client got wrong, the connection's state is not to be trusted
    // (RFC 9112 §9.6 lets either side close; an unread body may still be in flight).
    if err.fault() == Fault::Downstream && version != Version::HTTP_2 {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

#[allow(clippy::manual_async_fn)] // an `async fn` would keep `req` twice: see `handle`
fn forward<'a>(
    conn: &'a Downstream,
    mut req: Request<Incoming>,
    exchange: &'a mut Exchange,
) -> impl Future<Output = Result<Response<ResponseBody>, ProxyError>> + 'a {
    async move {
        if req.method() == http::Method::CONNECT {
            return Err(ProxyError::MethodNotAllowed {
                method: http::Method::CONNECT,
            });
        }
        let mut view = conn.worker.views.view();
        if view
            .compiled()
            .routes(conn.listener_index, &conn.listener)
            .is_none()
            && let Some(retired) = conn.worker.views.retired(&conn.listener)
        {
            // The listener was removed and this connection drains: route it as before.
            view = retired;
        }
        // The known fields the request's map holds: those its head had, if the proxy parsed
        // it, else from its names; a field certainly absent is not looked up.
        let fields = match req.body() {
            Incoming::Right(body) => body.fields(),
            Incoming::Left(_) => FieldSet::of_map(req.headers()),
        };
        let mut added = Added::default();
        {
            // Request id and trace context: kept or started here, so the access log, the upstream
            // and any error response agree on them.
            let mut rng = conn.worker.rng.borrow_mut();
            if fields.may_have(Known::RequestId) {
                exchange.request_id = Some(headers::ensure_request_id(req.headers_mut(), &mut rng));
            } else {
                let id = headers::request_id_text(&mut rng);
                if conn.worker.log.is_some() {
                    exchange.request_id = HeaderValue::from_bytes(&id).ok();
                }
                added.set_request_id(id);
            }
            let sample_rate = view.compiled().config().tracing().sample_rate();
            let (context, continued) = if fields.may_have(Known::Traceparent) {
                // One lookup to read the incoming traceparent and to replace it.
                match req.headers_mut().entry(trace::TRACEPARENT) {
                    header::Entry::Occupied(mut entry) => {
                        let incoming = trace::parse_traceparent(entry.get());
                        let continued = incoming.is_some();
                        let context = trace::propagate(incoming, sample_rate, &mut rng);
                        entry.insert(trace::traceparent_value(&context));
                        (context, continued)
                    }
                    header::Entry::Vacant(entry) => {
                        let context = trace::propagate(None, sample_rate, &mut rng);
                        entry.insert(trace::traceparent_value(&context));
                        (context, false)
                    }
                }
            } else {
                let context = trace::propagate(None, sample_rate, &mut rng);
                added.set_traceparent(context);
                (context, false)
            };
            if !continued && fields.may_have(Known::Tracestate) {
                // tracestate belongs to the traceparent it came with (W3C Trace Context §3.3).
                req.headers_mut().remove(trace::TRACESTATE);
            }
            exchange.trace = Some(context);
        }
        let table = view
            .compiled()
            .routes(conn.listener_index, &conn.listener)
            .ok_or(ProxyError::BadRequest {
                reason: "listener is being removed",
            })?;
        if table.reads_added() {
            // A route condition names a field the proxy adds: it sees the proxy's value.
            added.into_map(req.headers_mut());
        }
        let host = request_host(&req)?;
        let route = {
            let request = route::Request {
                host: &host,
                path: req.uri().path(),
                query: req.uri().query(),
                method: req.method().as_str(),
                headers: req.headers(),
            };
            match table.find(&request) {
                Some((vhost, index, route)) => {
                    exchange.route = Some((vhost, index, 0));
                    route
                }
                None => {
                    return Err(ProxyError::NoRoute {
                        host: host.into_owned(),
                        path: req.uri().path().to_owned(),
                    });
                }
            }
        };
        exchange.view = Some(Rc::clone(&view));
        let cluster = match route.action() {
            Action::DirectResponse { status, body } => return Ok(direct_response(*status, body)),
            Action::Redirect(redirect) => return Ok(redirect_response(redirect, &host, &req)),
            Action::Cluster(name) => name.as_str(),
            Action::WeightedClusters(split) => {
                let total: u32 = split.iter().map(|c| c.weight()).sum();
                let mut point = conn.worker.rng.borrow_mut().u32(0..total.max(1));
                let slot = split
                    .iter()
                    .position(|c| {
                        let hit = point < c.weight();
                        point = point.saturating_sub(c.weight());
                        hit
                    })
                    .unwrap_or(0);
                if let Some(route) = exchange.route.as_mut() {
                    route.2 = slot;
                }
                split.get(slot).map_or("", |c| c.cluster())
            }
        };
        let cluster = cluster_state(&view, cluster)?;
        exchange.cluster = Some(Rc::clone(&cluster));
        if let Some(HashKey::Header(_)) = cluster.hash_key() {
            // The hash may be of a field the proxy adds.
            added.into_map(req.headers_mut());
        }
        let hash = request_hash(cluster.hash_key(), &req, conn.peer);
        let endpoint = cluster
            .pick(hash, &mut conn.worker.rng.borrow_mut())
            .ok_or_else(|| ProxyError::NoReadyEndpoints {
                cluster: cluster.def().name().to_owned(),
            })?;

        let downstream_version = req.version();
        let upgrade = downstream_version == Version::HTTP_11
            && fields.may_have(Known::Upgrade)
            && wants_upgrade(&req);
        let on_upgrade = if upgrade {
            conn.upgrade.borrow_mut().take()
        } else {
            None
        };
        let protocol = match endpoint.protocol() {
            UpstreamProtocol::Http1 => Version::HTTP_11,
            UpstreamProtocol::Http2 => Version::HTTP_2,
            UpstreamProtocol::Downstream if downstream_version == Version::HTTP_2 => {
                Version::HTTP_2
            }
            UpstreamProtocol::Downstream => Version::HTTP_11,
        };
        if upgrade && protocol == Version::HTTP_2 {
            return Err(ProxyError::BadRequest {
                reason: "upgrade to an http/2 cluster",
            });
        }

        exchange.upstream = Some(endpoint.addr());
        let upstream_req = prepare_request(conn, req, route, protocol, upgrade, fields, &mut added)
            .await?
            .map(|body| body.counting(exchange.bytes_in.clone()));
        let in_flight = endpoint.start_request();
        let sent = Instant::now();
        let limit = Limit {
            deadlines: &conn.worker.deadlines,
            timeout: route.timeout(),
            since: sent,
        };
        let mut response = if protocol == Version::HTTP_2 {
            let mut sender = match endpoint.h2_sender() {
                Some(sender) => sender,
                None => Box::pin(endpoint.connect_h2()).await?,
            };
            within(&limit, endpoint.addr(), sender.send_request(upstream_req))
                .await?
                .map(UpstreamBody::Hyper)
        } else if upgrade {
            Box::pin(send_upgrade(&endpoint, upstream_req, &limit))
                .await?
                .map(UpstreamBody::Hyper)
        } else {
            send_h1(&endpoint, upstream_req, &added, downstream_version, &limit)
                .await?
                .map(UpstreamBody::H1)
        };

        if conn.worker.metrics {
            cluster.stats().upstream_duration.observe(sent.elapsed());
        }
        let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        if switching {
            match (on_upgrade, response.extensions_mut().remove::<OnUpgrade>()) {
                (Some(downstream), Some(upstream)) => {
                    tokio::task::spawn_local(tunnel(downstream, upstream, Rc::clone(&conn.drain)));
                }
                _ => {
                    return Err(ProxyError::BadRequest {
                        reason: "unexpected 101 from upstream",
                    });
                }
            }
        }
        let fields = match response.body() {
            UpstreamBody::H1(body) => body.fields(),
            UpstreamBody::Hyper(_) => FieldSet::UNKNOWN,
        };
        if fields.may_have_hop_by_hop() {
            headers::remove_hop_by_hop(response.headers_mut(), switching, false);
        }
        headers::apply_changes(response.headers_mut(), route.response_headers());
        *response.version_mut() = downstream_version;
        Ok(response.map(|body| ResponseBody::upstream(body, Release::new(endpoint, in_flight))))
    }
}

fn cluster_state(view: &WorkerView, name: &str) -> Result<Rc<ClusterState>, ProxyError> {
    view.compiled()
        .cluster_index(name)
        .and_then(|i| view.cluster(i))
        .cloned()
        .ok_or_else(|| ProxyError::NoReadyEndpoints {
            cluster: name.to_owned(),
        })
}

/// The request's host, lowercase and without port: `:authority` (HTTP/2, absolute-form) or Host.
fn request_host<B>(req: &Request<B>) -> Result<Cow<'_, str>, ProxyError> {
    let raw = match req.uri().authority() {
        Some(authority) => authority.host(),
        None => match req.headers().get(header::HOST) {
            Some(value) => match simple_host(value) {
                Some((host, false)) => return Ok(Cow::Borrowed(host)),
                Some((host, true)) => return Ok(Cow::Owned(host.to_ascii_lowercase())),
                None => {
                    let value = value.to_str().map_err(|_| ProxyError::BadRequest {
                        reason: "invalid host",
                    })?;
                    let authority: Authority =
                        value.parse().map_err(|_| ProxyError::BadRequest {
                            reason: "invalid host",
                        })?;
                    return Ok(Cow::Owned(authority.host().to_ascii_lowercase()));
                }
            },
            // RFC 9112 §3.2: an HTTP/1.1 request without Host is invalid.
            None if req.version() == Version::HTTP_11 => {
                return Err(ProxyError::BadRequest {
                    reason: "missing host",
                });
            }
            None => "",
        },
    };
    if raw.bytes().any(|b| b.is_ascii_uppercase()) {
        Ok(Cow::Owned(raw.to_ascii_lowercase()))
    } else {
        Ok(Cow::Borrowed(raw))
    }
}

/// The host of a Host value that is a plain name or IPv4 address with an optional port (the
/// common case), and whether it has uppercase letters, found in one pass without parsing an
/// `Authority`; `None` for anything else (which takes the full parse).
fn simple_host(value: &HeaderValue) -> Option<(&str, bool)> {
    let bytes = value.as_bytes();
    // One table load per byte: what each byte may be in a host[:port].
    let mut upper = false;
    let mut colon = None;
    for (at, &byte) in bytes.iter().enumerate() {
        match HOST_BYTES[usize::from(byte)] {
            HostByte::Plain => {}
            HostByte::Upper => upper = true,
            HostByte::Colon if colon.is_none() => colon = Some(at),
            HostByte::Colon | HostByte::Invalid => return None,
        }
    }
    let (host, port) = match colon {
        Some(colon) => (&bytes[..colon], Some(&bytes[colon + 1..])),
        None => (bytes, None),
    };
    if host.is_empty() {
        return None;
    }
    if let Some(port) = port {
        // Digits only, at most 65535 (leading zeros allowed, as the full parse allows them).
        let mut number = 0u32;
        for &digit in port {
            if !digit.is_ascii_digit() {
                return None;
            }
            number = number * 10 + u32::from(digit - b'0');
            if number > u32::from(u16::MAX) {
                return None;
            }
        }
        if port.is_empty() {
            return None;
        }
    }
    // Uppercase letters in the port fail the digit check above: any seen were in the host.
    // Only ASCII passed the table, so the host is valid UTF-8.
    Some((std::str::from_utf8(host).ok()?, upper))
}

/// What a byte may be in a host of [`simple_host`].
#[derive(Clone, Copy)]
enum HostByte {
    /// A lowercase letter, digit, dot or dash.
    Plain,
    Upper,
    Colon,
    Invalid,
}

const HOST_BYTES: [HostByte; 256] = {
    let mut table = [HostByte::Invalid; 256];
    let mut byte = 0;
    while byte < 256 {
        table[byte] = match byte as u8 {
            b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' => HostByte::Plain,
            b'A'..=b'Z' => HostByte::Upper,
            b':' => HostByte::Colon,
            _ => HostByte::Invalid,
        };
        byte += 1;
    }
    table
};

fn wants_upgrade<B>(req: &Request<B>) -> bool {
    req.headers().contains_key(header::UPGRADE)
        && headers::has_token(req.headers(), header::CONNECTION, "upgrade")
}

fn request_hash<B>(key: Option<&HashKey>, req: &Request<B>, peer: SocketAddr) -> Option<u64> {
    match key? {
        HashKey::Header(name) => req
            .headers()
            .get(name.as_str())
            .map(|v| balance::hash_key(v.as_bytes())),
        HashKey::Cookie(name) => req
            .headers()
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|pair| {
                let (k, v) = pair.trim().split_once('=')?;
                (k == name).then(|| balance::hash_key(v.as_bytes()))
            }),
        HashKey::SourceIp => Some(match peer.ip() {
            std::net::IpAddr::V4(ip) => balance::hash_key(&ip.octets()),
            std::net::IpAddr::V6(ip) => balance::hash_key(&ip.octets()),
        }),
    }
}

/// Turns the downstream request into the upstream one: headers, rewrites, version and URI form.
/// For HTTP/1.1 downstream bodies the first frame is read first, so a body with broken framing
/// is rejected before anything reaches the upstream.
async fn prepare_request(
    conn: &Downstream,
    req: Request<Incoming>,
    route: &Route,
    protocol: Version,
    upgrade: bool,
    fields: FieldSet,
    added: &mut Added,
) -> Result<Request<RequestBody>, ProxyError> {
    let downstream_version = req.version();
    let (mut parts, mut body) = req.into_parts();
    let first = if downstream_version != Version::HTTP_2 && !upgrade && !body.is_end_stream() {
        match body.frame().await {
            Some(Ok(frame)) => Some(frame),
            Some(Err(source)) => return Err(ProxyError::BadRequestBody { source }),
            None => None,
        }
    } else {
        None
    };

    if fields.may_have_hop_by_hop() {
        headers::remove_hop_by_hop(&mut parts.headers, upgrade, true);
    }
    added.forward(&mut parts.headers, fields, &conn.client_ip, "http");
    if protocol == Version::HTTP_2 || upgrade || !route.request_headers().is_empty() {
        // Only the HTTP/1.1 client writes the held fields itself; a route's changes may
        // concern them.
        added.into_map(&mut parts.headers);
    }
    headers::apply_changes(&mut parts.headers, route.request_headers());
    // The set tells the map as it came; a route's changes may have removed or added any field.
    let fields = if route.request_headers().is_empty() {
        fields
    } else {
        FieldSet::UNKNOWN
    };

    let path_and_query = rewritten_path(&parts.uri, route)?;
    if protocol != Version::HTTP_2 {
        // HTTP/1.1 upstream: the Host header carries the target. The client's Host (already
        // checked by `request_host`) goes as it is unless the route rewrites it or the request
        // named its target in absolute form.
        let host = route
            .host_rewrite()
            .or_else(|| parts.uri.authority().map(Authority::as_str));
        match host {
            Some(host) => {
                let value = HeaderValue::try_from(host).map_err(|_| ProxyError::BadRequest {
                    reason: "invalid host",
                })?;
                parts.headers.insert(header::HOST, value);
            }
            None if fields.has(Known::Host) => {}
            None if fields.may_have(Known::Host) => {
                if let header::Entry::Vacant(entry) = parts.headers.entry(header::HOST) {
                    // Only HTTP/1.0 requests may come without any host.
                    entry.insert(HeaderValue::from_static("localhost"));
                }
            }
            None => {
                parts
                    .headers
                    .insert(header::HOST, HeaderValue::from_static("localhost"));
            }
        }
        parts.uri = Uri::from(path_and_query);
        parts.version = protocol;
        return Ok(Request::from_parts(
            parts,
            RequestBody::new(first, Some(body)),
        ));
    }
    let authority: Cow<'_, str> = match route.host_rewrite() {
        Some(rewrite) => Cow::Borrowed(rewrite),
        None => match parts.uri.authority() {
            Some(a) => Cow::Owned(a.as_str().to_owned()),
            None => match parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
            {
                Some(h) => Cow::Owned(h.to_owned()),
                // Only HTTP/1.0 requests may come without any host.
                None => Cow::Borrowed("localhost"),
            },
        },
    };
    // RFC 9113 §8.3.1: the target goes in :scheme, :authority and :path; Host is dropped.
    parts.headers.remove(header::HOST);
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(Scheme::HTTP);
    uri.authority =
        Some(
            Authority::try_from(authority.as_ref()).map_err(|_| ProxyError::BadRequest {
                reason: "invalid authority",
            })?,
        );
    uri.path_and_query = Some(path_and_query);
    parts.uri = Uri::from_parts(uri).map_err(|_| ProxyError::BadRequest {
        reason: "invalid uri",
    })?;
    parts.version = protocol;
    Ok(Request::from_parts(
        parts,
        RequestBody::new(first, Some(body)),
    ))
}

fn rewritten_path(uri: &Uri, route: &Route) -> Result<PathAndQuery, ProxyError> {
    let original = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let (Some(rewrite), PathMatch::Prefix(prefix)) =
        (route.prefix_rewrite(), route.matcher().path())
    else {
        return Ok(original);
    };
    let rest = original.path().get(prefix.len()..).unwrap_or("");
    let mut text = String::with_capacity(rewrite.len() + rest.len() + 16);
    text.push_str(rewrite);
    text.push_str(rest);
    if let Some(query) = original.query() {
        text.push('?');
        text.push_str(query);
    }
    PathAndQuery::try_from(text).map_err(|_| ProxyError::BadRequest {
        reason: "invalid rewritten path",
    })
}

/// Sends an HTTP/1.1 request on a pooled connection (or a new one) and reads the response
/// head within `timeout`. A pooled connection that turns out closed before answering gets the
/// request again on a new connection, if it can go again (see [`h1::Failure::Unanswered`]).
fn send_h1<'a>(
    endpoint: &'a Rc<EndpointPool>,
    req: Request<RequestBody>,
    added: &Added,
    downstream_version: Version,
    limit: &'a Limit<'a>,
) -> impl Future<Output = Result<Response<h1::Body>, ProxyError>> + 'a {
    let addr = endpoint.addr();
    let pooled = endpoint.checkout_h1();
    let mut outgoing = h1::Outgoing::new(req, added);
    if downstream_version != Version::HTTP_2 {
        outgoing = outgoing.with_header_room(h1::HTTP1_HEADER_ROOM);
    }
    async move {
        let reused = pooled.is_some();
        let conn = match pooled {
            Some(conn) => conn,
            None => Box::pin(endpoint.connect_h1()).await?,
        };
        let failure = match limit.run(outgoing.send(conn)).await {
            Err(_) => return Err(limit.elapsed(addr)),
            Ok(Ok(response)) => return Ok(response),
            Ok(Err(h1::Failure::Unanswered(outgoing, _))) if reused => {
                return Box::pin(resend_h1(endpoint, *outgoing, limit)).await;
            }
            Ok(Err(failure)) => failure,
        };
        Err(h1_error(addr, failure))
    }
}

/// Sends again, on a new connection, a request whose pooled connection closed before
/// answering.
async fn resend_h1(
    endpoint: &EndpointPool,
    outgoing: h1::Outgoing,
    limit: &Limit<'_>,
) -> Result<Response<h1::Body>, ProxyError> {
    let addr = endpoint.addr();
    let conn = endpoint.connect_h1().await?;
    // A new wait of the whole timeout, on the new connection.
    let again = Limit {
        since: Instant::now(),
        ..*limit
    };
    match again.run(outgoing.send(conn)).await {
        Err(_) => Err(again.elapsed(addr)),
        Ok(Ok(response)) => Ok(response),
        Ok(Err(failure)) => Err(h1_error(addr, failure)),
    }
}

fn h1_error(addr: SocketAddr, failure: h1::Failure) -> ProxyError {
    match failure {
        h1::Failure::Unanswered(_, source) | h1::Failure::Closed(source) => {
            ProxyError::UpstreamClosed {
                addr,
                source: source.into(),
            }
        }
        h1::Failure::Invalid(reason) => ProxyError::UpstreamInvalid { addr, reason },
        h1::Failure::RequestBody(source) => ProxyError::BadRequestBody { source },
    }
}

/// Sends a request that asks for a protocol upgrade, on a connection of its own.
async fn send_upgrade(
    endpoint: &EndpointPool,
    req: Request<RequestBody>,
    limit: &Limit<'_>,
) -> Result<Response<hyper::body::Incoming>, ProxyError> {
    let mut sender = endpoint.connect_upgrade().await?;
    within(limit, endpoint.addr(), sender.send_request(req)).await
}

/// The route timeout of an exchange: its response head must arrive within `timeout` of `since`.
#[derive(Clone, Copy)]
struct Limit<'a> {
    deadlines: &'a Rc<Deadlines>,
    timeout: Duration,
    since: Instant,
}

impl Limit<'_> {
    /// Runs `fut` until the deadline (the worker's timer, not one per request).
    fn run<F: Future>(&self, fut: F) -> impl Future<Output = Result<F::Output, Elapsed>> {
        self.deadlines
            .within(self.since.checked_add(self.timeout), fut)
    }

    fn elapsed(&self, addr: SocketAddr) -> ProxyError {
        ProxyError::UpstreamTimeout {
            addr,
            after: self.timeout,
        }
    }
}

/// Waits for a response from hyper's client within the limit.
fn within<'a>(
    limit: &'a Limit<'a>,
    addr: SocketAddr,
    response: impl Future<Output = Result<Response<hyper::body::Incoming>, hyper::Error>> + 'a,
) -> impl Future<Output = Result<Response<hyper::body::Incoming>, ProxyError>> + 'a {
    let response = limit.run(response);
    async move {
        match response.await {
            Err(_) => Err(limit.elapsed(addr)),
            Ok(result) => result.map_err(|source| ProxyError::UpstreamClosed {
                addr,
                source: source.into(),
            }),
        }
    }
}

/// Copies bytes both ways between an upgraded downstream and upstream connection. It counts
/// as an open connection of its worker, and is closed at the drain deadline once its listener
/// drains.
async fn tunnel(downstream: server::Upgrade, upstream: OnUpgrade, drain: Rc<ListenerDrain>) {
    let _tracked = drain.tracker.track();
    let copy = copy_tunnel(downstream, upstream);
    tokio::pin!(copy);
    tokio::select! {
        () = &mut copy => return,
        () = drain.stop.stopped() => {}
    }
    if tokio::time::timeout(drain.timeout, copy).await.is_err() {
        tracing::debug!("drain deadline passed; closing the tunnel");
    }
}

async fn copy_tunnel(downstream: server::Upgrade, upstream: OnUpgrade) {
    let (downstream, upstream) = match tokio::join!(downstream.socket(), upstream) {
        (Some(downstream), Ok(upstream)) => (downstream, upstream),
        (None, _) => {
            tracing::debug!("the downstream connection closed before its upgrade");
            return;
        }
        (_, Err(err)) => {
            tracing::debug!(error = %err, "upgrade failed");
            return;
        }
    };
    let mut downstream = TokioIo::new(downstream);
    let mut upstream = TokioIo::new(upstream);
    if let Err(err) = tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await {
        tracing::debug!(error = %err, "tunnel ended");
    }
}

fn direct_response(status: u16, body: &str) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(Bytes::copy_from_slice(body.as_bytes())));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

fn redirect_response<B>(
    redirect: &Redirect,
    host: &str,
    req: &Request<B>,
) -> Response<ResponseBody> {
    let scheme = redirect.scheme().unwrap_or("http");
    let authority = redirect.host().map(Cow::Borrowed).unwrap_or_else(|| {
        req.uri()
            .authority()
            .map(|a| a.as_str())
            .or_else(|| {
                req.headers()
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
            })
            .map_or(Cow::Borrowed(host), |h| Cow::Owned(h.to_owned()))
    });
    let path = redirect
        .path()
        .or_else(|| req.uri().path_and_query().map(PathAndQuery::as_str))
        .unwrap_or("/");
    let location = format!("{scheme}://{authority}{path}");
    let mut response = Response::new(ResponseBody::empty());
    *response.status_mut() =
        StatusCode::from_u16(redirect.code()).unwrap_or(StatusCode::MOVED_PERMANENTLY);
    if let Ok(value) = HeaderValue::try_from(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_host_agrees_with_authority_parsing() {
        for value in [
            "example.com",
            "Example.COM:8080",
            "127.0.0.1:18101",
            "a-b.c:1",
            "localhost",
            "host:65536",
            "host:",
            "[::1]:80",
            "user@host",
            "ho st",
            ":80",
            "h_st",
            "host:0080",
            "HOST:65535",
            "host:999999",
            "a:1:2",
            "host:8o",
        ] {
            let header = HeaderValue::from_static(value);
            let fast = simple_host(&header);
            let slow = value.parse::<Authority>().ok();
            // Anything the fast path declines takes the full parse, whatever its outcome.
            if let Some((host, upper)) = fast {
                assert_eq!(Some(host), slow.as_ref().map(Authority::host), "{value}");
                assert_eq!(
                    upper,
                    host.bytes().any(|b| b.is_ascii_uppercase()),
                    "{value}"
                );
            }
        }
        let host = |value| {
            let header = HeaderValue::from_static(value);
            simple_host(&header).map(|(host, upper)| (host.to_owned(), upper))
        };
        let owned = |host: &str, upper| Some((host.to_owned(), upper));
        assert_eq!(host("Example.COM:8080"), owned("Example.COM", true));
        assert_eq!(host("example.com:08080"), owned("example.com", false));
        assert_eq!(host("127.0.0.1"), owned("127.0.0.1", false));
        for declined in [
            "[::1]:80",
            "host:65536",
            "host:",
            ":80",
            "a:1:2",
            "host:8o",
            "h_st",
        ] {
            assert_eq!(host(declined), None, "{declined}");
        }
    }
}
