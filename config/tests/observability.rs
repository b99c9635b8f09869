//! Access logs, tracing, and re-rendering a config between YAML and JSON.

use std::path::{Path, PathBuf};

use strait_config::{
    AccessLog, ConfigError, Format, LogField, LogFormat, LogOutput, TemplatePart, Tracing, convert,
    load, parse,
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
            direct_response: { status: 200, body: ok }
"#;

fn yaml(text: &str) -> strait_config::Config {
    parse(text, Format::Yaml).unwrap_or_else(|err| panic!("{}", err.render("test.yaml")))
}

fn with(extra: &str) -> strait_config::Config {
    yaml(&format!("{MINIMAL}{extra}"))
}

fn access_log(extra: &str) -> AccessLog {
    with(extra).access_log().expect("access log").clone()
}

fn case(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/cases")
        .join(name)
}

#[test]
fn without_the_keys_there_is_no_access_log_and_every_trace_is_sampled() {
    let config = yaml(MINIMAL);
    assert!(config.access_log().is_none());
    assert_eq!(config.tracing(), &Tracing::default());
    assert_eq!(config.tracing().sample_rate(), 1.0);

    let config = with("tracing: {}\n");
    assert_eq!(config.tracing().sample_rate(), 1.0);
}

#[test]
fn an_empty_access_log_writes_json_to_stdout() {
    let log = access_log("access_log: {}\n");
    assert_eq!(log.output(), &LogOutput::Stdout);
    assert_eq!(log.format(), &LogFormat::Json);
    assert_eq!(log.queue_size(), 65_536);
}

#[test]
fn text_format_without_template_uses_the_default_template() {
    let log = access_log("access_log: { format: text }\n");
    let LogFormat::Text(parts) = log.format() else {
        panic!("expected text, got {:?}", log.format());
    };
    let rendered: String = parts
        .iter()
        .map(|part| match part {
            TemplatePart::Literal(text) => text.replace('{', "{{").replace('}', "}}"),
            TemplatePart::Field(field) => format!("{{{}}}", field.as_str()),
        })
        .collect();
    assert_eq!(
        rendered,
        r#"{start_time} {client} "{method} {path} {protocol}" {status} {bytes_out} {duration_ms} {upstream} {error} {request_id} {trace_id}"#
    );
    let explicit = access_log(&format!(
        "access_log: {{ format: text, template: '{rendered}' }}\n"
    ));
    assert_eq!(explicit, log);
}

#[test]
fn every_key_is_read() {
    let log = access_log(
        "access_log:\n  output: /var/log/strait/access.log\n  format: text\n  \
         template: \"{{{method}}} {status} {route}\"\n  queue_size: 1\n",
    );
    assert_eq!(
        log.output(),
        &LogOutput::File(PathBuf::from("/var/log/strait/access.log"))
    );
    assert_eq!(
        log.format(),
        &LogFormat::Text(vec![
            TemplatePart::Literal("{".to_owned()),
            TemplatePart::Field(LogField::Method),
            TemplatePart::Literal("} ".to_owned()),
            TemplatePart::Field(LogField::Status),
            TemplatePart::Literal(" ".to_owned()),
            TemplatePart::Field(LogField::Route),
        ])
    );
    assert_eq!(log.queue_size(), 1);
    assert_eq!(
        access_log("access_log: { output: stderr, queue_size: 1000000 }\n").output(),
        &LogOutput::Stderr
    );

    for (rate, want) in [
        ("0", 0.0),
        ("0.0", 0.0),
        ("-0.0", 0.0),
        ("0.25", 0.25),
        ("1", 1.0),
    ] {
        let config = with(&format!("tracing: {{ sample_rate: {rate} }}\n"));
        assert_eq!(config.tracing().sample_rate(), want, "{rate}");
        assert!(config.tracing().sample_rate().is_sign_positive(), "{rate}");
    }
}

#[test]
fn log_fields_are_named_as_documented() {
    let names: Vec<&str> = LogField::ALL.iter().map(|f| f.as_str()).collect();
    assert_eq!(
        names,
        [
            "start_time",
            "duration_ms",
            "method",
            "authority",
            "path",
            "protocol",
            "status",
            "bytes_in",
            "bytes_out",
            "upstream",
            "error",
            "request_id",
            "trace_id",
            "worker",
            "listener",
            "route",
            "cluster",
            "client"
        ]
    );
}

#[test]
fn the_valid_case_sets_both_keys() {
    let config = load(&case("valid/observability.yaml"))
        .unwrap_or_else(|err| panic!("{}", err.render("observability.yaml")));
    let log = config.access_log().expect("access log");
    assert!(matches!(log.output(), LogOutput::File(path) if path.is_absolute()));
    assert!(matches!(log.format(), LogFormat::Text(parts) if !parts.is_empty()));
    assert_eq!(log.queue_size(), 4096);
    assert_eq!(config.tracing().sample_rate(), 0.05);
}

#[test]
fn rate_problems_name_the_value_as_written() {
    let problem = |rate: &str| {
        let err = parse(
            &format!("{MINIMAL}tracing: {{ sample_rate: {rate} }}\n"),
            Format::Yaml,
        )
        .expect_err("invalid rate");
        let problem = err.problems().expect("problems").iter().next().cloned();
        let problem = problem.expect("one problem");
        assert_eq!(problem.path(), "tracing.sample_rate");
        assert_eq!(problem.code(), "E0601");
        (
            problem.value().to_owned(),
            problem.hint().map(str::to_owned),
        )
    };
    assert_eq!(problem("1.5").0, "1.5");
    assert_eq!(problem("-1").0, "-1");
    let err = parse(
        &format!("{MINIMAL}tracing: {{ sample_rate: .nan }}\n"),
        Format::Yaml,
    );
    assert!(matches!(err, Err(ConfigError::Syntax { .. })), "{err:?}");
    assert_eq!(problem("true").0, "true");
    assert_eq!(
        problem(r#""0.5""#),
        (
            r#""0.5""#.to_owned(),
            Some("write the number without quotes, example: 0.1".to_owned())
        )
    );
}

/// A config with every kind of value: nested maps, lists, numbers, booleans, plain strings that
/// YAML would read as numbers or booleans, header maps out of alphabetical order, multi-line
/// strings, and a long template with quotes and runs of spaces.
const ROUND_TRIP: &str = r#"
io: uring
tracing: { sample_rate: 0.25 }
listeners:
  - name: 1
    address: 127.0.0.1:8081
    virtual_hosts:
      - name: on
        domains: ["*"]
        routes:
          - match: { path: /, query: [{ name: off, present: true }] }
            direct_response: { status: 404, body: 404 }
  - name: public
    address: 127.0.0.1:8080
    limits: { max_headers: 50, idle_timeout: 2m }
    virtual_hosts:
      - name: api
        domains: ["*.example.com", api.example.com, "*"]
        routes:
          - name: canary
            match:
              prefix: /v1/
              headers: [{ name: x-canary, exact: "1" }, { name: x-debug, present: true }]
              query: [{ name: beta, exact: "yes" }, { name: off, exact: "null" }]
              methods: [GET, post]
            cluster: web
            timeout: 250ms
            request_headers:
              add: { x-z: "2", x-a: 1, x-m: "true" }
              set: { x-b: on }
              remove: [x-internal]
          - match: { regex: "/v[0-9]+/users/[^/]+" }
            direct_response: { status: 200, body: "line one\nline two: {x} # not a comment" }
clusters:
  - name: web
    lb: ring_hash
    hash_key: { header: x-user }
    endpoints: ["127.0.0.1:9001", { address: "[::1]:9002", weight: 3 }]
admin: { address: 127.0.0.1:9901 }
access_log:
  output: /var/log/strait/access log.json
  format: text
  template: '{start_time}  {client} "{method} {path} {protocol}" {status} {bytes_out} {duration_ms} {upstream} {error} {request_id} {trace_id} {{literal}} '
  queue_size: 100
"#;

#[test]
fn convert_round_trips_yaml_through_json() {
    let original = yaml(ROUND_TRIP);
    let json = convert(ROUND_TRIP, Format::Yaml, Format::Json).expect("YAML to JSON");
    let from_json =
        parse(&json, Format::Json).unwrap_or_else(|err| panic!("{}\n{json}", err.render("json")));
    let back = convert(&json, Format::Json, Format::Yaml).expect("JSON to YAML");
    let from_yaml =
        parse(&back, Format::Yaml).unwrap_or_else(|err| panic!("{}\n{back}", err.render("yaml")));
    // The model holds compiled regexes, which have no equality; their Debug shows the pattern.
    assert_eq!(format!("{from_json:?}"), format!("{original:?}"), "{json}");
    assert_eq!(format!("{from_yaml:?}"), format!("{original:?}"), "{back}");

    // Keys come in the format's order, header maps in the file's; values keep the format's
    // types; a second round trip changes nothing.
    assert!(
        json.find("\"listeners\"") < json.find("\"tracing\""),
        "{json}"
    );
    assert!(json.find("\"tracing\"") < json.find("\"io\""), "{json}");
    assert!(json.contains("\"io\": \"uring\""), "{json}");
    assert!(back.contains("\nio: uring\n"), "{back}");
    assert!(json.find("\"x-z\"") < json.find("\"x-a\""), "{json}");
    assert!(json.contains("\"name\": \"on\""), "{json}");
    assert!(json.contains("\"body\": \"404\""), "{json}");
    assert!(json.contains("\"status\": 404"), "{json}");
    let again = convert(&back, Format::Yaml, Format::Json).expect("YAML to JSON again");
    assert_eq!(again, json);
    assert_eq!(
        convert(&json, Format::Json, Format::Json).expect("JSON to JSON"),
        json
    );
    assert!(json.ends_with("}\n") && back.ends_with('\n') && !back.ends_with("\n\n"));
}

#[test]
fn convert_reports_syntax_errors_and_does_not_validate() {
    let err = convert("{\"listeners\": [}", Format::Json, Format::Yaml).expect_err("bad JSON");
    assert!(
        matches!(err, ConfigError::Syntax { line: Some(1), .. }),
        "{err:?}"
    );
    let err = convert("a: [1, 2\n", Format::Yaml, Format::Json).expect_err("bad YAML");
    assert!(matches!(err, ConfigError::Syntax { .. }), "{err:?}");

    let err = convert("bogus: 1\n", Format::Yaml, Format::Json).expect_err("unknown key");
    assert!(
        err.render("x").contains("(E0002): unknown field `bogus`"),
        "{}",
        err.render("x")
    );

    // Breaks rules (no listener, a bad name, no endpoints) but has the shape: it converts, and
    // empty lists are dropped as they mean the same as no list.
    let text = "listeners: []\nclusters: [{ name: bad name, endpoints: [] }]\n";
    assert_eq!(
        convert(text, Format::Yaml, Format::Json).expect("converts"),
        "{\n  \"clusters\": [\n    {\n      \"name\": \"bad name\"\n    }\n  ]\n}\n"
    );
    assert!(parse(text, Format::Yaml).is_err());
}

#[test]
fn docs_show_the_default_template() {
    let docs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/config.md"))
            .expect("read docs/config.md");
    let default = r#"{start_time} {client} "{method} {path} {protocol}" {status} {bytes_out} {duration_ms} {upstream} {error} {request_id} {trace_id}"#;
    assert!(
        docs.contains(default),
        "docs/config.md lacks the default template"
    );
    for field in LogField::ALL {
        let row = format!("| `{}` |", field.as_str());
        assert!(docs.contains(&row), "docs/config.md lacks the row `{row}`");
    }
}
