//! Why a config could not be loaded, and how `strait validate` prints it.

use std::fmt::Write as _;
use std::io;
use std::path::PathBuf;

use crate::code;
use crate::load::Format;
use crate::problem::Problems;

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read (missing, unreadable, or not UTF-8).
    #[error("cannot read config file {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The text is not well-formed YAML or JSON, does not have the config's shape (unknown or
    /// missing key, value of the wrong type); parsing stops at the first such error.
    #[error("{}", syntax_text(message, *line, *column))]
    Syntax {
        /// What the parser reported, without the location.
        message: String,
        /// 1-based line, when the parser gives one.
        line: Option<usize>,
        /// 1-based column, when the parser gives one.
        column: Option<usize>,
    },
    /// The config has the right shape but breaks rules; every broken rule is listed.
    #[error("invalid config: {0}")]
    Invalid(Problems),
    /// [`convert`](crate::convert) parsed the document but could not write it in `format`.
    #[error("cannot write the config as {}: {message}", format_name(*format))]
    Render {
        /// The format asked for.
        format: Format,
        /// What the writer reported.
        message: String,
    },
}

impl ConfigError {
    /// Renders the error for a person, naming the source (a file path, or `-` for stdin).
    ///
    /// Syntax errors and problems share one layout, so tools can read either:
    ///
    /// ```text
    /// error: config/prod.yaml has 2 problems
    ///   listeners[0].virtual_hosts[0].routes[2].cluster (E0203): must name a defined cluster, got "paymnets"; known: "payments", "search"
    ///   listeners[1].address (E0101): must not be used by another listener, got "0.0.0.0:8443"; already used by listeners[0]
    /// ```
    ///
    /// A syntax error is one problem whose path is `source:line:column`. The text has no
    /// trailing newline.
    pub fn render(&self, source_name: &str) -> String {
        match self {
            Self::Io { source, .. } => format!("error: cannot read {source_name}: {source}"),
            Self::Render { format, message } => format!(
                "error: cannot write {source_name} as {}: {message}",
                format_name(*format)
            ),
            Self::Syntax {
                message,
                line,
                column,
            } => {
                let location = match (line, column) {
                    (Some(line), Some(column)) => format!("{source_name}:{line}:{column}"),
                    (Some(line), None) => format!("{source_name}:{line}"),
                    _ => source_name.to_owned(),
                };
                let code = syntax_code(message);
                format!("error: {source_name} has 1 problem\n  {location} ({code}): {message}")
            }
            Self::Invalid(problems) => {
                let mut text = format!("error: {source_name} has {}", problems.count_text());
                for problem in problems {
                    // Writing to a String cannot fail.
                    let _ = write!(text, "\n  {problem}");
                }
                text
            }
        }
    }

    /// The problems, when the config parsed but broke rules.
    pub fn problems(&self) -> Option<&Problems> {
        match self {
            Self::Invalid(problems) => Some(problems),
            _ => None,
        }
    }
}

/// The stable code of a parser error. serde words these messages itself (`unknown field`,
/// `missing field`), for YAML and JSON alike; the golden cases notice if that changes.
fn syntax_code(message: &str) -> &'static str {
    if message.starts_with("unknown field") {
        code::UNKNOWN_KEY
    } else if message.starts_with("missing field") {
        code::MISSING_KEY
    } else {
        code::SYNTAX
    }
}

fn format_name(format: Format) -> &'static str {
    match format {
        Format::Yaml => "YAML",
        Format::Json => "JSON",
    }
}

fn syntax_text(message: &str, line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(line), Some(column)) => format!("{message} at line {line}, column {column}"),
        (Some(line), None) => format!("{message} at line {line}"),
        _ => message.to_owned(),
    }
}
