//! Applying a new config to a running proxy: validate and compile it off the workers, bind the
//! listeners it adds, then swap the snapshot and tell the workers which listeners to start and
//! which to drain.
//!
//! Every source (the admin API's `PUT /config`, SIGHUP, the file watcher) goes through
//! [`Reloader::apply`]. Reloads are serialised by one mutex held by the control thread doing
//! the reload; the workers never take it. A rejected config changes nothing: the previous one
//! keeps serving and `strait_config_reloads_total{result="rejected"}` counts it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use strait_config::{Config, Format};
use tokio::sync::mpsc::UnboundedSender;

use crate::admin::ConfigSource;
use crate::io;
use crate::metrics::{Globals, Shard};
use crate::snapshot::{Compiled, SharedSnapshot};
use crate::worker::Command;

pub mod watch;

/// How long a reload waits for the workers to stop accepting on removed listeners.
const REMOVE_ACK: Duration = Duration::from_secs(5);

/// A listener bound by this process (or inherited from the one it upgraded).
#[derive(Debug)]
pub struct BoundListener {
    /// The listener's name.
    pub name: String,
    /// The address in the config (port 0 means any free port).
    pub address: SocketAddr,
    /// The address actually bound.
    pub bound: SocketAddr,
    /// Duplicates of the workers' listening sockets, kept to hand them to a new binary.
    pub sockets: Vec<std::net::TcpListener>,
}

/// Why a config was not applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The config is invalid; every problem is listed.
    #[error("{0}")]
    Invalid(String),
    /// The config file could not be read.
    #[error("{path} could not be read: {source}")]
    Read {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// A listener the config adds could not be bound.
    #[error("listener {listener} could not bind {address}: {source}")]
    Bind {
        /// The listener's name.
        listener: String,
        /// Its configured address.
        address: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
}

/// What a reload changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The new snapshot's version.
    pub version: u64,
    /// Listeners that started accepting.
    pub added: Vec<String>,
    /// Listeners that stopped accepting and drain.
    pub removed: Vec<String>,
    /// Changes that only take effect after a restart (the rest was applied).
    pub warnings: Vec<String>,
}

#[derive(Debug)]
struct State {
    listeners: Vec<BoundListener>,
    source: Option<ConfigSource>,
}

/// Applies configs to the running workers.
#[derive(Debug)]
pub struct Reloader {
    snapshot: SharedSnapshot,
    globals: Arc<Globals>,
    shards: Vec<Arc<Shard>>,
    commands: Vec<UnboundedSender<Command>>,
    state: Mutex<State>,
}

impl Reloader {
    /// A reloader for workers reached through `commands`, one sender per worker (and one
    /// metrics shard each).
    pub fn new(
        snapshot: SharedSnapshot,
        globals: Arc<Globals>,
        shards: Vec<Arc<Shard>>,
        commands: Vec<UnboundedSender<Command>>,
        listeners: Vec<BoundListener>,
        source: Option<ConfigSource>,
    ) -> Self {
        Self {
            snapshot,
            globals,
            shards,
            commands,
            state: Mutex::new(State { listeners, source }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A reload that panicked left the state as it was before it: keep going.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The active snapshot.
    pub fn snapshot(&self) -> &SharedSnapshot {
        &self.snapshot
    }

    /// The document the active config came from, when it came from one.
    pub fn source(&self) -> Option<ConfigSource> {
        self.state().source.clone()
    }

    /// Each listener's name and bound address.
    pub fn addrs(&self) -> Vec<(String, SocketAddr)> {
        self.state()
            .listeners
            .iter()
            .map(|l| (l.name.clone(), l.bound))
            .collect()
    }

    /// Duplicates of every listening socket, by listener, to hand to a new binary.
    ///
    /// # Errors
    /// When a descriptor cannot be duplicated.
    pub fn duplicate_listeners(&self) -> std::io::Result<Vec<BoundListener>> {
        self.state()
            .listeners
            .iter()
            .map(|l| {
                Ok(BoundListener {
                    name: l.name.clone(),
                    address: l.address,
                    bound: l.bound,
                    sockets: l
                        .sockets
                        .iter()
                        .map(std::net::TcpListener::try_clone)
                        .collect::<std::io::Result<_>>()?,
                })
            })
            .collect()
    }

    /// Forgets every listener: the sockets close once the workers stop accepting on them
    /// (on shutdown; a newer process holds its own descriptors after an upgrade).
    pub fn close_listeners(&self) {
        self.state().listeners.clear();
    }

    /// Validates `text`, and if it is a valid config, applies it.
    ///
    /// # Errors
    /// [`ReloadError`]; the active config is then unchanged.
    pub fn apply(&self, text: &str, format: Format) -> Result<Applied, ReloadError> {
        self.apply_named(text, format, "config")
    }

    /// [`Reloader::apply`], naming the document `name` in problem reports.
    ///
    /// # Errors
    /// [`ReloadError`]; the active config is then unchanged.
    pub fn apply_named(
        &self,
        text: &str,
        format: Format,
        name: &str,
    ) -> Result<Applied, ReloadError> {
        let started = Instant::now();
        let result = strait_config::parse(text, format)
            .map_err(|err| ReloadError::Invalid(err.render(name)))
            .and_then(|config| {
                self.apply_config(
                    config,
                    Some(ConfigSource {
                        text: text.to_owned(),
                        format,
                    }),
                )
            });
        match &result {
            Ok(applied) => tracing::info!(
                version = applied.version,
                added = ?applied.added,
                removed = ?applied.removed,
                elapsed_ms = started.elapsed().as_millis(),
                "config applied"
            ),
            Err(err) => {
                self.globals
                    .reloads_rejected
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!("config rejected; the previous config keeps serving:\n{err}");
            }
        }
        result
    }

    /// Reads a config file and applies it, unless its text is the active config's.
    /// `Ok(None)` when it is unchanged.
    ///
    /// # Errors
    /// [`ReloadError`]; the active config is then unchanged.
    pub fn apply_file(&self, path: &Path) -> Result<Option<Applied>, ReloadError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(source) => {
                self.globals
                    .reloads_rejected
                    .fetch_add(1, Ordering::Relaxed);
                let err = ReloadError::Read {
                    path: path.display().to_string(),
                    source,
                };
                tracing::warn!("config rejected; the previous config keeps serving: {err}");
                return Err(err);
            }
        };
        if self.source().is_some_and(|s| s.text == text) {
            tracing::debug!(path = %path.display(), "config file unchanged");
            return Ok(None);
        }
        self.apply_named(&text, Format::from_path(path), &path.display().to_string())
            .map(Some)
    }

    /// Applies a validated config.
    ///
    /// # Errors
    /// [`ReloadError::Bind`] when an added listener cannot be bound; nothing changed then.
    pub fn apply_config(
        &self,
        config: Config,
        source: Option<ConfigSource>,
    ) -> Result<Applied, ReloadError> {
        let unsupported = unsupported(&config);
        if !unsupported.is_empty() {
            return Err(ReloadError::Invalid(format!(
                "error: config has {} problems the proxy cannot honour\n  {}",
                unsupported.len(),
                unsupported.join("\n  ")
            )));
        }
        let mut state = self.state();
        let current = self.snapshot.load_full();
        let mut warnings = restart_only(current.config(), &config);
        warnings.extend(ignored(&config));
        for warning in &warnings {
            tracing::warn!("{warning}");
        }

        // Listeners: kept when name and address are unchanged; otherwise bound afresh here,
        // before anything changes, so that a port in use rejects the whole config.
        let workers = self.commands.len();
        let mut added = Vec::new();
        for listener in config.listeners() {
            let kept = state
                .listeners
                .iter()
                .any(|l| l.name == listener.name() && l.address == listener.address());
            if kept {
                continue;
            }
            let sockets = io::bind_reuseport(listener.address(), workers).map_err(|source| {
                ReloadError::Bind {
                    listener: listener.name().to_owned(),
                    address: listener.address(),
                    source,
                }
            })?;
            let bound = sockets
                .first()
                .and_then(|s| s.local_addr().ok())
                .unwrap_or_else(|| listener.address());
            added.push(BoundListener {
                name: listener.name().to_owned(),
                address: listener.address(),
                bound,
                sockets,
            });
        }
        // The expensive part (route tables, metric registration) before any change.
        let version = current.version() + 1;
        let compiled = Compiled::with_stats(version, Arc::new(config), &self.shards);
        let config = compiled.config();
        let (kept, removed): (Vec<_>, Vec<_>) = std::mem::take(&mut state.listeners)
            .into_iter()
            .partition(|l| {
                config
                    .listeners()
                    .iter()
                    .any(|n| n.name() == l.name && n.address() == l.address)
            });

        // Removed listeners stop accepting before the new routes apply, so no request reaches
        // a listener the new config no longer knows.
        let removed_names: Vec<String> = removed.iter().map(|l| l.name.clone()).collect();
        self.remove_listeners(&removed_names);
        drop(removed);

        self.snapshot.store(Arc::new(compiled));

        let mut added_names = Vec::new();
        let mut listeners = kept;
        for listener in added {
            tracing::info!(listener = %listener.name, address = %listener.bound, "listening");
            let dups = listener
                .sockets
                .iter()
                .map(std::net::TcpListener::try_clone)
                .collect::<std::io::Result<Vec<_>>>();
            let Ok(dups) = dups else {
                tracing::error!(listener = %listener.name, "listening socket could not be duplicated");
                continue;
            };
            for (worker, sockets) in distribute(dups, workers).into_iter().enumerate() {
                if let Some(commands) = self.commands.get(worker) {
                    let _ = commands.send(Command::Add {
                        name: listener.name.clone(),
                        sockets,
                    });
                }
            }
            added_names.push(listener.name.clone());
            listeners.push(listener);
        }
        state.listeners = listeners;
        if source.is_some() {
            state.source = source;
        }
        self.globals
            .config_version
            .store(version, Ordering::Relaxed);
        self.globals.reloads_applied.fetch_add(1, Ordering::Relaxed);
        Ok(Applied {
            version,
            added: added_names,
            removed: removed_names,
            warnings,
        })
    }

    /// Tells every worker to stop accepting on `names` and waits (bounded) until they did.
    fn remove_listeners(&self, names: &[String]) {
        let mut acks = Vec::new();
        for name in names {
            for commands in &self.commands {
                let (done, ack) = std::sync::mpsc::channel();
                if commands
                    .send(Command::Remove {
                        name: name.clone(),
                        done,
                    })
                    .is_ok()
                {
                    acks.push(ack);
                }
            }
        }
        let deadline = Instant::now() + REMOVE_ACK;
        for ack in acks {
            let left = deadline.saturating_duration_since(Instant::now());
            if ack.recv_timeout(left).is_err() {
                tracing::warn!("a worker did not confirm a listener removal in time");
            }
        }
    }
}

/// Lowers the calling thread's scheduling priority to the lowest (nice 19): config parsing and
/// compiling, on the admin, signal and watcher threads, must not take CPU time from workers
/// pinned to the same cores. Best effort: a failure is logged once per thread.
pub fn lower_thread_priority() {
    let tid = rustix::thread::gettid();
    if let Err(err) = rustix::process::setpriority_process(Some(tid), 19) {
        tracing::debug!(error = %err, "could not lower a control thread's priority");
    }
}

/// Spreads `sockets` over `workers` workers, round robin.
pub fn distribute<T>(sockets: Vec<T>, workers: usize) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = (0..workers.max(1)).map(|_| Vec::new()).collect();
    let count = out.len();
    for (i, socket) in sockets.into_iter().enumerate() {
        out[i % count].push(socket);
    }
    out
}

/// What a standalone proxy cannot honour: clusters that discover their endpoints by DNS or
/// the registry need `strait-cp`. Returns every such problem, one line each.
pub fn unsupported(config: &Config) -> Vec<String> {
    config
        .clusters()
        .iter()
        .enumerate()
        .filter_map(|(i, cluster)| match cluster.discovery() {
            Some(strait_config::Discovery::Dns { .. } | strait_config::Discovery::Registry(_)) => {
                Some(format!(
                    "clusters[{i}].discovery: cluster {} discovers its endpoints, which only strait-cp does; list `endpoints`, or run the proxy with --xds under strait-cp",
                    cluster.name()
                ))
            }
            _ => None,
        })
        .collect()
}

/// Control-plane settings a standalone proxy ignores, as warnings.
fn ignored(config: &Config) -> Vec<String> {
    let mut warnings = Vec::new();
    if config.xds().is_some() || config.registry().is_some() {
        warnings.push("xds and registry are strait-cp settings; the proxy ignores them".to_owned());
    }
    if config.clusters().iter().any(|c| c.health_check().is_some()) {
        warnings.push(
            "health_check is run by strait-cp; a standalone proxy does not check endpoints"
                .to_owned(),
        );
    }
    warnings
}

/// Settings a running process cannot change; they take effect at the next start.
fn restart_only(old: &Config, new: &Config) -> Vec<String> {
    let mut warnings = Vec::new();
    if old.admin().map(strait_config::Admin::address)
        != new.admin().map(strait_config::Admin::address)
    {
        warnings.push("admin.address changed: it takes effect after a restart".to_owned());
    }
    if old.io() != new.io() {
        warnings.push("io changed: it takes effect after a restart".to_owned());
    }
    if format!("{:?}", old.access_log()) != format!("{:?}", new.access_log()) {
        warnings.push("access_log changed: it takes effect after a restart".to_owned());
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::distribute;

    #[test]
    fn distribute_spreads_round_robin() {
        assert_eq!(distribute(vec![1, 2, 3], 2), vec![vec![1, 3], vec![2]]);
        assert_eq!(distribute(vec![1], 3), vec![vec![1], vec![], vec![]]);
        assert_eq!(distribute(Vec::<u8>::new(), 0), vec![Vec::<u8>::new()]);
    }
}
