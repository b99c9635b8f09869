//! The access log (output, format, text template, queue) and trace sampling.
//!
//! A text template is parsed here, once, into [`TemplatePart`]s, so the proxy's log writer only
//! walks a list and never meets an unknown field.

use std::path::{Path, PathBuf};

use crate::code;
use crate::model::{AccessLog, LogField, LogFormat, LogOutput, TemplatePart, Tracing};
use crate::problem::{Problem, Problems, quote};
use crate::raw;

use super::value::{self, Violation};
use super::{check, edit_distance};

/// The text template used when `format: text` sets no `template`.
pub(crate) const DEFAULT_TEMPLATE: &str = "{start_time} {client} \"{method} {path} {protocol}\" \
     {status} {bytes_out} {duration_ms} {upstream} {error} {request_id} {trace_id}";

const DEFAULT_QUEUE_SIZE: usize = 65_536;
const MAX_QUEUE_SIZE: i64 = 1_000_000;
const FILE_EXAMPLE: &str = r#"example: "/var/log/strait/access.log""#;
const RATE_EXAMPLE: &str = "example: 0.1 marks one new trace in ten as sampled";

/// `Some(None)` without `access_log`, `None` when it has a problem.
pub(super) fn access_log(
    raw: Option<&raw::AccessLog>,
    problems: &mut Problems,
) -> Option<Option<AccessLog>> {
    let Some(raw) = raw else {
        return Some(None);
    };
    let output = match raw.output.as_deref() {
        None => Some(LogOutput::Stdout),
        Some(text) => check(
            problems,
            "access_log.output",
            code::ACCESS_LOG_OUTPUT,
            quote(text),
            output(text),
        ),
    };
    // `Some(true)` for text, `Some(false)` for JSON, `None` when unknown.
    let text_format = match raw.format.as_deref() {
        None | Some("json") => Some(false),
        Some("text") => Some(true),
        Some(other) => {
            problems.push(
                Problem::new(
                    "access_log.format",
                    code::ACCESS_LOG_FORMAT,
                    quote(other),
                    "must be a known value",
                )
                .with_hint("valid values: json, text"),
            );
            None
        }
    };
    let template = raw.template.as_deref().map(|text| {
        let path = "access_log.template";
        if text_format == Some(false) {
            let format = raw.format.as_deref().unwrap_or("json (the default)");
            problems.push(
                Problem::new(
                    path,
                    code::ACCESS_LOG_TEMPLATE_UNUSED,
                    quote(text),
                    "applies only to format: text",
                )
                .with_hint(format!(
                    "format is {format}; set format: text or remove template"
                )),
            );
        }
        check(
            problems,
            path,
            code::ACCESS_LOG_TEMPLATE,
            quote(text),
            template(text),
        )
    });
    let queue_size = match raw.queue_size {
        None => Some(DEFAULT_QUEUE_SIZE),
        Some(n) => check(
            problems,
            "access_log.queue_size",
            code::ACCESS_LOG_QUEUE_SIZE,
            n.to_string(),
            value::int(n, 1, MAX_QUEUE_SIZE).map_err(|violation| {
                violation.with_hint("lines beyond the queue are dropped and counted")
            }),
        ),
    };
    let format = if text_format? {
        let parts = match template {
            Some(parts) => parts?,
            None => default_template(),
        };
        LogFormat::Text(parts)
    } else {
        LogFormat::Json
    };
    Some(Some(AccessLog {
        output: output?,
        format,
        queue_size: queue_size?,
    }))
}

/// The defaults without `tracing` or `sample_rate`; `None` when it has a problem.
pub(super) fn tracing(raw: Option<&raw::Tracing>, problems: &mut Problems) -> Option<Tracing> {
    let Some(rate) = raw.and_then(|raw| raw.sample_rate.as_ref()) else {
        return Some(Tracing::default());
    };
    let (value, hint) = match rate {
        // `abs` only turns -0.0 into 0.0.
        raw::Number::Value(n) if (0.0..=1.0).contains(n) => {
            return Some(Tracing {
                sample_rate: n.abs(),
            });
        }
        raw::Number::Value(n) => (n.to_string(), RATE_EXAMPLE),
        raw::Number::Text(text) if text.trim().parse::<f64>().is_ok() => {
            (quote(text), "write the number without quotes, example: 0.1")
        }
        raw::Number::Text(text) => (quote(text), RATE_EXAMPLE),
        raw::Number::Bool(b) => (b.to_string(), RATE_EXAMPLE),
    };
    problems.push(
        Problem::new(
            "tracing.sample_rate",
            code::SAMPLE_RATE,
            value,
            "must be a number between 0.0 and 1.0",
        )
        .with_hint(hint),
    );
    None
}

/// `stdout`, `stderr` or an absolute path naming a file.
fn output(text: &str) -> Result<LogOutput, Violation> {
    match text {
        "stdout" => return Ok(LogOutput::Stdout),
        "stderr" => return Ok(LogOutput::Stderr),
        _ => {}
    }
    let rule = "must be stdout, stderr or an absolute file path";
    if text.eq_ignore_ascii_case("stdout") || text.eq_ignore_ascii_case("stderr") {
        let lower = text.to_ascii_lowercase();
        return Err(Violation::new(rule).with_hint(format!("write {lower} in lowercase")));
    }
    if text.chars().any(char::is_control) {
        return Err(Violation::new("must not contain control characters"));
    }
    let path = Path::new(text);
    if !path.is_absolute() {
        return Err(Violation::new(rule).with_hint(format!(
            "use an absolute path, not one relative to the proxy's working directory; \
             {FILE_EXAMPLE}"
        )));
    }
    if text.ends_with('/') || text.ends_with("/.") || path.file_name().is_none() {
        return Err(Violation::new("must name a file, not a directory").with_hint(FILE_EXAMPLE));
    }
    Ok(LogOutput::File(PathBuf::from(text)))
}

/// Parses a text template: `{field}` placeholders, `{{` and `}}` for literal braces. Adjacent
/// literal text is one [`TemplatePart::Literal`].
pub(crate) fn template(text: &str) -> Result<Vec<TemplatePart>, Violation> {
    if text.is_empty() {
        return Err(Violation::new("must not be empty")
            .with_hint("remove template to use the default, or set format: json"));
    }
    if text.contains(['\n', '\r']) {
        return Err(Violation::new("must be one line")
            .with_hint("each request is logged on one line; the writer adds the newline"));
    }
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut unknown = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(['{', '}']) {
        literal.push_str(&rest[..at]);
        let brace = &rest[at..];
        let consumed = if brace.starts_with("{{") || brace.starts_with("}}") {
            literal.push_str(&brace[..1]);
            2
        } else if brace.starts_with('}') {
            return Err(unpaired('}', text, rest, at));
        } else {
            let inner = &brace[1..];
            let end = match inner.find(['{', '}']) {
                Some(end) if inner[end..].starts_with('}') => end,
                _ => return Err(unpaired('{', text, rest, at)),
            };
            let name = &inner[..end];
            match LogField::from_name(name) {
                Some(field) => {
                    if !literal.is_empty() {
                        parts.push(TemplatePart::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(TemplatePart::Field(field));
                }
                None => unknown.push(name),
            }
            end + 2
        };
        rest = &brace[consumed..];
    }
    literal.push_str(rest);
    if !unknown.is_empty() {
        return Err(unknown_fields(&unknown));
    }
    if !literal.is_empty() {
        parts.push(TemplatePart::Literal(literal));
    }
    Ok(parts)
}

/// The parsed [`DEFAULT_TEMPLATE`].
fn default_template() -> Vec<TemplatePart> {
    // Invariant: DEFAULT_TEMPLATE is a valid template; a unit test parses it.
    template(DEFAULT_TEMPLATE).unwrap_or_default()
}

/// An unpaired brace at byte `at` of `rest`, a suffix of `text`; positions count characters
/// from 1.
fn unpaired(brace: char, text: &str, rest: &str, at: usize) -> Violation {
    let offset = text.len() - rest.len() + at;
    let position = text[..offset].chars().count() + 1;
    let what = if brace == '{' {
        "unclosed"
    } else {
        "unmatched"
    };
    Violation::new(r#"must pair each "{" with a "}""#).with_hint(format!(
        r#"{what} "{brace}" at character {position}; write a literal brace as "{{{{" or "}}}}""#
    ))
}

/// Names each unknown placeholder, with the nearest field when one is close, then every field.
fn unknown_fields(names: &[&str]) -> Violation {
    let described: Vec<String> = names
        .iter()
        .map(|name| match nearest_field(name) {
            Some(field) => format!("{} (did you mean {}?)", quote(name), quote(field.as_str())),
            None => quote(name),
        })
        .collect();
    let valid: Vec<&str> = LogField::ALL.iter().map(|f| f.as_str()).collect();
    Violation::new("must name only known fields in {…}").with_hint(format!(
        "unknown {}; valid fields: {}",
        described.join(", "),
        valid.join(", ")
    ))
}

/// The field a misspelt name most likely meant: a few edits away, or a prefix either way.
fn nearest_field(name: &str) -> Option<LogField> {
    if name.is_empty() {
        return None;
    }
    let (distance, nearest) = LogField::ALL
        .into_iter()
        .map(|field| (edit_distance(name, field.as_str()), field))
        .min_by_key(|(distance, _)| *distance)?;
    if distance <= 3 && distance < name.chars().count() {
        return Some(nearest);
    }
    LogField::ALL
        .into_iter()
        .find(|field| field.as_str().starts_with(name) || name.starts_with(field.as_str()))
}

#[cfg(test)]
mod tests;
