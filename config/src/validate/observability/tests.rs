use super::*;

use crate::model::TemplatePart::{Field, Literal};

fn lit(text: &str) -> TemplatePart {
    Literal(text.to_owned())
}

/// The rendered hint of a template's violation.
fn template_hint(text: &str) -> String {
    let violation = template(text).expect_err("invalid template");
    violation
        .at("t", "E0000", String::new())
        .hint()
        .expect("a hint")
        .to_owned()
}

#[test]
fn template_splits_fields_and_literals() {
    assert_eq!(
        template("{method} {path} -> {status}ms").expect("valid"),
        vec![
            Field(LogField::Method),
            lit(" "),
            Field(LogField::Path),
            lit(" -> "),
            Field(LogField::Status),
            lit("ms"),
        ]
    );
    assert_eq!(
        template("plain text").expect("valid"),
        vec![lit("plain text")]
    );
    assert_eq!(
        template("{status}{status}").expect("valid"),
        vec![Field(LogField::Status), Field(LogField::Status)]
    );
    assert_eq!(
        template("é {client} ü").expect("valid"),
        vec![lit("é "), Field(LogField::Client), lit(" ü")]
    );
}

#[test]
fn template_accepts_every_field() {
    for field in LogField::ALL {
        let text = format!("<{{{}}}>", field.as_str());
        assert_eq!(
            template(&text).expect("valid"),
            vec![lit("<"), Field(field), lit(">")],
            "{text}"
        );
    }
}

#[test]
fn doubled_braces_are_literal_and_merge_with_text() {
    assert_eq!(template("{{").expect("valid"), vec![lit("{")]);
    assert_eq!(template("}}").expect("valid"), vec![lit("}")]);
    assert_eq!(
        template("a {{method}} b").expect("valid"),
        vec![lit("a {method} b")]
    );
    assert_eq!(
        template("{{{method}}}").expect("valid"),
        vec![lit("{"), Field(LogField::Method), lit("}")]
    );
    assert_eq!(
        template(r#"{{"s":{status}}}"#).expect("valid"),
        vec![lit(r#"{"s":"#), Field(LogField::Status), lit("}")]
    );
}

#[test]
fn default_template_parses_to_every_documented_field() {
    let parts = template(DEFAULT_TEMPLATE).expect("the default template is valid");
    assert_eq!(parts, default_template());
    let fields: Vec<&str> = parts
        .iter()
        .filter_map(|part| match part {
            Field(field) => Some(field.as_str()),
            Literal(_) => None,
        })
        .collect();
    assert_eq!(
        fields,
        [
            "start_time",
            "client",
            "method",
            "path",
            "protocol",
            "status",
            "bytes_out",
            "duration_ms",
            "upstream",
            "error",
            "request_id",
            "trace_id"
        ]
    );
    assert_eq!(parts[3], lit(" \""));
}

#[test]
fn unbalanced_braces_are_located() {
    assert_eq!(
        template_hint("{method"),
        r#"unclosed "{" at character 1; write a literal brace as "{{" or "}}""#
    );
    assert_eq!(
        template_hint("é {method {path}"),
        r#"unclosed "{" at character 3; write a literal brace as "{{" or "}}""#
    );
    assert_eq!(
        template_hint("{status} }"),
        r#"unmatched "}" at character 10; write a literal brace as "{{" or "}}""#
    );
    assert_eq!(
        template_hint("{status}}"),
        r#"unmatched "}" at character 9; write a literal brace as "{{" or "}}""#
    );
    let violation = template("{").expect_err("unclosed");
    assert_eq!(
        violation.at("t", "E0000", String::new()).rule(),
        r#"must pair each "{" with a "}""#
    );
}

#[test]
fn unknown_fields_are_all_named_with_the_nearest_match() {
    let valid = LogField::ALL
        .iter()
        .map(|f| f.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    assert_eq!(
        template_hint("{metod} {status} {stauts} {x} {}"),
        format!(
            r#"unknown "metod" (did you mean "method"?), "stauts" (did you mean "status"?), "x", ""; valid fields: {valid}"#
        )
    );
    assert_eq!(
        template_hint("{upstream_address}"),
        format!(r#"unknown "upstream_address" (did you mean "upstream"?); valid fields: {valid}"#)
    );
    assert_eq!(
        template_hint("{Method}"),
        format!(r#"unknown "Method" (did you mean "method"?); valid fields: {valid}"#)
    );
}

#[test]
fn empty_and_multi_line_templates_are_rejected() {
    let rule = |text: &str| {
        template(text)
            .expect_err("invalid")
            .at("t", "E0000", String::new())
            .rule()
            .to_owned()
    };
    assert_eq!(rule(""), "must not be empty");
    assert_eq!(rule("{status}\n{path}"), "must be one line");
    assert_eq!(rule("{status}\r"), "must be one line");
    assert!(template("{status}\t{path}").is_ok());
}

#[test]
fn output_accepts_streams_and_absolute_files() {
    assert_eq!(output("stdout"), Ok(LogOutput::Stdout));
    assert_eq!(output("stderr"), Ok(LogOutput::Stderr));
    assert_eq!(
        output("/var/log/strait/access.log"),
        Ok(LogOutput::File(PathBuf::from("/var/log/strait/access.log")))
    );
    for bad in [
        "",
        "access.log",
        "./access.log",
        "logs/a.log",
        "STDOUT",
        "Stderr",
    ] {
        assert!(output(bad).is_err(), "{bad:?} must be rejected");
    }
    for directory in ["/", "/var/log/", "/var/log/.", "/var/log/.."] {
        assert_eq!(
            output(directory),
            Err(Violation::new("must name a file, not a directory").with_hint(FILE_EXAMPLE)),
            "{directory:?}"
        );
    }
    assert_eq!(
        output("/var/log/a\0.log"),
        Err(Violation::new("must not contain control characters"))
    );
}
