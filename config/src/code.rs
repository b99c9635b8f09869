//! Stable problem codes.
//!
//! A code names one rule and never changes meaning once released: tools and runbooks match on
//! it. E00xx is the file and top level, E01xx listeners, E02xx virtual hosts and routes, E03xx
//! clusters, E04xx the admin listener, E05xx the access log, E06xx tracing, E07xx the control
//! plane's own addresses (`xds`, `registry`). [`ALL`] is the table `docs/config.md` reproduces; a test
//! keeps the two in step.

pub(crate) const SYNTAX: &str = "E0001";
pub(crate) const UNKNOWN_KEY: &str = "E0002";
pub(crate) const MISSING_KEY: &str = "E0003";
pub(crate) const NO_LISTENERS: &str = "E0004";
pub(crate) const IO_BACKEND: &str = "E0005";

pub(crate) const LISTENER_ADDRESS_IN_USE: &str = "E0101";
pub(crate) const LISTENER_ADDRESS: &str = "E0102";
pub(crate) const LISTENER_NAME: &str = "E0103";
pub(crate) const LISTENER_NAME_IN_USE: &str = "E0104";
pub(crate) const LISTENER_PROTOCOL: &str = "E0105";
pub(crate) const NO_VIRTUAL_HOSTS: &str = "E0106";
pub(crate) const LIMIT: &str = "E0107";
pub(crate) const LIMIT_DURATION: &str = "E0108";

pub(crate) const PATH_MATCH: &str = "E0201";
pub(crate) const PATH: &str = "E0202";
pub(crate) const UNKNOWN_CLUSTER: &str = "E0203";
pub(crate) const REGEX: &str = "E0204";
pub(crate) const ACTION: &str = "E0205";
pub(crate) const WEIGHTED_CLUSTERS: &str = "E0206";
pub(crate) const ROUTE_TIMEOUT: &str = "E0207";
pub(crate) const VALUE_MATCH: &str = "E0208";
pub(crate) const HEADER_NAME: &str = "E0209";
pub(crate) const HEADER_VALUE: &str = "E0210";
pub(crate) const METHOD: &str = "E0211";
pub(crate) const REDIRECT_EMPTY: &str = "E0212";
pub(crate) const REDIRECT_SCHEME: &str = "E0213";
pub(crate) const REDIRECT_CODE: &str = "E0214";
pub(crate) const DIRECT_RESPONSE_STATUS: &str = "E0215";
pub(crate) const PREFIX_REWRITE: &str = "E0216";
pub(crate) const AUTHORITY: &str = "E0217";
pub(crate) const NO_ROUTES: &str = "E0218";
pub(crate) const VIRTUAL_HOST_NAME: &str = "E0219";
pub(crate) const VIRTUAL_HOST_NAME_IN_USE: &str = "E0220";
pub(crate) const NO_DOMAINS: &str = "E0221";
pub(crate) const DOMAIN: &str = "E0222";
pub(crate) const DOMAIN_IN_USE: &str = "E0223";
pub(crate) const ROUTE_NAME: &str = "E0224";
pub(crate) const QUERY_NAME: &str = "E0225";
pub(crate) const UPSTREAM_ONLY: &str = "E0226";

pub(crate) const CLUSTER_NAME: &str = "E0301";
pub(crate) const CLUSTER_NAME_IN_USE: &str = "E0302";
pub(crate) const UPSTREAM_PROTOCOL: &str = "E0303";
pub(crate) const LB: &str = "E0304";
pub(crate) const HASH_KEY_UNUSED: &str = "E0305";
pub(crate) const HASH_KEY: &str = "E0306";
pub(crate) const CLUSTER_DURATION: &str = "E0307";
pub(crate) const NO_ENDPOINTS: &str = "E0308";
pub(crate) const ENDPOINT_ADDRESS: &str = "E0309";
pub(crate) const ENDPOINT_WEIGHT: &str = "E0310";
pub(crate) const ENDPOINT_IN_USE: &str = "E0311";
pub(crate) const POOL: &str = "E0312";
pub(crate) const DISCOVERY: &str = "E0313";
pub(crate) const DISCOVERY_DNS: &str = "E0314";
pub(crate) const DISCOVERY_REGISTRY: &str = "E0315";
pub(crate) const HEALTH_CHECK: &str = "E0316";

pub(crate) const XDS_ADDRESS: &str = "E0701";
pub(crate) const REGISTRY_ADDRESS: &str = "E0702";

pub(crate) const ADMIN_ADDRESS: &str = "E0401";
pub(crate) const ADMIN_ADDRESS_IN_USE: &str = "E0402";

pub(crate) const ACCESS_LOG_OUTPUT: &str = "E0501";
pub(crate) const ACCESS_LOG_FORMAT: &str = "E0502";
pub(crate) const ACCESS_LOG_TEMPLATE: &str = "E0503";
pub(crate) const ACCESS_LOG_TEMPLATE_UNUSED: &str = "E0504";
pub(crate) const ACCESS_LOG_QUEUE_SIZE: &str = "E0505";

pub(crate) const SAMPLE_RATE: &str = "E0601";

/// Every code with a one-line summary, in code order, as `docs/config.md` lists them.
#[cfg(test)]
pub(crate) const ALL: &[(&str, &str)] = &[
    (
        SYNTAX,
        "the file is not well-formed YAML/JSON, or a value has the wrong type",
    ),
    (UNKNOWN_KEY, "a key the format does not define"),
    (MISSING_KEY, "a required key is missing"),
    (NO_LISTENERS, "no listener is defined"),
    (IO_BACKEND, "`io` is not `auto`, `uring` or `epoll`"),
    (
        LISTENER_ADDRESS_IN_USE,
        "listener address already used by another listener",
    ),
    (LISTENER_ADDRESS, "listener address is not `ip:port`"),
    (
        LISTENER_NAME,
        "listener name is empty or has characters outside `A-Za-z0-9._-`",
    ),
    (
        LISTENER_NAME_IN_USE,
        "listener name already used by another listener",
    ),
    (LISTENER_PROTOCOL, "unknown listener protocol"),
    (NO_VIRTUAL_HOSTS, "listener has no virtual host"),
    (LIMIT, "listener limit out of range"),
    (LIMIT_DURATION, "listener limit is not a valid duration"),
    (
        PATH_MATCH,
        "route match does not set exactly one of `prefix`, `path`, `regex`",
    ),
    (
        PATH,
        "path does not start with `/` or has characters other than visible ASCII",
    ),
    (UNKNOWN_CLUSTER, "route names a cluster that is not defined"),
    (REGEX, "regex does not compile"),
    (ACTION, "route does not set exactly one action"),
    (
        WEIGHTED_CLUSTERS,
        "`weighted_clusters` is empty or a weight is outside 1..=1000",
    ),
    (ROUTE_TIMEOUT, "route timeout is not a valid duration"),
    (
        VALUE_MATCH,
        "header or query match does not set exactly one rule",
    ),
    (HEADER_NAME, "invalid header name"),
    (HEADER_VALUE, "invalid header value"),
    (METHOD, "invalid method"),
    (
        REDIRECT_EMPTY,
        "redirect sets none of `scheme`, `host`, `path`",
    ),
    (REDIRECT_SCHEME, "redirect scheme is not `http` or `https`"),
    (
        REDIRECT_CODE,
        "redirect code is not 301, 302, 303, 307 or 308",
    ),
    (
        DIRECT_RESPONSE_STATUS,
        "direct response status outside 200..=599",
    ),
    (
        PREFIX_REWRITE,
        "`prefix_rewrite` on a route without a `prefix` match",
    ),
    (AUTHORITY, "invalid authority (`host` or `host:port`)"),
    (NO_ROUTES, "virtual host has no route"),
    (
        VIRTUAL_HOST_NAME,
        "virtual host name is empty or has characters outside `A-Za-z0-9._-`",
    ),
    (
        VIRTUAL_HOST_NAME_IN_USE,
        "virtual host name already used in this listener",
    ),
    (NO_DOMAINS, "virtual host has no domain"),
    (DOMAIN, "invalid domain"),
    (
        DOMAIN_IN_USE,
        "domain already served by another virtual host of this listener",
    ),
    (
        ROUTE_NAME,
        "route name is empty or has characters outside `A-Za-z0-9._-`",
    ),
    (QUERY_NAME, "query parameter name is empty"),
    (
        UPSTREAM_ONLY,
        "upstream-only setting on a route that answers with a redirect or direct response",
    ),
    (
        CLUSTER_NAME,
        "cluster name is empty or has characters outside `A-Za-z0-9._-`",
    ),
    (
        CLUSTER_NAME_IN_USE,
        "cluster name already used by another cluster",
    ),
    (UPSTREAM_PROTOCOL, "unknown cluster protocol"),
    (LB, "unknown load-balancing policy"),
    (
        HASH_KEY_UNUSED,
        "`hash_key` on a cluster whose `lb` does not hash",
    ),
    (HASH_KEY, "`hash_key` does not set exactly one valid key"),
    (CLUSTER_DURATION, "cluster timeout is not a valid duration"),
    (NO_ENDPOINTS, "cluster has no endpoint"),
    (
        ENDPOINT_ADDRESS,
        "endpoint address is not `ip:port` with a non-zero port",
    ),
    (ENDPOINT_WEIGHT, "endpoint weight outside 1..=1000"),
    (
        ENDPOINT_IN_USE,
        "endpoint address listed twice in one cluster",
    ),
    (POOL, "pool limit out of range"),
    (
        DISCOVERY,
        "cluster sets both or neither of `endpoints` and `discovery`, or `discovery` sets not exactly one of `dns`, `registry`",
    ),
    (DISCOVERY_DNS, "`discovery.dns` is not `hostname:port`"),
    (
        DISCOVERY_REGISTRY,
        "`discovery.registry` is not a service name (`A-Za-z0-9._-`)",
    ),
    (
        HEALTH_CHECK,
        "`health_check` field out of range or inconsistent",
    ),
    (ADMIN_ADDRESS, "admin address is not a valid `ip:port`"),
    (
        ADMIN_ADDRESS_IN_USE,
        "admin address already used by a listener",
    ),
    (
        ACCESS_LOG_OUTPUT,
        "access log `output` is not `stdout`, `stderr` or an absolute file path",
    ),
    (
        ACCESS_LOG_FORMAT,
        "access log `format` is not `json` or `text`",
    ),
    (
        ACCESS_LOG_TEMPLATE,
        "access log `template` is empty, spans lines, names an unknown field or has an unpaired brace",
    ),
    (
        ACCESS_LOG_TEMPLATE_UNUSED,
        "access log `template` with a `format` other than `text`",
    ),
    (
        ACCESS_LOG_QUEUE_SIZE,
        "access log `queue_size` outside 1..=1000000",
    ),
    (
        SAMPLE_RATE,
        "tracing `sample_rate` is not a number in 0.0..=1.0",
    ),
    (XDS_ADDRESS, "`xds.address` is not a valid `ip:port`"),
    (
        REGISTRY_ADDRESS,
        "`registry.address` is not a valid `ip:port`",
    ),
];

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use regex::Regex;

    use super::ALL;

    fn codes_in(text: &str, pattern: &str) -> BTreeSet<String> {
        let re = Regex::new(pattern).expect("valid pattern");
        re.captures_iter(text).map(|c| c[1].to_owned()).collect()
    }

    fn read(relative: &str) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
        std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
    }

    #[test]
    fn codes_are_unique_sorted_and_all_listed() {
        let listed: Vec<&str> = ALL.iter().map(|(code, _)| *code).collect();
        let mut sorted = listed.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(listed, sorted, "ALL must be sorted and free of duplicates");
        let defined = codes_in(
            include_str!("code.rs"),
            r#"const [A-Z_]+: &str = "(E\d{4})""#,
        );
        let listed: BTreeSet<String> = listed.iter().map(|c| (*c).to_owned()).collect();
        assert_eq!(defined, listed, "every code constant must be in ALL");
    }

    #[test]
    fn docs_list_every_code_with_its_summary() {
        let docs = read("../docs/config.md");
        for (code, summary) in ALL {
            let row = format!("| {code} | {summary} |");
            assert!(docs.contains(&row), "docs/config.md lacks the row `{row}`");
        }
        let documented = codes_in(&docs, r"(?m)^\| (E\d{4}) \|");
        let listed: BTreeSet<String> = ALL.iter().map(|(c, _)| (*c).to_owned()).collect();
        assert_eq!(
            documented, listed,
            "docs/config.md lists codes that do not exist"
        );
    }

    #[test]
    fn every_code_has_a_golden_case() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases/invalid");
        let mut seen = BTreeSet::new();
        for entry in std::fs::read_dir(&dir).expect("read cases/invalid") {
            let path = entry.expect("directory entry").path();
            if path.extension().is_some_and(|e| e == "expected") {
                let text = std::fs::read_to_string(&path).expect("read .expected");
                seen.extend(codes_in(&text, r"\((E\d{4})\): "));
            }
        }
        let missing: Vec<&str> = ALL
            .iter()
            .map(|(c, _)| *c)
            .filter(|c| !seen.contains(*c))
            .collect();
        assert!(
            missing.is_empty(),
            "codes without a golden case: {missing:?}"
        );
    }
}
