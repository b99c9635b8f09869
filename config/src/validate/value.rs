//! Leaf values: durations, addresses, names, header names and values, domains, paths, regexes.
//!
//! Each check is pure: text in, the parsed value or the [`Violation`] out. Callers add the path
//! and code.

use std::net::{Ipv6Addr, SocketAddr};
use std::time::Duration;

use regex::Regex;

use crate::model::DomainMatch;
use crate::problem::Problem;

const DURATION_EXAMPLE: &str = r#"example: "250ms""#;
const MAX_DURATION: Duration = Duration::from_secs(3600);

/// A broken rule and a hint, before it is placed at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Violation {
    rule: String,
    hint: Option<String>,
}

impl Violation {
    pub(crate) fn new(rule: impl Into<String>) -> Self {
        Self {
            rule: rule.into(),
            hint: None,
        }
    }

    pub(crate) fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub(crate) fn at(self, path: &str, code: &'static str, value: String) -> Problem {
        let problem = Problem::new(path, code, value, self.rule);
        match self.hint {
            Some(hint) => problem.with_hint(hint),
            None => problem,
        }
    }
}

/// `250ms`, `5s`, `1m` or `1h`: a whole number and a unit, greater than 0 and at most 1h.
pub(crate) fn duration(text: &str) -> Result<Duration, Violation> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let shape = || {
        Violation::new("must be a whole number followed by ms, s, m or h")
            .with_hint(DURATION_EXAMPLE)
    };
    if digits.is_empty() {
        return Err(shape());
    }
    let unit_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(shape()),
    };
    let too_long = || Violation::new("must be at most 1h");
    // More digits than u64 holds is certainly longer than an hour.
    let count: u64 = digits.parse().map_err(|_| too_long())?;
    let millis = count.checked_mul(unit_ms).ok_or_else(too_long)?;
    let duration = Duration::from_millis(millis);
    if duration.is_zero() {
        return Err(Violation::new("must be greater than 0").with_hint(DURATION_EXAMPLE));
    }
    if duration > MAX_DURATION {
        return Err(too_long());
    }
    Ok(duration)
}

/// An integer in `min..=max`, converted to the model's type.
pub(crate) fn int<T: TryFrom<i64>>(value: i64, min: i64, max: i64) -> Result<T, Violation> {
    if (min..=max).contains(&value)
        && let Ok(value) = T::try_from(value)
    {
        return Ok(value);
    }
    Err(Violation::new(format!("must be between {min} and {max}")))
}

/// `ip:port` (IPv6 in brackets). Host names are not resolved.
pub(crate) fn socket_addr(text: &str, nonzero_port: bool) -> Result<SocketAddr, Violation> {
    let Ok(address) = text.parse::<SocketAddr>() else {
        let rule = if nonzero_port {
            "must be an IP address and a non-zero port"
        } else {
            "must be an IP address and a port"
        };
        let hint = if text.starts_with(|c: char| c.is_ascii_alphabetic()) {
            r#"host names are not resolved; use an IP address, example: "127.0.0.1:8080""#
        } else {
            r#"example: "127.0.0.1:8080" or "[::1]:8080""#
        };
        return Err(Violation::new(rule).with_hint(hint));
    };
    if nonzero_port && address.port() == 0 {
        return Err(Violation::new("must have a non-zero port"));
    }
    Ok(address)
}

/// A DNS name and a port, `api.internal:8080` (RFC 1123 labels; the port 1..=65535).
pub(crate) fn host_port(text: &str) -> Result<(String, u16), Violation> {
    let hint = "example: api.internal:8080";
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(Violation::new("must be hostname:port").with_hint(hint));
    };
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || host.len() > 253 || !host.split('.').all(label_ok) {
        return Err(Violation::new("must be hostname:port with a valid DNS name").with_hint(hint));
    }
    match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok((host.to_ascii_lowercase(), port)),
        _ => Err(Violation::new("must end with a port in 1..=65535").with_hint(hint)),
    }
}

/// A listener, virtual host, route or cluster name: used in metrics labels and logs.
pub(crate) fn name(text: &str) -> Result<String, Violation> {
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if text.is_empty() || !text.chars().all(valid) {
        return Err(Violation::new(
            "must be non-empty and use only A-Za-z0-9._-",
        ));
    }
    Ok(text.to_owned())
}

/// RFC 9110 §5.1: a header name is a token. Returned lowercase.
pub(crate) fn header_name(text: &str) -> Result<String, Violation> {
    if text.is_empty() || !text.bytes().all(is_token_byte) {
        return Err(Violation::new("must be a header name")
            .with_hint("letters, digits and !#$%&'*+-.^_`|~, without spaces or colons"));
    }
    Ok(text.to_ascii_lowercase())
}

/// RFC 9110 §5.5, restricted to ASCII: visible characters, spaces and tabs; never CR or LF.
pub(crate) fn header_value(text: &str) -> Result<String, Violation> {
    if !text
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
    {
        return Err(Violation::new(
            "must contain only visible ASCII, spaces and tabs",
        ));
    }
    Ok(text.to_owned())
}

/// RFC 9110 §9.1: a method is a token. Returned uppercase.
pub(crate) fn method(text: &str) -> Result<String, Violation> {
    if text.is_empty() || !text.bytes().all(is_token_byte) {
        return Err(Violation::new("must be a method token").with_hint("example: GET, POST"));
    }
    Ok(text.to_ascii_uppercase())
}

/// RFC 6265 §4.1.1: a cookie name is a token.
pub(crate) fn cookie_name(text: &str) -> Result<String, Violation> {
    if text.is_empty() || !text.bytes().all(is_token_byte) {
        return Err(Violation::new("must be a cookie name")
            .with_hint("letters, digits and !#$%&'*+-.^_`|~"));
    }
    Ok(text.to_owned())
}

/// A path or path prefix: starts with `/`, visible ASCII only (percent-encode the rest).
pub(crate) fn path(text: &str) -> Result<String, Violation> {
    if !text.starts_with('/') {
        return Err(Violation::new(r#"must start with "/""#));
    }
    if !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Violation::new("must contain only visible ASCII")
            .with_hint("percent-encode spaces and other bytes"));
    }
    Ok(text.to_owned())
}

/// A regex matched against the whole value: compiled as `^(?:text)$`.
pub(crate) fn anchored_regex(text: &str) -> Result<Regex, Violation> {
    Regex::new(&format!("^(?:{text})$")).map_err(|err| {
        // The regex crate's message spans several lines (pattern, caret, reason); the reason
        // is the line starting with "error: ".
        let full = err.to_string();
        let reason = full
            .lines()
            .find_map(|line| line.strip_prefix("error: "))
            .unwrap_or(full.lines().last().unwrap_or_default());
        Violation::new("must be a valid regex").with_hint(reason.to_owned())
    })
}

/// A virtual host domain: `api.example.com`, `*.example.com` or `*`; lowercase, no port.
pub(crate) fn domain(text: &str) -> Result<DomainMatch, Violation> {
    let text = text.to_ascii_lowercase();
    if text == "*" {
        return Ok(DomainMatch::Any);
    }
    if let Some(suffix) = text.strip_prefix("*.") {
        if is_host_name(suffix) {
            return Ok(DomainMatch::Suffix(format!(".{suffix}")));
        }
    } else if is_host_name(&text) || is_bracketed_ipv6(&text) {
        return Ok(DomainMatch::Exact(text));
    }
    let violation = if text.contains('*') {
        Violation::new(r#"may use "*" only alone or as a leading "*.""#)
            .with_hint(r#"example: "*.example.com""#)
    } else if text.contains(':') && !text.starts_with('[') {
        Violation::new("must not include a port")
            .with_hint("domains match the request's host without its port")
    } else {
        Violation::new("must be a host name")
            .with_hint("dot-separated labels of letters, digits and -, each 1 to 63 characters")
    };
    Err(violation)
}

/// `host` or `host:port`, as sent in `Host` or `:authority`.
pub(crate) fn authority(text: &str) -> Result<String, Violation> {
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => (host, Some(port)),
        _ => (text, None),
    };
    let host_ok = is_host_name(&host.to_ascii_lowercase()) || is_bracketed_ipv6(host);
    let port_ok = port.is_none_or(|port| port.parse::<u16>().is_ok_and(|port| port != 0));
    if !host_ok || !port_ok {
        return Err(
            Violation::new("must be a host name or IP address with an optional port")
                .with_hint(r#"example: "api.internal:8080""#),
        );
    }
    Ok(text.to_owned())
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Dot-separated labels of `a-z0-9-` (not starting or ending with `-`), 1..=63 each, 253 in all.
/// IPv4 addresses pass too.
fn is_host_name(text: &str) -> bool {
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    !text.is_empty() && text.len() <= 253 && text.split('.').all(label_ok)
}

fn is_bracketed_ipv6(text: &str) -> bool {
    text.strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .is_some_and(|ip| ip.parse::<Ipv6Addr>().is_ok())
}

#[cfg(test)]
mod tests;
