//! Where each cluster's endpoints come from, and whether each is healthy: the config's static
//! endpoints, the registry, DNS, and the health checker, combined into one view that the
//! snapshot is rebuilt from whenever any of them changes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use strait_config::xds::EdsEndpoint;
use strait_config::{Cluster, Config, Discovery, HealthProtocol};
use tokio::sync::watch;

use crate::health::{self, Checker};
use crate::registry::{self, Registry};

/// DNS answers are re-resolved when their TTL ends, but not more often than this...
const DNS_MIN_INTERVAL: Duration = Duration::from_secs(5);
/// ...and at least this often.
const DNS_MAX_INTERVAL: Duration = Duration::from_secs(300);
/// How often lapsed registrations are removed.
const EXPIRY_EVERY: Duration = Duration::from_millis(250);
/// Health checks in flight at once, over every cluster.
const CHECK_CONCURRENCY: usize = 256;

/// The control plane's sources of endpoints and health.
#[derive(Debug)]
pub struct Sources {
    config: RwLock<Arc<Config>>,
    registry: Arc<Registry>,
    checker: Arc<Checker>,
    dns: Mutex<HashMap<(String, u16), Vec<SocketAddr>>>,
    /// Bumped when the set of endpoints may have changed (config, registry, DNS).
    membership: watch::Sender<u64>,
    /// Bumped on any change a snapshot depends on (membership and health).
    changes: watch::Sender<u64>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Sources {
    /// Starts the registry's expiry, DNS resolution and health checking for `config`.
    pub fn start(config: Config, stop: watch::Receiver<bool>) -> Arc<Self> {
        let (membership, _) = watch::channel(0);
        let (changes, _) = watch::channel(0);
        let sources = Arc::new(Self {
            config: RwLock::new(Arc::new(config)),
            registry: Registry::new(),
            checker: Checker::new(CHECK_CONCURRENCY),
            dns: Mutex::new(HashMap::new()),
            membership,
            changes,
        });
        let expiry = registry::spawn_expiry(Arc::clone(&sources.registry), EXPIRY_EVERY);
        tokio::spawn(forward(Arc::clone(&sources), stop.clone(), expiry));
        tokio::spawn(resolve(Arc::clone(&sources), stop));
        sources.reconcile_health();
        sources
    }

    /// The active config.
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(
            &self
                .config
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Replaces the config.
    pub fn set_config(&self, config: Config) {
        *self
            .config
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(config);
        self.membership.send_modify(|n| *n += 1);
        self.reconcile_health();
        self.changes.send_modify(|n| *n += 1);
    }

    /// The registry behind the registration API.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The health checker.
    pub fn checker(&self) -> &Arc<Checker> {
        &self.checker
    }

    /// Bumped whenever a snapshot should be rebuilt.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// A cluster's endpoints (addresses and weights) before health.
    pub fn members(&self, cluster: &Cluster) -> Vec<(SocketAddr, u32)> {
        match cluster.discovery() {
            Some(Discovery::Registry(service)) => self
                .registry
                .endpoints(service)
                .into_iter()
                .map(|e| (e.address, e.weight))
                .collect(),
            Some(Discovery::Dns { host, port }) => lock(&self.dns)
                .get(&(host.clone(), *port))
                .map(|addrs| addrs.iter().map(|a| (*a, 1)).collect())
                .unwrap_or_default(),
            _ => cluster
                .endpoints()
                .iter()
                .map(|e| (e.address(), e.weight()))
                .collect(),
        }
    }

    /// A cluster's endpoints with their health, as EDS sends them.
    pub fn endpoints(&self, cluster: &Cluster) -> Vec<EdsEndpoint> {
        let checked = cluster.health_check().is_some();
        self.members(cluster)
            .into_iter()
            .map(|(address, weight)| EdsEndpoint {
                address,
                weight,
                healthy: !checked
                    || self
                        .checker
                        .health(cluster.name(), address)
                        .is_some_and(|h| h.healthy),
            })
            .collect()
    }

    /// Points the health checker at every endpoint of every cluster that asks for checks.
    fn reconcile_health(&self) {
        let config = self.config();
        let targets = config
            .clusters()
            .iter()
            .filter_map(|c| c.health_check().map(|check| (c, spec(check))))
            .flat_map(|(cluster, spec)| {
                self.members(cluster)
                    .into_iter()
                    .map(move |(address, _)| health::Target {
                        cluster: cluster.name().to_owned(),
                        address,
                        check: spec.clone(),
                    })
            })
            .collect();
        self.checker.set_targets(targets);
    }
}

/// The checker's form of a cluster's `health_check`.
fn spec(check: &strait_config::HealthCheck) -> health::CheckSpec {
    let protocol = match check.protocol() {
        HealthProtocol::Http {
            path,
            host,
            expected_statuses,
        } => health::Protocol::Http {
            path: path.clone(),
            host: host.clone(),
            expected: expected_statuses.iter().map(|s| *s..=*s).collect(),
        },
        HealthProtocol::Grpc { service } => health::Protocol::Grpc {
            service: (!service.is_empty()).then(|| service.clone()),
            authority: None,
        },
        HealthProtocol::Tcp => health::Protocol::Tcp,
    };
    let mut spec = health::CheckSpec::new(protocol);
    spec.interval = check.interval();
    spec.timeout = check.timeout();
    spec.jitter = check.jitter();
    spec.healthy_threshold = check.healthy_threshold();
    spec.unhealthy_threshold = check.unhealthy_threshold();
    spec
}

/// Turns registry and health changes into snapshot rebuilds (and health target updates).
async fn forward(
    sources: Arc<Sources>,
    mut stop: watch::Receiver<bool>,
    expiry: tokio::task::JoinHandle<()>,
) {
    let mut registry = sources.registry.subscribe();
    let mut health = sources.checker.subscribe();
    let mut membership = sources.membership.subscribe();
    loop {
        tokio::select! {
            changed = registry.changed() => {
                if changed.is_err() { break; }
                sources.reconcile_health();
            }
            changed = membership.changed() => {
                if changed.is_err() { break; }
                sources.reconcile_health();
            }
            changed = health.changed() => {
                if changed.is_err() { break; }
            }
            _ = stop.wait_for(|stop| *stop) => break,
        }
        sources.changes.send_modify(|n| *n += 1);
    }
    expiry.abort();
    sources.checker.set_targets(Vec::new());
}

/// Resolves every `discovery: { dns }` cluster, again as each answer's TTL ends.
async fn resolve(sources: Arc<Sources>, mut stop: watch::Receiver<bool>) {
    let resolver = match hickory_resolver::TokioResolver::builder_tokio().and_then(|b| b.build()) {
        Ok(resolver) => resolver,
        Err(err) => {
            tracing::error!(error = %err, "DNS resolver could not start; DNS clusters stay empty");
            return;
        }
    };
    let mut membership = sources.membership.subscribe();
    loop {
        let config = sources.config();
        let targets: Vec<(String, u16)> = config
            .clusters()
            .iter()
            .filter_map(|c| match c.discovery() {
                Some(Discovery::Dns { host, port }) => Some((host.clone(), *port)),
                _ => None,
            })
            .collect();
        let mut next = DNS_MAX_INTERVAL;
        let mut changed = false;
        for (host, port) in &targets {
            let (addresses, wait) = match resolver.lookup_ip(host.as_str()).await {
                Ok(answer) => {
                    let mut addresses: Vec<SocketAddr> =
                        answer.iter().map(|ip| SocketAddr::new(ip, *port)).collect();
                    addresses.sort();
                    addresses.dedup();
                    // hickory's expiry is a std Instant: compare it with std's clock.
                    #[allow(clippy::disallowed_types)]
                    let ttl = answer
                        .valid_until()
                        .saturating_duration_since(std::time::Instant::now());
                    (Some(addresses), ttl)
                }
                Err(err) => {
                    // Keep the last answer: a resolver hiccup must not empty a cluster.
                    tracing::warn!(host = %host, error = %err, "DNS lookup failed; keeping the last answer");
                    (None, DNS_MIN_INTERVAL)
                }
            };
            next = next.min(wait.clamp(DNS_MIN_INTERVAL, DNS_MAX_INTERVAL));
            if let Some(addresses) = addresses {
                let mut cache = lock(&sources.dns);
                let key = (host.clone(), *port);
                if cache.get(&key) != Some(&addresses) {
                    tracing::info!(host = %host, port, ?addresses, "DNS answer changed");
                    cache.insert(key, addresses);
                    changed = true;
                }
            }
        }
        if changed {
            sources.reconcile_health();
            sources.changes.send_modify(|n| *n += 1);
        }
        tokio::select! {
            () = tokio::time::sleep(next) => {}
            changed = membership.changed() => {
                if changed.is_err() { return; }
            }
            _ = stop.wait_for(|stop| *stop) => return,
        }
    }
}
