//! Metrics: per-worker shards written without shared atomics, summed when scraped.
//!
//! Each worker owns a [`Shard`]. Its cells are atomics written only by that worker with a
//! relaxed load and a relaxed store (no read-modify-write, so no bus lock and no cache line
//! bouncing between cores); the admin thread reads them at scrape time and sums the shards.
//! Stats objects for a listener, route or cluster are registered once per worker (when the
//! worker first sees them) and found again by name, so they survive config swaps. See
//! docs/metrics.md for every metric.

mod cell;
mod collect;
mod histogram;
mod shard;

pub use cell::{Counter, Gauge};
pub use collect::{Collected, Globals, LineCounts};
pub use histogram::{BUCKETS, Histogram};
pub use shard::{ClusterStats, EndpointStats, ListenerStats, RouteStats, Shard, status_class};
