//! Reading a config: text → [`raw`](crate::raw) → [`validate`](crate::validate) → [`Config`];
//! and re-rendering a document between YAML and JSON.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde_saphyr::MessageFormatter as _;

use crate::error::ConfigError;
use crate::model::Config;
use crate::raw;
use crate::validate;

/// The syntax of a config file. JSON is the YAML format written as JSON: same keys, same shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// YAML 1.2 (the usual format).
    Yaml,
    /// JSON, for generated configs.
    Json,
}

impl Format {
    /// `Json` for a `.json` extension (any case), `Yaml` otherwise.
    pub fn from_path(path: &Path) -> Self {
        match path.extension() {
            Some(ext) if ext.eq_ignore_ascii_case("json") => Self::Json,
            _ => Self::Yaml,
        }
    }
}

/// Parses and validates a config.
///
/// # Errors
///
/// [`ConfigError::Syntax`] for the first syntax or shape error (unknown key, wrong type);
/// otherwise [`ConfigError::Invalid`] with every broken rule.
///
/// # Examples
///
/// ```
/// use strait_config::{parse, Format};
///
/// let config = parse(
///     r#"
/// listeners:
///   - name: public
///     address: 127.0.0.1:8080
///     virtual_hosts:
///       - name: default
///         domains: ["*"]
///         routes:
///           - match: { prefix: / }
///             direct_response: { status: 200, body: ok }
/// "#,
///     Format::Yaml,
/// )?;
/// assert_eq!(config.listeners()[0].name(), "public");
///
/// let err = parse("listeners: []", Format::Yaml).unwrap_err();
/// assert_eq!(err.problems().map(|p| p.len()), Some(1));
/// # Ok::<(), strait_config::ConfigError>(())
/// ```
pub fn parse(text: &str, format: Format) -> Result<Config, ConfigError> {
    let raw: raw::Config = match format {
        Format::Yaml => parse_yaml(text)?,
        Format::Json => parse_json(text)?,
    };
    validate::config(raw).map_err(ConfigError::Invalid)
}

/// Reads, parses and validates a config file; the format follows the extension
/// ([`Format::from_path`]).
///
/// # Errors
///
/// [`ConfigError::Io`] when the file cannot be read as UTF-8 text; otherwise as [`parse`].
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, Format::from_path(path))
}

/// Re-renders a config in another syntax (or the same one, normalised): JSON pretty-printed,
/// YAML in block style, the text ending with a newline.
///
/// The document goes through the file format's types, so every value keeps the type the
/// format gives it: a YAML `body: 404` or `name: on` is written as the string it is read as,
/// never as a number or a boolean. Keys come in the format's order (header maps keep theirs),
/// keys left out stay out, empty lists are dropped, and comments and anchors are lost. The
/// rules are not checked, so an invalid config converts too; a valid one gives a document that
/// [`parse`] turns into the same model.
///
/// # Errors
///
/// [`ConfigError::Syntax`] when `text` is not well-formed in `from` or does not have the
/// config's shape, as for [`parse`]; [`ConfigError::Render`] if the writer fails.
///
/// # Examples
///
/// ```
/// use strait_config::{convert, Format};
///
/// let json = convert("tracing: { sample_rate: 0.5 }", Format::Yaml, Format::Json)?;
/// assert_eq!(json, "{\n  \"tracing\": {\n    \"sample_rate\": 0.5\n  }\n}\n");
/// let yaml = convert(&json, Format::Json, Format::Yaml)?;
/// assert_eq!(yaml, "tracing:\n  sample_rate: 0.5\n");
/// # Ok::<(), strait_config::ConfigError>(())
/// ```
pub fn convert(text: &str, from: Format, to: Format) -> Result<String, ConfigError> {
    let raw: raw::Config = match from {
        Format::Yaml => parse_yaml(text)?,
        Format::Json => parse_json(text)?,
    };
    let render_error = |message: String| ConfigError::Render {
        format: to,
        message: one_line(&message),
    };
    // Through a `Value` to drop the `null`s of unset optional keys.
    let mut document = serde_json::to_value(&raw).map_err(|e| render_error(e.to_string()))?;
    drop_nulls(&mut document);
    let mut rendered = match to {
        Format::Yaml => serde_saphyr::to_string(&document).map_err(|e| e.to_string()),
        Format::Json => serde_json::to_string_pretty(&document).map_err(|e| e.to_string()),
    }
    .map_err(render_error)?;
    if !rendered.ends_with('\n') {
        rendered.push('\n');
    }
    Ok(rendered)
}

/// Removes object members whose value is `null`, at every depth: an unset optional key.
fn drop_nulls(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(members) => {
            members.retain(|_, member| !member.is_null());
            members.values_mut().for_each(drop_nulls);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

fn parse_yaml<T: DeserializeOwned>(text: &str) -> Result<T, ConfigError> {
    let options = serde_saphyr::options! { with_snippet: false };
    serde_saphyr::from_str_with_options(text, options).map_err(|err| {
        let err = err.without_snippet();
        let message = serde_saphyr::UserMessageFormatter.format_message(err);
        let location = err.location().filter(|l| l.line() > 0);
        ConfigError::Syntax {
            message: one_line(&message),
            line: location.and_then(|l| usize::try_from(l.line()).ok()),
            column: location.and_then(|l| usize::try_from(l.column()).ok()),
        }
    })
}

fn parse_json<T: DeserializeOwned>(text: &str) -> Result<T, ConfigError> {
    serde_json::from_str(text).map_err(|err| {
        let (line, column) = (err.line(), err.column());
        let text = err.to_string();
        // serde_json appends the location to its message; it is reported separately here.
        let suffix = format!(" at line {line} column {column}");
        let message = text.strip_suffix(&suffix).unwrap_or(&text);
        ConfigError::Syntax {
            message: one_line(message),
            line: (line > 0).then_some(line),
            // At the end of the input serde_json reports column 0; columns are 1-based.
            column: (line > 0).then_some(column.max(1)),
        }
    })
}

/// Parser messages end up on one terminal line each; control characters would break that.
fn one_line(message: &str) -> String {
    message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}
