//! Clusters: endpoints, load balancing and connection pools.

use std::time::Duration;

use crate::code;
use crate::model::{
    Cluster, Discovery, Endpoint, HashKey, HealthCheck, HealthProtocol, LbPolicy, Pool,
    UpstreamProtocol,
};
use crate::problem::{Problem, Problems, quote};
use crate::raw;

use super::{FirstUse, all, check, keys, one_of, value};

/// Time allowed to connect to an endpoint when a cluster sets no `connect_timeout`.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

const PROTOCOLS: &[(&str, UpstreamProtocol)] = &[
    ("http1", UpstreamProtocol::Http1),
    ("http2", UpstreamProtocol::Http2),
    ("downstream", UpstreamProtocol::Downstream),
];

const LB_POLICIES: &[(&str, LbPolicy)] = &[
    ("round_robin", LbPolicy::RoundRobin),
    ("least_request", LbPolicy::LeastRequest),
    ("random", LbPolicy::Random),
    ("ring_hash", LbPolicy::RingHash),
    ("maglev", LbPolicy::Maglev),
];

pub(super) fn clusters(raw: &[raw::Cluster], problems: &mut Problems) -> Option<Vec<Cluster>> {
    let mut names = FirstUse::new();
    all(raw.iter().enumerate().map(|(i, cluster)| {
        let path = format!("clusters[{i}]");
        let name = check(
            problems,
            &format!("{path}.name"),
            code::CLUSTER_NAME,
            quote(&cluster.name),
            value::name(&cluster.name),
        );
        if let Err(first) = names.claim(cluster.name.as_str(), &path) {
            problems.push(
                Problem::new(
                    format!("{path}.name"),
                    code::CLUSTER_NAME_IN_USE,
                    quote(&cluster.name),
                    "must be unique among clusters",
                )
                .with_hint(format!("already used by {first}")),
            );
        }
        let protocol = one_of(
            cluster.protocol.as_deref(),
            PROTOCOLS,
            UpstreamProtocol::Http1,
            &format!("{path}.protocol"),
            code::UPSTREAM_PROTOCOL,
            problems,
        );
        let lb = one_of(
            cluster.lb.as_deref(),
            LB_POLICIES,
            LbPolicy::RoundRobin,
            &format!("{path}.lb"),
            code::LB,
            problems,
        );
        let lb_text = cluster.lb.as_deref().unwrap_or("round_robin");
        let hash_key = hash_key(cluster.hash_key.as_ref(), lb, lb_text, &path, problems);
        let discovery = discovery(cluster, &path, problems);
        let endpoints = if cluster.discovery.is_some() || cluster.eds {
            endpoint_list(&cluster.endpoints, &path, problems)
        } else {
            endpoints(&cluster.endpoints, &path, problems)
        };
        let health_check = cluster
            .health_check
            .as_ref()
            .map(|raw| health_check(raw, &format!("{path}.health_check"), problems));
        let connect_timeout = duration(
            cluster.connect_timeout.as_ref(),
            DEFAULT_CONNECT_TIMEOUT,
            &format!("{path}.connect_timeout"),
            problems,
        );
        let pool = pool(cluster.pool.as_ref(), &path, problems);
        Some(Cluster {
            name: name?,
            protocol: protocol?,
            lb: lb?,
            hash_key: hash_key?,
            endpoints: endpoints?,
            connect_timeout: connect_timeout?,
            pool: pool?,
            discovery: discovery?,
            health_check: health_check.map_or(Some(None), |h| h.map(Some))?,
        })
    }))
}

/// `discovery`: exactly one source, and no static `endpoints` next to it.
fn discovery(
    cluster: &raw::Cluster,
    path: &str,
    problems: &mut Problems,
) -> Option<Option<Discovery>> {
    if cluster.eds {
        return Some(Some(Discovery::Eds));
    }
    let Some(raw) = &cluster.discovery else {
        return Some(None);
    };
    let path = format!("{path}.discovery");
    if !cluster.endpoints.is_empty() {
        problems.push(
            Problem::new(
                &path,
                code::DISCOVERY,
                "endpoints and discovery",
                "must not be set together with `endpoints`",
            )
            .with_hint("list endpoints, or discover them, not both"),
        );
        return None;
    }
    match (&raw.dns, &raw.registry) {
        (Some(target), None) => check(
            problems,
            &format!("{path}.dns"),
            code::DISCOVERY_DNS,
            quote(target),
            value::host_port(target),
        )
        .map(|(host, port)| Some(Discovery::Dns { host, port })),
        (None, Some(service)) => check(
            problems,
            &format!("{path}.registry"),
            code::DISCOVERY_REGISTRY,
            quote(service),
            value::name(service),
        )
        .map(|service| Some(Discovery::Registry(service))),
        _ => {
            let set = [
                ("dns", raw.dns.is_some()),
                ("registry", raw.registry.is_some()),
            ];
            problems.push(
                Problem::new(
                    &path,
                    code::DISCOVERY,
                    keys(&set),
                    "must set exactly one of dns, registry",
                )
                .with_hint(r#"example: { dns: "api.internal:8080" }"#),
            );
            None
        }
    }
}

const HEALTH_PROTOCOLS: &[(&str, &str)] = &[("http", "http"), ("grpc", "grpc"), ("tcp", "tcp")];

/// `health_check`: the protocol and the fields it takes, durations, thresholds.
fn health_check(
    raw: &raw::HealthCheck,
    path: &str,
    problems: &mut Problems,
) -> Option<HealthCheck> {
    let protocol = one_of(
        raw.protocol.as_deref(),
        HEALTH_PROTOCOLS,
        "http",
        &format!("{path}.protocol"),
        code::HEALTH_CHECK,
        problems,
    );
    let mut misplaced = |key: &str, set: bool, protocol: &str| {
        if set {
            problems.push(Problem::new(
                format!("{path}.{key}"),
                code::HEALTH_CHECK,
                key,
                format!("is not used by protocol {protocol}"),
            ));
        }
    };
    let protocol = match protocol {
        Some("http") => {
            misplaced("service", raw.service.is_some(), "http");
            let check_path = match &raw.path {
                None => Some("/".to_owned()),
                Some(p) => check(
                    problems,
                    &format!("{path}.path"),
                    code::HEALTH_CHECK,
                    quote(p),
                    value::path(p),
                ),
            };
            let statuses = all(raw.expected_statuses.iter().enumerate().map(|(i, status)| {
                check(
                    problems,
                    &format!("{path}.expected_statuses[{i}]"),
                    code::HEALTH_CHECK,
                    status.to_string(),
                    value::int(*status, 100, 599),
                )
            }));
            match (check_path, statuses) {
                (Some(check_path), Some(expected_statuses)) => Some(HealthProtocol::Http {
                    path: check_path,
                    host: raw.host.clone(),
                    expected_statuses,
                }),
                _ => None,
            }
        }
        Some("grpc") => {
            misplaced("path", raw.path.is_some(), "grpc");
            misplaced(
                "expected_statuses",
                !raw.expected_statuses.is_empty(),
                "grpc",
            );
            Some(HealthProtocol::Grpc {
                service: raw.service.clone().unwrap_or_default(),
            })
        }
        Some(_) => {
            misplaced("path", raw.path.is_some(), "tcp");
            misplaced("service", raw.service.is_some(), "tcp");
            misplaced(
                "expected_statuses",
                !raw.expected_statuses.is_empty(),
                "tcp",
            );
            Some(HealthProtocol::Tcp)
        }
        None => None,
    };
    let mut time = |key: &str, raw: Option<&raw::Scalar>, default: Duration| match raw {
        None => Some(default),
        Some(raw::Scalar(text)) => check(
            problems,
            &format!("{path}.{key}"),
            code::HEALTH_CHECK,
            quote(text),
            value::duration(text),
        ),
    };
    let interval = time("interval", raw.interval.as_ref(), Duration::from_secs(5));
    let timeout = time("timeout", raw.timeout.as_ref(), Duration::from_secs(1));
    let jitter = time("jitter", raw.jitter.as_ref(), Duration::ZERO);
    let mut threshold = |key: &str, raw: Option<i64>, default: u32| match raw {
        None => Some(default),
        Some(n) => check(
            problems,
            &format!("{path}.{key}"),
            code::HEALTH_CHECK,
            n.to_string(),
            value::int(n, 1, 100),
        ),
    };
    let healthy_threshold = threshold("healthy_threshold", raw.healthy_threshold, 1);
    let unhealthy_threshold = threshold("unhealthy_threshold", raw.unhealthy_threshold, 3);
    let (interval, timeout) = (interval?, timeout?);
    if interval.is_zero() || timeout.is_zero() || timeout > interval {
        problems.push(
            Problem::new(
                format!("{path}.timeout"),
                code::HEALTH_CHECK,
                format!("{timeout:?} with interval {interval:?}"),
                "must be greater than 0 and at most the interval",
            )
            .with_hint("example: { interval: 5s, timeout: 1s }"),
        );
        return None;
    }
    Some(HealthCheck {
        protocol: protocol?,
        interval,
        timeout,
        jitter: jitter?,
        healthy_threshold: healthy_threshold?,
        unhealthy_threshold: unhealthy_threshold?,
    })
}

/// The hash key of `ring_hash` and `maglev` (default: source IP); `None` for other policies.
/// `lb` is `None` when the policy itself was invalid: the key is still checked.
fn hash_key(
    raw: Option<&raw::HashKey>,
    lb: Option<LbPolicy>,
    lb_text: &str,
    cluster: &str,
    problems: &mut Problems,
) -> Option<Option<HashKey>> {
    let path = format!("{cluster}.hash_key");
    let hashing = matches!(lb, Some(LbPolicy::RingHash | LbPolicy::Maglev));
    let Some(raw) = raw else {
        return Some(hashing.then_some(HashKey::SourceIp));
    };
    let set = [
        ("header", raw.header.is_some()),
        ("cookie", raw.cookie.is_some()),
        ("source_ip", raw.source_ip.is_some()),
    ];
    let key = match (&raw.header, &raw.cookie, raw.source_ip) {
        (Some(name), None, None) => check(
            problems,
            &format!("{path}.header"),
            code::HASH_KEY,
            quote(name),
            value::header_name(name),
        )
        .map(HashKey::Header),
        (None, Some(name), None) => check(
            problems,
            &format!("{path}.cookie"),
            code::HASH_KEY,
            quote(name),
            value::cookie_name(name),
        )
        .map(HashKey::Cookie),
        (None, None, Some(true)) => Some(HashKey::SourceIp),
        (None, None, Some(false)) => {
            problems.push(
                Problem::new(
                    format!("{path}.source_ip"),
                    code::HASH_KEY,
                    "false",
                    "must be true",
                )
                .with_hint("to hash on something else, set header or cookie instead"),
            );
            None
        }
        _ => {
            problems.push(
                Problem::new(
                    &path,
                    code::HASH_KEY,
                    keys(&set),
                    "must set exactly one of header, cookie, source_ip",
                )
                .with_hint("example: { header: x-user-id }"),
            );
            None
        }
    };
    if lb.is_some() && !hashing {
        problems.push(
            Problem::new(
                &path,
                code::HASH_KEY_UNUSED,
                keys(&set),
                "applies only to lb: ring_hash or maglev",
            )
            .with_hint(format!("lb is {lb_text}; remove hash_key or change lb")),
        );
        return None;
    }
    key.map(Some)
}

fn endpoints(
    raw: &[raw::Endpoint],
    cluster: &str,
    problems: &mut Problems,
) -> Option<Vec<Endpoint>> {
    if raw.is_empty() {
        problems.push(
            Problem::new(
                format!("{cluster}.endpoints"),
                code::NO_ENDPOINTS,
                "[]",
                "must list at least one endpoint",
            )
            .with_hint(
                r#"example: ["127.0.0.1:9001"], or discovery: { dns: "api.internal:8080" }"#,
            ),
        );
        return None;
    }
    endpoint_list(raw, cluster, problems)
}

/// The endpoints as listed, possibly none (a discovered cluster).
fn endpoint_list(
    raw: &[raw::Endpoint],
    cluster: &str,
    problems: &mut Problems,
) -> Option<Vec<Endpoint>> {
    let mut seen = FirstUse::new();
    all(raw.iter().enumerate().map(|(i, endpoint)| {
        let path = format!("{cluster}.endpoints[{i}]");
        let address = check(
            problems,
            &path,
            code::ENDPOINT_ADDRESS,
            quote(&endpoint.address),
            value::socket_addr(&endpoint.address, true),
        );
        if let Some(address) = address
            && let Err(first) = seen.claim(address, &path)
        {
            problems.push(
                Problem::new(
                    &path,
                    code::ENDPOINT_IN_USE,
                    quote(&endpoint.address),
                    "must be listed once per cluster",
                )
                .with_hint(format!(
                    "already listed as {first}; raise its weight instead"
                )),
            );
        }
        let weight = match endpoint.weight {
            None => Some(1),
            Some(n) => check(
                problems,
                &format!("{path}.weight"),
                code::ENDPOINT_WEIGHT,
                n.to_string(),
                value::int(n, 1, 1000),
            ),
        };
        Some(Endpoint {
            address: address?,
            weight: weight?,
        })
    }))
}

fn pool(raw: Option<&raw::Pool>, cluster: &str, problems: &mut Problems) -> Option<Pool> {
    let default = Pool::default();
    let Some(raw) = raw else {
        return Some(default);
    };
    let path = format!("{cluster}.pool");
    let mut int = |key: &str, raw: Option<i64>, min: i64, default: usize| match raw {
        None => Some(default),
        Some(n) => check(
            problems,
            &format!("{path}.{key}"),
            code::POOL,
            n.to_string(),
            value::int(n, min, 100_000),
        ),
    };
    let max_idle = int("max_idle", raw.max_idle, 0, default.max_idle);
    let max_connections = int(
        "max_connections",
        raw.max_connections,
        1,
        default.max_connections,
    );
    let idle_timeout = duration(
        raw.idle_timeout.as_ref(),
        default.idle_timeout,
        &format!("{path}.idle_timeout"),
        problems,
    );
    let purge_interval = duration(
        raw.purge_interval.as_ref(),
        default.purge_interval,
        &format!("{path}.purge_interval"),
        problems,
    );
    Some(Pool {
        max_idle: max_idle?,
        max_connections: max_connections?,
        idle_timeout: idle_timeout?,
        purge_interval: purge_interval?,
    })
}

fn duration(
    raw: Option<&raw::Scalar>,
    default: Duration,
    path: &str,
    problems: &mut Problems,
) -> Option<Duration> {
    match raw {
        None => Some(default),
        Some(raw::Scalar(text)) => check(
            problems,
            path,
            code::CLUSTER_DURATION,
            quote(text),
            value::duration(text),
        ),
    }
}
