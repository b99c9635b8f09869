//! Listeners, their limits and virtual hosts.

use crate::code;
use crate::model::{Limits, Listener, ListenerProtocol, VirtualHost};
use crate::problem::{Problem, Problems, quote};
use crate::raw;

use super::{FirstUse, all, check, route, value};

pub(super) fn listeners(
    raw: &[raw::Listener],
    clusters: &[&str],
    problems: &mut Problems,
) -> Option<Vec<Listener>> {
    let mut names = FirstUse::new();
    let mut addresses = FirstUse::new();
    all(raw.iter().enumerate().map(|(i, listener)| {
        let path = format!("listeners[{i}]");
        let name = check(
            problems,
            &format!("{path}.name"),
            code::LISTENER_NAME,
            quote(&listener.name),
            value::name(&listener.name),
        );
        if let Err(first) = names.claim(listener.name.as_str(), &path) {
            problems.push(
                Problem::new(
                    format!("{path}.name"),
                    code::LISTENER_NAME_IN_USE,
                    quote(&listener.name),
                    "must be unique among listeners",
                )
                .with_hint(format!("already used by {first}")),
            );
        }
        let address = check(
            problems,
            &format!("{path}.address"),
            code::LISTENER_ADDRESS,
            quote(&listener.address),
            // Port 0 asks the kernel for a free port (tests, ephemeral sidecars).
            value::socket_addr(&listener.address, false),
        );
        if let Some(address) = address
            && address.port() != 0
            && let Err(first) = addresses.claim(address, &path)
        {
            problems.push(
                Problem::new(
                    format!("{path}.address"),
                    code::LISTENER_ADDRESS_IN_USE,
                    quote(&listener.address),
                    "must not be used by another listener",
                )
                .with_hint(format!("already used by {first}")),
            );
        }
        let protocol = protocol(listener.protocol.as_deref(), &path, problems);
        let limits = limits(listener.limits.as_ref(), &path, problems);
        let virtual_hosts = virtual_hosts(&listener.virtual_hosts, &path, clusters, problems);
        Some(Listener {
            name: name?,
            address: address?,
            protocol: protocol?,
            virtual_hosts: virtual_hosts?,
            limits: limits?,
        })
    }))
}

fn protocol(raw: Option<&str>, path: &str, problems: &mut Problems) -> Option<ListenerProtocol> {
    match raw {
        None | Some("http") => Some(ListenerProtocol::Http),
        Some(other) => {
            problems.push(
                Problem::new(
                    format!("{path}.protocol"),
                    code::LISTENER_PROTOCOL,
                    quote(other),
                    "must be a known listener protocol",
                )
                .with_hint("valid values: http (HTTP/1.1 and h2c on one port)"),
            );
            None
        }
    }
}

fn limits(raw: Option<&raw::Limits>, path: &str, problems: &mut Problems) -> Option<Limits> {
    let default = Limits::default();
    let Some(raw) = raw else {
        return Some(default);
    };
    let path = format!("{path}.limits");
    let mut int = |key: &str, raw: Option<i64>, max: i64, default| match raw {
        None => Some(default),
        Some(n) => check(
            problems,
            &format!("{path}.{key}"),
            code::LIMIT,
            n.to_string(),
            value::int(n, 1, max),
        ),
    };
    let max_header_bytes = int(
        "max_header_bytes",
        raw.max_header_bytes,
        1 << 20,
        default.max_header_bytes,
    );
    let max_headers = int("max_headers", raw.max_headers, 10_000, default.max_headers);
    let pending_resets = int(
        "http2_max_pending_accept_reset_streams",
        raw.http2_max_pending_accept_reset_streams,
        100_000,
        default.http2_max_pending_accept_reset_streams,
    );
    let local_resets = int(
        "http2_max_local_error_reset_streams",
        raw.http2_max_local_error_reset_streams,
        100_000,
        default.http2_max_local_error_reset_streams,
    );
    let concurrent_streams = match raw.http2_max_concurrent_streams {
        None => Some(default.http2_max_concurrent_streams),
        Some(n) => check(
            problems,
            &format!("{path}.http2_max_concurrent_streams"),
            code::LIMIT,
            n.to_string(),
            value::int(n, 1, 100_000),
        ),
    };
    let mut duration = |key: &str, raw: Option<&raw::Scalar>, default| match raw {
        None => Some(default),
        Some(raw::Scalar(text)) => check(
            problems,
            &format!("{path}.{key}"),
            code::LIMIT_DURATION,
            quote(text),
            value::duration(text),
        ),
    };
    let header_read_timeout = duration(
        "header_read_timeout",
        raw.header_read_timeout.as_ref(),
        default.header_read_timeout,
    );
    let idle_timeout = duration(
        "idle_timeout",
        raw.idle_timeout.as_ref(),
        default.idle_timeout,
    );
    Some(Limits {
        max_header_bytes: max_header_bytes?,
        max_headers: max_headers?,
        header_read_timeout: header_read_timeout?,
        idle_timeout: idle_timeout?,
        http2_max_concurrent_streams: concurrent_streams?,
        http2_max_pending_accept_reset_streams: pending_resets?,
        http2_max_local_error_reset_streams: local_resets?,
    })
}

fn virtual_hosts(
    raw: &[raw::VirtualHost],
    listener: &str,
    clusters: &[&str],
    problems: &mut Problems,
) -> Option<Vec<VirtualHost>> {
    if raw.is_empty() {
        problems.push(Problem::new(
            format!("{listener}.virtual_hosts"),
            code::NO_VIRTUAL_HOSTS,
            "[]",
            "must list at least one virtual host",
        ));
        return None;
    }
    let mut names = FirstUse::new();
    let mut domains = FirstUse::new();
    all(raw.iter().enumerate().map(|(i, vhost)| {
        let path = format!("{listener}.virtual_hosts[{i}]");
        let name = check(
            problems,
            &format!("{path}.name"),
            code::VIRTUAL_HOST_NAME,
            quote(&vhost.name),
            value::name(&vhost.name),
        );
        if let Err(first) = names.claim(vhost.name.as_str(), &path) {
            problems.push(
                Problem::new(
                    format!("{path}.name"),
                    code::VIRTUAL_HOST_NAME_IN_USE,
                    quote(&vhost.name),
                    "must be unique within the listener",
                )
                .with_hint(format!("already used by {first}")),
            );
        }
        if vhost.domains.is_empty() {
            problems.push(
                Problem::new(
                    format!("{path}.domains"),
                    code::NO_DOMAINS,
                    "[]",
                    "must list at least one domain",
                )
                .with_hint(r#"use ["*"] to serve any host"#),
            );
        }
        let matches = all(vhost.domains.iter().enumerate().map(|(j, domain)| {
            let path = format!("{path}.domains[{j}]");
            let parsed = check(
                problems,
                &path,
                code::DOMAIN,
                quote(domain),
                value::domain(domain),
            )?;
            if let Err(first) = domains.claim(domain.to_ascii_lowercase(), &path) {
                problems.push(
                    Problem::new(
                        &path,
                        code::DOMAIN_IN_USE,
                        quote(domain),
                        "must be served by only one virtual host of the listener",
                    )
                    .with_hint(format!("already used by {first}")),
                );
                return None;
            }
            Some(parsed)
        }));
        let routes = route::routes(&vhost.routes, &path, clusters, problems);
        Some(VirtualHost {
            name: name?,
            domains: matches?,
            routes: routes?,
        })
    }))
}
