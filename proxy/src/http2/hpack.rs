//! HPACK header compression for HTTP/2 (RFC 7541).
//!
//! [`Decoder`] turns the header blocks one peer sends on a connection into fields and keeps the
//! dynamic table those blocks build. [`Encoder`] writes header blocks without ever adding to the
//! peer's dynamic table: static-table matches are indexed, everything else is a literal sent
//! without indexing, and strings are not Huffman-coded. That trades some bytes on the wire for
//! less CPU per request (no hashing, no eviction, no per-byte Huffman work).
//!
//! Names are bytes as they are on the wire; validating them (lower case, pseudo-header rules,
//! list size) is the caller's job. Every [`DecodeError`] is a connection error of type
//! `COMPRESSION_ERROR` in HTTP/2 (RFC 9113 §4.3).

use std::collections::VecDeque;
use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

pub mod huffman;

/// HTTP/2's default `SETTINGS_HEADER_TABLE_SIZE` (RFC 9113 §6.5.2): the dynamic table limit an
/// endpoint has until it advertises another.
pub const DEFAULT_TABLE_SIZE: usize = 4096;

/// RFC 7541 §4.1: an entry costs its name and value lengths plus this overhead.
const ENTRY_OVERHEAD: usize = 32;

/// Largest integer accepted (RFC 7541 §5.1 leaves the limit to implementations).
const MAX_INTEGER: u64 = 0xffff_ffff;

/// The static table, RFC 7541 Appendix A: `STATIC_TABLE[i]` has HPACK index `i + 1`.
static STATIC_TABLE: [Entry; 61] = [
    Entry::from_static(b":authority", b""),
    Entry::from_static(b":method", b"GET"),
    Entry::from_static(b":method", b"POST"),
    Entry::from_static(b":path", b"/"),
    Entry::from_static(b":path", b"/index.html"),
    Entry::from_static(b":scheme", b"http"),
    Entry::from_static(b":scheme", b"https"),
    Entry::from_static(b":status", b"200"),
    Entry::from_static(b":status", b"204"),
    Entry::from_static(b":status", b"206"),
    Entry::from_static(b":status", b"304"),
    Entry::from_static(b":status", b"400"),
    Entry::from_static(b":status", b"404"),
    Entry::from_static(b":status", b"500"),
    Entry::from_static(b"accept-charset", b""),
    Entry::from_static(b"accept-encoding", b"gzip, deflate"),
    Entry::from_static(b"accept-language", b""),
    Entry::from_static(b"accept-ranges", b""),
    Entry::from_static(b"accept", b""),
    Entry::from_static(b"access-control-allow-origin", b""),
    Entry::from_static(b"age", b""),
    Entry::from_static(b"allow", b""),
    Entry::from_static(b"authorization", b""),
    Entry::from_static(b"cache-control", b""),
    Entry::from_static(b"content-disposition", b""),
    Entry::from_static(b"content-encoding", b""),
    Entry::from_static(b"content-language", b""),
    Entry::from_static(b"content-length", b""),
    Entry::from_static(b"content-location", b""),
    Entry::from_static(b"content-range", b""),
    Entry::from_static(b"content-type", b""),
    Entry::from_static(b"cookie", b""),
    Entry::from_static(b"date", b""),
    Entry::from_static(b"etag", b""),
    Entry::from_static(b"expect", b""),
    Entry::from_static(b"expires", b""),
    Entry::from_static(b"from", b""),
    Entry::from_static(b"host", b""),
    Entry::from_static(b"if-match", b""),
    Entry::from_static(b"if-modified-since", b""),
    Entry::from_static(b"if-none-match", b""),
    Entry::from_static(b"if-range", b""),
    Entry::from_static(b"if-unmodified-since", b""),
    Entry::from_static(b"last-modified", b""),
    Entry::from_static(b"link", b""),
    Entry::from_static(b"location", b""),
    Entry::from_static(b"max-forwards", b""),
    Entry::from_static(b"proxy-authenticate", b""),
    Entry::from_static(b"proxy-authorization", b""),
    Entry::from_static(b"range", b""),
    Entry::from_static(b"referer", b""),
    Entry::from_static(b"refresh", b""),
    Entry::from_static(b"retry-after", b""),
    Entry::from_static(b"server", b""),
    Entry::from_static(b"set-cookie", b""),
    Entry::from_static(b"strict-transport-security", b""),
    Entry::from_static(b"transfer-encoding", b""),
    Entry::from_static(b"user-agent", b""),
    Entry::from_static(b"vary", b""),
    Entry::from_static(b"via", b""),
    Entry::from_static(b"www-authenticate", b""),
];

// === impl Decoder ===

/// Decodes the header blocks of one connection in one direction; keeps the dynamic table.
#[derive(Debug)]
pub struct Decoder {
    table: DynamicTable,
    /// The `SETTINGS_HEADER_TABLE_SIZE` this endpoint advertises: the ceiling for size updates.
    max_table_size: usize,
}

impl Decoder {
    /// A decoder whose dynamic table may grow to `max_table_size` (the
    /// `SETTINGS_HEADER_TABLE_SIZE` this endpoint advertises); a size update above it is an error.
    #[must_use]
    pub fn new(max_table_size: usize) -> Self {
        Self {
            table: DynamicTable {
                entries: VecDeque::new(),
                size: 0,
                max_size: max_table_size,
            },
            max_table_size,
        }
    }

    /// Decodes one complete header block (HEADERS + CONTINUATION fragments already joined).
    ///
    /// Calls `field(name, value, sensitive)` for each field in order; `sensitive` is true for
    /// the never-indexed representation. Names are passed as they are on the wire (no case
    /// change, no validation). A value that is a literal without Huffman coding is a zero-copy
    /// slice of `block`; a Huffman-coded one is decoded into a new buffer; an indexed one is a
    /// cheap clone of the table entry's value.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] for a block that breaks RFC 7541. Fields before the error have been
    /// passed to `field`, and the dynamic table may be out of step with the peer's: the
    /// connection must end with `COMPRESSION_ERROR`.
    pub fn decode(
        &mut self,
        block: &Bytes,
        field: &mut dyn FnMut(&[u8], Bytes, bool),
    ) -> Result<(), DecodeError> {
        let mut reader = Reader { block, pos: 0 };
        // RFC 7541 §4.2: size updates may only open a block (several are allowed).
        let mut size_update_allowed = true;
        while let Some(first) = reader.peek() {
            match first {
                // §6.1 indexed header field: 1xxxxxxx
                0x80..=0xff => {
                    let entry = self.entry(reader.integer(7)?)?;
                    field(&entry.name, entry.value.clone(), false);
                }
                // §6.2.1 literal with incremental indexing: 01xxxxxx
                0x40..=0x7f => {
                    let name = self.literal_name(&mut reader, 6)?;
                    let value = reader.string()?;
                    self.table.insert(&name, &value);
                    field(&name, value, false);
                }
                // §6.3 dynamic table size update: 001xxxxx
                0x20..=0x3f => {
                    if !size_update_allowed {
                        return Err(DecodeError::TableSizeUpdateNotFirst);
                    }
                    let requested = reader.integer(5)?;
                    if requested > self.max_table_size {
                        return Err(DecodeError::TableSizeUpdateTooLarge {
                            requested,
                            max: self.max_table_size,
                        });
                    }
                    self.table.resize(requested);
                    continue;
                }
                // §6.2.2 without indexing (0000xxxx), §6.2.3 never indexed (0001xxxx)
                _ => {
                    let name = self.literal_name(&mut reader, 4)?;
                    let value = reader.string()?;
                    field(&name, value, first & 0x10 != 0);
                }
            }
            size_update_allowed = false;
        }
        Ok(())
    }

    /// The size of the dynamic table now (RFC 7541 §4.1 sizes), for tests and metrics.
    #[must_use]
    pub fn table_size(&self) -> usize {
        self.table.size
    }

    /// The entry at HPACK `index` (RFC 7541 §2.3.3): static first, then dynamic, newest first.
    fn entry(&self, index: usize) -> Result<&Entry, DecodeError> {
        let Some(position) = index.checked_sub(1) else {
            return Err(DecodeError::IndexZero);
        };
        match position.checked_sub(STATIC_TABLE.len()) {
            None => STATIC_TABLE.get(position),
            Some(dynamic) => self.table.entries.get(dynamic),
        }
        .ok_or(DecodeError::IndexOutOfRange(index))
    }

    /// Reads a literal's name: an index with a `prefix_bits` prefix, then a string if it is 0.
    fn literal_name(
        &self,
        reader: &mut Reader<'_>,
        prefix_bits: u32,
    ) -> Result<Bytes, DecodeError> {
        match reader.integer(prefix_bits)? {
            0 => reader.string(),
            index => Ok(self.entry(index)?.name.clone()),
        }
    }
}

// === impl DecodeError ===

/// Why a header block could not be decoded; all are `COMPRESSION_ERROR` in HTTP/2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The block ends inside a representation, an integer or a string.
    Truncated,
    /// An integer is above 2^32 - 1 or has more continuation octets than such a value needs.
    IntegerOverflow,
    /// An indexed representation uses index 0 (RFC 7541 §6.1).
    IndexZero,
    /// An index past the end of the static and dynamic tables.
    IndexOutOfRange(usize),
    /// A Huffman-coded string contains the EOS symbol (RFC 7541 §5.2).
    HuffmanEos,
    /// A Huffman-coded string ends with more than seven bits of padding, or with padding that
    /// is not all ones (RFC 7541 §5.2).
    HuffmanPadding,
    /// A dynamic table size update above the `SETTINGS_HEADER_TABLE_SIZE` this endpoint
    /// advertises (RFC 7541 §6.3).
    TableSizeUpdateTooLarge {
        /// The size the update asks for.
        requested: usize,
        /// The largest size allowed.
        max: usize,
    },
    /// A dynamic table size update after the first field of a block (RFC 7541 §4.2).
    TableSizeUpdateNotFirst,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => f.write_str("header block ends inside a field"),
            Self::IntegerOverflow => f.write_str("integer in header block is too large"),
            Self::IndexZero => f.write_str("header field index 0"),
            Self::IndexOutOfRange(index) => {
                write!(f, "header field index {index} is past the end of the table")
            }
            Self::HuffmanEos => f.write_str("Huffman-coded string contains EOS"),
            Self::HuffmanPadding => f.write_str("Huffman-coded string has invalid padding"),
            Self::TableSizeUpdateTooLarge { requested, max } => write!(
                f,
                "dynamic table size update to {requested} exceeds the limit of {max}"
            ),
            Self::TableSizeUpdateNotFirst => {
                f.write_str("dynamic table size update after the first header field")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

// === impl Encoder ===

/// Encodes header blocks. Never inserts into the dynamic table (CPU over bytes: no hashing,
/// no eviction); names found in the static table are sent as indexed names.
#[derive(Debug, Default)]
pub struct Encoder {
    /// The next block must start with a dynamic table size update to 0.
    size_update_pending: bool,
}

impl Encoder {
    /// An encoder for a peer with the default table size.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The peer's `SETTINGS_HEADER_TABLE_SIZE` changed: the next block starts with a dynamic
    /// table size update to 0 (this encoder uses no entries, and RFC 7541 §4.2 requires the
    /// update after a change). Call once per SETTINGS frame that carries the setting.
    pub fn peer_table_size_changed(&mut self) {
        self.size_update_pending = true;
    }

    /// Starts a block in `dst` (writes the pending size update, if any).
    pub fn begin(&mut self, dst: &mut BytesMut) {
        if self.size_update_pending {
            self.size_update_pending = false;
            encode_integer(0, 5, 0x20, dst);
        }
    }

    /// Writes `:status`: an indexed field for 200, 204, 206, 304, 400, 404 and 500 (static
    /// entries 8 to 14), else a literal without indexing with the indexed name `:status`.
    pub fn status(&mut self, status: u16, dst: &mut BytesMut) {
        let index = match status {
            200 => 8,
            204 => 9,
            206 => 10,
            304 => 11,
            400 => 12,
            404 => 13,
            500 => 14,
            _ => {
                encode_integer(8, 4, 0x00, dst);
                let mut digits = [0; 5];
                encode_string(decimal(status, &mut digits), dst);
                return;
            }
        };
        encode_integer(index, 7, 0x80, dst);
    }

    /// Writes one field; `name` is lower case (a pseudo-header name like `:path` works too).
    ///
    /// A static-table entry (`:method GET`, `:path /`, `accept-encoding gzip, deflate`, or a
    /// static name with an empty value) becomes an indexed field. Otherwise a name in the
    /// static table is sent as an indexed name, and any other name as a literal, in a literal
    /// without indexing, or never indexed when `sensitive`. Strings are not Huffman-coded:
    /// Huffman coding costs CPU per byte.
    pub fn field(&mut self, name: &[u8], value: &[u8], sensitive: bool, dst: &mut BytesMut) {
        let flags = if sensitive { 0x10 } else { 0x00 };
        if let Some(name_index) = static_name_index(name) {
            if let Some(index) = static_field_index(name_index, value) {
                encode_integer(index, 7, 0x80, dst);
                return;
            }
            encode_integer(name_index, 4, flags, dst);
        } else {
            dst.put_u8(flags);
            encode_string(name, dst);
        }
        encode_string(value, dst);
    }
}

// === impl Entry ===

/// A table entry; dynamic entries share one buffer for name and value.
#[derive(Debug, Clone)]
struct Entry {
    name: Bytes,
    value: Bytes,
}

impl Entry {
    const fn from_static(name: &'static [u8], value: &'static [u8]) -> Self {
        Self {
            name: Bytes::from_static(name),
            value: Bytes::from_static(value),
        }
    }

    /// RFC 7541 §4.1 entry size.
    fn size(&self) -> usize {
        self.name.len() + self.value.len() + ENTRY_OVERHEAD
    }
}

// === impl DynamicTable ===

/// The dynamic table (RFC 7541 §2.3.2, §4): newest entry first.
#[derive(Debug)]
struct DynamicTable {
    entries: VecDeque<Entry>,
    /// Sum of the entries' sizes; never above `max_size`.
    size: usize,
    /// The limit set by the last size update (or the advertised setting).
    max_size: usize,
}

impl DynamicTable {
    /// Adds an entry, evicting the oldest ones to make room (RFC 7541 §4.4).
    fn insert(&mut self, name: &[u8], value: &[u8]) {
        let size = name.len() + value.len() + ENTRY_OVERHEAD;
        let Some(room_left) = self.max_size.checked_sub(size) else {
            // Larger than the whole table: it empties the table and is not added.
            self.entries.clear();
            self.size = 0;
            return;
        };
        self.evict_to(room_left);
        // A copy, not a slice of the block: a slice would keep the whole block alive for as
        // long as the entry lives, so a peer could pin far more memory than the table size.
        let mut buf = BytesMut::with_capacity(name.len() + value.len());
        buf.put_slice(name);
        buf.put_slice(value);
        let value = buf.split_off(name.len()).freeze();
        self.entries.push_front(Entry {
            name: buf.freeze(),
            value,
        });
        self.size += size;
    }

    /// Applies a size update (RFC 7541 §4.3).
    fn resize(&mut self, max_size: usize) {
        self.max_size = max_size;
        self.evict_to(max_size);
    }

    fn evict_to(&mut self, target: usize) {
        while self.size > target {
            let Some(oldest) = self.entries.pop_back() else {
                break;
            };
            self.size -= oldest.size();
        }
    }
}

// === impl Reader ===

/// Reads RFC 7541 §5 primitives from a header block.
struct Reader<'a> {
    block: &'a Bytes,
    pos: usize,
}

impl Reader<'_> {
    fn peek(&self) -> Option<u8> {
        self.block.get(self.pos).copied()
    }

    fn next_byte(&mut self) -> Result<u8, DecodeError> {
        let byte = self.peek().ok_or(DecodeError::Truncated)?;
        self.pos += 1;
        Ok(byte)
    }

    /// §5.1 integer with an N-bit prefix; the bits above the prefix are ignored.
    fn integer(&mut self, prefix_bits: u32) -> Result<usize, DecodeError> {
        let max_prefix = (1u8 << prefix_bits) - 1;
        let prefix = self.next_byte()? & max_prefix;
        if prefix < max_prefix {
            return Ok(usize::from(prefix));
        }
        let mut value = u64::from(max_prefix);
        let mut shift = 0;
        loop {
            let byte = self.next_byte()?;
            value += u64::from(byte & 0x7f) << shift;
            if value > MAX_INTEGER {
                return Err(DecodeError::IntegerOverflow);
            }
            if byte & 0x80 == 0 {
                return usize::try_from(value).map_err(|_| DecodeError::IntegerOverflow);
            }
            // Five continuation octets carry 35 bits; a sixth can only be padding or too big.
            shift += 7;
            if shift > 28 {
                return Err(DecodeError::IntegerOverflow);
            }
        }
    }

    /// §5.2 string literal: a zero-copy slice if raw, a new buffer if Huffman-coded.
    fn string(&mut self) -> Result<Bytes, DecodeError> {
        let huffman = self.peek().ok_or(DecodeError::Truncated)? & 0x80 != 0;
        let len = self.integer(7)?;
        let start = self.pos;
        let end = start
            .checked_add(len)
            .filter(|&end| end <= self.block.len())
            .ok_or(DecodeError::Truncated)?;
        self.pos = end;
        if huffman {
            let mut decoded = BytesMut::new();
            huffman::decode(&self.block[start..end], &mut decoded)?;
            Ok(decoded.freeze())
        } else {
            Ok(self.block.slice(start..end))
        }
    }
}

// === encoding helpers ===

/// Writes a §5.1 integer with an N-bit prefix; `flags` holds the bits above the prefix.
#[allow(
    clippy::cast_possible_truncation,
    reason = "each cast value is below 256 by the comparison or mask before it"
)]
fn encode_integer(value: usize, prefix_bits: u32, flags: u8, dst: &mut BytesMut) {
    let max_prefix = (1usize << prefix_bits) - 1;
    if value < max_prefix {
        dst.put_u8(flags | value as u8);
        return;
    }
    dst.put_u8(flags | max_prefix as u8);
    let mut rest = value - max_prefix;
    while rest >= 0x80 {
        dst.put_u8(0x80 | (rest & 0x7f) as u8);
        rest >>= 7;
    }
    dst.put_u8(rest as u8);
}

/// Writes a §5.2 string literal without Huffman coding.
fn encode_string(value: &[u8], dst: &mut BytesMut) {
    encode_integer(value.len(), 7, 0x00, dst);
    dst.put_slice(value);
}

/// Formats `n` in decimal into the end of `buf`, without allocating.
fn decimal(mut n: u16, buf: &mut [u8; 5]) -> &[u8] {
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b"0123456789"[usize::from(n % 10)];
        n /= 10;
        if n == 0 {
            return &buf[start..];
        }
    }
}

/// The first static-table index with this name.
fn static_name_index(name: &[u8]) -> Option<usize> {
    // Byte-string patterns compile to length checks and compares: no hashing, no allocation.
    let index = match name {
        b":authority" => 1,
        b":method" => 2,
        b":path" => 4,
        b":scheme" => 6,
        b":status" => 8,
        b"accept-charset" => 15,
        b"accept-encoding" => 16,
        b"accept-language" => 17,
        b"accept-ranges" => 18,
        b"accept" => 19,
        b"access-control-allow-origin" => 20,
        b"age" => 21,
        b"allow" => 22,
        b"authorization" => 23,
        b"cache-control" => 24,
        b"content-disposition" => 25,
        b"content-encoding" => 26,
        b"content-language" => 27,
        b"content-length" => 28,
        b"content-location" => 29,
        b"content-range" => 30,
        b"content-type" => 31,
        b"cookie" => 32,
        b"date" => 33,
        b"etag" => 34,
        b"expect" => 35,
        b"expires" => 36,
        b"from" => 37,
        b"host" => 38,
        b"if-match" => 39,
        b"if-modified-since" => 40,
        b"if-none-match" => 41,
        b"if-range" => 42,
        b"if-unmodified-since" => 43,
        b"last-modified" => 44,
        b"link" => 45,
        b"location" => 46,
        b"max-forwards" => 47,
        b"proxy-authenticate" => 48,
        b"proxy-authorization" => 49,
        b"range" => 50,
        b"referer" => 51,
        b"refresh" => 52,
        b"retry-after" => 53,
        b"server" => 54,
        b"set-cookie" => 55,
        b"strict-transport-security" => 56,
        b"transfer-encoding" => 57,
        b"user-agent" => 58,
        b"vary" => 59,
        b"via" => 60,
        b"www-authenticate" => 61,
        _ => return None,
    };
    Some(index)
}

/// The static-table index of (name, `value`), given the name's first index.
fn static_field_index(name_index: usize, value: &[u8]) -> Option<usize> {
    let index = match (name_index, value) {
        (2, b"GET") => 2,
        (2, b"POST") => 3,
        (4, b"/") => 4,
        (4, b"/index.html") => 5,
        (6, b"http") => 6,
        (6, b"https") => 7,
        (8, b"200") => 8,
        (8, b"204") => 9,
        (8, b"206") => 10,
        (8, b"304") => 11,
        (8, b"400") => 12,
        (8, b"404") => 13,
        (8, b"500") => 14,
        (16, b"gzip, deflate") => 16,
        // Every other entry has an empty value.
        (1 | 15 | 17..=61, b"") => name_index,
        _ => return None,
    };
    Some(index)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests;
