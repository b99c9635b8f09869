//! The rules a registration must follow. Each check is pure: a value in, the parsed value or a
//! [`Problem`] out; [`Registration::validate`](super::Registration::validate) and the HTTP API
//! both use them, so an API client and a Rust caller get the same answers.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

/// The weight an endpoint gets when the registration names none.
pub const DEFAULT_WEIGHT: u32 = 1;
/// The largest weight (the smallest is 1), as in strait-config.
pub const MAX_WEIGHT: u32 = 1000;
/// The TTL an endpoint gets when the registration names none.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);
/// The shortest TTL: shorter ones would need heartbeats faster than the expiry task runs.
pub const MIN_TTL: Duration = Duration::from_secs(1);
/// The longest TTL.
pub const MAX_TTL: Duration = Duration::from_secs(3600);
/// The longest service name, zone, metadata key.
pub const MAX_NAME_LEN: usize = 128;
/// The longest metadata value, in bytes.
pub const MAX_METADATA_VALUE_LEN: usize = 1024;
/// The most metadata entries one endpoint may carry.
pub const MAX_METADATA_ENTRIES: usize = 64;

const NAME_RULE: &str = "must be 1 to 128 characters of A-Za-z0-9._-";
const DURATION_EXAMPLE: &str = r#"(example: "30s")"#;

/// One broken rule: the field, the offending value and the rule it breaks.
///
/// Displays as `weight: must be between 1 and 1000, got 0`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The field: `service`, `address`, `weight`, `zone`, `metadata.<key>`, `ttl` or `body`.
    pub field: String,
    /// The value as received (empty when there is none, as for a body that is not JSON).
    pub value: String,
    /// What the value must be.
    pub rule: String,
}

impl Problem {
    pub(crate) fn new(
        field: impl Into<String>,
        value: impl Into<String>,
        rule: impl Into<String>,
    ) -> Self {
        Self {
            field: field.into(),
            value: value.into(),
            rule: rule.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value.is_empty() {
            write!(f, "{}: {}", self.field, self.rule)
        } else {
            write!(f, "{}: {}, got {:?}", self.field, self.rule, self.value)
        }
    }
}

/// A service name: the same characters as a strait-config cluster name (`A-Za-z0-9._-`), so a
/// cluster's `discovery: { registry: NAME }` can name any registered service.
pub(crate) fn service(name: &str) -> Result<(), Problem> {
    if is_name(name) {
        Ok(())
    } else {
        Err(Problem::new("service", name, NAME_RULE))
    }
}

/// `ip:port` with IPv6 in brackets; not port 0 and not an unspecified address.
pub(crate) fn address(text: &str) -> Result<SocketAddr, Problem> {
    let problem = |rule: &str| Problem::new("address", text, rule);
    let addr: SocketAddr = text.parse().map_err(|_| {
        problem("must be ip:port, IPv6 in brackets (example: 10.0.0.7:8080 or [fd00::7]:8080)")
    })?;
    check_address(addr).map_err(problem)?;
    Ok(addr)
}

/// The rules for an already parsed address.
pub(crate) fn check_address(addr: SocketAddr) -> Result<(), &'static str> {
    if addr.port() == 0 {
        return Err("port must be between 1 and 65535");
    }
    if addr.ip().is_unspecified() {
        return Err("must not be an unspecified address (0.0.0.0 or [::]): name the host");
    }
    Ok(())
}

/// `1..=1000`.
pub(crate) fn weight(value: i64) -> Result<u32, Problem> {
    u32::try_from(value)
        .ok()
        .filter(|w| (1..=MAX_WEIGHT).contains(w))
        .ok_or_else(|| {
            Problem::new(
                "weight",
                value.to_string(),
                format!("must be between 1 and {MAX_WEIGHT}"),
            )
        })
}

/// A zone: the same characters as a service name.
pub(crate) fn zone(zone: &str) -> Result<(), Problem> {
    if is_name(zone) {
        Ok(())
    } else {
        Err(Problem::new("zone", zone, NAME_RULE))
    }
}

/// Up to 64 entries; keys as names, values up to 1 KiB.
pub(crate) fn metadata(metadata: &BTreeMap<String, String>, problems: &mut Vec<Problem>) {
    if metadata.len() > MAX_METADATA_ENTRIES {
        problems.push(Problem::new(
            "metadata",
            format!("{} entries", metadata.len()),
            format!("must have at most {MAX_METADATA_ENTRIES} entries"),
        ));
    }
    for (key, value) in metadata {
        if !is_name(key) {
            problems.push(Problem::new(
                "metadata",
                key,
                format!("keys {}", NAME_RULE.trim_start_matches("must be ")),
            ));
        } else if value.len() > MAX_METADATA_VALUE_LEN {
            problems.push(Problem::new(
                format!("metadata.{key}"),
                format!("{} bytes", value.len()),
                format!("must be at most {MAX_METADATA_VALUE_LEN} bytes"),
            ));
        }
    }
}

/// A TTL written as strait-config writes durations (`500ms`, `30s`, `5m`, `1h`), within
/// `1s..=1h`.
pub(crate) fn ttl_text(text: &str) -> Result<Duration, Problem> {
    let parsed = duration(text).ok_or_else(|| {
        Problem::new(
            "ttl",
            text,
            format!("must be a whole number followed by ms, s, m or h {DURATION_EXAMPLE}"),
        )
    })?;
    ttl(parsed).map_err(|rule| Problem::new("ttl", text, rule))?;
    Ok(parsed)
}

/// `1s..=1h`.
pub(crate) fn ttl(ttl: Duration) -> Result<(), String> {
    if (MIN_TTL..=MAX_TTL).contains(&ttl) {
        Ok(())
    } else {
        Err(format!(
            "must be between {} and {}",
            format_duration(MIN_TTL),
            format_duration(MAX_TTL)
        ))
    }
}

/// Parses strait-config's duration grammar: a whole number and one of `ms`, `s`, `m`, `h`.
/// Returns `None` for any other shape or for a value that overflows.
pub fn duration(text: &str) -> Option<Duration> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() {
        return None;
    }
    let unit_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    let millis = digits.parse::<u64>().ok()?.checked_mul(unit_ms)?;
    Some(Duration::from_millis(millis))
}

/// Renders a duration in the largest unit that represents it exactly (`30s`, `1500ms`, `1h`).
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    for (unit, size) in [("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if millis > 0 && millis.is_multiple_of(size) {
            return format!("{}{unit}", millis / size);
        }
    }
    format!("{millis}ms")
}

fn is_name(text: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}
