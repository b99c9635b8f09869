//! What a valid file becomes: defaults, normalisation, and YAML/JSON equivalence.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use strait_config::{
    Action, ConfigError, DomainMatch, Format, HashKey, IoBackend, LbPolicy, Limits,
    ListenerProtocol, PathMatch, Pool, Snapshot, UpstreamProtocol, ValueRule, load, parse,
};

const MINIMAL: &str = r#"
listeners:
  - name: public
    address: 127.0.0.1:8080
    virtual_hosts:
      - name: default
        domains: ["*"]
        routes:
          - match: { prefix: / }
            cluster: web
clusters:
  - name: web
    endpoints: ["127.0.0.1:9001"]
"#;

fn yaml(text: &str) -> strait_config::Config {
    parse(text, Format::Yaml).unwrap_or_else(|err| panic!("{}", err.render("test.yaml")))
}

#[test]
fn defaults_are_applied() {
    let config = yaml(MINIMAL);
    assert!(config.admin().is_none());
    assert_eq!(config.io(), IoBackend::Auto);
    assert_eq!(IoBackend::default(), IoBackend::Auto);

    let listener = &config.listeners()[0];
    assert_eq!(listener.protocol(), ListenerProtocol::Http);
    let limits = listener.limits();
    assert_eq!(limits, &Limits::default());
    assert_eq!(limits.max_header_bytes, 65_536);
    assert_eq!(limits.max_headers, 100);
    assert_eq!(limits.header_read_timeout, Duration::from_secs(10));
    assert_eq!(limits.idle_timeout, Duration::from_secs(60));
    assert_eq!(limits.http2_max_concurrent_streams, 100);
    assert_eq!(limits.http2_max_pending_accept_reset_streams, 50);
    assert_eq!(limits.http2_max_local_error_reset_streams, 50);

    let route = &listener.virtual_hosts()[0].routes()[0];
    assert_eq!(route.name(), None);
    assert_eq!(route.timeout(), Duration::from_secs(15));
    assert!(route.request_headers().is_empty());
    assert!(route.response_headers().is_empty());
    assert_eq!(route.prefix_rewrite(), None);
    assert_eq!(route.host_rewrite(), None);
    assert!(route.matcher().methods().is_empty());

    let cluster = config.cluster("web").expect("cluster web");
    assert_eq!(cluster.protocol(), UpstreamProtocol::Http1);
    assert_eq!(cluster.lb(), LbPolicy::RoundRobin);
    assert_eq!(cluster.hash_key(), None);
    assert_eq!(cluster.connect_timeout(), Duration::from_secs(5));
    assert_eq!(cluster.endpoints()[0].weight(), 1);
    assert_eq!(cluster.pool(), &Pool::default());
    assert_eq!(cluster.pool().max_idle, 1024);
    assert_eq!(cluster.pool().purge_interval, Duration::from_secs(5));
    assert_eq!(cluster.pool().max_connections, 1024);
    assert_eq!(cluster.pool().idle_timeout, Duration::from_secs(60));
}

#[test]
fn partial_limits_and_pool_keep_the_other_defaults() {
    let text = MINIMAL
        .replace(
            "    virtual_hosts:",
            "    limits: { max_headers: 10 }\n    virtual_hosts:",
        )
        .replace(
            "    endpoints:",
            "    pool: { max_idle: 0 }\n    endpoints:",
        );
    let config = yaml(&text);
    let limits = config.listeners()[0].limits();
    assert_eq!(limits.max_headers, 10);
    assert_eq!(
        limits,
        &Limits {
            max_headers: 10,
            ..Limits::default()
        }
    );
    let pool = config.clusters()[0].pool();
    assert_eq!(
        pool,
        &Pool {
            max_idle: 0,
            ..Pool::default()
        }
    );
}

#[test]
fn hashing_policies_default_to_the_source_ip() {
    let config = yaml(&MINIMAL.replace("  - name: web\n", "  - name: web\n    lb: maglev\n"));
    assert_eq!(config.clusters()[0].lb(), LbPolicy::Maglev);
    assert_eq!(config.clusters()[0].hash_key(), Some(&HashKey::SourceIp));
}

#[test]
fn io_selects_the_backend_in_yaml_and_json() {
    for (text, backend) in [
        ("auto", IoBackend::Auto),
        ("uring", IoBackend::Uring),
        ("epoll", IoBackend::Epoll),
    ] {
        assert_eq!(yaml(&format!("io: {text}\n{MINIMAL}")).io(), backend);
        let json = format!(
            r#"{{"io": "{text}", "listeners": [{{"name": "public", "address": "127.0.0.1:8080",
                "virtual_hosts": [{{"name": "default", "domains": ["*"],
                "routes": [{{"match": {{"prefix": "/"}},
                "direct_response": {{"status": 200}}}}]}}]}}]}}"#
        );
        let config = parse(&json, Format::Json).unwrap_or_else(|err| panic!("{}", err.render("x")));
        assert_eq!(config.io(), backend);
    }
    let config = load(&case("valid/io.yaml")).expect("io.yaml loads");
    assert_eq!(config.io(), IoBackend::Epoll);

    // Values are exact: no other case, no aliases.
    for text in ["Uring", "io_uring", "\"\""] {
        let err = parse(&format!("io: {text}\n{MINIMAL}"), Format::Yaml).expect_err(text);
        let problems = err.problems().expect("a validation error");
        assert_eq!(problems.len(), 1, "{}", err.render("x"));
        let problem = problems.iter().next().expect("one problem");
        assert_eq!(
            (problem.path(), problem.code(), problem.hint()),
            ("io", "E0005", Some("valid values: auto, uring, epoll"))
        );
    }
}

#[test]
fn names_and_domains_are_normalised() {
    let config = load(&case("valid/full.yaml")).expect("full.yaml loads");
    let vhost = &config.listeners()[0].virtual_hosts()[0];
    assert_eq!(
        vhost.domains(),
        [
            DomainMatch::Exact("api.example.com".into()),
            DomainMatch::Suffix(".api.example.com".into())
        ]
    );
    let route = &vhost.routes()[0];
    assert_eq!(route.name(), Some("canary"));
    let matcher = route.matcher();
    assert!(matches!(matcher.path(), PathMatch::Prefix(p) if p == "/v1/"));
    assert_eq!(
        matcher.headers()[0].name(),
        "x-canary",
        "header names are lowercased"
    );
    assert!(matches!(matcher.headers()[0].rule(), ValueRule::Exact(v) if v == "1"));
    assert_eq!(matcher.methods(), ["GET", "POST"], "methods are uppercased");
    assert_eq!(
        route.request_headers().set(),
        [("x-version".to_owned(), "2".to_owned())]
    );
    assert_eq!(route.timeout(), Duration::from_millis(250));
    assert_eq!(route.host_rewrite(), Some("api.internal:8443"));
    assert!(matches!(route.action(), Action::Cluster(c) if c == "api-canary"));

    let regex_route = &vhost.routes()[1];
    let PathMatch::Regex(re) = regex_route.matcher().path() else {
        panic!("regex match expected");
    };
    assert!(re.is_match("/v2/users/ann"));
    assert!(
        !re.is_match("/v2/users/ann/x"),
        "regexes match the whole path"
    );

    let redirect = match vhost.routes()[2].action() {
        Action::Redirect(r) => r,
        other => panic!("redirect expected, got {other:?}"),
    };
    assert_eq!(
        (
            redirect.scheme(),
            redirect.host(),
            redirect.path(),
            redirect.code()
        ),
        (Some("https"), Some("www.example.com"), Some("/new"), 308)
    );

    let api_a = config.cluster("api-a").expect("api-a");
    assert_eq!(api_a.hash_key(), Some(&HashKey::Header("x-user".into())));
    assert_eq!(api_a.endpoints()[1].weight(), 3);
    assert_eq!(
        api_a.endpoints()[1].address(),
        "[::1]:9003".parse().expect("addr")
    );
    assert_eq!(
        config.admin().map(|a| a.address()),
        Some("127.0.0.1:9901".parse().expect("addr"))
    );
}

#[test]
fn json_and_yaml_give_the_same_model() {
    let json = load(&case("valid/split.json")).expect("split.json loads");
    let yaml = yaml(
        r#"
listeners:
  - name: public
    address: 127.0.0.1:8080
    virtual_hosts:
      - name: default
        domains: ["*"]
        routes:
          - match: { prefix: / }
            weighted_clusters: [{ cluster: web-a, weight: 90 }, { cluster: web-b, weight: 10 }]
clusters:
  - name: web-a
    endpoints: ["127.0.0.1:9001"]
  - name: web-b
    endpoints: [{ address: 127.0.0.1:9002, weight: 2 }]
"#,
    );
    // The model holds compiled regexes, which have no equality; their Debug shows the pattern.
    assert_eq!(format!("{json:?}"), format!("{yaml:?}"));
}

#[test]
fn json_reports_the_same_problems_as_yaml() {
    let yaml_err = parse(
        "listeners: []\nclusters: [{ name: web, endpoints: [] }]",
        Format::Yaml,
    )
    .expect_err("invalid");
    let json_err = parse(
        r#"{"listeners": [], "clusters": [{"name": "web", "endpoints": []}]}"#,
        Format::Json,
    )
    .expect_err("invalid");
    assert_eq!(yaml_err.render("x"), json_err.render("x"));
    assert_eq!(yaml_err.problems().map(|p| p.len()), Some(2));
}

#[test]
fn problems_expose_their_parts() {
    let err = parse(
        &MINIMAL.replace("cluster: web", "cluster: wbe"),
        Format::Yaml,
    )
    .expect_err("invalid");
    let ConfigError::Invalid(problems) = &err else {
        panic!("expected Invalid, got {err:?}");
    };
    let problem = problems.iter().next().expect("one problem");
    assert_eq!(
        problem.path(),
        "listeners[0].virtual_hosts[0].routes[0].cluster"
    );
    assert_eq!(problem.code(), "E0203");
    assert_eq!(problem.value(), "\"wbe\"");
    assert_eq!(problem.rule(), "must name a defined cluster");
    assert_eq!(problem.hint(), Some("known: \"web\""));
    assert_eq!(problems.to_string().lines().count(), 2);
    assert!(
        err.to_string()
            .starts_with("invalid config: 1 problem\n  listeners[0]")
    );
}

#[test]
fn syntax_errors_carry_their_location() {
    let err =
        parse("listeners:\n  - name: a\n    bogus: 1\n", Format::Yaml).expect_err("unknown key");
    assert!(
        matches!(
            err,
            ConfigError::Syntax { line: Some(2), .. } | ConfigError::Syntax { line: Some(3), .. }
        ),
        "{err:?}"
    );
    let err = parse("{\"listeners\": [}", Format::Json).expect_err("bad JSON");
    assert!(
        matches!(
            err,
            ConfigError::Syntax {
                line: Some(1),
                column: Some(_),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("at line 1"), "{err}");
}

#[test]
fn load_picks_the_format_by_extension_and_reports_io_errors() {
    assert_eq!(Format::from_path(Path::new("a/b.json")), Format::Json);
    assert_eq!(Format::from_path(Path::new("a/b.JSON")), Format::Json);
    assert_eq!(Format::from_path(Path::new("a/b.yaml")), Format::Yaml);
    assert_eq!(Format::from_path(Path::new("a/b")), Format::Yaml);

    let missing = case("valid/does-not-exist.yaml");
    let err = load(&missing).expect_err("missing file");
    assert!(
        matches!(&err, ConfigError::Io { path, .. } if *path == missing),
        "{err:?}"
    );
    assert!(
        err.render("x.yaml")
            .starts_with("error: cannot read x.yaml: ")
    );
}

#[test]
fn snapshots_share_the_config() {
    let config = Arc::new(yaml(MINIMAL));
    let snapshot = Snapshot::new(7, Arc::clone(&config));
    let copy = snapshot.clone();
    assert_eq!(copy.version(), 7);
    assert!(Arc::ptr_eq(copy.config(), snapshot.config()));
    assert!(Arc::ptr_eq(snapshot.config(), &config));
    assert_eq!(Snapshot::new(8, yaml(MINIMAL)).version(), 8);
}

fn case(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/cases")
        .join(name)
}
