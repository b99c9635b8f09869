//! JSON values written by hand into a `String`: escaped strings (RFC 8259 §7) and RFC 3339
//! timestamps.
//!
//! Access log values come from the network (paths, authorities, methods), so every string is
//! escaped: a quote, a backslash or a control character can neither end the JSON string early
//! nor start a new log line. Non-ASCII text is valid UTF-8 already (it is a `&str`) and is copied
//! as is. Timestamps are computed from the Unix time without a calendar crate.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// Appends `value` as a quoted JSON string.
pub fn write_str(out: &mut String, value: &str) {
    out.push('"');
    escape_into(out, value);
    out.push('"');
}

/// Appends `value` with JSON escapes and without quotes: `"` and `\` get a backslash, `\n`, `\r`
/// and `\t` their short forms, and every other control character (U+0000 to U+001F) `\u00XX`.
pub fn escape_into(out: &mut String, value: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut start = 0;
    for (i, byte) in value.bytes().enumerate() {
        let short = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x00..=0x1f => "",
            _ => continue,
        };
        // `i` is at an ASCII byte, so both slices end on character boundaries.
        out.push_str(&value[start..i]);
        start = i + 1;
        if short.is_empty() {
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0f)]));
        } else {
            out.push_str(short);
        }
    }
    out.push_str(&value[start..]);
}

/// Appends `time` as RFC 3339 UTC with milliseconds, e.g. `2026-11-28T20:15:53.970Z`.
pub fn write_rfc3339(out: &mut String, time: SystemTime) {
    let millis = match time.duration_since(UNIX_EPOCH) {
        Ok(since) => i128::try_from(since.as_millis()).unwrap_or(i128::MAX),
        Err(before) => -i128::try_from(before.duration().as_millis()).unwrap_or(i128::MAX),
    };
    let secs = millis.div_euclid(1000);
    let (days, second_of_day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60,
        millis.rem_euclid(1000),
    );
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i128) -> (i128, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..=146_096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // year of era, 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year from March 1st, 0..=365
    let mp = (5 * doy + 2) / 153; // month from March, 0..=11
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    let year = yoe + era * 400 + i128::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn quoted(value: &str) -> String {
        let mut out = String::new();
        write_str(&mut out, value);
        out
    }

    /// Reverses `escape_into` for the escapes it writes; `None` on anything else.
    fn unescape(escaped: &str) -> Option<String> {
        let mut out = String::new();
        let mut chars = escaped.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            out.push(match chars.next()? {
                '"' => '"',
                '\\' => '\\',
                'n' => '\n',
                'r' => '\r',
                't' => '\t',
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?
                }
                _ => return None,
            });
        }
        Some(out)
    }

    #[test]
    fn escapes_quotes_backslashes_and_control_characters() {
        let cases = [
            ("", r#""""#),
            ("plain /path?q=1", r#""plain /path?q=1""#),
            (r#"a"b"#, r#""a\"b""#),
            (r"a\b", r#""a\\b""#),
            ("line\nnext\r\tend", r#""line\nnext\r\tend""#),
            ("\u{0}\u{1}\u{1b}\u{1f}", r#""\u0000\u0001\u001b\u001f""#),
            ("\u{7f} é 日本 🦀", "\"\u{7f} é 日本 🦀\""),
            ("/x\"}\n{\"status\":200", r#""/x\"}\n{\"status\":200""#),
        ];
        for (value, expected) in cases {
            assert_eq!(quoted(value), expected, "{value:?}");
        }
    }

    proptest! {
        #[test]
        fn escaping_round_trips_and_leaves_no_control_characters(value in any::<String>()) {
            let mut escaped = String::new();
            escape_into(&mut escaped, &value);
            prop_assert!(!escaped.bytes().any(|b| b < 0x20));
            prop_assert_eq!(unescape(&escaped), Some(value));
        }
    }
}
