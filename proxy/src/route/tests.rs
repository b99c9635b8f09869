use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;
use strait_config::{Format, Listener, parse};

use super::table::conditions_hold;
use super::*;

/// The reference: pick the virtual host by precedence, then the first route in file order.
fn linear(listener: &Listener, req: &Request<'_>) -> Option<(usize, usize)> {
    let vhosts = listener.virtual_hosts();
    let by = |f: &dyn Fn(&strait_config::DomainMatch) -> Option<usize>| {
        vhosts
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.domains().iter().filter_map(f).max().map(|rank| (rank, i)))
            // Highest rank wins; among equal ranks, the first virtual host.
            .min_by_key(|&(rank, i)| (std::cmp::Reverse(rank), i))
            .map(|(_, i)| i)
    };
    let exact = by(&|d| match d {
        strait_config::DomainMatch::Exact(n) if n == req.host => Some(0),
        _ => None,
    });
    let suffix = by(&|d| match d {
        strait_config::DomainMatch::Suffix(s) if d.matches(req.host) => Some(s.len()),
        _ => None,
    });
    let any = by(&|d| matches!(d, strait_config::DomainMatch::Any).then_some(0));
    let vhost = exact.or(suffix).or(any)?;
    let route = vhosts[vhost]
        .routes()
        .iter()
        .position(|r| r.matcher().path().matches(req.path) && conditions_hold(r.matcher(), req))?;
    Some((vhost, route))
}

const PATHS: [&str; 8] = ["/", "/a", "/a/", "/a/b", "/ab", "/b", "/b/c/d", "/a/b/c"];

fn route_yaml() -> impl Strategy<Value = String> {
    let path = prop_oneof![
        (0..PATHS.len()).prop_map(|i| format!("prefix: \"{}\"", PATHS[i])),
        (0..PATHS.len()).prop_map(|i| format!("path: \"{}\"", PATHS[i])),
        prop_oneof![Just("/a.*"), Just("/[ab]/.*"), Just(".*c")]
            .prop_map(|r| format!("regex: \"{r}\"")),
    ];
    let header = prop_oneof![
        Just(String::new()),
        Just(", headers: [{ name: x-h, exact: \"1\" }]".to_owned()),
        Just(", headers: [{ name: x-h, present: true }]".to_owned()),
        Just(", headers: [{ name: x-h, absent: true }]".to_owned()),
    ];
    let method = prop_oneof![
        Just(""),
        Just(", methods: [GET]"),
        Just(", methods: [POST, PUT]")
    ];
    let query = prop_oneof![Just(""), Just(", query: [{ name: q, exact: \"1\" }]")];
    (path, header, method, query).prop_map(|(p, h, m, q)| {
        format!("          - match: {{ {p}{h}{m}{q} }}\n            cluster: c\n")
    })
}

fn listener_yaml() -> impl Strategy<Value = String> {
    let domains = prop_oneof![
        Just("[\"*\"]"),
        Just("[\"a.example.com\"]"),
        Just("[\"*.example.com\"]"),
        Just("[\"*.b.example.com\", \"x.io\"]"),
    ];
    proptest::collection::vec(
        (domains, proptest::collection::vec(route_yaml(), 1..12)),
        1..4,
    )
    .prop_map(|vhosts| {
        let mut text =
            String::from("listeners:\n  - name: l\n    address: 127.0.0.1:0\n    virtual_hosts:\n");
        let mut used = std::collections::HashSet::new();
        for (i, (domains, routes)) in vhosts.into_iter().enumerate() {
            // A domain may serve only one virtual host; skip repeats.
            if !used.insert(domains) {
                continue;
            }
            text.push_str(&format!(
                "      - name: v{i}\n        domains: {domains}\n        routes:\n"
            ));
            for route in routes {
                text.push_str(&route);
            }
        }
        text.push_str("clusters:\n  - name: c\n    endpoints: [\"127.0.0.1:1\"]\n");
        text
    })
}

fn request_parts()
-> impl Strategy<Value = (String, String, Option<String>, String, Option<&'static str>)> {
    (
        prop_oneof![
            Just("a.example.com".to_owned()),
            Just("z.example.com".to_owned()),
            Just("q.b.example.com".to_owned()),
            Just("x.io".to_owned()),
            Just("other".to_owned()),
        ],
        prop_oneof![
            (0..PATHS.len()).prop_map(|i| PATHS[i].to_owned()),
            "/[abc/]{0,6}".prop_map(|s| s),
        ],
        prop_oneof![
            Just(None),
            Just(Some("q=1".to_owned())),
            Just(Some("r=2&q=3".to_owned()))
        ],
        prop_oneof![
            Just("GET".to_owned()),
            Just("POST".to_owned()),
            Just("DELETE".to_owned())
        ],
        prop_oneof![Just(None), Just(Some("1")), Just(Some("2"))],
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn compiled_table_agrees_with_linear_matcher(
        yaml in listener_yaml(),
        requests in proptest::collection::vec(request_parts(), 20),
    ) {
        let config = parse(&yaml, Format::Yaml).map_err(|e| TestCaseError::fail(e.render("gen")))?;
        let listener = &config.listeners()[0];
        let table = RouteTable::new(listener);
        for (host, path, query, method, header) in &requests {
            let mut headers = HeaderMap::new();
            if let Some(value) = header {
                headers.insert("x-h", HeaderValue::from_static(value));
            }
            let req = Request { host, path, query: query.as_deref(), method, headers: &headers };
            let compiled = table.find(&req).map(|(v, r, _)| (v, r));
            prop_assert_eq!(compiled, linear(listener, &req), "request {:?}\n{}", (host, path, query, method, header), yaml);
        }
    }
}

#[test]
fn first_route_in_file_order_wins_across_index_kinds() {
    let yaml = r#"
listeners:
  - name: l
    address: 127.0.0.1:0
    virtual_hosts:
      - name: v
        domains: ["*"]
        routes:
          - match: { prefix: /a, methods: [POST] }
            cluster: c
          - match: { regex: "/a/.*" }
            cluster: c
          - match: { path: /a/b }
            cluster: c
          - match: { prefix: / }
            cluster: c
clusters:
  - name: c
    endpoints: ["127.0.0.1:1"]
"#;
    let config = parse(yaml, Format::Yaml).unwrap();
    let table = RouteTable::new(&config.listeners()[0]);
    let headers = HeaderMap::new();
    let find = |path: &'static str, method: &'static str| {
        table
            .find(&Request {
                host: "h",
                path,
                query: None,
                method,
                headers: &headers,
            })
            .map(|(_, r, _)| r)
    };
    assert_eq!(find("/a/b", "POST"), Some(0));
    assert_eq!(find("/a/b", "GET"), Some(1));
    assert_eq!(find("/x", "GET"), Some(3));
    assert_eq!(find("/a", "GET"), Some(3));
}

#[test]
fn query_values_are_found_by_name() {
    assert_eq!(table::query_value(Some("a=1&b=2"), "b"), Some("2"));
    assert_eq!(table::query_value(Some("a&b=2"), "a"), Some(""));
    assert_eq!(table::query_value(Some("ab=1"), "a"), None);
    assert_eq!(table::query_value(None, "a"), None);
}
