//! The service registry: services and their endpoints as registered through the registration
//! API, before health checking and snapshot building (see `docs/registry.md`).
//!
//! A service exists while it has at least one endpoint. An endpoint is keyed by service and
//! address; registering it again replaces its weight, zone, metadata and TTL (an idempotent
//! upsert). Its TTL starts again at every registration and heartbeat; once it lapses the
//! endpoint is invisible to readers at once and removed by the next [`Registry::expire`] (run
//! periodically by [`spawn_expiry`]).
//!
//! Invariants: every stored [`Registration`] has passed [`Registration::validate`], and the
//! version seen through [`Registry::subscribe`] grows on every change a reader can see (an
//! endpoint added, changed or removed), never on a heartbeat alone.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry as MapEntry;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use http::StatusCode;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::info;

mod api;
mod validate;

pub use api::serve;
pub use validate::{
    DEFAULT_TTL, DEFAULT_WEIGHT, MAX_METADATA_ENTRIES, MAX_METADATA_VALUE_LEN, MAX_NAME_LEN,
    MAX_TTL, MAX_WEIGHT, MIN_TTL, Problem, duration, format_duration,
};

/// What a client asks to register: one endpoint of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The endpoint's `ip:port`: not port 0, not an unspecified address.
    pub address: SocketAddr,
    /// Its share of load, `1..=1000` ([`DEFAULT_WEIGHT`] is 1).
    pub weight: u32,
    /// Its zone, for zone-aware balancing; same characters as a service name.
    pub zone: Option<String>,
    /// Free-form labels (up to [`MAX_METADATA_ENTRIES`]), passed to proxies as endpoint metadata.
    pub metadata: BTreeMap<String, String>,
    /// How long the endpoint lives without a heartbeat, `1s..=1h` ([`DEFAULT_TTL`] is 30s).
    pub ttl: Duration,
}

impl Registration {
    /// A registration of `address` with the defaults: weight 1, no zone, no metadata, TTL 30s.
    pub fn new(address: SocketAddr) -> Self {
        Self {
            address,
            weight: DEFAULT_WEIGHT,
            zone: None,
            metadata: BTreeMap::new(),
            ttl: DEFAULT_TTL,
        }
    }

    /// Checks every rule and returns every broken one.
    ///
    /// # Errors
    ///
    /// The problems, in field order, when any rule is broken.
    pub fn validate(&self) -> Result<(), Vec<Problem>> {
        let mut problems = Vec::new();
        if let Err(rule) = validate::check_address(self.address) {
            problems.push(Problem::new("address", self.address.to_string(), rule));
        }
        if let Err(problem) = validate::weight(i64::from(self.weight)) {
            problems.push(problem);
        }
        if let Some(zone) = &self.zone
            && let Err(problem) = validate::zone(zone)
        {
            problems.push(problem);
        }
        validate::metadata(&self.metadata, &mut problems);
        if let Err(rule) = validate::ttl(self.ttl) {
            problems.push(Problem::new("ttl", format_duration(self.ttl), rule));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

/// A registered endpoint as readers see it: its registration and when it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// The service it belongs to.
    pub service: String,
    /// Its `ip:port`.
    pub address: SocketAddr,
    /// Its weight, `1..=1000`.
    pub weight: u32,
    /// Its zone.
    pub zone: Option<String>,
    /// Its labels.
    pub metadata: BTreeMap<String, String>,
    /// The TTL each registration or heartbeat grants.
    pub ttl: Duration,
    /// When it expires unless a heartbeat or registration comes first.
    pub expires_at: Instant,
}

/// Why a registry operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The request broke one or more rules (fault: the client).
    #[error("invalid registration: {}", join(problems))]
    Invalid {
        /// Every broken rule.
        problems: Vec<Problem>,
    },
    /// No such endpoint is registered, or its TTL has lapsed.
    #[error("endpoint {address} of service {service:?} is not registered")]
    NotFound {
        /// The service named in the request.
        service: String,
        /// The address named in the request.
        address: SocketAddr,
    },
}

impl RegistryError {
    /// The HTTP status the registration API answers with: 400 or 404.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Invalid { .. } => StatusCode::BAD_REQUEST,
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
        }
    }

    /// A stable label for logs, metrics and the API's `error` field.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Invalid { .. } => "invalid_registration",
            Self::NotFound { .. } => "endpoint_not_found",
        }
    }

    fn invalid(problem: Problem) -> Self {
        Self::Invalid {
            problems: vec![problem],
        }
    }
}

fn join(problems: &[Problem]) -> String {
    let parts: Vec<String> = problems.iter().map(ToString::to_string).collect();
    parts.join("; ")
}

/// The in-memory registry of services and their endpoints; cheap to share as `Arc<Registry>`.
#[derive(Debug)]
pub struct Registry {
    state: Mutex<State>,
    version: watch::Sender<u64>,
}

impl Registry {
    /// An empty registry at version 0.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::default()),
            version: watch::Sender::new(0),
        })
    }

    /// Registers `reg` under `service`, or replaces the registration of the same address, and
    /// starts its TTL again.
    ///
    /// # Errors
    ///
    /// [`RegistryError::Invalid`] when the service name or the registration breaks a rule.
    pub fn register(&self, service: &str, reg: Registration) -> Result<Registered, RegistryError> {
        self.upsert(service, reg).map(|(registered, _)| registered)
    }

    /// As [`register`](Self::register), also saying whether the endpoint is new.
    pub(crate) fn upsert(
        &self,
        service: &str,
        reg: Registration,
    ) -> Result<(Registered, Upsert), RegistryError> {
        validate::service(service).map_err(RegistryError::invalid)?;
        reg.validate()
            .map_err(|problems| RegistryError::Invalid { problems })?;
        let (registered, upsert) = self.lock().upsert(service, reg, Instant::now());
        if upsert != Upsert::Refreshed {
            self.bump();
        }
        Ok((registered, upsert))
    }

    /// Starts the TTL of a registered endpoint again.
    ///
    /// # Errors
    ///
    /// [`RegistryError::NotFound`] when the endpoint is not registered or its TTL has lapsed
    /// (it must register again).
    pub fn heartbeat(
        &self,
        service: &str,
        address: SocketAddr,
    ) -> Result<Registered, RegistryError> {
        let now = Instant::now();
        let mut state = self.lock();
        match state.live_entry(service, address, now) {
            Lookup::Live(entry) => {
                entry.expires_at = now + entry.registration.ttl;
                Ok(entry.registered(service))
            }
            Lookup::Lapsed => {
                state.remove(service, address);
                drop(state);
                self.bump();
                Err(not_found(service, address))
            }
            Lookup::Missing => Err(not_found(service, address)),
        }
    }

    /// Removes an endpoint.
    ///
    /// # Errors
    ///
    /// [`RegistryError::NotFound`] when the endpoint is not registered or its TTL has lapsed.
    pub fn deregister(&self, service: &str, address: SocketAddr) -> Result<(), RegistryError> {
        let now = Instant::now();
        let mut state = self.lock();
        let live = match state.live_entry(service, address, now) {
            Lookup::Live(_) => true,
            Lookup::Lapsed => false,
            Lookup::Missing => return Err(not_found(service, address)),
        };
        state.remove(service, address);
        drop(state);
        self.bump();
        if live {
            Ok(())
        } else {
            Err(not_found(service, address))
        }
    }

    /// The live endpoints of `service`, ordered by address; empty for an unknown service.
    pub fn endpoints(&self, service: &str) -> Vec<Registered> {
        let now = Instant::now();
        let state = self.lock();
        state
            .services
            .get(service)
            .map(|endpoints| live(service, endpoints, now).collect())
            .unwrap_or_default()
    }

    /// One live endpoint.
    pub fn endpoint(&self, service: &str, address: SocketAddr) -> Option<Registered> {
        let now = Instant::now();
        let state = self.lock();
        let entry = state.services.get(service)?.get(&address)?;
        (entry.expires_at > now).then(|| entry.registered(service))
    }

    /// Every service with at least one live endpoint, and its live endpoints.
    pub fn services(&self) -> BTreeMap<String, Vec<Registered>> {
        let now = Instant::now();
        let state = self.lock();
        state
            .services
            .iter()
            .map(|(name, endpoints)| (name.clone(), live(name, endpoints, now).collect::<Vec<_>>()))
            .filter(|(_, endpoints)| !endpoints.is_empty())
            .collect()
    }

    /// A receiver of the registry's version, which grows on every visible change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// The current version.
    pub fn version(&self) -> u64 {
        *self.version.borrow()
    }

    /// Removes every endpoint whose TTL has lapsed; returns how many.
    pub fn expire(&self) -> usize {
        let removed = self.lock().expire(Instant::now());
        if removed > 0 {
            self.bump();
        }
        removed
    }

    fn bump(&self) {
        self.version.send_modify(|version| *version += 1);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No code path panics while holding the lock, and every update leaves the maps
        // consistent before it returns, so a poisoned state is still a valid one.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Runs [`Registry::expire`] every `every` (at least 1ms) until the registry is dropped.
///
/// The task holds only a weak reference, so it ends by itself once every `Arc<Registry>` is
/// gone. An endpoint is invisible to readers from the moment its TTL lapses; this task
/// removes it and bumps the version within `every` of that moment.
pub fn spawn_expiry(registry: Arc<Registry>, every: Duration) -> JoinHandle<()> {
    let registry = Arc::downgrade(&registry);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every.max(Duration::from_millis(1)));
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(registry) = registry.upgrade() else {
                return;
            };
            let removed = registry.expire();
            if removed > 0 {
                info!(removed, "registry: removed endpoints whose TTL lapsed");
            }
        }
    })
}

fn not_found(service: &str, address: SocketAddr) -> RegistryError {
    RegistryError::NotFound {
        service: service.to_owned(),
        address,
    }
}

fn live<'a>(
    service: &'a str,
    endpoints: &'a BTreeMap<SocketAddr, Entry>,
    now: Instant,
) -> impl Iterator<Item = Registered> + 'a {
    endpoints
        .values()
        .filter(move |entry| entry.expires_at > now)
        .map(move |entry| entry.registered(service))
}

/// What a registration did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Upsert {
    /// The endpoint is new (or its previous registration had lapsed).
    Created,
    /// The endpoint existed and its weight, zone, metadata or TTL changed.
    Updated,
    /// The endpoint existed unchanged; only its expiry moved.
    Refreshed,
}

// === impl State ===

/// The maps, with operations that take `now` and never fail: validation is done before.
#[derive(Debug, Default)]
struct State {
    services: BTreeMap<String, BTreeMap<SocketAddr, Entry>>,
}

#[derive(Debug)]
struct Entry {
    registration: Registration,
    expires_at: Instant,
}

enum Lookup<'a> {
    Live(&'a mut Entry),
    Lapsed,
    Missing,
}

impl State {
    fn upsert(&mut self, service: &str, reg: Registration, now: Instant) -> (Registered, Upsert) {
        let endpoints = self.services.entry(service.to_owned()).or_default();
        let expires_at = now + reg.ttl;
        let upsert = match endpoints.entry(reg.address) {
            MapEntry::Vacant(slot) => {
                slot.insert(Entry {
                    registration: reg.clone(),
                    expires_at,
                });
                Upsert::Created
            }
            MapEntry::Occupied(mut slot) => {
                let entry = slot.get_mut();
                let upsert = if entry.expires_at <= now {
                    Upsert::Created
                } else if entry.registration == reg {
                    Upsert::Refreshed
                } else {
                    Upsert::Updated
                };
                entry.registration = reg.clone();
                entry.expires_at = expires_at;
                upsert
            }
        };
        let entry = Entry {
            registration: reg,
            expires_at,
        };
        (entry.registered(service), upsert)
    }

    fn live_entry(&mut self, service: &str, address: SocketAddr, now: Instant) -> Lookup<'_> {
        match self
            .services
            .get_mut(service)
            .and_then(|endpoints| endpoints.get_mut(&address))
        {
            Some(entry) if entry.expires_at > now => Lookup::Live(entry),
            Some(_) => Lookup::Lapsed,
            None => Lookup::Missing,
        }
    }

    fn remove(&mut self, service: &str, address: SocketAddr) {
        if let Some(endpoints) = self.services.get_mut(service) {
            endpoints.remove(&address);
            if endpoints.is_empty() {
                self.services.remove(service);
            }
        }
    }

    fn expire(&mut self, now: Instant) -> usize {
        let mut removed = 0;
        self.services.retain(|_, endpoints| {
            let before = endpoints.len();
            endpoints.retain(|_, entry| entry.expires_at > now);
            removed += before - endpoints.len();
            !endpoints.is_empty()
        });
        removed
    }
}

impl Entry {
    fn registered(&self, service: &str) -> Registered {
        let reg = &self.registration;
        Registered {
            service: service.to_owned(),
            address: reg.address,
            weight: reg.weight,
            zone: reg.zone.clone(),
            metadata: reg.metadata.clone(),
            ttl: reg.ttl,
            expires_at: self.expires_at,
        }
    }
}

#[cfg(test)]
mod tests;
