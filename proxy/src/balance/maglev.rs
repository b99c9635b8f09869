//! Maglev consistent hashing (Eisenbud et al., NSDI 2016), weighted as in Envoy.
//!
//! Every endpoint has a preference order over the [`TABLE_SIZE`] slots, a permutation given by
//! an offset and a skip hashed from its address. Endpoints take turns claiming their next
//! preferred free slot until the table is full; an endpoint of weight `w` takes a turn in
//! `w / max_weight` of the rounds, so slots, and keys, split in proportion to weight. A key
//! belongs to `table[hash % TABLE_SIZE]`: one lookup, no search.
//!
//! Turns go in address order, not cluster order, so the table depends only on the set of
//! endpoints. Removing an endpoint frees its slots and disturbs a few others, far fewer than a
//! modulo hash would.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use super::{KeyHasher, addr_order};

/// A prime, so every skip in `1..TABLE_SIZE` walks all slots; Envoy's default. Much larger than
/// any cluster, as the paper advises (at least 100 times the endpoint count).
const TABLE_SIZE: u64 = 65_537;
/// Marks a slot no endpoint has claimed yet during the build.
const FREE: u32 = u32::MAX;

/// The lookup table over a non-empty endpoint list. Cloning shares it.
#[derive(Clone)]
pub(crate) struct Maglev {
    /// Endpoint index per slot; `TABLE_SIZE` entries, all claimed.
    table: Arc<[u32]>,
}

/// One endpoint's progress through its permutation during the build.
struct Turn {
    index: u32,
    offset: u64,
    skip: u64,
    /// How many entries of its permutation it has tried.
    next: u64,
    weight: u64,
    /// Envoy's `target_weight`: it takes a turn in round `r` when `r * weight >= target`.
    target: u64,
}

impl Maglev {
    /// `endpoints` is non-empty and each weight is in 1..=1000.
    pub(crate) fn new(endpoints: &[(SocketAddr, u32)]) -> Self {
        let mut turns: Vec<(SocketAddr, Turn)> = endpoints
            .iter()
            .enumerate()
            .map(|(index, &(addr, weight))| {
                let mut offset = KeyHasher::new(0);
                offset.write_addr(addr);
                let mut skip = KeyHasher::new(1);
                skip.write_addr(addr);
                let turn = Turn {
                    // An endpoint list of 2^32 entries would need over 100 GB, so the index fits.
                    index: index as u32,
                    offset: offset.finish() % TABLE_SIZE,
                    skip: skip.finish() % (TABLE_SIZE - 1) + 1,
                    next: 0,
                    weight: u64::from(weight),
                    target: 0,
                };
                (addr, turn)
            })
            .collect();
        turns.sort_by_key(|(addr, turn)| (addr_order(addr), turn.index));
        let max_weight = turns.iter().map(|(_, turn)| turn.weight).max().unwrap_or(1);

        let mut table = vec![FREE; TABLE_SIZE as usize];
        let mut claimed = 0;
        // Ends: the heaviest endpoint takes a turn every round and each turn claims a free slot.
        'rounds: for round in 0u64.. {
            for (_, turn) in &mut turns {
                if round * turn.weight < turn.target {
                    continue;
                }
                turn.target += max_weight;
                let mut slot = (turn.offset + turn.next * turn.skip) % TABLE_SIZE;
                while table[slot as usize] != FREE {
                    turn.next += 1;
                    slot = (turn.offset + turn.next * turn.skip) % TABLE_SIZE;
                }
                table[slot as usize] = turn.index;
                turn.next += 1;
                claimed += 1;
                if claimed == TABLE_SIZE {
                    break 'rounds;
                }
            }
        }
        Self {
            table: table.into(),
        }
    }

    /// The endpoint owning the key's slot.
    pub(crate) fn pick(&self, hash: u64) -> usize {
        self.table[(hash % TABLE_SIZE) as usize] as usize
    }
}

impl fmt::Debug for Maglev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Maglev")
            .field("table_size", &self.table.len())
            .finish_non_exhaustive()
    }
}
