//! Proxy header semantics (RFC 9110 §7.6): hop-by-hop removal, forwarding headers, request ids
//! and the per-route header changes.

use std::io::Write as _;
use std::net::IpAddr;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use strait_config::HeaderChanges;

use crate::observe::{TraceContext, trace};

const HOP_COUNT: usize = 7;

/// Headers that apply to one connection only and are never forwarded (RFC 9110 §7.6.1, plus
/// the de-facto `keep-alive`, `proxy-connection` and `proxy-authorization`).
const HOP_BY_HOP: [HeaderName; HOP_COUNT] = [
    header::CONNECTION,
    KEEP_ALIVE,
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// The de-facto `Keep-Alive` header of HTTP/1.x, which `http` has no constant for.
pub const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// The request id header, set when absent.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// A field name the proxy acts on, told apart once per distinct name: an HTTP/1.1 connection's
/// name cache keeps it with the name, so the fields of a head are classed without comparing
/// names again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Known {
    Other,
    Connection,
    KeepAlive,
    ProxyConnection,
    ProxyAuthorization,
    Te,
    TransferEncoding,
    Upgrade,
    ContentLength,
    Expect,
    Host,
    RequestId,
    Traceparent,
    Tracestate,
    ForwardedFor,
    ForwardedProto,
}

impl Known {
    /// The class of `name`.
    pub fn of(name: &HeaderName) -> Self {
        match name.as_str() {
            "connection" => Self::Connection,
            "keep-alive" => Self::KeepAlive,
            "proxy-connection" => Self::ProxyConnection,
            "proxy-authorization" => Self::ProxyAuthorization,
            "te" => Self::Te,
            "transfer-encoding" => Self::TransferEncoding,
            "upgrade" => Self::Upgrade,
            "content-length" => Self::ContentLength,
            "expect" => Self::Expect,
            "host" => Self::Host,
            "x-request-id" => Self::RequestId,
            "traceparent" => Self::Traceparent,
            "tracestate" => Self::Tracestate,
            "x-forwarded-for" => Self::ForwardedFor,
            "x-forwarded-proto" => Self::ForwardedProto,
            _ => Self::Other,
        }
    }

    /// The class's bit in a [`FieldSet`]; none for `Other`, which no set records.
    const fn bit(self) -> u32 {
        match self {
            Self::Other => 0,
            _ => 1 << self as u8,
        }
    }
}

/// Which [`Known`] fields a header map may hold: a field whose bit is clear is certainly absent,
/// so the request path skips its lookup. Heads the proxy parses record theirs exactly, and
/// [`FieldSet::of_map`] reads any map's; a response from hyper's client (HTTP/2, upgrades) is
/// [`FieldSet::UNKNOWN`]: any field may be there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldSet(u32);

impl Default for FieldSet {
    /// An exact set of no field.
    fn default() -> Self {
        Self::EMPTY
    }
}

impl FieldSet {
    /// Set when the set is exact: its fields are certainly present, too.
    const EXACT: u32 = 1 << 31;
    /// No known field.
    pub const EMPTY: Self = Self(Self::EXACT);
    /// Not known: every field may be present.
    pub const UNKNOWN: Self = Self(!Self::EXACT);
    const HOP_BY_HOP: u32 = Known::Connection.bit()
        | Known::KeepAlive.bit()
        | Known::ProxyConnection.bit()
        | Known::ProxyAuthorization.bit()
        | Known::Te.bit()
        | Known::TransferEncoding.bit()
        | Known::Upgrade.bit();

    /// The exact set of `headers`: one class lookup per distinct name.
    pub fn of_map(headers: &HeaderMap) -> Self {
        let mut set = Self::EMPTY;
        for name in headers.keys() {
            set.insert(Known::of(name));
        }
        set
    }

    /// Notes that the map holds a field of class `known`.
    pub fn insert(&mut self, known: Known) {
        self.0 |= known.bit();
    }

    /// Whether the map may hold a field of class `known`.
    pub fn may_have(self, known: Known) -> bool {
        self.0 & known.bit() != 0
    }

    /// Whether the map certainly holds a field of class `known`.
    pub fn has(self, known: Known) -> bool {
        self.0 & Self::EXACT != 0 && self.may_have(known)
    }

    /// Whether the map may hold a hop-by-hop field ([`remove_hop_by_hop`] has work).
    pub fn may_have_hop_by_hop(self) -> bool {
        self.0 & Self::HOP_BY_HOP != 0
    }
}

/// Field lines mixing every class the proxy acts on with others, in several spellings, for
/// the parsers' tests.
#[cfg(test)]
pub(crate) const FIELD_LINES: [&str; 14] = [
    "Host: a.example",
    "Connection: keep-alive",
    "connection: close, x-named",
    "Keep-Alive: timeout=5",
    "Proxy-Connection: keep-alive",
    "TE: trailers",
    "Upgrade: websocket",
    "X-Request-Id: abc",
    "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "TraceState: v=1",
    "X-Forwarded-For: 10.0.0.1",
    "x-forwarded-proto: https",
    "Accept: */*",
    "x-named: 1",
];

/// Sets of [`FIELD_LINES`], each line ending in CRLF: every subset of a rotating window of
/// six, so that each class comes with and without the others, in both orders.
#[cfg(test)]
pub(crate) fn field_line_sets() -> impl Iterator<Item = String> {
    (0..FIELD_LINES.len()).flat_map(|start| {
        (0u32..64).map(move |mask| {
            (0..6)
                .filter(|bit| mask & (1 << bit) != 0)
                .map(|bit| format!("{}\r\n", FIELD_LINES[(start + bit) % FIELD_LINES.len()]))
                .collect()
        })
    })
}

/// Removes hop-by-hop headers and those named in `Connection`.
///
/// `keep_upgrade` keeps `Connection: upgrade` and `Upgrade` for a tunnel being set up.
/// `keep_te_trailers` keeps `te: trailers`, which gRPC requires end to end.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool, keep_te_trailers: bool) {
    // One pass over the names, comparing without hashing: most messages carry none of these,
    // or only `Connection: keep-alive`.
    let mut present = [false; HOP_COUNT];
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|hop| hop == name) {
            present[i] = true;
        }
    }
    if !present.contains(&true) {
        return;
    }
    let te_trailers = keep_te_trailers && has_token(headers, header::TE, "trailers");
    let upgrade = keep_upgrade
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten();
    // Other headers that `Connection` names and the message carries: usually none, the tokens
    // being `keep-alive`, `close` or `upgrade`, which are passed over without a lookup.
    let mut named = Vec::new();
    for value in &headers.get_all(header::CONNECTION) {
        for token in value.as_bytes().split(|&b| b == b',') {
            let token = token.trim_ascii();
            let known = token.is_empty()
                || token.eq_ignore_ascii_case(b"close")
                || HOP_BY_HOP
                    .iter()
                    .any(|hop| token.eq_ignore_ascii_case(hop.as_str().as_bytes()));
            if let Some(name) = (!known)
                .then(|| HeaderName::from_bytes(token).ok())
                .flatten()
                .filter(|name| headers.contains_key(name))
            {
                named.push(name);
            }
        }
    }
    for name in &named {
        headers.remove(name);
    }
    for (name, _) in HOP_BY_HOP
        .iter()
        .zip(present)
        .filter(|(_, present)| *present)
    {
        headers.remove(name);
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if let Some(upgrade) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, upgrade);
    }
}

/// Whether any field line of `name` lists `token` in its comma-separated value, compared
/// without regard to case (RFC 9110 §5.6.1; `Connection`, `TE`, `Transfer-Encoding`).
pub fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// The client address as a header value, for `X-Forwarded-For`: formatted once per connection
/// (formatting an address costs about as much as the rest of the header work of a request).
pub fn client_ip_value(client: IpAddr) -> HeaderValue {
    // An IPv6 address takes at most 45 characters; written on the stack, not in a String.
    let mut buf = [0u8; 64];
    let mut cursor = &mut buf[..];
    let written = write!(cursor, "{client}").is_ok();
    let len = 64 - cursor.len();
    let text = if written {
        &buf[..len]
    } else {
        &b"unknown"[..]
    };
    // Digits, dots, colons and hex letters are valid header bytes.
    HeaderValue::from_bytes(text).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Sets `name` to `value` if absent, else appends `item` to its list.
fn append_one(headers: &mut HeaderMap, name: HeaderName, value: HeaderValue, item: &[u8]) {
    // Through `entry`: one lookup, the common case (no such header yet) inserts at once.
    if let header::Entry::Vacant(entry) = headers.entry(&name) {
        entry.insert(value);
    } else {
        append_list(headers, name, item);
    }
}

fn append_list(headers: &mut HeaderMap, name: HeaderName, item: &[u8]) {
    let value = match headers.get(&name).filter(|v| v.to_str().is_ok()) {
        Some(existing) if !existing.is_empty() => {
            let mut joined = Vec::with_capacity(existing.len() + 2 + item.len());
            joined.extend_from_slice(existing.as_bytes());
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(item);
            HeaderValue::from_maybe_shared(Bytes::from(joined))
        }
        _ => HeaderValue::from_bytes(item),
    };
    // Both parts are valid header text, so the join is too.
    if let Ok(value) = value {
        headers.insert(name, value);
    }
}

/// Sets `x-request-id` to a new random id when the request has none; returns the id in use.
pub fn ensure_request_id(headers: &mut HeaderMap, rng: &mut fastrand::Rng) -> HeaderValue {
    // One lookup for both the check and the insertion.
    match headers.entry(REQUEST_ID) {
        header::Entry::Occupied(entry) => entry.get().clone(),
        header::Entry::Vacant(entry) => entry.insert(new_request_id(rng)).clone(),
    }
}

/// A random UUID v4 in its usual text form.
pub fn new_request_id(rng: &mut fastrand::Rng) -> HeaderValue {
    HeaderValue::from_bytes(&request_id_text(rng))
        .unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// The text of a random UUID v4: lowercase hex digits and dashes.
pub fn request_id_text(rng: &mut fastrand::Rng) -> [u8; 36] {
    let mut bytes = rng.u128(..).to_be_bytes();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let mut text = [b'-'; 36];
    write_hex(&mut text[0..8], &bytes[0..4]);
    write_hex(&mut text[9..13], &bytes[4..6]);
    write_hex(&mut text[14..18], &bytes[6..8]);
    write_hex(&mut text[19..23], &bytes[8..10]);
    write_hex(&mut text[24..36], &bytes[10..16]);
    text
}

/// The fields the proxy adds to a request that came without them (a new request id, a new
/// trace context, the forwarding fields), held apart from its header map until the request
/// goes out: an HTTP/1.1 upstream gets them written into the head as they are
/// ([`Added::write`]), without a map insertion each; any other way out (HTTP/2, an upgrade, a
/// route that changes headers, a route or hash that reads them) moves them into the map first
/// ([`Added::into_map`]). A field the request has is changed in its map instead.
#[derive(Debug, Default)]
pub struct Added {
    request_id: Option<[u8; 36]>,
    traceparent: Option<TraceContext>,
    forwarded_for: Option<HeaderValue>,
    forwarded_proto: Option<&'static str>,
}

impl Added {
    /// Adds `x-request-id` with `id` (from [`request_id_text`]).
    pub fn set_request_id(&mut self, id: [u8; 36]) {
        self.request_id = Some(id);
    }

    /// Adds `traceparent` for `context`.
    pub fn set_traceparent(&mut self, context: TraceContext) {
        self.traceparent = Some(context);
    }

    /// Appends the client address (from [`client_ip_value`]) to `X-Forwarded-For` and the
    /// scheme to `X-Forwarded-Proto`: in `headers` when the request may have the field, else
    /// held here.
    pub fn forward(
        &mut self,
        headers: &mut HeaderMap,
        fields: FieldSet,
        client: &HeaderValue,
        proto: &'static str,
    ) {
        if fields.may_have(Known::ForwardedFor) {
            append_one(headers, FORWARDED_FOR, client.clone(), client.as_bytes());
        } else {
            self.forwarded_for = Some(client.clone());
        }
        if fields.may_have(Known::ForwardedProto) {
            append_one(
                headers,
                FORWARDED_PROTO,
                HeaderValue::from_static(proto),
                proto.as_bytes(),
            );
        } else {
            self.forwarded_proto = Some(proto);
        }
    }

    /// Whether no field is held.
    pub fn is_empty(&self) -> bool {
        self.request_id.is_none()
            && self.traceparent.is_none()
            && self.forwarded_for.is_none()
            && self.forwarded_proto.is_none()
    }

    /// Moves the held fields into `headers`.
    pub fn into_map(&mut self, headers: &mut HeaderMap) {
        if let Some(id) = self.request_id.take()
            && let Ok(value) = HeaderValue::from_bytes(&id)
        {
            headers.insert(REQUEST_ID, value);
        }
        if let Some(context) = self.traceparent.take() {
            headers.insert(trace::TRACEPARENT, trace::traceparent_value(&context));
        }
        if let Some(client) = self.forwarded_for.take() {
            headers.insert(FORWARDED_FOR, client);
        }
        if let Some(proto) = self.forwarded_proto.take() {
            headers.insert(FORWARDED_PROTO, HeaderValue::from_static(proto));
        }
    }

    /// The length of the field lines [`Added::write`] writes.
    pub fn encoded_len(&self) -> usize {
        // Name, ": ", value and CRLF each.
        self.request_id.map_or(0, |id| 16 + id.len())
            + self.traceparent.map_or(0, |_| 15 + trace::TRACEPARENT_LEN)
            + (self.forwarded_for.as_ref()).map_or(0, |client| 19 + client.len())
            + self.forwarded_proto.map_or(0, |proto| 21 + proto.len())
    }

    /// Writes the held fields as HTTP/1.1 field lines.
    pub fn write(&self, head: &mut Vec<u8>) {
        if let Some(id) = &self.request_id {
            head.extend_from_slice(b"x-request-id: ");
            head.extend_from_slice(id);
            head.extend_from_slice(b"\r\n");
        }
        if let Some(context) = &self.traceparent {
            head.extend_from_slice(b"traceparent: ");
            head.extend_from_slice(&trace::traceparent_text(context));
            head.extend_from_slice(b"\r\n");
        }
        if let Some(client) = &self.forwarded_for {
            head.extend_from_slice(b"x-forwarded-for: ");
            head.extend_from_slice(client.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        if let Some(proto) = self.forwarded_proto {
            head.extend_from_slice(b"x-forwarded-proto: ");
            head.extend_from_slice(proto.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
    }
}

/// Each byte's two lowercase hex digits: one load per byte instead of two nibble lookups.
const HEX_PAIRS: [[u8; 2]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut pairs = [[0; 2]; 256];
    let mut byte = 0;
    while byte < 256 {
        pairs[byte] = [HEX[byte >> 4], HEX[byte & 0x0f]];
        byte += 1;
    }
    pairs
};

/// Writes `bytes` as lowercase hex into `out`, which is twice as long.
pub fn write_hex(out: &mut [u8], bytes: &[u8]) {
    for (pair, &byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(byte)]);
    }
}

/// Applies a route's header changes: remove, then set, then add.
pub fn apply_changes(headers: &mut HeaderMap, changes: &HeaderChanges) {
    if changes.is_empty() {
        return;
    }
    for name in changes.remove() {
        headers.remove(name.as_str());
    }
    // Names and values were validated by strait-config; a failure here cannot happen, and
    // skipping is the safe reaction if it did.
    for (name, value) in changes.set() {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            headers.insert(name, value);
        }
    }
    for (name, value) in changes.add() {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            headers.append(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (k, v) in pairs {
            headers.append(
                HeaderName::try_from(*k).unwrap(),
                HeaderValue::try_from(*v).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn removes_hop_by_hop_and_connection_named_headers() {
        let mut h = map(&[
            ("connection", "close, x-secret"),
            ("connection", "Keep-Alive , X-Other"),
            ("x-secret", "1"),
            ("x-other", "2"),
            ("keep-alive", "timeout=5"),
            ("te", "gzip"),
            ("transfer-encoding", "chunked"),
            ("x-kept", "yes"),
        ]);
        remove_hop_by_hop(&mut h, false, true);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn keeps_te_trailers_and_upgrade_when_asked() {
        let mut h = map(&[
            ("te", "trailers"),
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
        ]);
        remove_hop_by_hop(&mut h, true, true);
        assert_eq!(h["te"], "trailers");
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
        let mut h = map(&[("te", "trailers"), ("upgrade", "websocket")]);
        remove_hop_by_hop(&mut h, false, false);
        assert!(h.is_empty(), "{h:?}");
    }

    #[test]
    fn appends_forwarded_headers() {
        let mut h = map(&[("x-forwarded-for", "10.0.0.1")]);
        let mut added = Added::default();
        let client = client_ip_value("127.0.0.2".parse().unwrap());
        added.forward(&mut h, FieldSet::UNKNOWN, &client, "http");
        assert!(added.is_empty(), "a map of unknown fields gets both");
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.2");
        assert_eq!(h["x-forwarded-proto"], "http");
    }

    #[test]
    fn appends_forwarded_headers_to_empty_and_ipv6() {
        let mut h = map(&[("x-forwarded-proto", "https")]);
        let mut added = Added::default();
        let client = client_ip_value("2001:db8::1".parse().unwrap());
        added.forward(&mut h, FieldSet::UNKNOWN, &client, "http");
        assert!(added.is_empty(), "a map of unknown fields gets both");
        assert_eq!(h["x-forwarded-for"], "2001:db8::1");
        assert_eq!(h["x-forwarded-proto"], "https, http");
    }

    #[test]
    fn connection_tokens_naming_absent_headers_are_ignored() {
        let mut h = map(&[("connection", "keep-alive, close"), ("x-kept", "yes")]);
        remove_hop_by_hop(&mut h, false, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn request_id_is_kept_or_generated() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut h = map(&[("x-request-id", "abc")]);
        assert_eq!(ensure_request_id(&mut h, &mut rng), "abc");
        let mut h = HeaderMap::new();
        let id = ensure_request_id(&mut h, &mut rng);
        let text = id.to_str().unwrap();
        assert_eq!(text.len(), 36);
        assert_eq!(&text[14..15], "4", "version nibble in {text}");
        assert_eq!(h["x-request-id"], id);
    }

    /// The id is the UUID v4 text of the rng's next u128 (version and variant bits set), as
    /// `format!` writes it.
    #[test]
    fn request_ids_are_uuid_text() {
        for seed in 0..64 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let value = rng.clone().u128(..);
            let value = (value & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
            let hex = format!("{value:032x}");
            let expected = format!(
                "{}-{}-{}-{}-{}",
                &hex[0..8],
                &hex[8..12],
                &hex[12..16],
                &hex[16..20],
                &hex[20..32]
            );
            assert_eq!(new_request_id(&mut rng), expected.as_str());
        }
        let mut out = [0; 512];
        let bytes: Vec<u8> = (0..=255).collect();
        write_hex(&mut out, &bytes);
        let expected: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(std::str::from_utf8(&out), Ok(expected.as_str()));
    }

    #[test]
    fn known_names_are_classed_and_the_hop_by_hop_ones_agree_with_the_removal_list() {
        for name in &HOP_BY_HOP {
            let mut set = FieldSet::EMPTY;
            set.insert(Known::of(name));
            assert!(set.may_have_hop_by_hop(), "{name}");
        }
        let classed = [
            (REQUEST_ID, Known::RequestId),
            (trace::TRACEPARENT, Known::Traceparent),
            (trace::TRACESTATE, Known::Tracestate),
            (FORWARDED_FOR, Known::ForwardedFor),
            (FORWARDED_PROTO, Known::ForwardedProto),
            (header::HOST, Known::Host),
            (header::CONTENT_LENGTH, Known::ContentLength),
            (header::EXPECT, Known::Expect),
            (HeaderName::from_static("x-other"), Known::Other),
            (header::ACCEPT, Known::Other),
        ];
        for (name, known) in classed {
            assert_eq!(Known::of(&name), known, "{name}");
            let mut set = FieldSet::EMPTY;
            set.insert(known);
            assert!(!set.may_have_hop_by_hop(), "{name}");
        }
    }

    #[test]
    fn a_field_set_knows_absence_only_when_exact() {
        let mut set = FieldSet::EMPTY;
        assert!(!set.may_have(Known::Host) && !set.has(Known::Host));
        set.insert(Known::Host);
        assert!(set.may_have(Known::Host) && set.has(Known::Host));
        assert!(!set.may_have(Known::RequestId));
        assert!(!set.may_have_hop_by_hop());
        let of_map = FieldSet::of_map(&map(&[("host", "a"), ("te", "trailers"), ("x-a", "b")]));
        assert!(of_map.has(Known::Host) && of_map.may_have_hop_by_hop());
        assert!(!of_map.may_have(Known::RequestId) && !of_map.may_have(Known::Upgrade));
        assert!(!FieldSet::of_map(&map(&[("x-a", "b")])).may_have_hop_by_hop());
        let unknown = FieldSet::UNKNOWN;
        assert!(unknown.may_have(Known::RequestId) && !unknown.has(Known::RequestId));
        assert!(unknown.may_have(Known::ForwardedProto) && unknown.may_have_hop_by_hop());
    }

    #[test]
    fn held_fields_are_written_as_field_lines_or_moved_into_the_map_alike() {
        let mut rng = fastrand::Rng::with_seed(7);
        let context = trace::propagate(None, 1.0, &mut rng);
        let id = request_id_text(&mut rng);
        let client = HeaderValue::from_static("10.1.2.3");
        let mut added = Added::default();
        assert!(added.is_empty());
        added.set_request_id(id);
        added.set_traceparent(context);
        // The request has X-Forwarded-Proto: appended in its map; X-Forwarded-For is held.
        let mut headers = map(&[("x-forwarded-proto", "https")]);
        let mut fields = FieldSet::EMPTY;
        fields.insert(Known::ForwardedProto);
        added.forward(&mut headers, fields, &client, "http");
        assert_eq!(headers["x-forwarded-proto"], "https, http");
        assert!(!headers.contains_key("x-forwarded-for"));

        let mut head = Vec::new();
        added.write(&mut head);
        assert_eq!(head.len(), added.encoded_len());
        let text = String::from_utf8(head).unwrap();
        let traceparent = trace::traceparent_value(&context);
        let expected = format!(
            "x-request-id: {}\r\ntraceparent: {}\r\nx-forwarded-for: 10.1.2.3\r\n",
            std::str::from_utf8(&id).unwrap(),
            traceparent.to_str().unwrap(),
        );
        assert_eq!(text, expected);

        added.into_map(&mut headers);
        assert!(added.is_empty());
        assert_eq!(headers["x-request-id"], std::str::from_utf8(&id).unwrap());
        assert_eq!(headers["traceparent"], traceparent);
        assert_eq!(headers["x-forwarded-for"], "10.1.2.3");
        assert_eq!(headers["x-forwarded-proto"], "https, http");
        // Nothing is left to write.
        let mut head = Vec::new();
        added.write(&mut head);
        assert!(head.is_empty());

        // Without a known set, both go through the map.
        let mut headers = map(&[("x-forwarded-for", "10.0.0.1")]);
        let mut added = Added::default();
        added.forward(&mut headers, FieldSet::UNKNOWN, &client, "http");
        assert!(added.is_empty());
        assert_eq!(headers["x-forwarded-for"], "10.0.0.1, 10.1.2.3");
        assert_eq!(headers["x-forwarded-proto"], "http");
    }
}
