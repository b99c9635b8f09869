//! Active health checking: every endpoint of a health-checked cluster is probed on an interval
//! (HTTP, gRPC health v1 or TCP connect), and its health flips after consecutive results cross
//! a threshold. The snapshot builder reads the result into EDS health status.
//!
//! As in Envoy, an endpoint starts **unhealthy** (Envoy's `FAILED_ACTIVE_HC` on a new host) and
//! its first passing check makes it healthy at once; after that it takes `unhealthy_threshold`
//! consecutive failures to mark it unhealthy and `healthy_threshold` consecutive passes to mark
//! it healthy again.
//!
//! Load: checks never exceed the [`Checker`]'s concurrency (a semaphore), and the first checks
//! of the targets added in one [`Checker::set_targets`] call are evenly spaced at most 1ms apart
//! over at most one interval, so 10,000 new endpoints are spread over the interval rather than
//! probed at once, while one new endpoint is probed right away. Later checks keep their phase:
//! each starts one interval (plus up to `jitter`) after the previous one was due.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tracing::{debug, info};

mod grpc;
mod probe;
mod schedule;

/// One endpoint of one cluster to check, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The cluster the endpoint belongs to; also the default `Host` / `:authority` of checks.
    pub cluster: String,
    /// The endpoint.
    pub address: SocketAddr,
    /// How to check it.
    pub check: CheckSpec,
}

/// How and how often to check an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckSpec {
    /// What a check sends and what passes.
    pub protocol: Protocol,
    /// Time between the starts of two checks (at least 1ms).
    pub interval: Duration,
    /// How long one check may take, connect included; a check that takes longer fails.
    pub timeout: Duration,
    /// Consecutive passes that make an unhealthy endpoint healthy (at least 1). The first
    /// check of a new endpoint needs only one.
    pub healthy_threshold: u32,
    /// Consecutive failures that make a healthy endpoint unhealthy (at least 1).
    pub unhealthy_threshold: u32,
    /// Up to this much random time is added to each interval, so checks that started
    /// together drift apart.
    pub jitter: Duration,
}

impl CheckSpec {
    /// A spec with Envoy-like defaults: every 5s, 1s timeout, thresholds 1 and 3, no jitter.
    pub fn new(protocol: Protocol) -> Self {
        Self {
            protocol,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            healthy_threshold: 1,
            unhealthy_threshold: 3,
            jitter: Duration::ZERO,
        }
    }
}

/// The kind of check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protocol {
    /// An HTTP/1.1 `GET path` on a new connection; passes when the status is in `expected`.
    Http {
        /// The request path, e.g. `/healthz`.
        path: String,
        /// The `Host` header; the cluster name when `None` (as Envoy does).
        host: Option<String>,
        /// Passing statuses; `200..=299` when empty.
        expected: Vec<RangeInclusive<u16>>,
    },
    /// `grpc.health.v1.Health/Check` over h2c; passes when the answer is `SERVING`.
    Grpc {
        /// The service name asked about; `None` asks about the server as a whole.
        service: Option<String>,
        /// The `:authority`; the cluster name when `None` (as Envoy does).
        authority: Option<String>,
    },
    /// A TCP connect; passes when the connection is established.
    Tcp,
}

impl Protocol {
    /// An HTTP check of `path` expecting `200..=299`, with the cluster name as `Host`.
    pub fn http(path: impl Into<String>) -> Self {
        Self::Http {
            path: path.into(),
            host: None,
            expected: Vec::new(),
        }
    }

    /// A gRPC health check of `service` (`None`: the whole server).
    pub fn grpc(service: Option<String>) -> Self {
        Self::Grpc {
            service,
            authority: None,
        }
    }
}

/// An endpoint's health as the checker sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointHealth {
    /// Whether proxies should send it traffic. `false` until the first check passes.
    pub healthy: bool,
    /// Passes in a row, up to the latest check.
    pub consecutive_successes: u32,
    /// Failures in a row, up to the latest check.
    pub consecutive_failures: u32,
    /// The latest check; `None` before the first one ends.
    pub last: Option<CheckResult>,
}

impl EndpointHealth {
    /// The state of an endpoint never checked: unhealthy, no result.
    pub fn new() -> Self {
        Self {
            healthy: false,
            consecutive_successes: 0,
            consecutive_failures: 0,
            last: None,
        }
    }

    /// Applies one check result under `spec`'s thresholds; returns whether `healthy` flipped.
    pub fn record(&mut self, spec: &CheckSpec, result: CheckResult) -> bool {
        let first = self.last.is_none();
        let was = self.healthy;
        match result.outcome {
            Outcome::Pass => {
                self.consecutive_failures = 0;
                self.consecutive_successes = self.consecutive_successes.saturating_add(1);
                if first || self.consecutive_successes >= spec.healthy_threshold {
                    self.healthy = true;
                }
            }
            Outcome::Fail => {
                self.consecutive_successes = 0;
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                if self.consecutive_failures >= spec.unhealthy_threshold {
                    self.healthy = false;
                }
            }
        }
        self.last = Some(result);
        self.healthy != was
    }
}

impl Default for EndpointHealth {
    fn default() -> Self {
        Self::new()
    }
}

/// One finished check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// When it started.
    pub at: Instant,
    /// Pass or fail.
    pub outcome: Outcome,
    /// What happened, for people: `status 200`, `status 503`, `SERVING`, `NOT_SERVING`,
    /// `connect failed: Connection refused (os error 111)`, `timed out after 1s`.
    pub detail: String,
    /// From start to result.
    pub latency: Duration,
}

/// Whether a check passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The endpoint answered as expected.
    Pass,
    /// It did not: refused, timed out, or answered something unexpected.
    Fail,
}

type Key = (String, SocketAddr);

/// Runs the checks of a set of targets and keeps their health. Dropping it stops every check.
#[derive(Debug)]
pub struct Checker {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    permits: Semaphore,
    slots: Mutex<HashMap<Key, Slot>>,
    changes: watch::Sender<u64>,
    generation: AtomicU64,
}

#[derive(Debug)]
struct Slot {
    target: Target,
    health: EndpointHealth,
    task: AbortHandle,
    /// Which task owns the slot: a replaced task's late result is dropped.
    generation: u64,
}

impl Checker {
    /// A checker with no targets that runs at most `max_concurrency` (at least 1) checks at
    /// a time.
    pub fn new(max_concurrency: usize) -> Arc<Self> {
        Arc::new(Self {
            shared: Arc::new(Shared {
                permits: Semaphore::new(max_concurrency.max(1)),
                slots: Mutex::new(HashMap::new()),
                changes: watch::Sender::new(0),
                generation: AtomicU64::new(0),
            }),
        })
    }

    /// Makes `targets` the set checked, keyed by cluster and address (a later duplicate
    /// replaces an earlier one).
    ///
    /// A target already checked with the same spec keeps its task, schedule and health. One
    /// whose spec changed keeps its health, and its checks restart with the new spec. New
    /// targets start unhealthy and their first checks are spread as the module docs say.
    /// Targets no longer present stop being checked and are forgotten.
    ///
    /// # Panics
    ///
    /// Panics outside a tokio runtime (it spawns a task per new target).
    pub fn set_targets(&self, targets: Vec<Target>) {
        let mut wanted: HashMap<Key, Target> = HashMap::with_capacity(targets.len());
        for target in targets {
            wanted.insert((target.cluster.clone(), target.address), target);
        }
        let mut slots = self.shared.lock();
        slots.retain(|key, slot| {
            let keep = wanted.contains_key(key);
            if !keep {
                slot.task.abort();
            }
            keep
        });
        let mut starting: Vec<Target> = wanted
            .into_values()
            .filter(|target| {
                let key = (target.cluster.clone(), target.address);
                slots.get(&key).is_none_or(|slot| slot.target != *target)
            })
            .collect();
        starting.sort_by(|a, b| (&a.cluster, a.address).cmp(&(&b.cluster, b.address)));
        let now = Instant::now();
        let count = starting.len();
        for (index, target) in starting.into_iter().enumerate() {
            let first = now + schedule::first_offset(index, count, target.check.interval);
            let generation = self.shared.next_generation();
            let key = (target.cluster.clone(), target.address);
            let task = tokio::spawn(run(
                self.shared.clone(),
                key.clone(),
                target.clone(),
                generation,
                first,
            ))
            .abort_handle();
            let health = match slots.remove(&key) {
                Some(old) => {
                    old.task.abort();
                    EndpointHealth {
                        consecutive_successes: 0,
                        consecutive_failures: 0,
                        ..old.health
                    }
                }
                None => EndpointHealth::new(),
            };
            slots.insert(
                key,
                Slot {
                    target,
                    health,
                    task,
                    generation,
                },
            );
        }
        debug!(
            targets = slots.len(),
            started = count,
            "health: targets set"
        );
    }

    /// The health of one target; `None` if it is not a target.
    pub fn health(&self, cluster: &str, address: SocketAddr) -> Option<EndpointHealth> {
        let slots = self.shared.lock();
        slots
            .get(&(cluster.to_owned(), address))
            .map(|slot| slot.health.clone())
    }

    /// Every target and its health, ordered by cluster and address.
    pub fn all(&self) -> Vec<(Target, EndpointHealth)> {
        let slots = self.shared.lock();
        let mut all: Vec<(Target, EndpointHealth)> = slots
            .values()
            .map(|slot| (slot.target.clone(), slot.health.clone()))
            .collect();
        all.sort_by(|(a, _), (b, _)| (&a.cluster, a.address).cmp(&(&b.cluster, b.address)));
        all
    }

    /// A receiver of a counter that grows whenever some target's `healthy` flips.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.changes.subscribe()
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        for slot in self.shared.lock().values() {
            slot.task.abort();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, HashMap<Key, Slot>> {
        // Updates under this lock do not panic and leave the map consistent, so a poisoned
        // lock still guards a valid map.
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn next_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Records a result if `generation` still owns the slot; returns whether it does.
    fn record(&self, key: &Key, generation: u64, result: CheckResult) -> bool {
        let mut slots = self.lock();
        let Some(slot) = slots.get_mut(key).filter(|s| s.generation == generation) else {
            return false;
        };
        let detail = result.detail.clone();
        if slot.health.record(&slot.target.check, result) {
            let healthy = slot.health.healthy;
            drop(slots);
            info!(cluster = %key.0, address = %key.1, healthy, %detail, "health: endpoint flipped");
            self.changes.send_modify(|n| *n += 1);
        }
        true
    }
}

/// Checks one target until its slot is taken over or removed.
async fn run(shared: Arc<Shared>, key: Key, target: Target, generation: u64, first: Instant) {
    let spec = &target.check;
    let mut due = first;
    loop {
        tokio::time::sleep_until(due).await;
        let result = {
            let Ok(_permit) = shared.permits.acquire().await else {
                return;
            };
            let at = Instant::now();
            let (outcome, detail) =
                match tokio::time::timeout(spec.timeout, probe::check(&target)).await {
                    Ok(answer) => answer,
                    Err(_) => (
                        Outcome::Fail,
                        format!("timed out after {}", schedule::show(spec.timeout)),
                    ),
                };
            CheckResult {
                at,
                outcome,
                detail,
                latency: at.elapsed(),
            }
        };
        if !shared.record(&key, generation, result) {
            return;
        }
        let jitter = schedule::sample(spec.jitter, fastrand::f64());
        due = schedule::next(due, spec.interval, jitter, Instant::now());
    }
}

#[cfg(test)]
mod tests;
