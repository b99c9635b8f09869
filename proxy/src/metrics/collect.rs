//! Scraping: sums the workers' shards and encodes them in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::{BUCKETS, Shard};

/// Process-wide values that are not per worker.
#[derive(Debug)]
pub struct Globals {
    /// The active snapshot's version.
    pub config_version: AtomicU64,
    /// Config reloads applied.
    pub reloads_applied: AtomicU64,
    /// Config reloads rejected (the previous config kept serving).
    pub reloads_rejected: AtomicU64,
    /// The I/O backend in use (`epoll` or `uring`).
    pub io_backend: &'static str,
    /// Access-log lines written and dropped, when an access log is configured.
    pub access_log: Option<Arc<dyn LineCounts>>,
}

/// Lines written and dropped by an access log.
pub trait LineCounts: std::fmt::Debug + Send + Sync {
    /// `(written, dropped)` so far.
    fn line_counts(&self) -> (u64, u64);
}

/// Everything `/metrics` shows.
#[derive(Debug, Clone)]
pub struct Collected {
    shards: Vec<Arc<Shard>>,
    globals: Arc<Globals>,
}

type Labels = Vec<(&'static str, String)>;

impl Collected {
    /// Collects from these shards and globals.
    pub fn new(shards: Vec<Arc<Shard>>, globals: Arc<Globals>) -> Self {
        Self { shards, globals }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self.clone()));
        let mut text = String::new();
        if prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).is_err() {
            let _ = writeln!(text, "# encoding failed");
        }
        text
    }
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn counters(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: BTreeMap<Labels, u64>,
) -> std::fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in &rows {
        metric
            .encode_family(labels)?
            .encode_counter::<NoLabelSet, _, u64>(value, None)?;
    }
    Ok(())
}

fn gauges(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: BTreeMap<Labels, i64>,
) -> std::fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in &rows {
        metric.encode_family(labels)?.encode_gauge(value)?;
    }
    Ok(())
}

fn histograms(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: BTreeMap<Labels, ([u64; 15], u64)>,
) -> std::fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, (counts, sum_us)) in &rows {
        let buckets: Vec<(f64, u64)> = BUCKETS
            .iter()
            .copied()
            .zip(counts.iter().copied())
            .collect();
        let count = counts.iter().sum();
        #[allow(clippy::cast_precision_loss)] // microsecond sums fit f64 exactly up to 2^53
        let sum = *sum_us as f64 / 1e6;
        metric
            .encode_family(labels)?
            .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
    }
    Ok(())
}

fn labels<const N: usize>(pairs: [(&'static str, &str); N]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

impl Collector for Collected {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let mut conn_total = BTreeMap::new();
        let mut conn_active = BTreeMap::new();
        let mut worker_requests = BTreeMap::new();
        let mut io_ops = BTreeMap::new();
        let mut io_bufs = BTreeMap::new();
        let mut requests = BTreeMap::new();
        let mut duration = BTreeMap::new();
        let mut upstream = BTreeMap::new();
        let mut cluster_counters: [BTreeMap<Labels, u64>; 7] = Default::default();
        let mut pending = BTreeMap::new();
        let mut active = BTreeMap::new();
        let mut http2_resets = BTreeMap::new();
        let mut http2_errors = BTreeMap::new();
        for shard in &self.shards {
            let worker = shard.worker().to_string();
            worker_requests.insert(labels([("worker", &worker)]), shard.requests.get());
            io_ops.insert(labels([("worker", &worker)]), shard.io_ops_in_flight.get());
            io_bufs.insert(labels([("worker", &worker)]), shard.io_buffers_held.get());
            for l in shard.listeners() {
                let key = labels([("listener", &l.name), ("worker", &worker)]);
                *conn_total.entry(key.clone()).or_default() += l.connections_total.get();
                *conn_active.entry(key).or_default() += l.connections_active.get();
                for (by, counter) in [
                    ("client", &l.http2_client_resets),
                    ("proxy", &l.http2_proxy_resets),
                ] {
                    let key = labels([("listener", &l.name), ("by", by)]);
                    *http2_resets.entry(key).or_default() += counter.get();
                }
                *http2_errors
                    .entry(labels([("listener", &l.name)]))
                    .or_default() += l.http2_connection_errors.get();
                let entry: &mut ([u64; 15], u64) =
                    duration.entry(labels([("listener", &l.name)])).or_default();
                entry.1 += l.duration.add_into(&mut entry.0);
                for (class, counter) in CLASSES.iter().zip(&l.unrouted) {
                    let key = labels([
                        ("listener", &l.name),
                        ("route", ""),
                        ("cluster", ""),
                        ("class", class),
                    ]);
                    *requests.entry(key).or_default() += counter.get();
                }
            }
            for r in shard.routes() {
                for (cluster, classes) in &r.slots {
                    for (class, counter) in CLASSES.iter().zip(classes) {
                        let key = labels([
                            ("listener", &r.listener),
                            ("route", &r.route),
                            ("cluster", cluster),
                            ("class", class),
                        ]);
                        *requests.entry(key).or_default() += counter.get();
                    }
                }
            }
            for c in shard.clusters() {
                let key = labels([("cluster", &c.name)]);
                let entry: &mut ([u64; 15], u64) = upstream.entry(key.clone()).or_default();
                entry.1 += c.upstream_duration.add_into(&mut entry.0);
                let values = [
                    c.connections_opened.get(),
                    c.connection_reuses.get(),
                    c.connections_purged.get(),
                    c.connect_failures.get(),
                    c.connect_timeouts.get(),
                    c.timeouts.get(),
                    c.resets.get(),
                ];
                for (map, value) in cluster_counters.iter_mut().zip(values) {
                    *map.entry(key.clone()).or_default() += value;
                }
                *pending.entry(key.clone()).or_default() += c.pending.get();
                *active.entry(key).or_default() += c.active.get();
            }
        }
        let e = &mut encoder;
        counters(
            e,
            "strait_downstream_connections",
            "Downstream connections accepted.",
            conn_total,
        )?;
        gauges(
            e,
            "strait_downstream_connections_active",
            "Downstream connections open.",
            conn_active,
        )?;
        counters(
            e,
            "strait_http2_streams_reset",
            "HTTP/2 streams reset before their response ended, by the client or the proxy.",
            http2_resets,
        )?;
        counters(
            e,
            "strait_http2_connection_errors",
            "HTTP/2 connections ended by the proxy with GOAWAY and an error code.",
            http2_errors,
        )?;
        counters(
            e,
            "strait_worker_requests",
            "Requests received, per worker.",
            worker_requests,
        )?;
        counters(
            e,
            "strait_requests",
            "Responses sent, by route, cluster and status class.",
            requests,
        )?;
        histograms(
            e,
            "strait_request_duration_seconds",
            "Time from request head received to response body sent.",
            duration,
        )?;
        histograms(
            e,
            "strait_upstream_request_duration_seconds",
            "Time from request sent upstream to response head received.",
            upstream,
        )?;
        let [
            opened,
            reused,
            purged,
            failures,
            connect_timeouts,
            timeouts,
            resets,
        ] = cluster_counters;
        counters(
            e,
            "strait_upstream_connections",
            "Upstream connections opened.",
            opened,
        )?;
        counters(
            e,
            "strait_upstream_connection_reuses",
            "Requests sent on an already open upstream connection.",
            reused,
        )?;
        counters(
            e,
            "strait_upstream_connections_purged",
            "Idle upstream connections closed by the pool's purge.",
            purged,
        )?;
        counters(
            e,
            "strait_upstream_connect_failures",
            "Upstream connects that failed.",
            failures,
        )?;
        counters(
            e,
            "strait_upstream_connect_timeouts",
            "Upstream connects that timed out.",
            connect_timeouts,
        )?;
        counters(
            e,
            "strait_upstream_timeouts",
            "Upstream responses not started within the route timeout.",
            timeouts,
        )?;
        counters(
            e,
            "strait_upstream_resets",
            "Upstream connections reset or closed before a response.",
            resets,
        )?;
        gauges(
            e,
            "strait_upstream_requests_pending",
            "Requests waiting for an upstream connection.",
            pending,
        )?;
        gauges(
            e,
            "strait_upstream_requests_active",
            "Requests sent upstream and not finished.",
            active,
        )?;

        gauges(
            e,
            "strait_io_uring_operations_in_flight",
            "io_uring operations in flight or awaiting cancellation, per worker.",
            io_ops,
        )?;
        gauges(
            e,
            "strait_io_uring_buffers_held",
            "io_uring provided receive buffers holding data not read yet, per worker.",
            io_bufs,
        )?;
        let g = &self.globals;
        let one = |v: u64| BTreeMap::from([(Labels::new(), v)]);
        #[allow(clippy::cast_possible_wrap)] // versions stay far below 2^63
        let version = g.config_version.load(Ordering::Relaxed) as i64;
        gauges(
            e,
            "strait_config_version",
            "Version of the active config.",
            BTreeMap::from([(Labels::new(), version)]),
        )?;
        let mut reloads = BTreeMap::new();
        reloads.insert(
            labels([("result", "applied")]),
            g.reloads_applied.load(Ordering::Relaxed),
        );
        reloads.insert(
            labels([("result", "rejected")]),
            g.reloads_rejected.load(Ordering::Relaxed),
        );
        counters(
            e,
            "strait_config_reloads",
            "Config reloads, applied or rejected.",
            reloads,
        )?;
        gauges(
            e,
            "strait_io_backend",
            "The socket I/O backend in use (1 for the one in use).",
            BTreeMap::from([(labels([("backend", g.io_backend)]), 1)]),
        )?;
        if let Some(access_log) = &g.access_log {
            let (written, dropped) = access_log.line_counts();
            counters(
                e,
                "strait_access_log_lines_written",
                "Access-log lines written.",
                one(written),
            )?;
            counters(
                e,
                "strait_access_log_lines_dropped",
                "Access-log lines dropped because the queue was full.",
                one(dropped),
            )?;
        }
        Ok(())
    }
}
