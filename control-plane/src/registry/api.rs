//! The registration API: HTTP/1.1 and h2c, JSON in and out (every route is in
//! `docs/registry.md`, with curl examples).
//!
//! A request goes: path → resource (404 if none) → method (405 with `Allow`) → path and body
//! checks (400 with every problem; 413 for a body over 64 KiB) → the [`Registry`] operation.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::validate::{self, Problem};
use super::{Registered, Registration, Registry, RegistryError, Upsert, format_duration};

/// The largest request body accepted.
const MAX_BODY: usize = 64 * 1024;
/// How long a client may take to send a request head, and then its body.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long in-flight requests may take to finish once shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait after a failed `accept` (out of file descriptors) before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

type Body = Full<Bytes>;

/// Serves the registration API on `listener` until `shutdown` turns `true` (or its sender is
/// dropped), then lets in-flight requests finish for up to 5s.
///
/// Each connection speaks HTTP/1.1 or h2c (prior knowledge). Accept errors are logged and
/// retried after a short pause; they never end the server.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    mut shutdown: watch::Receiver<bool>,
) {
    let local = listener.local_addr().ok();
    info!(address = ?local, "registry API listening");
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = stopped(&mut shutdown) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(connection(stream, peer, registry.clone(), shutdown.clone()));
                }
                Err(error) => {
                    warn!(%error, "registry API: accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            remaining = connections.len(),
            "registry API: closing connections still busy after the drain timeout"
        );
    }
    info!(address = ?local, "registry API stopped");
}

/// Resolves once `shutdown` is `true` or its sender is gone.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // Both outcomes mean stop: `Err` is a dropped sender, nobody left to say "keep going".
    let _ = shutdown.wait_for(|stop| *stop).await;
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    registry: Arc<Registry>,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |req| {
        let registry = registry.clone();
        async move { Ok::<_, Infallible>(handle(&registry, req).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(READ_TIMEOUT);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = stopped(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = result {
        debug!(%peer, %error, "registry API connection ended with an error");
    }
}

/// Answers one request; never fails (every error becomes a JSON response).
async fn handle(registry: &Registry, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let Some(resource) = Resource::parse(&path) else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no resource at {path}; routes are under /v1/services (see docs/registry.md)"),
            &[],
        );
    };
    let method = req.method().clone();
    if !resource.methods().contains(&method) {
        let allow = resource.allow();
        let mut response = error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not allowed on {path}; allowed: {allow}"),
            &[],
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static(allow));
        return response;
    }
    match resource {
        Resource::Services => list_services(registry),
        Resource::Service(service) => list_endpoints(registry, &service),
        Resource::Endpoint(service, address) if method == Method::PUT => {
            register(registry, &service, &address, req.into_body()).await
        }
        Resource::Endpoint(service, address) => {
            let (service, address) = match endpoint_key(&service, &address) {
                Ok(key) => key,
                Err(problems) => return invalid(problems),
            };
            if method == Method::DELETE {
                match registry.deregister(&service, address) {
                    Ok(()) => empty(StatusCode::NO_CONTENT),
                    Err(err) => registry_error(&err),
                }
            } else {
                match registry.endpoint(&service, address) {
                    Some(endpoint) => ok(StatusCode::OK, endpoint_json(&endpoint, Instant::now())),
                    None => registry_error(&RegistryError::NotFound { service, address }),
                }
            }
        }
        Resource::Heartbeat(service, address) => {
            let (service, address) = match endpoint_key(&service, &address) {
                Ok(key) => key,
                Err(problems) => return invalid(problems),
            };
            match registry.heartbeat(&service, address) {
                Ok(endpoint) => ok(StatusCode::OK, endpoint_json(&endpoint, Instant::now())),
                Err(err) => registry_error(&err),
            }
        }
    }
}

fn list_services(registry: &Registry) -> Response<Body> {
    let version = registry.version();
    let now = Instant::now();
    let services: BTreeMap<String, Vec<Value>> = registry
        .services()
        .into_iter()
        .map(|(name, endpoints)| {
            let endpoints = endpoints.iter().map(|e| endpoint_json(e, now)).collect();
            (name, endpoints)
        })
        .collect();
    ok(
        StatusCode::OK,
        json!({ "version": version, "services": services }),
    )
}

fn list_endpoints(registry: &Registry, service: &str) -> Response<Body> {
    if let Err(problem) = validate::service(service) {
        return invalid(vec![problem]);
    }
    let version = registry.version();
    let now = Instant::now();
    let endpoints: Vec<Value> = registry
        .endpoints(service)
        .iter()
        .map(|e| endpoint_json(e, now))
        .collect();
    ok(
        StatusCode::OK,
        json!({ "service": service, "version": version, "endpoints": endpoints }),
    )
}

async fn register(
    registry: &Registry,
    service: &str,
    address: &str,
    body: Incoming,
) -> Response<Body> {
    let body = match read_body(body).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let mut problems = Vec::new();
    if let Err(problem) = validate::service(service) {
        problems.push(problem);
    }
    let address = validate::address(address)
        .map_err(|p| problems.push(p))
        .ok();
    let raw = parse_body(&body).map_err(|p| problems.push(p)).ok();
    let (Some(address), Some(raw), true) = (address, raw, problems.is_empty()) else {
        return invalid(problems);
    };
    let reg = match raw.registration(address) {
        Ok(reg) => reg,
        Err(problems) => return invalid(problems),
    };
    match registry.upsert(service, reg) {
        Ok((endpoint, upsert)) => {
            let status = if upsert == Upsert::Created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            ok(status, endpoint_json(&endpoint, Instant::now()))
        }
        Err(err) => registry_error(&err),
    }
}

async fn read_body(body: Incoming) -> Result<Bytes, Response<Body>> {
    match tokio::time::timeout(READ_TIMEOUT, Limited::new(body, MAX_BODY).collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(err)) if err.downcast_ref::<LengthLimitError>().is_some() => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("body: must be at most {MAX_BODY} bytes"),
            &[Problem::new(
                "body",
                "",
                format!("must be at most {MAX_BODY} bytes"),
            )],
        )),
        Ok(Err(err)) => Err(error(
            StatusCode::BAD_REQUEST,
            "body_unreadable",
            format!("body: could not be read: {err}"),
            &[],
        )),
        Err(_) => Err(error(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!(
                "body: not received within {}",
                format_duration(READ_TIMEOUT)
            ),
            &[],
        )),
    }
}

/// The `PUT` body. `weight` and `ttl` are kept as JSON values so a wrong type gets the same
/// precise message as a wrong value.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistration {
    weight: Option<Value>,
    zone: Option<String>,
    metadata: Option<BTreeMap<String, String>>,
    ttl: Option<Value>,
}

fn parse_body(body: &[u8]) -> Result<RawRegistration, Problem> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(RawRegistration::default());
    }
    serde_json::from_slice(body).map_err(|err| {
        Problem::new(
            "body",
            "",
            format!("must be a JSON object with optional weight, zone, metadata and ttl ({err})"),
        )
    })
}

impl RawRegistration {
    fn registration(self, address: SocketAddr) -> Result<Registration, Vec<Problem>> {
        let mut reg = Registration::new(address);
        let mut problems = Vec::new();
        match self.weight {
            None | Some(Value::Null) => {}
            Some(Value::Number(n)) if n.as_i64().is_some() => {
                match validate::weight(n.as_i64().unwrap_or_default()) {
                    Ok(weight) => reg.weight = weight,
                    Err(problem) => problems.push(problem),
                }
            }
            Some(other) => problems.push(Problem::new(
                "weight",
                other.to_string(),
                format!("must be an integer between 1 and {}", validate::MAX_WEIGHT),
            )),
        }
        if let Some(zone) = self.zone {
            match validate::zone(&zone) {
                Ok(()) => reg.zone = Some(zone),
                Err(problem) => problems.push(problem),
            }
        }
        if let Some(metadata) = self.metadata {
            validate::metadata(&metadata, &mut problems);
            reg.metadata = metadata;
        }
        match self.ttl {
            None | Some(Value::Null) => {}
            Some(Value::String(text)) => match validate::ttl_text(&text) {
                Ok(ttl) => reg.ttl = ttl,
                Err(problem) => problems.push(problem),
            },
            Some(other) => problems.push(Problem::new(
                "ttl",
                other.to_string(),
                r#"must be a string: a whole number followed by ms, s, m or h (example: "30s")"#,
            )),
        }
        if problems.is_empty() {
            Ok(reg)
        } else {
            Err(problems)
        }
    }
}

fn endpoint_key(service: &str, address: &str) -> Result<(String, SocketAddr), Vec<Problem>> {
    let service_ok = validate::service(service);
    let address = validate::address(address);
    match (service_ok, address) {
        (Ok(()), Ok(address)) => Ok((service.to_owned(), address)),
        (service, address) => Err([service.err(), address.err()]
            .into_iter()
            .flatten()
            .collect()),
    }
}

/// The JSON form of an endpoint.
fn endpoint_json(endpoint: &Registered, now: Instant) -> Value {
    let expires_in = endpoint.expires_at.saturating_duration_since(now);
    json!({
        "service": endpoint.service,
        "address": endpoint.address.to_string(),
        "weight": endpoint.weight,
        "zone": endpoint.zone,
        "metadata": endpoint.metadata,
        "ttl": format_duration(endpoint.ttl),
        "expires_in_ms": u64::try_from(expires_in.as_millis()).unwrap_or(u64::MAX),
    })
}

// === routes ===

/// What a path names. Segments are percent-decoded, so `[::1]:80` may be sent as
/// `%5B::1%5D:80` (curl otherwise needs `-g` for brackets).
#[derive(Debug, PartialEq, Eq)]
enum Resource {
    /// `/v1/services`
    Services,
    /// `/v1/services/{service}` and `/v1/services/{service}/endpoints`
    Service(String),
    /// `/v1/services/{service}/endpoints/{address}`
    Endpoint(String, String),
    /// `/v1/services/{service}/endpoints/{address}/heartbeat`
    Heartbeat(String, String),
}

impl Resource {
    fn parse(path: &str) -> Option<Self> {
        let path = path.strip_suffix('/').unwrap_or(path);
        let segments: Vec<String> = path
            .strip_prefix("/v1/services")?
            .split('/')
            .skip(1)
            .map(percent_decode)
            .collect::<Option<_>>()?;
        let resource = match segments.as_slice() {
            [] if path.ends_with("/services") => Self::Services,
            [service] => Self::Service(service.clone()),
            [service, endpoints] if endpoints == "endpoints" => Self::Service(service.clone()),
            [service, endpoints, address] if endpoints == "endpoints" => {
                Self::Endpoint(service.clone(), address.clone())
            }
            [service, endpoints, address, heartbeat]
                if endpoints == "endpoints" && heartbeat == "heartbeat" =>
            {
                Self::Heartbeat(service.clone(), address.clone())
            }
            _ => return None,
        };
        Some(resource)
    }

    fn methods(&self) -> &'static [Method] {
        match self {
            Self::Services | Self::Service(_) => &[Method::GET],
            Self::Endpoint(..) => &[Method::GET, Method::PUT, Method::DELETE],
            Self::Heartbeat(..) => &[Method::POST],
        }
    }

    fn allow(&self) -> &'static str {
        match self {
            Self::Services | Self::Service(_) => "GET",
            Self::Endpoint(..) => "GET, PUT, DELETE",
            Self::Heartbeat(..) => "POST",
        }
    }
}

/// Decodes `%XX` escapes; `None` for a broken escape or bytes that are not UTF-8.
fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

// === responses ===

fn ok(status: StatusCode, value: Value) -> Response<Body> {
    let mut text = value.to_string();
    text.push('\n');
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn empty(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

fn error(status: StatusCode, kind: &str, message: String, problems: &[Problem]) -> Response<Body> {
    ok(
        status,
        json!({ "error": kind, "message": message, "problems": problems }),
    )
}

fn invalid(problems: Vec<Problem>) -> Response<Body> {
    registry_error(&RegistryError::Invalid { problems })
}

fn registry_error(err: &RegistryError) -> Response<Body> {
    let problems = match err {
        RegistryError::Invalid { problems } => problems.as_slice(),
        RegistryError::NotFound { .. } => &[],
    };
    error(err.status(), err.kind(), err.to_string(), problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_resources() {
        let cases = [
            ("/v1/services", Some(Resource::Services)),
            ("/v1/services/", Some(Resource::Services)),
            ("/v1/services/web", Some(Resource::Service("web".into()))),
            (
                "/v1/services/web/endpoints",
                Some(Resource::Service("web".into())),
            ),
            (
                "/v1/services/web/endpoints/10.0.0.1:80",
                Some(Resource::Endpoint("web".into(), "10.0.0.1:80".into())),
            ),
            (
                "/v1/services/web/endpoints/%5B::1%5D:80/heartbeat",
                Some(Resource::Heartbeat("web".into(), "[::1]:80".into())),
            ),
            ("/v1/servicesx", None),
            ("/v1/services/web/other", None),
            ("/v1/services/web/endpoints/a/b", None),
            ("/v1/services/web/endpoints/%zz", None),
            ("/", None),
        ];
        for (path, expected) in cases {
            assert_eq!(Resource::parse(path), expected, "{path}");
        }
    }
}
