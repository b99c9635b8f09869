//! The validated configuration model.
//!
//! Every value here has passed validation: names are unique, references resolve, numbers are in
//! range and regexes compiled. Fields are private to the crate; only `validate` builds these types,
//! so invalid config cannot exist past this crate.

use std::net::SocketAddr;
use std::time::Duration;

use regex::Regex;

mod observability;

pub use self::observability::{AccessLog, LogField, LogFormat, LogOutput, TemplatePart, Tracing};

/// A whole, valid proxy configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) admin: Option<Admin>,
    pub(crate) listeners: Vec<Listener>,
    pub(crate) clusters: Vec<Cluster>,
    pub(crate) access_log: Option<AccessLog>,
    pub(crate) tracing: Tracing,
    pub(crate) io: IoBackend,
    pub(crate) xds: Option<SocketAddr>,
    pub(crate) registry: Option<SocketAddr>,
}

impl Config {
    /// The admin listener, when configured.
    pub fn admin(&self) -> Option<&Admin> {
        self.admin.as_ref()
    }

    /// Listeners in file order.
    pub fn listeners(&self) -> &[Listener] {
        &self.listeners
    }

    /// Clusters in file order.
    pub fn clusters(&self) -> &[Cluster] {
        &self.clusters
    }

    /// The cluster with this name.
    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters.iter().find(|c| c.name == name)
    }

    /// The access log, when configured; no access log is written otherwise.
    pub fn access_log(&self) -> Option<&AccessLog> {
        self.access_log.as_ref()
    }

    /// Trace sampling; the defaults when the file has no `tracing`.
    pub fn tracing(&self) -> &Tracing {
        &self.tracing
    }

    /// The socket I/O backend the file asks for. Default [`IoBackend::Auto`]. The proxy's
    /// `--io` command-line option takes precedence.
    pub fn io(&self) -> IoBackend {
        self.io
    }

    /// Where `strait-cp` serves xDS (ADS); a control-plane setting.
    pub fn xds(&self) -> Option<SocketAddr> {
        self.xds
    }

    /// Where `strait-cp` serves the registration API; a control-plane setting.
    pub fn registry(&self) -> Option<SocketAddr> {
        self.registry
    }
}

/// The socket I/O backend of the proxy's workers, chosen once at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoBackend {
    /// io_uring if a probe at start succeeds, else epoll: the kernel may refuse io_uring
    /// (`ENOSYS`, `EPERM` under a container's seccomp profile, `kernel.io_uring_disabled`).
    /// The default.
    #[default]
    Auto,
    /// io_uring; the proxy does not start where the kernel refuses it.
    Uring,
    /// epoll; io_uring is never used.
    Epoll,
}

/// The admin listener.
#[derive(Debug, Clone)]
pub struct Admin {
    pub(crate) address: SocketAddr,
}

impl Admin {
    /// Where the admin API listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

/// An address the proxy accepts on, with its protocol, virtual hosts and limits.
#[derive(Debug, Clone)]
pub struct Listener {
    pub(crate) name: String,
    pub(crate) address: SocketAddr,
    pub(crate) protocol: ListenerProtocol,
    pub(crate) virtual_hosts: Vec<VirtualHost>,
    pub(crate) limits: Limits,
}

impl Listener {
    /// The listener's unique name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The socket address it binds.
    pub fn address(&self) -> SocketAddr {
        self.address
    }
    /// What it speaks.
    pub fn protocol(&self) -> ListenerProtocol {
        self.protocol
    }
    /// Virtual hosts in file order.
    pub fn virtual_hosts(&self) -> &[VirtualHost] {
        &self.virtual_hosts
    }
    /// Connection and request limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}

/// The protocol of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerProtocol {
    /// HTTP/1.1 and HTTP/2 with prior knowledge (h2c) on one port.
    Http,
}

/// Downstream limits of a listener. Defaults are safe for an edge proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head (request line and headers) in bytes. Default 64 KiB.
    pub max_header_bytes: usize,
    /// Most header fields in a request. Default 100.
    pub max_headers: usize,
    /// Time allowed to receive a whole request head. Default 10 s.
    pub header_read_timeout: Duration,
    /// Time an idle keep-alive connection is kept open. Default 60 s.
    pub idle_timeout: Duration,
    /// HTTP/2 concurrent streams per connection. Default 100.
    pub http2_max_concurrent_streams: u32,
    /// HTTP/2 streams reset by the client before their response ended, per connection,
    /// before the connection is closed (rapid reset, CVE-2023-44487); each stream answered in
    /// full takes one off the count. Default 50. (The name is hyper's, whose limit this was.)
    pub http2_max_pending_accept_reset_streams: usize,
    /// HTTP/2 streams the proxy resets because of client errors, per connection, before the
    /// connection is closed. Default 50.
    pub http2_max_local_error_reset_streams: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            http2_max_concurrent_streams: 100,
            http2_max_pending_accept_reset_streams: 50,
            http2_max_local_error_reset_streams: 50,
        }
    }
}

/// A set of domains and the routes that serve them.
#[derive(Debug, Clone)]
pub struct VirtualHost {
    pub(crate) name: String,
    pub(crate) domains: Vec<DomainMatch>,
    pub(crate) routes: Vec<Route>,
}

impl VirtualHost {
    /// The virtual host's name, unique within its listener.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The domains it serves.
    pub fn domains(&self) -> &[DomainMatch] {
        &self.domains
    }
    /// Routes in file order; the first match wins.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

/// How a virtual host matches the request's host (without port, lowercase).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainMatch {
    /// The host equals this lowercase name.
    Exact(String),
    /// `*.example.com`: the host ends with `.example.com` (stored with the leading dot) and has
    /// at least one more character before it.
    Suffix(String),
    /// `*`: any host.
    Any,
}

impl DomainMatch {
    /// Whether a lowercase host (port removed) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            Self::Exact(name) => host == name,
            Self::Suffix(suffix) => host.len() > suffix.len() && host.ends_with(suffix.as_str()),
            Self::Any => true,
        }
    }
}

/// A match and an action, with its policies.
#[derive(Debug, Clone)]
pub struct Route {
    pub(crate) name: Option<String>,
    pub(crate) matcher: RouteMatch,
    pub(crate) action: Action,
    pub(crate) timeout: Duration,
    pub(crate) request_headers: HeaderChanges,
    pub(crate) response_headers: HeaderChanges,
    pub(crate) prefix_rewrite: Option<String>,
    pub(crate) host_rewrite: Option<String>,
}

impl Route {
    /// The route's name, if given; used in metrics and logs.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
    /// What a request must look like to take this route.
    pub fn matcher(&self) -> &RouteMatch {
        &self.matcher
    }
    /// What happens to a matching request.
    pub fn action(&self) -> &Action {
        &self.action
    }
    /// Time allowed for the upstream to answer with response headers. Default 15 s.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
    /// Changes to the request before it goes upstream.
    pub fn request_headers(&self) -> &HeaderChanges {
        &self.request_headers
    }
    /// Changes to the response before it goes downstream.
    pub fn response_headers(&self) -> &HeaderChanges {
        &self.response_headers
    }
    /// Replaces the matched path prefix (prefix matches only).
    pub fn prefix_rewrite(&self) -> Option<&str> {
        self.prefix_rewrite.as_deref()
    }
    /// Replaces the Host (`:authority`) sent upstream.
    pub fn host_rewrite(&self) -> Option<&str> {
        self.host_rewrite.as_deref()
    }
}

/// The request conditions of a route; all must hold.
#[derive(Debug, Clone)]
pub struct RouteMatch {
    pub(crate) path: PathMatch,
    pub(crate) headers: Vec<ValueMatcher>,
    pub(crate) query: Vec<ValueMatcher>,
    pub(crate) methods: Vec<String>,
}

impl RouteMatch {
    /// The path condition.
    pub fn path(&self) -> &PathMatch {
        &self.path
    }
    /// Header conditions; names are lowercase.
    pub fn headers(&self) -> &[ValueMatcher] {
        &self.headers
    }
    /// Query parameter conditions.
    pub fn query(&self) -> &[ValueMatcher] {
        &self.query
    }
    /// Allowed methods (uppercase); empty means any.
    pub fn methods(&self) -> &[String] {
        &self.methods
    }
}

/// How a route matches the request path (without the query).
#[derive(Debug, Clone)]
pub enum PathMatch {
    /// The path starts with this string.
    Prefix(String),
    /// The path equals this string.
    Exact(String),
    /// The whole path matches this regex (anchored at both ends).
    Regex(Regex),
}

impl PathMatch {
    /// Whether a path matches.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            Self::Prefix(prefix) => path.starts_with(prefix.as_str()),
            Self::Exact(exact) => path == exact,
            Self::Regex(regex) => regex.is_match(path),
        }
    }
}

/// A condition on a named header or query parameter.
#[derive(Debug, Clone)]
pub struct ValueMatcher {
    pub(crate) name: String,
    pub(crate) rule: ValueRule,
}

impl ValueMatcher {
    /// The header (lowercase) or parameter name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The condition on its value.
    pub fn rule(&self) -> &ValueRule {
        &self.rule
    }
    /// Whether the first value present (if any) satisfies the rule.
    pub fn matches(&self, value: Option<&str>) -> bool {
        match (&self.rule, value) {
            (ValueRule::Present, v) => v.is_some(),
            (ValueRule::Absent, v) => v.is_none(),
            (ValueRule::Exact(want), Some(v)) => v == want,
            (ValueRule::Regex(re), Some(v)) => re.is_match(v),
            (ValueRule::Exact(_) | ValueRule::Regex(_), None) => false,
        }
    }
}

/// The condition on a header or query value.
#[derive(Debug, Clone)]
pub enum ValueRule {
    /// Equals this string.
    Exact(String),
    /// Matches this regex (anchored at both ends).
    Regex(Regex),
    /// Is present, with any value.
    Present,
    /// Is not present.
    Absent,
}

/// What a route does with a matching request.
#[derive(Debug, Clone)]
pub enum Action {
    /// Forward to one cluster.
    Cluster(String),
    /// Forward to one of several clusters, chosen by weight per request.
    WeightedClusters(Vec<WeightedCluster>),
    /// Answer with a redirect.
    Redirect(Redirect),
    /// Answer directly with a status and body.
    DirectResponse {
        /// HTTP status, 200..=599.
        status: u16,
        /// Response body.
        body: String,
    },
}

/// One cluster of a weighted split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedCluster {
    pub(crate) cluster: String,
    pub(crate) weight: u32,
}

impl WeightedCluster {
    /// The cluster's name.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }
    /// Its weight, 1..=1000; the share is weight / sum of weights.
    pub fn weight(&self) -> u32 {
        self.weight
    }
}

/// A redirect answer. Unset parts keep the request's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    pub(crate) scheme: Option<String>,
    pub(crate) host: Option<String>,
    pub(crate) path: Option<String>,
    pub(crate) code: u16,
}

impl Redirect {
    /// `http` or `https`.
    pub fn scheme(&self) -> Option<&str> {
        self.scheme.as_deref()
    }
    /// The new host (may include a port).
    pub fn host(&self) -> Option<&str> {
        self.host.as_deref()
    }
    /// The new path (may include a query).
    pub fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }
    /// 301, 302, 303, 307 or 308. Default 301.
    pub fn code(&self) -> u16 {
        self.code
    }
}

/// Header changes applied in order: remove, set, add.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderChanges {
    pub(crate) add: Vec<(String, String)>,
    pub(crate) set: Vec<(String, String)>,
    pub(crate) remove: Vec<String>,
}

impl HeaderChanges {
    /// Headers appended (name lowercase, value).
    pub fn add(&self) -> &[(String, String)] {
        &self.add
    }
    /// Headers replaced (name lowercase, value).
    pub fn set(&self) -> &[(String, String)] {
        &self.set
    }
    /// Header names removed (lowercase).
    pub fn remove(&self) -> &[String] {
        &self.remove
    }
    /// Whether there is nothing to change.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.set.is_empty() && self.remove.is_empty()
    }
}

/// A named set of endpoints with a load-balancing policy and a protocol.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    pub(crate) name: String,
    pub(crate) protocol: UpstreamProtocol,
    pub(crate) lb: LbPolicy,
    pub(crate) hash_key: Option<HashKey>,
    pub(crate) endpoints: Vec<Endpoint>,
    pub(crate) connect_timeout: Duration,
    pub(crate) pool: Pool,
    pub(crate) discovery: Option<Discovery>,
    pub(crate) health_check: Option<HealthCheck>,
}

/// Where a cluster's endpoints come from when it does not list them (`strait-cp` only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discovery {
    /// A and AAAA records of `host`, each with `port`, re-resolved as their TTL says.
    Dns {
        /// The name to resolve.
        host: String,
        /// The port of every endpoint.
        port: u16,
    },
    /// The endpoints registered for this service through the registration API.
    Registry(String),
    /// Endpoint Discovery Service: the cluster came from xDS and its endpoints from EDS.
    Eds,
}

/// Active health checking of a cluster's endpoints (`strait-cp` only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub(crate) protocol: HealthProtocol,
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
    pub(crate) jitter: Duration,
    pub(crate) healthy_threshold: u32,
    pub(crate) unhealthy_threshold: u32,
}

/// How an endpoint is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthProtocol {
    /// `GET path` (with `host`, default the cluster name, as Envoy does); healthy when the status is
    /// one of `expected_statuses` (default 200..=299).
    Http {
        /// The path requested.
        path: String,
        /// The Host header, when set.
        host: Option<String>,
        /// Healthy statuses; empty means 200..=299.
        expected_statuses: Vec<u16>,
    },
    /// gRPC health v1 `Check` for `service` (empty: the whole server); healthy when SERVING.
    Grpc {
        /// The service name asked about.
        service: String,
    },
    /// A TCP connect.
    Tcp,
}

impl HealthCheck {
    /// How an endpoint is checked.
    pub fn protocol(&self) -> &HealthProtocol {
        &self.protocol
    }
    /// Time between two checks of an endpoint. Default 5 s.
    pub fn interval(&self) -> Duration {
        self.interval
    }
    /// Time a check may take. Default 1 s.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
    /// Random extra delay added to each interval, at most this. Default 0.
    pub fn jitter(&self) -> Duration {
        self.jitter
    }
    /// Consecutive successes that make an unhealthy endpoint healthy. Default 1.
    pub fn healthy_threshold(&self) -> u32 {
        self.healthy_threshold
    }
    /// Consecutive failures that make a healthy endpoint unhealthy. Default 3.
    pub fn unhealthy_threshold(&self) -> u32 {
        self.unhealthy_threshold
    }
}

impl Cluster {
    /// The cluster's unique name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// How the proxy speaks to the endpoints.
    pub fn protocol(&self) -> UpstreamProtocol {
        self.protocol
    }
    /// How an endpoint is picked.
    pub fn lb(&self) -> LbPolicy {
        self.lb
    }
    /// The request property hashed by `ring_hash` and `maglev`.
    pub fn hash_key(&self) -> Option<&HashKey> {
        self.hash_key.as_ref()
    }
    /// The endpoints, in file order.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }
    /// Time allowed to open a TCP connection to an endpoint. Default 5 s.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }
    /// Connection pool limits, per worker and endpoint.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }
    /// Where the endpoints come from when they are not listed.
    pub fn discovery(&self) -> Option<&Discovery> {
        self.discovery.as_ref()
    }
    /// Active health checking, when configured.
    pub fn health_check(&self) -> Option<&HealthCheck> {
        self.health_check.as_ref()
    }
    /// This cluster with `endpoints` in place of its own (discovered endpoints, as the
    /// control plane sends them).
    #[must_use]
    pub fn with_endpoints(&self, endpoints: Vec<Endpoint>) -> Self {
        Self {
            endpoints,
            ..self.clone()
        }
    }
}

/// The protocol spoken to a cluster's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with keep-alive. The default.
    Http1,
    /// HTTP/2 with prior knowledge (h2c), multiplexed on one connection per endpoint per worker.
    Http2,
    /// The protocol the downstream request arrived with.
    Downstream,
}

/// A load-balancing policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbPolicy {
    /// Smooth weighted round robin. The default.
    RoundRobin,
    /// Power of two random choices, preferring fewer in-flight requests relative to weight.
    LeastRequest,
    /// Weighted random.
    Random,
    /// Consistent hashing on a ring (Ketama style).
    RingHash,
    /// Maglev consistent hashing.
    Maglev,
}

/// The request property hashed by consistent-hash policies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// The value of this header (lowercase name).
    Header(String),
    /// The value of this cookie.
    Cookie(String),
    /// The downstream client's IP address.
    SourceIp,
}

/// One upstream address with its weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    pub(crate) address: SocketAddr,
    pub(crate) weight: u32,
}

impl Endpoint {
    /// An endpoint found by discovery; `weight` is clamped to 1..=1000.
    pub fn new(address: SocketAddr, weight: u32) -> Self {
        Self {
            address,
            weight: weight.clamp(1, 1000),
        }
    }

    /// The endpoint's address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }
    /// Its weight, 1..=1000. Default 1.
    pub fn weight(&self) -> u32 {
        self.weight
    }
}

/// Upstream connection pool limits, per worker and endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    /// Most idle HTTP/1.1 connections kept. Default 1024 (as many as may be open): what a
    /// burst opened stays for reuse, and the purge closes what later load does not need.
    pub max_idle: usize,
    /// Most open connections (idle and busy). Default 1024.
    pub max_connections: usize,
    /// Time an idle pooled connection is kept. Default 60 s.
    pub idle_timeout: Duration,
    /// Every `purge_interval`, half (rounded down) of the idle connections that no request
    /// needed during the last interval are closed (HAProxy's `pool-purge-delay`). Default 5 s.
    pub purge_interval: Duration,
}

impl Default for Pool {
    fn default() -> Self {
        Self {
            max_idle: 1024,
            max_connections: 1024,
            idle_timeout: Duration::from_secs(60),
            purge_interval: Duration::from_secs(5),
        }
    }
}
