//! Route actions: forward to a cluster or a weighted split, redirect, or answer directly.

use crate::code;
use crate::model::{Action, Redirect, WeightedCluster};
use crate::problem::{Problem, Problems, quote};
use crate::raw;
use crate::validate::{all, check, keys, nearest_hint, optional, value};

const REDIRECT_CODES: [u16; 5] = [301, 302, 303, 307, 308];

/// The route's one action. Also rejects upstream-only settings on routes that answer directly.
pub(super) fn action(
    raw: &raw::Route,
    path: &str,
    clusters: &[&str],
    problems: &mut Problems,
) -> Option<Action> {
    let set = [
        ("cluster", raw.cluster.is_some()),
        ("weighted_clusters", raw.weighted_clusters.is_some()),
        ("redirect", raw.redirect.is_some()),
        ("direct_response", raw.direct_response.is_some()),
    ];
    let action = match (
        &raw.cluster,
        &raw.weighted_clusters,
        &raw.redirect,
        &raw.direct_response,
    ) {
        (Some(name), None, None, None) => {
            cluster_ref(name, &format!("{path}.cluster"), clusters, problems).map(Action::Cluster)
        }
        (None, Some(split), None, None) => weighted(
            split,
            &format!("{path}.weighted_clusters"),
            clusters,
            problems,
        )
        .map(Action::WeightedClusters),
        (None, None, Some(redirect), None) => {
            self::redirect(redirect, &format!("{path}.redirect"), problems).map(Action::Redirect)
        }
        (None, None, None, Some(direct)) => check(
            problems,
            &format!("{path}.direct_response.status"),
            code::DIRECT_RESPONSE_STATUS,
            direct.status.to_string(),
            value::int(direct.status, 200, 599),
        )
        .map(|status| Action::DirectResponse {
            status,
            body: direct.body.clone(),
        }),
        _ => {
            problems.push(
                Problem::new(
                    path,
                    code::ACTION,
                    keys(&set),
                    "must set exactly one of cluster, weighted_clusters, redirect, direct_response",
                )
                .with_hint("example: cluster: web"),
            );
            None
        }
    };
    let answers_directly = raw.redirect.is_some() || raw.direct_response.is_some();
    if answers_directly && raw.cluster.is_none() && raw.weighted_clusters.is_none() {
        upstream_only(raw, path, problems);
    }
    action
}

/// Settings that only affect the request sent upstream mean nothing without a cluster.
fn upstream_only(raw: &raw::Route, path: &str, problems: &mut Problems) {
    let fields = [
        ("timeout", raw.timeout.as_ref().map(|t| quote(&t.0))),
        (
            "request_headers",
            raw.request_headers.as_ref().map(|_| "{ … }".to_owned()),
        ),
        ("prefix_rewrite", raw.prefix_rewrite.as_deref().map(quote)),
        ("host_rewrite", raw.host_rewrite.as_deref().map(quote)),
    ];
    for (key, value) in fields {
        if let Some(value) = value {
            problems.push(
                Problem::new(
                    format!("{path}.{key}"),
                    code::UPSTREAM_ONLY,
                    value,
                    "applies only to routes that forward to a cluster",
                )
                .with_hint("this route answers with a redirect or direct_response"),
            );
        }
    }
}

fn cluster_ref(
    name: &str,
    path: &str,
    clusters: &[&str],
    problems: &mut Problems,
) -> Option<String> {
    if clusters.contains(&name) {
        return Some(name.to_owned());
    }
    problems.push(
        Problem::new(
            path,
            code::UNKNOWN_CLUSTER,
            quote(name),
            "must name a defined cluster",
        )
        .with_hint(nearest_hint(name, clusters)),
    );
    None
}

fn weighted(
    raw: &[raw::WeightedCluster],
    path: &str,
    clusters: &[&str],
    problems: &mut Problems,
) -> Option<Vec<WeightedCluster>> {
    if raw.is_empty() {
        problems.push(Problem::new(
            path,
            code::WEIGHTED_CLUSTERS,
            "[]",
            "must list at least one cluster",
        ));
        return None;
    }
    all(raw.iter().enumerate().map(|(i, entry)| {
        let path = format!("{path}[{i}]");
        let cluster = cluster_ref(
            &entry.cluster,
            &format!("{path}.cluster"),
            clusters,
            problems,
        );
        let weight = check(
            problems,
            &format!("{path}.weight"),
            code::WEIGHTED_CLUSTERS,
            entry.weight.to_string(),
            value::int(entry.weight, 1, 1000),
        );
        Some(WeightedCluster {
            cluster: cluster?,
            weight: weight?,
        })
    }))
}

fn redirect(raw: &raw::Redirect, path: &str, problems: &mut Problems) -> Option<Redirect> {
    if raw.scheme.is_none() && raw.host.is_none() && raw.path.is_none() {
        let set = [("code", raw.code.is_some())];
        problems.push(
            Problem::new(
                path,
                code::REDIRECT_EMPTY,
                keys(&set),
                "must set at least one of scheme, host, path",
            )
            .with_hint("example: { scheme: https }"),
        );
    }
    let scheme = match raw.scheme.as_deref() {
        None => Some(None),
        Some(scheme @ ("http" | "https")) => Some(Some(scheme.to_owned())),
        Some(other) => {
            problems.push(
                Problem::new(
                    format!("{path}.scheme"),
                    code::REDIRECT_SCHEME,
                    quote(other),
                    "must be a known scheme",
                )
                .with_hint("valid values: http, https"),
            );
            None
        }
    };
    let host = optional(raw.host.as_deref(), |host| {
        let path = format!("{path}.host");
        check(
            problems,
            &path,
            code::AUTHORITY,
            quote(host),
            value::authority(host),
        )
    });
    let new_path = optional(raw.path.as_deref(), |text| {
        let path = format!("{path}.path");
        check(problems, &path, code::PATH, quote(text), value::path(text))
    });
    let code = match raw.code {
        None => Some(301),
        Some(n) => match REDIRECT_CODES.iter().find(|&&c| i64::from(c) == n) {
            Some(&c) => Some(c),
            None => {
                problems.push(
                    Problem::new(
                        format!("{path}.code"),
                        code::REDIRECT_CODE,
                        n.to_string(),
                        "must be a redirect status",
                    )
                    .with_hint("valid values: 301, 302, 303, 307, 308"),
                );
                None
            }
        },
    };
    Some(Redirect {
        scheme: scheme?,
        host: host?,
        path: new_path?,
        code: code?,
    })
}
