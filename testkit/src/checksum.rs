//! A streaming 64-bit checksum (FNV-1a) for comparing bodies without keeping them.
//!
//! FNV-1a is not cryptographic; it is order-sensitive and cheap, which is what a test needs to
//! tell that bytes arrived complete, unchanged and in order. The upstream reports it in the
//! `x-checksum` trailer and in [`SeenRequest`](crate::upstream::SeenRequest).

const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0000_0100_0000_01b3;

/// An FNV-1a 64 hash fed in pieces; splitting the input differently gives the same value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Checksum {
    state: u64,
    len: u64,
}

impl Checksum {
    /// The checksum of no bytes.
    pub const fn new() -> Self {
        Self {
            state: OFFSET_BASIS,
            len: 0,
        }
    }

    /// Feeds `bytes` into the hash.
    pub fn update(&mut self, bytes: &[u8]) {
        let mut state = self.state;
        for &b in bytes {
            state ^= u64::from(b);
            state = state.wrapping_mul(PRIME);
        }
        self.state = state;
        self.len += bytes.len() as u64;
    }

    /// The hash of everything fed so far.
    pub const fn value(&self) -> u64 {
        self.state
    }

    /// How many bytes were fed so far.
    pub const fn len(&self) -> u64 {
        self.len
    }

    /// Whether no bytes were fed yet.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Default for Checksum {
    fn default() -> Self {
        Self::new()
    }
}

/// The FNV-1a 64 hash of `bytes` in one call.
pub fn checksum(bytes: &[u8]) -> u64 {
    let mut sum = Checksum::new();
    sum.update(bytes);
    sum.value()
}

/// Formats a checksum value as the upstream writes it in headers: 16 lowercase hex digits.
pub fn to_hex(value: u64) -> String {
    format!("{value:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_published_fnv1a_64_vectors() {
        // Test vectors from the FNV reference (draft-eastlake-fnv, appendix C).
        assert_eq!(checksum(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(checksum(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(checksum(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn split_input_gives_same_value() {
        let mut sum = Checksum::new();
        sum.update(b"foo");
        sum.update(b"");
        sum.update(b"bar");
        assert_eq!(sum.value(), checksum(b"foobar"));
        assert_eq!(sum.len(), 6);
    }

    #[test]
    fn order_matters() {
        assert_ne!(checksum(b"ab"), checksum(b"ba"));
    }

    #[test]
    fn hex_is_fixed_width() {
        assert_eq!(to_hex(0xab), "00000000000000ab");
    }
}
