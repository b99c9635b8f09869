//! W3C Trace Context level 1: reading and writing the `traceparent` header.
//!
//! The proxy is one hop of a distributed trace. For each request it reads the downstream's
//! `traceparent` ([`parse_traceparent`]), starts its own span ([`propagate`]: same trace, new span
//! id, or a new trace when there was none or it was invalid) and sends that span to the upstream
//! as its parent ([`traceparent_value`]). `tracestate` carries vendor data the proxy does not
//! read; the caller forwards it unchanged when the incoming `traceparent` was valid and drops it
//! otherwise (W3C Trace Context §3.3.2: a `tracestate` without a valid `traceparent` is ignored).
//!
//! Pure code: no I/O, no clock; randomness comes from the caller's [`fastrand::Rng`].

use http::HeaderValue;
use http::header::HeaderName;

use crate::headers::write_hex;

/// The `traceparent` request header.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// The `tracestate` request header, forwarded untouched.
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Length of a version-00 `traceparent`: `00-` + 32 + `-` + 16 + `-` + 2.
pub const TRACEPARENT_LEN: usize = 55;
const LEN: usize = TRACEPARENT_LEN;

/// One position in a distributed trace, as carried by `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    /// The whole trace's id; never all zeros.
    pub trace_id: [u8; 16],
    /// The id of the span that sent the request (for an outgoing context: the proxy's span);
    /// never all zeros.
    pub parent_id: [u8; 8],
    /// Trace flags; bit 0 is [`TraceContext::SAMPLED`].
    pub flags: u8,
}

impl TraceContext {
    /// The `sampled` flag: the caller may have recorded this trace.
    pub const SAMPLED: u8 = 0x01;

    /// Whether the `sampled` flag is set.
    pub fn sampled(&self) -> bool {
        self.flags & Self::SAMPLED != 0
    }
}

/// Parses a `traceparent` value; `None` when it is invalid, so the caller starts a new trace.
///
/// Version 00 must be exactly `00-<32 hex>-<16 hex>-<2 hex>` with lowercase hex digits and
/// non-zero ids. Version `ff` is invalid. A later version is read for its first 55 characters
/// when those are followed by `-` or nothing, and only its `sampled` flag is kept (W3C Trace
/// Context §3.2.4), since the meaning of its other flags is unknown.
pub fn parse_traceparent(value: impl AsRef<[u8]>) -> Option<TraceContext> {
    let value = value.as_ref();
    let version = hex_byte(value.get(0..2)?)?;
    let flags_mask = match (version, value.len()) {
        (0xff, _) => return None,
        (0x00, LEN) => 0xff,
        (0x00, _) => return None,
        (_, LEN) => TraceContext::SAMPLED,
        (_, len) if len > LEN && value[LEN] == b'-' => TraceContext::SAMPLED,
        _ => return None,
    };
    if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let mut trace_id = [0; 16];
    for (i, byte) in trace_id.iter_mut().enumerate() {
        *byte = hex_byte(&value[3 + 2 * i..5 + 2 * i])?;
    }
    let mut parent_id = [0; 8];
    for (i, byte) in parent_id.iter_mut().enumerate() {
        *byte = hex_byte(&value[36 + 2 * i..38 + 2 * i])?;
    }
    let flags = hex_byte(&value[53..55])? & flags_mask;
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return None;
    }
    Some(TraceContext {
        trace_id,
        parent_id,
        flags,
    })
}

/// The context the proxy sends upstream: its own span in the incoming trace, or a new trace.
///
/// With an incoming context the trace id and flags are kept and the span id is new, so the
/// upstream sees the proxy's span as its parent. Without one, the trace id and span id are
/// random and non-zero, and `sampled` is set with probability `sample_rate` (0.0 never, 1.0
/// always).
pub fn propagate(
    incoming: Option<TraceContext>,
    sample_rate: f64,
    rng: &mut fastrand::Rng,
) -> TraceContext {
    let parent_id = rng.u64(1..).to_be_bytes();
    match incoming {
        Some(incoming) => TraceContext {
            parent_id,
            ..incoming
        },
        None => TraceContext {
            trace_id: rng.u128(1..).to_be_bytes(),
            parent_id,
            flags: if rng.f64() < sample_rate {
                TraceContext::SAMPLED
            } else {
                0
            },
        },
    }
}

/// The version-00 `traceparent` value for `context`.
pub fn traceparent_value(context: &TraceContext) -> HeaderValue {
    // Invariant: hex digits and '-' are visible ASCII, which HeaderValue accepts.
    HeaderValue::from_bytes(&traceparent_text(context))
        .expect("hex digits and dashes are valid header bytes")
}

/// The text of [`traceparent_value`].
pub fn traceparent_text(context: &TraceContext) -> [u8; TRACEPARENT_LEN] {
    let mut buf = [b'-'; TRACEPARENT_LEN];
    buf[0..2].copy_from_slice(b"00");
    write_hex(&mut buf[3..35], &context.trace_id);
    write_hex(&mut buf[36..52], &context.parent_id);
    write_hex(&mut buf[53..55], &[context.flags]);
    buf
}

/// The trace id as 32 lowercase hex digits, for logs; `std::str::from_utf8` on it never fails.
pub fn trace_id_hex(context: &TraceContext) -> [u8; 32] {
    let mut hex = [0; 32];
    write_hex(&mut hex, &context.trace_id);
    hex
}

/// Two lowercase hex digits as a byte; uppercase digits are invalid in `traceparent`.
fn hex_byte(pair: &[u8]) -> Option<u8> {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    match pair {
        [hi, lo] => Some(digit(*hi)? << 4 | digit(*lo)?),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_the_spec_examples() {
        let ctx = parse_traceparent(SPEC).expect("valid");
        assert_eq!(trace_id_hex(&ctx), *b"4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            ctx.parent_id,
            [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
        );
        assert!(ctx.sampled());
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        assert!(!parse_traceparent(unsampled).expect("valid").sampled());
        let header = HeaderValue::from_static(SPEC);
        assert_eq!(parse_traceparent(&header), Some(ctx));
        assert_eq!(traceparent_value(&ctx), SPEC);
    }

    #[test]
    fn accepts_future_versions_by_their_first_55_characters() {
        let base = "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7";
        for value in [
            format!("cc-{base}-01"),
            format!("cc-{base}-09-what-the-future-holds"),
        ] {
            let ctx = parse_traceparent(&value).expect(&value);
            assert_eq!(ctx.flags, TraceContext::SAMPLED, "{value}");
            assert_eq!(traceparent_value(&ctx), SPEC);
        }
        let version_00 = parse_traceparent(format!("00-{base}-09")).expect("valid");
        assert_eq!(version_00.flags, 0x09, "version 00 keeps every flag");
    }

    #[test]
    fn rejects_invalid_values() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        let span = "00f067aa0ba902b7";
        let cases = [
            ("empty", String::new()),
            ("version ff", format!("ff-{id}-{span}-01")),
            ("zero trace id", format!("00-{}-{span}-01", "0".repeat(32))),
            ("zero parent id", format!("00-{id}-{}-01", "0".repeat(16))),
            (
                "uppercase trace id",
                format!("00-{}-{span}-01", id.to_uppercase()),
            ),
            (
                "uppercase parent id",
                format!("00-{id}-{}-01", span.to_uppercase()),
            ),
            ("uppercase flags", format!("00-{id}-{span}-0A")),
            ("uppercase version", format!("0A-{id}-{span}-01")),
            ("short trace id", format!("00-{}-{span}-01", &id[1..])),
            ("long parent id", format!("00-{id}-{span}0-01")),
            ("one flag digit", format!("00-{id}-{span}-1")),
            ("version 00 with more", format!("00-{id}-{span}-01-extra")),
            ("future version, no dash", format!("cc-{id}-{span}-01x")),
            ("underscores", format!("00_{id}_{span}_01")),
            ("non-hex", format!("00-{}-{span}-01", "g".repeat(32))),
            ("leading space", format!(" 00-{id}-{span}-01")),
            ("non-ascii", format!("00-{}é-{span}-01", &id[2..])),
        ];
        for (name, value) in cases {
            assert_eq!(parse_traceparent(&value), None, "{name}: {value:?}");
        }
    }

    #[test]
    fn propagate_keeps_the_trace_and_starts_a_new_span() {
        let mut rng = fastrand::Rng::with_seed(7);
        let incoming = parse_traceparent(SPEC).expect("valid");
        let outgoing = propagate(Some(incoming), 0.0, &mut rng);
        assert_eq!(outgoing.trace_id, incoming.trace_id);
        assert_eq!(
            outgoing.flags, incoming.flags,
            "the caller's sampling decision stands"
        );
        assert_ne!(outgoing.parent_id, incoming.parent_id);
        assert_ne!(outgoing.parent_id, [0; 8]);
        let again = propagate(Some(incoming), 0.0, &mut rng);
        assert_ne!(again.parent_id, outgoing.parent_id);
    }

    #[test]
    fn new_traces_are_valid_and_sampled_at_the_rate() {
        let mut rng = fastrand::Rng::with_seed(42);
        for (rate, low, high) in [(0.0, 0, 0), (1.0, 20_000, 20_000), (0.25, 4_400, 5_600)] {
            let mut sampled = 0;
            for _ in 0..20_000 {
                let ctx = propagate(None, rate, &mut rng);
                assert_eq!(parse_traceparent(traceparent_value(&ctx)), Some(ctx));
                sampled += usize::from(ctx.sampled());
            }
            assert!(
                (low..=high).contains(&sampled),
                "rate {rate}: {sampled} of 20000"
            );
        }
    }
}
