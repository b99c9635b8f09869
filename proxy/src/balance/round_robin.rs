//! Smooth weighted round robin, as in NGINX's `ngx_http_upstream_get_peer`.
//!
//! Each pick adds every endpoint's weight to its running score, picks the highest score (the
//! first on ties) and subtracts the total weight from it. Over any `total` consecutive picks each
//! endpoint is picked exactly `weight` times, and picks of a heavy endpoint are spread out rather
//! than bunched: weights 5, 1, 1 give `a a b a c a a`. With equal weights this is plain rotation,
//! which is done directly in O(1).

/// Round-robin state over a non-empty endpoint list.
#[derive(Debug, Clone)]
pub(crate) enum RoundRobin {
    /// All weights equal: the next index to return.
    Rotate { len: usize, next: usize },
    /// NGINX's smooth weighted round robin; O(endpoints) per pick.
    Smooth { peers: Vec<Peer>, total: i64 },
}

#[derive(Debug, Clone)]
pub(crate) struct Peer {
    weight: i64,
    /// NGINX's `current_weight`. Always within `-total..=total`.
    current: i64,
}

impl RoundRobin {
    /// Starts before the first endpoint. `weights` is non-empty.
    pub(crate) fn new(weights: &[u32]) -> Self {
        if weights.windows(2).all(|pair| pair[0] == pair[1]) {
            return Self::Rotate {
                len: weights.len(),
                next: 0,
            };
        }
        let peers: Vec<Peer> = weights
            .iter()
            .map(|&weight| Peer {
                weight: i64::from(weight),
                current: 0,
            })
            .collect();
        let total = peers.iter().map(|peer| peer.weight).sum();
        Self::Smooth { peers, total }
    }

    pub(crate) fn pick(&mut self) -> usize {
        match self {
            Self::Rotate { len, next } => {
                let index = *next;
                *next = (index + 1) % *len;
                index
            }
            Self::Smooth { peers, total } => {
                let mut best = 0;
                let mut best_current = i64::MIN;
                for (index, peer) in peers.iter_mut().enumerate() {
                    peer.current += peer.weight;
                    if peer.current > best_current {
                        best = index;
                        best_current = peer.current;
                    }
                }
                peers[best].current -= *total;
                best
            }
        }
    }
}
