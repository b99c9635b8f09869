//! The HPACK Huffman code (RFC 7541 §5.2 and Appendix B).
//!
//! The code is canonical: the codes of one length are consecutive and in symbol order, and each
//! length continues from the last code of the shorter one, shifted left. So the source of truth
//! here is the table of 257 code lengths from Appendix B; the codes, the code tree and the
//! decoder's state machine are derived from it at compile time (a wrong table fails the build).
//!
//! Decoding reads four bits at a time. The states are the 256 inner nodes of the code tree (the
//! bits read since the last symbol); one step emits at most one symbol, as no code is shorter
//! than five bits.

use bytes::{BufMut, BytesMut};

use super::DecodeError;

/// Code length in bits of each symbol, RFC 7541 Appendix B; index 256 is EOS.
#[rustfmt::skip]
const LENGTHS: [u8; 257] = [
    // 0x00..=0x0f: control characters
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28,
    // 0x10..=0x1f: control characters
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,
    // 0x20..=0x2f: ' ' ! " # $ % & ' ( ) * + , - . /
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6,
    // 0x30..=0x3f: 0 1 2 3 4 5 6 7 8 9 : ; < = > ?
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,
    // 0x40..=0x4f: @ A B C D E F G H I J K L M N O
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    // 0x50..=0x5f: P Q R S T U V W X Y Z [ \ ] ^ _
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,
    // 0x60..=0x6f: ` a b c d e f g h i j k l m n o
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5,
    // 0x70..=0x7f: p q r s t u v w x y z { | } ~ DEL
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,
    // 0x80..=0xff
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23,
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23,
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25,
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23,
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
    // EOS
    30,
];

/// The EOS symbol: only ever seen as padding, never inside a string.
const EOS: u16 = 256;

/// The longest code (RFC 7541 Appendix B).
const MAX_LEN: u8 = 30;

/// The code of each symbol, in the low [`LENGTHS`] bits.
const CODES: [u32; 257] = canonical_codes();

/// Marks a child in [`code_tree`] as a leaf; the low bits hold the symbol.
const LEAF: u16 = 0x8000;

/// Decoder step flag: the step completed a symbol.
const EMIT: u8 = 1;
/// Decoder step flag: the string may end in the state reached (its bits are valid padding).
const ACCEPT: u8 = 2;
/// Decoder step flag: the step read the EOS code.
const FAIL: u8 = 4;

/// One decoder step: from a state, read four bits.
#[derive(Clone, Copy)]
struct Step {
    next: u8,
    symbol: u8,
    flags: u8,
}

/// `STEPS[state][nibble]`; a static so the 12 KiB table exists once.
static STEPS: [[Step; 16]; 256] = decode_steps();

/// Appends the Huffman code of `src` to `dst`, padded with the high bits of EOS (all ones).
pub fn encode(src: &[u8], dst: &mut BytesMut) {
    dst.reserve(encoded_len(src));
    // Bits not yet written are the low `pending_bits` bits; higher ones are shifted out unread.
    let mut pending: u64 = 0;
    let mut pending_bits: u32 = 0;
    for &byte in src {
        let symbol = usize::from(byte);
        pending = (pending << LENGTHS[symbol]) | u64::from(CODES[symbol]);
        pending_bits += u32::from(LENGTHS[symbol]);
        while pending_bits >= 8 {
            pending_bits -= 8;
            dst.put_u8(low_byte(pending >> pending_bits));
        }
    }
    if pending_bits > 0 {
        let padding = 8 - pending_bits;
        dst.put_u8(low_byte((pending << padding) | ((1 << padding) - 1)));
    }
}

/// The length in bytes of the Huffman code of `src`, padding included.
#[must_use]
pub fn encoded_len(src: &[u8]) -> usize {
    let bits: usize = src
        .iter()
        .map(|&byte| usize::from(LENGTHS[usize::from(byte)]))
        .sum();
    bits.div_ceil(8)
}

/// Appends the decoding of the Huffman-coded `src` to `dst`.
///
/// # Errors
///
/// [`DecodeError::HuffmanEos`] if `src` contains the EOS code, and
/// [`DecodeError::HuffmanPadding`] if it ends with more than seven bits that are not a whole
/// code, or with bits that are not all ones (RFC 7541 §5.2). `dst` then holds a partial result.
pub fn decode(src: &[u8], dst: &mut BytesMut) -> Result<(), DecodeError> {
    // No code is shorter than five bits.
    dst.reserve(src.len() / 5 * 8 + 8);
    let mut state = 0;
    let mut accept = true;
    for &byte in src {
        for nibble in [byte >> 4, byte & 0x0f] {
            let step = STEPS[usize::from(state)][usize::from(nibble)];
            if step.flags & FAIL != 0 {
                return Err(DecodeError::HuffmanEos);
            }
            if step.flags & EMIT != 0 {
                dst.put_u8(step.symbol);
            }
            state = step.next;
            accept = step.flags & ACCEPT != 0;
        }
    }
    if accept {
        Ok(())
    } else {
        Err(DecodeError::HuffmanPadding)
    }
}

#[allow(
    clippy::cast_possible_truncation,
    reason = "callers want the low eight bits"
)]
fn low_byte(bits: u64) -> u8 {
    bits as u8
}

/// Assigns canonical codes: by length, then by symbol.
const fn canonical_codes() -> [u32; 257] {
    let mut codes = [0; 257];
    let mut next: u32 = 0;
    let mut len = 1;
    while len <= MAX_LEN {
        let mut symbol = 0;
        while symbol < codes.len() {
            if LENGTHS[symbol] == len {
                codes[symbol] = next;
                next += 1;
            }
            symbol += 1;
        }
        next <<= 1;
        len += 1;
    }
    // Complete code: the 30-bit codes end exactly at 2^30 (shifted once more above).
    assert!(
        next == 1 << (MAX_LEN + 1),
        "Huffman code lengths do not form a complete code"
    );
    codes
}

/// The code tree: `tree[node][bit]` is an inner node (root 0) or `LEAF | symbol`.
#[allow(clippy::cast_possible_truncation, reason = "symbols are below 257")]
const fn code_tree() -> [[u16; 2]; 256] {
    let mut tree = [[0u16; 2]; 256];
    let mut nodes: u16 = 1;
    let mut symbol = 0;
    while symbol < CODES.len() {
        let code = CODES[symbol];
        let mut node = 0;
        let mut bit = LENGTHS[symbol] - 1;
        while bit > 0 {
            let side = ((code >> bit) & 1) as usize;
            if tree[node][side] == 0 {
                tree[node][side] = nodes;
                nodes += 1;
            }
            // A prefix clash would make this a LEAF value and index out of bounds: a build error.
            node = tree[node][side] as usize;
            bit -= 1;
        }
        tree[node][(code & 1) as usize] = LEAF | symbol as u16;
        symbol += 1;
    }
    // 257 leaves of a full binary tree hang from 256 inner nodes.
    assert!(nodes == 256, "Huffman code tree is not full");
    tree
}

/// Builds [`STEPS`] from the code tree.
#[allow(
    clippy::cast_possible_truncation,
    reason = "tree nodes are below 256 and non-EOS symbols below 256"
)]
const fn decode_steps() -> [[Step; 16]; 256] {
    let tree = code_tree();
    // A string may end at the root or after up to seven ones: the start of EOS (RFC 7541 §5.2).
    let mut accepting = [false; 256];
    accepting[0] = true;
    let mut node = 0;
    let mut depth = 0;
    while depth < 7 {
        node = tree[node][1] as usize;
        accepting[node] = true;
        depth += 1;
    }

    let mut steps = [[Step {
        next: 0,
        symbol: 0,
        flags: 0,
    }; 16]; 256];
    let mut state = 0;
    while state < steps.len() {
        let mut nibble = 0;
        while nibble < 16 {
            let mut node = state;
            let mut symbol = 0;
            let mut flags = 0;
            let mut bit = 4;
            while bit > 0 {
                bit -= 1;
                let child = tree[node][(nibble >> bit) & 1];
                if child & LEAF == 0 {
                    node = child as usize;
                } else if child & !LEAF == EOS {
                    flags = FAIL;
                    break;
                } else {
                    symbol = child as u8;
                    flags |= EMIT;
                    node = 0;
                }
            }
            if flags != FAIL && accepting[node] {
                flags |= ACCEPT;
            }
            steps[state][nibble] = Step {
                next: node as u8,
                symbol,
                flags,
            };
            nibble += 1;
        }
        state += 1;
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::{CODES, EOS, LENGTHS};

    #[test]
    fn codes_match_rfc_7541_appendix_b_samples() {
        // (symbol, code, length) rows copied by hand from Appendix B.
        let rows: [(usize, u32, u8); 12] = [
            (0, 0x1ff8, 13),
            (1, 0x7f_ffd8, 23),
            (10, 0x3fff_fffc, 30),
            (usize::from(b' '), 0x14, 6),
            (usize::from(b'0'), 0x0, 5),
            (usize::from(b'X'), 0xfc, 8),
            (usize::from(b'\\'), 0x7_fff0, 19),
            (usize::from(b't'), 0x9, 5),
            (127, 0xfff_fffc, 28),
            (128, 0xf_ffe6, 20),
            (255, 0x3ff_ffee, 26),
            (usize::from(EOS), 0x3fff_ffff, 30),
        ];
        for (symbol, code, len) in rows {
            assert_eq!(
                (CODES[symbol], LENGTHS[symbol]),
                (code, len),
                "symbol {symbol}"
            );
        }
    }
}
