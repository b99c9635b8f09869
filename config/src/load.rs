//! Reading a config: text → [`raw`](crate::raw) → [`validate`](crate::validate) → [`Config`].

use std::path::Path;

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
    let raw = match format {
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

fn parse_yaml(text: &str) -> Result<raw::Config, ConfigError> {
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

fn parse_json(text: &str) -> Result<raw::Config, ConfigError> {
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
