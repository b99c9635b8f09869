//! Conversions between a [`Config`] and Envoy's xDS v3 resources (feature `xds`).
//!
//! One mapping, used both ways: `strait-cp` turns its validated config into the Listener,
//! RouteConfiguration, Cluster and ClusterLoadAssignment resources it serves ([`to_resources`]),
//! and a proxy following a control plane turns what it receives back into a config
//! ([`from_resources`]) through the same validator a file goes through, so a bad resource is
//! reported with every problem, as a NACK's `error_detail`.
//!
//! | Strait | xDS |
//! |---|---|
//! | listener | Listener with one filter chain: an HttpConnectionManager (codec AUTO, router filter) whose routes come over RDS (ADS) under the listener's name; limits as `max_request_headers_kb`, `common_http_protocol_options`, `request_headers_timeout`, `http2_protocol_options` |
//! | virtual hosts and routes | RouteConfiguration named after the listener; `methods` as a `:method` header regex |
//! | cluster | Cluster of type EDS (ADS), `connect_timeout`, `lb_policy`; `http2` and `downstream` as upstream HttpProtocolOptions; `hash_key` as the routes' hash policy; `pool.max_connections` as a circuit breaker |
//! | endpoints | ClusterLoadAssignment, one locality; endpoints with health UNHEALTHY, DRAINING or TIMEOUT are left out on the way back |
//!
//! Settings xDS has no field for (`pool.max_idle` and `purge_interval`, the HTTP/2 reset limits) travel in the
//! resource's metadata under `io.strait`. What Strait cannot honour on the way back (TLS, other
//! filters, other discovery types) is an error naming the resource and the field.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3 as cluster;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::endpoint::v3 as endpoint;
use envoy_types::pb::envoy::config::listener::v3 as listener;
use envoy_types::pb::envoy::config::route::v3 as route;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::extensions::upstreams::http::v3 as upstream_http;
use envoy_types::pb::envoy::r#type::matcher::v3 as matcher;
use envoy_types::pb::google::protobuf;
use prost::{Message, Name};
use serde_json::{Map, Value, json};

use crate::error::ConfigError;
use crate::model::{
    Action, Cluster, Config, DomainMatch, HashKey, HeaderChanges, LbPolicy, Listener, PathMatch,
    Route, UpstreamProtocol, ValueRule,
};
use crate::raw;
use crate::validate;

/// Type URLs of the four resource types, as `DiscoveryRequest.type_url` names them.
pub mod type_url {
    /// Listener (LDS).
    pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
    /// RouteConfiguration (RDS).
    pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
    /// Cluster (CDS).
    pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    /// ClusterLoadAssignment (EDS).
    pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
}

/// The name of the HTTP connection manager network filter.
const HCM: &str = "envoy.filters.network.http_connection_manager";
/// The name of the router HTTP filter.
const ROUTER: &str = "envoy.filters.http.router";
/// The upstream protocol options extension key.
const UPSTREAM_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
/// Metadata namespace for settings xDS has no field for.
const METADATA: &str = "io.strait";

/// The xDS resources of a config.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    /// LDS.
    pub listeners: Vec<listener::Listener>,
    /// RDS, one per listener, named after it.
    pub routes: Vec<route::RouteConfiguration>,
    /// CDS.
    pub clusters: Vec<cluster::Cluster>,
    /// EDS, one per cluster, named after it.
    pub assignments: Vec<endpoint::ClusterLoadAssignment>,
}

/// An endpoint as EDS carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdsEndpoint {
    /// The address.
    pub address: SocketAddr,
    /// Its weight, 1..=1000.
    pub weight: u32,
    /// Whether it may take traffic.
    pub healthy: bool,
}

/// Packs a message into `google.protobuf.Any`.
pub fn any<M: Message + Name>(message: &M) -> protobuf::Any {
    protobuf::Any {
        type_url: format!("type.googleapis.com/{}", M::full_name()),
        value: message.encode_to_vec(),
    }
}

fn ads() -> core::ConfigSource {
    core::ConfigSource {
        config_source_specifier: Some(core::config_source::ConfigSourceSpecifier::Ads(
            core::AggregatedConfigSource::default(),
        )),
        resource_api_version: core::ApiVersion::V3 as i32,
        ..Default::default()
    }
}

fn duration(d: Duration) -> protobuf::Duration {
    protobuf::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

fn u32_value(value: impl TryInto<u32>) -> Option<protobuf::UInt32Value> {
    Some(protobuf::UInt32Value {
        value: value.try_into().unwrap_or(u32::MAX),
    })
}

fn address(addr: SocketAddr) -> core::Address {
    core::Address {
        address: Some(core::address::Address::SocketAddress(core::SocketAddress {
            address: addr.ip().to_string(),
            port_specifier: Some(core::socket_address::PortSpecifier::PortValue(u32::from(
                addr.port(),
            ))),
            ..Default::default()
        })),
    }
}

/// Strait's own settings on a resource: one JSON document in one string field, so that the
/// resource encodes to the same bytes every time (protobuf maps with several keys encode in
/// hash order, which would change the version of an unchanged resource).
fn metadata(settings: &Value) -> core::Metadata {
    core::Metadata {
        filter_metadata: HashMap::from([(
            METADATA.to_owned(),
            protobuf::Struct {
                fields: HashMap::from([(
                    "settings".to_owned(),
                    protobuf::Value {
                        kind: Some(protobuf::value::Kind::StringValue(settings.to_string())),
                    },
                )]),
            },
        )]),
        ..Default::default()
    }
}

/// A field of the settings [`metadata`] wrote.
fn metadata_field(m: Option<&core::Metadata>, key: &str) -> Option<Value> {
    let field = m?.filter_metadata.get(METADATA)?.fields.get("settings")?;
    let Some(protobuf::value::Kind::StringValue(text)) = &field.kind else {
        return None;
    };
    let mut settings: Value = serde_json::from_str(text).ok()?;
    Some(settings.get_mut(key)?.take())
}

/// The xDS resources of `config`, with each cluster's listed endpoints as healthy.
pub fn to_resources(config: &Config) -> Resources {
    let assignments = config
        .clusters()
        .iter()
        .map(|c| {
            let endpoints: Vec<_> = c
                .endpoints()
                .iter()
                .map(|e| EdsEndpoint {
                    address: e.address(),
                    weight: e.weight(),
                    healthy: true,
                })
                .collect();
            load_assignment(c.name(), &endpoints)
        })
        .collect();
    Resources {
        listeners: config.listeners().iter().map(to_listener).collect(),
        routes: config
            .listeners()
            .iter()
            .map(|l| to_route_configuration(l, config))
            .collect(),
        clusters: config.clusters().iter().map(to_cluster).collect(),
        assignments,
    }
}

/// The EDS resource of a cluster.
pub fn load_assignment(
    cluster: &str,
    endpoints: &[EdsEndpoint],
) -> endpoint::ClusterLoadAssignment {
    let lb_endpoints = endpoints
        .iter()
        .map(|e| endpoint::LbEndpoint {
            host_identifier: Some(endpoint::lb_endpoint::HostIdentifier::Endpoint(
                endpoint::Endpoint {
                    address: Some(address(e.address)),
                    ..Default::default()
                },
            )),
            health_status: if e.healthy {
                core::HealthStatus::Healthy
            } else {
                core::HealthStatus::Unhealthy
            } as i32,
            load_balancing_weight: u32_value(e.weight),
            ..Default::default()
        })
        .collect();
    endpoint::ClusterLoadAssignment {
        cluster_name: cluster.to_owned(),
        endpoints: vec![endpoint::LocalityLbEndpoints {
            lb_endpoints,
            // gRPC's proxyless clients refuse a locality that is not set and ignore one
            // without a weight.
            locality: Some(core::Locality::default()),
            load_balancing_weight: u32_value(1u32),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The HttpConnectionManager of a listener: routes over RDS (ADS) named `route_config`.
pub fn connection_manager(
    route_config: &str,
    limits: Option<&crate::Limits>,
) -> hcm::HttpConnectionManager {
    let mut manager = hcm::HttpConnectionManager {
        stat_prefix: route_config.to_owned(),
        codec_type: hcm::http_connection_manager::CodecType::Auto as i32,
        route_specifier: Some(hcm::http_connection_manager::RouteSpecifier::Rds(
            hcm::Rds {
                config_source: Some(ads()),
                route_config_name: route_config.to_owned(),
            },
        )),
        http_filters: vec![hcm::HttpFilter {
            name: ROUTER.to_owned(),
            config_type: Some(hcm::http_filter::ConfigType::TypedConfig(any(
                &Router::default(),
            ))),
            ..Default::default()
        }],
        ..Default::default()
    };
    if let Some(limits) = limits {
        manager.max_request_headers_kb = u32_value(limits.max_header_bytes.div_ceil(1024));
        manager.request_headers_timeout = Some(duration(limits.header_read_timeout));
        manager.common_http_protocol_options = Some(core::HttpProtocolOptions {
            idle_timeout: Some(duration(limits.idle_timeout)),
            max_headers_count: u32_value(limits.max_headers),
            ..Default::default()
        });
        manager.http2_protocol_options = Some(core::Http2ProtocolOptions {
            max_concurrent_streams: u32_value(limits.http2_max_concurrent_streams),
            ..Default::default()
        });
    }
    manager
}

fn to_listener(l: &Listener) -> listener::Listener {
    let limits = l.limits();
    listener::Listener {
        name: l.name().to_owned(),
        address: Some(address(l.address())),
        filter_chains: vec![listener::FilterChain {
            filters: vec![listener::Filter {
                name: HCM.to_owned(),
                config_type: Some(listener::filter::ConfigType::TypedConfig(any(
                    &connection_manager(l.name(), Some(limits)),
                ))),
            }],
            ..Default::default()
        }],
        #[allow(clippy::cast_precision_loss)] // limits stay far below 2^52
        metadata: Some(metadata(&json!({
            "http2_max_pending_accept_reset_streams": limits.http2_max_pending_accept_reset_streams,
            "http2_max_local_error_reset_streams": limits.http2_max_local_error_reset_streams,
            "max_header_bytes": limits.max_header_bytes,
        }))),
        ..Default::default()
    }
}

fn string_exact(value: &str) -> matcher::StringMatcher {
    matcher::StringMatcher {
        match_pattern: Some(matcher::string_matcher::MatchPattern::Exact(
            value.to_owned(),
        )),
        ..Default::default()
    }
}

fn string_regex(regex: &str) -> matcher::StringMatcher {
    matcher::StringMatcher {
        match_pattern: Some(matcher::string_matcher::MatchPattern::SafeRegex(
            matcher::RegexMatcher {
                regex: regex.to_owned(),
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

/// The pattern as written: the model keeps regexes anchored (`^(?:…)$`, a whole-value match,
/// as Envoy's are), so the anchors come off for xDS and the validator puts them back.
fn unanchored(regex: &str) -> String {
    regex
        .strip_prefix("^(?:")
        .and_then(|r| r.strip_suffix(")$"))
        .unwrap_or(regex)
        .to_owned()
}

fn header_changes(changes: &HeaderChanges) -> (Vec<core::HeaderValueOption>, Vec<String>) {
    let option = |(name, value): &(String, String),
                  action: core::header_value_option::HeaderAppendAction| {
        core::HeaderValueOption {
            header: Some(core::HeaderValue {
                key: name.clone(),
                value: value.clone(),
                ..Default::default()
            }),
            append_action: action as i32,
            ..Default::default()
        }
    };
    let add = changes
        .add()
        .iter()
        .map(|p| {
            option(
                p,
                core::header_value_option::HeaderAppendAction::AppendIfExistsOrAdd,
            )
        })
        .chain(changes.set().iter().map(|p| {
            option(
                p,
                core::header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd,
            )
        }))
        .collect();
    (add, changes.remove().to_vec())
}

fn hash_policy(key: &HashKey) -> route::route_action::HashPolicy {
    use route::route_action::hash_policy;
    let specifier =
        match key {
            HashKey::Header(name) => hash_policy::PolicySpecifier::Header(hash_policy::Header {
                header_name: name.clone(),
                ..Default::default()
            }),
            HashKey::Cookie(name) => hash_policy::PolicySpecifier::Cookie(hash_policy::Cookie {
                name: name.clone(),
                ..Default::default()
            }),
            HashKey::SourceIp => hash_policy::PolicySpecifier::ConnectionProperties(
                hash_policy::ConnectionProperties { source_ip: true },
            ),
        };
    route::route_action::HashPolicy {
        policy_specifier: Some(specifier),
        terminal: false,
    }
}

fn to_route(r: &Route, config: &Config) -> route::Route {
    let m = r.matcher();
    let path_specifier = Some(match m.path() {
        PathMatch::Prefix(p) => route::route_match::PathSpecifier::Prefix(p.clone()),
        PathMatch::Exact(p) => route::route_match::PathSpecifier::Path(p.clone()),
        PathMatch::Regex(re) => {
            route::route_match::PathSpecifier::SafeRegex(matcher::RegexMatcher {
                regex: unanchored(re.as_str()),
                ..Default::default()
            })
        }
    });
    let mut headers: Vec<route::HeaderMatcher> = m
        .headers()
        .iter()
        .map(|v| {
            use route::header_matcher::HeaderMatchSpecifier as S;
            let (specifier, invert) = match v.rule() {
                ValueRule::Exact(value) => (S::StringMatch(string_exact(value)), false),
                ValueRule::Regex(re) => (
                    S::StringMatch(string_regex(&unanchored(re.as_str()))),
                    false,
                ),
                ValueRule::Present => (S::PresentMatch(true), false),
                ValueRule::Absent => (S::PresentMatch(true), true),
            };
            route::HeaderMatcher {
                name: v.name().to_owned(),
                header_match_specifier: Some(specifier),
                invert_match: invert,
                ..Default::default()
            }
        })
        .collect();
    if !m.methods().is_empty() {
        headers.push(route::HeaderMatcher {
            name: ":method".to_owned(),
            header_match_specifier: Some(route::header_matcher::HeaderMatchSpecifier::StringMatch(
                string_regex(&format!("^({})$", m.methods().join("|"))),
            )),
            ..Default::default()
        });
    }
    // xDS has no "absent" query parameter match: those travel in the route's metadata (an
    // Envoy following strait-cp ignores them; a Strait proxy honours them).
    let absent: Vec<&str> = m
        .query()
        .iter()
        .filter(|v| matches!(v.rule(), ValueRule::Absent))
        .map(|v| v.name())
        .collect();
    let query_parameters = m
        .query()
        .iter()
        .filter_map(|v| {
            use route::query_parameter_matcher::QueryParameterMatchSpecifier as S;
            let specifier = match v.rule() {
                ValueRule::Exact(value) => S::StringMatch(string_exact(value)),
                ValueRule::Regex(re) => S::StringMatch(string_regex(&unanchored(re.as_str()))),
                ValueRule::Present => S::PresentMatch(true),
                ValueRule::Absent => return None,
            };
            Some(route::QueryParameterMatcher {
                name: v.name().to_owned(),
                query_parameter_match_specifier: Some(specifier),
            })
        })
        .collect();
    let metadata = (!absent.is_empty()).then(|| metadata(&json!({ "query_absent": absent })));
    let (request_headers_to_add, request_headers_to_remove) = header_changes(r.request_headers());
    let (response_headers_to_add, response_headers_to_remove) =
        header_changes(r.response_headers());
    let forward = |specifier: route::route_action::ClusterSpecifier, clusters: Vec<&str>| {
        let hash = clusters
            .iter()
            .filter_map(|c| config.cluster(c))
            .find_map(|c| c.hash_key())
            .map(hash_policy);
        route::route::Action::Route(route::RouteAction {
            cluster_specifier: Some(specifier),
            timeout: Some(duration(r.timeout())),
            prefix_rewrite: r.prefix_rewrite().unwrap_or_default().to_owned(),
            host_rewrite_specifier: r.host_rewrite().map(|h| {
                route::route_action::HostRewriteSpecifier::HostRewriteLiteral(h.to_owned())
            }),
            hash_policy: hash.into_iter().collect(),
            ..Default::default()
        })
    };
    let action = match r.action() {
        Action::Cluster(name) => forward(
            route::route_action::ClusterSpecifier::Cluster(name.clone()),
            vec![name.as_str()],
        ),
        Action::WeightedClusters(split) => forward(
            route::route_action::ClusterSpecifier::WeightedClusters(route::WeightedCluster {
                clusters: split
                    .iter()
                    .map(|c| route::weighted_cluster::ClusterWeight {
                        name: c.cluster().to_owned(),
                        weight: u32_value(c.weight()),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            split.iter().map(|c| c.cluster()).collect(),
        ),
        Action::Redirect(redirect) => {
            use route::redirect_action::{
                PathRewriteSpecifier, RedirectResponseCode, SchemeRewriteSpecifier,
            };
            let code = match redirect.code() {
                302 => RedirectResponseCode::Found,
                303 => RedirectResponseCode::SeeOther,
                307 => RedirectResponseCode::TemporaryRedirect,
                308 => RedirectResponseCode::PermanentRedirect,
                _ => RedirectResponseCode::MovedPermanently,
            };
            route::route::Action::Redirect(route::RedirectAction {
                host_redirect: redirect.host().unwrap_or_default().to_owned(),
                response_code: code as i32,
                scheme_rewrite_specifier: redirect
                    .scheme()
                    .map(|s| SchemeRewriteSpecifier::SchemeRedirect(s.to_owned())),
                path_rewrite_specifier: redirect
                    .path()
                    .map(|p| PathRewriteSpecifier::PathRedirect(p.to_owned())),
                ..Default::default()
            })
        }
        Action::DirectResponse { status, body } => {
            route::route::Action::DirectResponse(route::DirectResponseAction {
                status: u32::from(*status),
                body: Some(core::DataSource {
                    specifier: Some(core::data_source::Specifier::InlineString(body.clone())),
                    ..Default::default()
                }),
                ..Default::default()
            })
        }
    };
    route::Route {
        name: r.name().unwrap_or_default().to_owned(),
        r#match: Some(route::RouteMatch {
            path_specifier,
            headers,
            query_parameters,
            ..Default::default()
        }),
        action: Some(action),
        metadata,
        request_headers_to_add,
        request_headers_to_remove,
        response_headers_to_add,
        response_headers_to_remove,
        ..Default::default()
    }
}

fn to_route_configuration(l: &Listener, config: &Config) -> route::RouteConfiguration {
    route::RouteConfiguration {
        name: l.name().to_owned(),
        virtual_hosts: l
            .virtual_hosts()
            .iter()
            .map(|v| route::VirtualHost {
                name: v.name().to_owned(),
                domains: v
                    .domains()
                    .iter()
                    .map(|d| match d {
                        DomainMatch::Exact(name) => name.clone(),
                        DomainMatch::Suffix(suffix) => format!("*{suffix}"),
                        DomainMatch::Any => "*".to_owned(),
                    })
                    .collect(),
                routes: v.routes().iter().map(|r| to_route(r, config)).collect(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn to_cluster(c: &Cluster) -> cluster::Cluster {
    use upstream_http::http_protocol_options::{
        ExplicitHttpConfig, UpstreamProtocolOptions, UseDownstreamHttpConfig,
        explicit_http_config::ProtocolConfig,
    };
    let lb = match c.lb() {
        LbPolicy::RoundRobin => cluster::cluster::LbPolicy::RoundRobin,
        LbPolicy::LeastRequest => cluster::cluster::LbPolicy::LeastRequest,
        LbPolicy::Random => cluster::cluster::LbPolicy::Random,
        LbPolicy::RingHash => cluster::cluster::LbPolicy::RingHash,
        LbPolicy::Maglev => cluster::cluster::LbPolicy::Maglev,
    };
    let protocol = match c.protocol() {
        UpstreamProtocol::Http1 => {
            UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
                protocol_config: Some(ProtocolConfig::HttpProtocolOptions(
                    core::Http1ProtocolOptions::default(),
                )),
            })
        }
        UpstreamProtocol::Http2 => {
            UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
                protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(
                    core::Http2ProtocolOptions::default(),
                )),
            })
        }
        UpstreamProtocol::Downstream => {
            UpstreamProtocolOptions::UseDownstreamProtocolConfig(UseDownstreamHttpConfig::default())
        }
    };
    let options = upstream_http::HttpProtocolOptions {
        common_http_protocol_options: Some(core::HttpProtocolOptions {
            idle_timeout: Some(duration(c.pool().idle_timeout)),
            ..Default::default()
        }),
        upstream_protocol_options: Some(protocol),
        ..Default::default()
    };
    cluster::Cluster {
        name: c.name().to_owned(),
        cluster_discovery_type: Some(cluster::cluster::ClusterDiscoveryType::Type(
            cluster::cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::cluster::EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: String::new(),
        }),
        connect_timeout: Some(duration(c.connect_timeout())),
        lb_policy: lb as i32,
        typed_extension_protocol_options: HashMap::from([(UPSTREAM_OPTIONS.to_owned(), any(&options))]),
        circuit_breakers: Some(cluster::CircuitBreakers {
            thresholds: vec![cluster::circuit_breakers::Thresholds {
                max_connections: u32_value(c.pool().max_connections),
                ..Default::default()
            }],
            ..Default::default()
        }),
        #[allow(clippy::cast_precision_loss)] // limits stay far below 2^52
        metadata: Some(metadata(&json!({
            "max_idle": c.pool().max_idle,
            "purge_interval_ms": u64::try_from(c.pool().purge_interval.as_millis()).unwrap_or(u64::MAX),
            "hash_key": c.hash_key().map(|key| match key {
                HashKey::Header(name) => format!("header:{name}"),
                HashKey::Cookie(name) => format!("cookie:{name}"),
                HashKey::SourceIp => "source_ip".to_owned(),
            }),
        }))),
        ..Default::default()
    }
}

/// Why xDS resources could not become a config: every problem, one per line, as a NACK's
/// `error_detail` carries them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct XdsError(pub String);

/// Turns xDS resources into a config through the file format's validator. Listeners whose
/// route configuration has not arrived, or that name a cluster without endpoints yet, are
/// the caller's to hold back (see [`missing`]).
///
/// # Errors
///
/// [`XdsError`] listing what Strait cannot honour and every validation problem.
pub fn from_resources(resources: &Resources) -> Result<Config, XdsError> {
    let mut problems = Vec::new();
    let document = document(resources, &mut problems);
    if !problems.is_empty() {
        return Err(XdsError(format!(
            "{} xDS problem{}:\n  {}",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" },
            problems.join("\n  ")
        )));
    }
    let mut raw: raw::Config = serde_json::from_value(document).map_err(|err| {
        XdsError(format!(
            "the resources do not map onto a Strait config: {err}"
        ))
    })?;
    for cluster in &mut raw.clusters {
        cluster.eds = true;
    }
    validate::config(raw).map_err(|problems| XdsError(ConfigError::Invalid(problems).render("xds")))
}

/// The config document (the file format, as JSON) `resources` map to, for `/config`.
pub fn to_document(resources: &Resources) -> Value {
    let mut problems = Vec::new();
    document(resources, &mut problems)
}

/// Route configurations and cluster load assignments that listeners and clusters need and
/// that have not arrived: a listener must not go live before its routes, nor a cluster before
/// its endpoints (make before break).
pub fn missing(resources: &Resources) -> Vec<String> {
    let mut missing = Vec::new();
    for l in &resources.listeners {
        match rds_name(l) {
            Ok(Some(name)) if !resources.routes.iter().any(|r| r.name == name) => {
                missing.push(format!("route configuration {name}"));
            }
            _ => {}
        }
    }
    for c in &resources.clusters {
        let eds = matches!(
            c.cluster_discovery_type,
            Some(cluster::cluster::ClusterDiscoveryType::Type(t)) if t == cluster::cluster::DiscoveryType::Eds as i32
        );
        let name = eds_name(c);
        if eds && !resources.assignments.iter().any(|a| a.cluster_name == name) {
            missing.push(format!("endpoints of cluster {name}"));
        }
    }
    missing
}

fn eds_name(c: &cluster::Cluster) -> &str {
    match &c.eds_cluster_config {
        Some(eds) if !eds.service_name.is_empty() => &eds.service_name,
        _ => &c.name,
    }
}

/// The connection manager of a listener, unpacked.
fn manager(l: &listener::Listener) -> Result<hcm::HttpConnectionManager, String> {
    if let Some(api) = &l.api_listener {
        let any = api
            .api_listener
            .as_ref()
            .ok_or("api_listener without a config")?;
        return hcm::HttpConnectionManager::decode(any.value.as_slice())
            .map_err(|e| format!("api_listener: {e}"));
    }
    let [chain] = l.filter_chains.as_slice() else {
        return Err(format!(
            "filter_chains: exactly one filter chain is supported, got {}",
            l.filter_chains.len()
        ));
    };
    if chain.transport_socket.is_some() {
        return Err("filter_chains[0].transport_socket: TLS is not supported yet".to_owned());
    }
    let [filter] = chain.filters.as_slice() else {
        return Err(format!(
            "filter_chains[0].filters: exactly one filter ({HCM}) is supported, got {}",
            chain.filters.len()
        ));
    };
    match &filter.config_type {
        Some(listener::filter::ConfigType::TypedConfig(any))
            if any
                .type_url
                .ends_with(&hcm::HttpConnectionManager::full_name()) =>
        {
            hcm::HttpConnectionManager::decode(any.value.as_slice())
                .map_err(|e| format!("filter_chains[0].filters[0].typed_config: {e}"))
        }
        _ => Err(format!(
            "filter_chains[0].filters[0]: only {HCM} is supported, got {:?}",
            filter.name
        )),
    }
}

fn rds_name(l: &listener::Listener) -> Result<Option<String>, String> {
    Ok(match manager(l)?.route_specifier {
        Some(hcm::http_connection_manager::RouteSpecifier::Rds(rds)) => Some(rds.route_config_name),
        _ => None,
    })
}

fn seconds(d: Option<&protobuf::Duration>) -> Option<String> {
    d.map(|d| {
        let nanos = i128::from(d.seconds) * 1_000_000_000 + i128::from(d.nanos);
        if nanos % 1_000_000 == 0 {
            format!("{}ms", nanos / 1_000_000)
        } else {
            format!("{}us", nanos / 1000)
        }
    })
}

fn strait_metadata(m: Option<&core::Metadata>, key: &str) -> Option<i64> {
    metadata_field(m, key)?.as_i64()
}

fn socket_address(a: Option<&core::Address>) -> Result<String, String> {
    match a.and_then(|a| a.address.as_ref()) {
        Some(core::address::Address::SocketAddress(s)) => match s.port_specifier {
            Some(core::socket_address::PortSpecifier::PortValue(port)) => {
                let ip: std::net::IpAddr = s
                    .address
                    .parse()
                    .map_err(|_| format!("address {:?} is not an IP address", s.address))?;
                Ok(SocketAddr::new(ip, u16::try_from(port).unwrap_or(0)).to_string())
            }
            _ => Err("a named port is not supported".to_owned()),
        },
        _ => Err("only socket addresses are supported".to_owned()),
    }
}

/// Builds the config document, pushing what cannot be mapped onto `problems`.
fn document(r: &Resources, problems: &mut Vec<String>) -> Value {
    let mut hash_keys: BTreeMap<String, Value> = BTreeMap::new();
    let mut listeners = Vec::new();
    for l in &r.listeners {
        let at = format!("listener {}", l.name);
        let manager = match manager(l) {
            Ok(m) => m,
            Err(e) => {
                problems.push(format!("{at}: {e}"));
                continue;
            }
        };
        for (i, filter) in manager.http_filters.iter().enumerate() {
            if filter.name != ROUTER
                && !matches!(&filter.config_type, Some(hcm::http_filter::ConfigType::TypedConfig(any)) if any.type_url.ends_with("envoy.extensions.filters.http.router.v3.Router"))
            {
                problems.push(format!(
                    "{at}: http_filters[{i}]: only the router filter is supported, got {:?}",
                    filter.name
                ));
            }
        }
        let routes = match &manager.route_specifier {
            Some(hcm::http_connection_manager::RouteSpecifier::Rds(rds)) => r
                .routes
                .iter()
                .find(|c| c.name == rds.route_config_name)
                .cloned(),
            Some(hcm::http_connection_manager::RouteSpecifier::RouteConfig(inline)) => {
                Some(inline.clone())
            }
            _ => {
                problems.push(format!(
                    "{at}: route_specifier: only rds and route_config are supported"
                ));
                None
            }
        };
        let Some(routes) = routes else { continue };
        let address = match socket_address(l.address.as_ref()) {
            Ok(a) => a,
            Err(e) => {
                problems.push(format!("{at}: address: {e}"));
                continue;
            }
        };
        let mut limits = Map::new();
        if let Some(kb) = &manager.max_request_headers_kb {
            let bytes = strait_metadata(l.metadata.as_ref(), "max_header_bytes")
                .unwrap_or(i64::from(kb.value) * 1024);
            limits.insert("max_header_bytes".into(), json!(bytes));
        }
        if let Some(common) = &manager.common_http_protocol_options {
            if let Some(idle) = seconds(common.idle_timeout.as_ref()) {
                limits.insert("idle_timeout".into(), json!(idle));
            }
            if let Some(n) = &common.max_headers_count {
                limits.insert("max_headers".into(), json!(n.value));
            }
        }
        if let Some(t) = seconds(manager.request_headers_timeout.as_ref()) {
            limits.insert("header_read_timeout".into(), json!(t));
        }
        if let Some(n) = manager
            .http2_protocol_options
            .as_ref()
            .and_then(|h| h.max_concurrent_streams.as_ref())
        {
            limits.insert("http2_max_concurrent_streams".into(), json!(n.value));
        }
        for key in [
            "http2_max_pending_accept_reset_streams",
            "http2_max_local_error_reset_streams",
        ] {
            if let Some(n) = strait_metadata(l.metadata.as_ref(), key) {
                limits.insert(key.into(), json!(n));
            }
        }
        let virtual_hosts: Vec<Value> = routes
            .virtual_hosts
            .iter()
            .map(|v| {
                let at = format!("{at} route configuration {} virtual host {}", routes.name, v.name);
                json!({
                    "name": v.name,
                    "domains": v.domains,
                    "routes": v.routes.iter().enumerate().map(|(i, route)| from_route(route, &format!("{at} routes[{i}]"), &mut hash_keys, problems)).collect::<Vec<_>>(),
                })
            })
            .collect();
        let mut listener = json!({
            "name": l.name,
            "address": address,
            "virtual_hosts": virtual_hosts,
        });
        if !limits.is_empty() {
            listener["limits"] = Value::Object(limits);
        }
        listeners.push(listener);
    }

    let mut clusters = Vec::new();
    for c in &r.clusters {
        let at = format!("cluster {}", c.name);
        let mut cluster = json!({ "name": c.name });
        let name = eds_name(c).to_owned();
        let discovery = match c.cluster_discovery_type {
            Some(cluster::cluster::ClusterDiscoveryType::Type(t)) => t,
            _ => cluster::cluster::DiscoveryType::Static as i32,
        };
        let assignment = if discovery == cluster::cluster::DiscoveryType::Eds as i32 {
            r.assignments
                .iter()
                .find(|a| a.cluster_name == name)
                .cloned()
        } else if discovery == cluster::cluster::DiscoveryType::Static as i32 {
            c.load_assignment.clone()
        } else {
            problems.push(format!(
                "{at}: type: only EDS and STATIC clusters are supported"
            ));
            None
        };
        if c.transport_socket.is_some() {
            problems.push(format!("{at}: transport_socket: TLS is not supported yet"));
        }
        let endpoints: Vec<Value> = assignment
            .iter()
            .flat_map(|a| a.endpoints.iter())
            .flat_map(|l| l.lb_endpoints.iter())
            .filter(|e| {
                let unhealthy = [
                    core::HealthStatus::Unhealthy as i32,
                    core::HealthStatus::Draining as i32,
                    core::HealthStatus::Timeout as i32,
                ];
                !unhealthy.contains(&e.health_status)
            })
            .filter_map(|e| match &e.host_identifier {
                Some(endpoint::lb_endpoint::HostIdentifier::Endpoint(ep)) => {
                    match socket_address(ep.address.as_ref()) {
                        Ok(address) => Some(json!({
                            "address": address,
                            "weight": e.load_balancing_weight.as_ref().map_or(1, |w| w.value),
                        })),
                        Err(err) => {
                            problems.push(format!("{at}: endpoint: {err}"));
                            None
                        }
                    }
                }
                _ => {
                    problems.push(format!(
                        "{at}: endpoint: only inline endpoints are supported"
                    ));
                    None
                }
            })
            .collect();
        cluster["endpoints"] = Value::Array(endpoints);
        let lb = c.lb_policy;
        let lb = [
            (cluster::cluster::LbPolicy::RoundRobin, "round_robin"),
            (cluster::cluster::LbPolicy::LeastRequest, "least_request"),
            (cluster::cluster::LbPolicy::Random, "random"),
            (cluster::cluster::LbPolicy::RingHash, "ring_hash"),
            (cluster::cluster::LbPolicy::Maglev, "maglev"),
        ]
        .iter()
        .find(|(p, _)| *p as i32 == lb)
        .map(|(_, name)| *name);
        match lb {
            Some(lb) => {
                cluster["lb"] = json!(lb);
                let from_metadata = match metadata_field(c.metadata.as_ref(), "hash_key") {
                    Some(Value::String(key)) => match key.split_once(':') {
                        Some(("header", name)) => Some(json!({ "header": name })),
                        Some(("cookie", name)) => Some(json!({ "cookie": name })),
                        _ => Some(json!({ "source_ip": true })),
                    },
                    _ => None,
                };
                if matches!(lb, "ring_hash" | "maglev")
                    && let Some(key) = hash_keys.get(&c.name).cloned().or(from_metadata)
                {
                    cluster["hash_key"] = key;
                }
            }
            None => problems.push(format!("{at}: lb_policy {lb:?} is not supported")),
        }
        if let Some(t) = seconds(c.connect_timeout.as_ref()) {
            cluster["connect_timeout"] = json!(t);
        }
        let mut pool = Map::new();
        if let Some(any) = c.typed_extension_protocol_options.get(UPSTREAM_OPTIONS) {
            use upstream_http::http_protocol_options::{
                UpstreamProtocolOptions, explicit_http_config::ProtocolConfig,
            };
            match upstream_http::HttpProtocolOptions::decode(any.value.as_slice()) {
                Ok(options) => {
                    let protocol = match &options.upstream_protocol_options {
                        Some(UpstreamProtocolOptions::ExplicitHttpConfig(explicit)) => {
                            match explicit.protocol_config {
                                Some(ProtocolConfig::Http2ProtocolOptions(_)) => "http2",
                                _ => "http1",
                            }
                        }
                        Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(_)) => {
                            "downstream"
                        }
                        _ => "http1",
                    };
                    cluster["protocol"] = json!(protocol);
                    if let Some(idle) = options
                        .common_http_protocol_options
                        .as_ref()
                        .and_then(|o| seconds(o.idle_timeout.as_ref()))
                    {
                        pool.insert("idle_timeout".into(), json!(idle));
                    }
                }
                Err(e) => problems.push(format!("{at}: {UPSTREAM_OPTIONS}: {e}")),
            }
        }
        if let Some(n) = c
            .circuit_breakers
            .as_ref()
            .and_then(|b| b.thresholds.first())
            .and_then(|t| t.max_connections.as_ref())
        {
            pool.insert("max_connections".into(), json!(n.value.min(100_000)));
        }
        if let Some(n) = strait_metadata(c.metadata.as_ref(), "max_idle") {
            pool.insert("max_idle".into(), json!(n));
        }
        if let Some(ms) = strait_metadata(c.metadata.as_ref(), "purge_interval_ms") {
            pool.insert("purge_interval".into(), json!(format!("{ms}ms")));
        }
        if !pool.is_empty() {
            cluster["pool"] = Value::Object(pool);
        }
        clusters.push(cluster);
    }
    json!({ "listeners": listeners, "clusters": clusters })
}

fn from_string_matcher(m: &matcher::StringMatcher, at: &str, problems: &mut Vec<String>) -> Value {
    use matcher::string_matcher::MatchPattern;
    if m.ignore_case {
        problems.push(format!("{at}: ignore_case is not supported"));
    }
    match &m.match_pattern {
        Some(MatchPattern::Exact(v)) => json!({ "exact": v }),
        Some(MatchPattern::SafeRegex(re)) => json!({ "regex": re.regex }),
        Some(MatchPattern::Prefix(p)) => json!({ "regex": format!("{}.*", regex_escape(p)) }),
        Some(MatchPattern::Suffix(s)) => json!({ "regex": format!(".*{}", regex_escape(s)) }),
        Some(MatchPattern::Contains(s)) => json!({ "regex": format!(".*{}.*", regex_escape(s)) }),
        _ => {
            problems.push(format!("{at}: unsupported string match"));
            json!({ "present": true })
        }
    }
}

fn regex_escape(text: &str) -> String {
    regex::escape(text)
}

fn from_header_changes(
    add: &[core::HeaderValueOption],
    remove: &[String],
    at: &str,
    problems: &mut Vec<String>,
) -> Option<Value> {
    if add.is_empty() && remove.is_empty() {
        return None;
    }
    let (mut added, mut set) = (Map::new(), Map::new());
    for option in add {
        let Some(header) = &option.header else {
            continue;
        };
        let value = if header.raw_value.is_empty() {
            header.value.clone()
        } else {
            String::from_utf8_lossy(&header.raw_value).into_owned()
        };
        // `append: false` is how older control planes say "overwrite".
        #[allow(deprecated)]
        let overwrite = option.append_action
            == core::header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd as i32
            || option.append.as_ref().is_some_and(|a| !a.value);
        if option.append_action == core::header_value_option::HeaderAppendAction::AddIfAbsent as i32
            || option.append_action
                == core::header_value_option::HeaderAppendAction::OverwriteIfExists as i32
        {
            problems.push(format!(
                "{at}: header {}: append_action is not supported",
                header.key
            ));
        }
        if overwrite {
            set.insert(header.key.clone(), json!(value));
        } else {
            added.insert(header.key.clone(), json!(value));
        }
    }
    let mut changes = Map::new();
    if !added.is_empty() {
        changes.insert("add".into(), Value::Object(added));
    }
    if !set.is_empty() {
        changes.insert("set".into(), Value::Object(set));
    }
    if !remove.is_empty() {
        changes.insert("remove".into(), json!(remove));
    }
    Some(Value::Object(changes))
}

fn from_route(
    r: &route::Route,
    at: &str,
    hash_keys: &mut BTreeMap<String, Value>,
    problems: &mut Vec<String>,
) -> Value {
    let mut out = Map::new();
    if !r.name.is_empty() {
        out.insert("name".into(), json!(r.name));
    }
    let mut m = Map::new();
    let rm = r.r#match.clone().unwrap_or_default();
    match &rm.path_specifier {
        Some(route::route_match::PathSpecifier::Prefix(p)) => {
            m.insert("prefix".into(), json!(if p.is_empty() { "/" } else { p }));
        }
        Some(route::route_match::PathSpecifier::Path(p)) => {
            m.insert("path".into(), json!(p));
        }
        Some(route::route_match::PathSpecifier::SafeRegex(re)) => {
            m.insert("regex".into(), json!(re.regex));
        }
        _ => problems.push(format!("{at}: match: unsupported path specifier")),
    }
    if rm.case_sensitive.as_ref().is_some_and(|c| !c.value) {
        problems.push(format!("{at}: match.case_sensitive false is not supported"));
    }
    let mut headers = Vec::new();
    for h in &rm.headers {
        use route::header_matcher::HeaderMatchSpecifier as S;
        let hat = format!("{at}: headers[{}]", h.name);
        if h.name == ":method"
            && let Some(S::StringMatch(sm)) = &h.header_match_specifier
            && let Some(matcher::string_matcher::MatchPattern::SafeRegex(re)) = &sm.match_pattern
            && let Some(list) = re
                .regex
                .strip_prefix("^(")
                .and_then(|r| r.strip_suffix(")$"))
        {
            m.insert("methods".into(), json!(list.split('|').collect::<Vec<_>>()));
            continue;
        }
        // Older control planes still send the deprecated exact and regex variants.
        #[allow(deprecated)]
        let mut rule = match &h.header_match_specifier {
            Some(S::StringMatch(sm)) => from_string_matcher(sm, &hat, problems),
            Some(S::ExactMatch(v)) => json!({ "exact": v }),
            Some(S::SafeRegexMatch(re)) => json!({ "regex": re.regex }),
            Some(S::PresentMatch(true)) | None => json!({ "present": true }),
            Some(S::PresentMatch(false)) => json!({ "absent": true }),
            _ => {
                problems.push(format!("{hat}: unsupported header match"));
                json!({ "present": true })
            }
        };
        if h.invert_match {
            if rule == json!({ "present": true }) {
                rule = json!({ "absent": true });
            } else {
                problems.push(format!(
                    "{hat}: invert_match is supported only with present_match"
                ));
            }
        }
        rule["name"] = json!(h.name);
        headers.push(rule);
    }
    if !headers.is_empty() {
        m.insert("headers".into(), Value::Array(headers));
    }
    let absent = match metadata_field(r.metadata.as_ref(), "query_absent") {
        Some(Value::Array(names)) => names,
        _ => Vec::new(),
    };
    let absent = absent
        .into_iter()
        .filter_map(|name| name.as_str().map(|n| json!({ "name": n, "absent": true })));
    let query: Vec<Value> = rm
        .query_parameters
        .iter()
        .map(|q| {
            use route::query_parameter_matcher::QueryParameterMatchSpecifier as S;
            let mut rule = match &q.query_parameter_match_specifier {
                Some(S::StringMatch(sm)) => {
                    from_string_matcher(sm, &format!("{at}: query[{}]", q.name), problems)
                }
                _ => json!({ "present": true }),
            };
            rule["name"] = json!(q.name);
            rule
        })
        .chain(absent)
        .collect();
    if !query.is_empty() {
        m.insert("query".into(), Value::Array(query));
    }
    out.insert("match".into(), Value::Object(m));
    match &r.action {
        Some(route::route::Action::Route(action)) => {
            use route::route_action::ClusterSpecifier;
            let targets: Vec<String> = match &action.cluster_specifier {
                Some(ClusterSpecifier::Cluster(name)) => {
                    out.insert("cluster".into(), json!(name));
                    vec![name.clone()]
                }
                Some(ClusterSpecifier::WeightedClusters(w)) => {
                    out.insert(
                        "weighted_clusters".into(),
                        json!(
                            w.clusters
                                .iter()
                                .map(|c| json!({
                                    "cluster": c.name,
                                    "weight": c.weight.as_ref().map_or(1, |w| w.value),
                                }))
                                .collect::<Vec<_>>()
                        ),
                    );
                    w.clusters.iter().map(|c| c.name.clone()).collect()
                }
                _ => {
                    problems.push(format!(
                        "{at}: route: only cluster and weighted_clusters are supported"
                    ));
                    Vec::new()
                }
            };
            if let Some(t) = seconds(action.timeout.as_ref()) {
                out.insert("timeout".into(), json!(t));
            }
            if !action.prefix_rewrite.is_empty() {
                out.insert("prefix_rewrite".into(), json!(action.prefix_rewrite));
            }
            match &action.host_rewrite_specifier {
                Some(route::route_action::HostRewriteSpecifier::HostRewriteLiteral(h)) => {
                    out.insert("host_rewrite".into(), json!(h));
                }
                None => {}
                Some(_) => problems.push(format!(
                    "{at}: route: only host_rewrite_literal is supported"
                )),
            }
            if let Some(policy) = action.hash_policy.first() {
                use route::route_action::hash_policy::PolicySpecifier;
                let key = match &policy.policy_specifier {
                    Some(PolicySpecifier::Header(h)) => Some(json!({ "header": h.header_name })),
                    Some(PolicySpecifier::Cookie(c)) => Some(json!({ "cookie": c.name })),
                    Some(PolicySpecifier::ConnectionProperties(p)) if p.source_ip => {
                        Some(json!({ "source_ip": true }))
                    }
                    _ => {
                        problems.push(format!(
                            "{at}: hash_policy: only header, cookie and source_ip are supported"
                        ));
                        None
                    }
                };
                if let Some(key) = key {
                    for target in targets {
                        hash_keys.entry(target).or_insert_with(|| key.clone());
                    }
                }
            }
        }
        Some(route::route::Action::Redirect(redirect)) => {
            use route::redirect_action::{
                PathRewriteSpecifier, RedirectResponseCode, SchemeRewriteSpecifier,
            };
            let mut out_redirect = Map::new();
            match &redirect.scheme_rewrite_specifier {
                Some(SchemeRewriteSpecifier::SchemeRedirect(s)) => {
                    out_redirect.insert("scheme".into(), json!(s));
                }
                Some(SchemeRewriteSpecifier::HttpsRedirect(true)) => {
                    out_redirect.insert("scheme".into(), json!("https"));
                }
                _ => {}
            }
            if !redirect.host_redirect.is_empty() {
                out_redirect.insert("host".into(), json!(redirect.host_redirect));
            }
            match &redirect.path_rewrite_specifier {
                Some(PathRewriteSpecifier::PathRedirect(p)) => {
                    out_redirect.insert("path".into(), json!(p));
                }
                None => {}
                Some(_) => {
                    problems.push(format!("{at}: redirect: only path_redirect is supported"))
                }
            }
            let code = match RedirectResponseCode::try_from(redirect.response_code) {
                Ok(RedirectResponseCode::Found) => 302,
                Ok(RedirectResponseCode::SeeOther) => 303,
                Ok(RedirectResponseCode::TemporaryRedirect) => 307,
                Ok(RedirectResponseCode::PermanentRedirect) => 308,
                _ => 301,
            };
            out_redirect.insert("code".into(), json!(code));
            out.insert("redirect".into(), Value::Object(out_redirect));
        }
        Some(route::route::Action::DirectResponse(direct)) => {
            let body = match direct.body.as_ref().and_then(|b| b.specifier.as_ref()) {
                Some(core::data_source::Specifier::InlineString(s)) => s.clone(),
                Some(core::data_source::Specifier::InlineBytes(b)) => {
                    String::from_utf8_lossy(b).into_owned()
                }
                None => String::new(),
                Some(_) => {
                    problems.push(format!(
                        "{at}: direct_response: only inline bodies are supported"
                    ));
                    String::new()
                }
            };
            out.insert(
                "direct_response".into(),
                json!({ "status": direct.status, "body": body }),
            );
        }
        _ => problems.push(format!("{at}: action: unsupported")),
    }
    if let Some(changes) = from_header_changes(
        &r.request_headers_to_add,
        &r.request_headers_to_remove,
        at,
        problems,
    ) {
        out.insert("request_headers".into(), changes);
    }
    if let Some(changes) = from_header_changes(
        &r.response_headers_to_add,
        &r.response_headers_to_remove,
        at,
        problems,
    ) {
        out.insert("response_headers".into(), changes);
    }
    Value::Object(out)
}
