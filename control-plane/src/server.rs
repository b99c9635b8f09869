//! A running control plane: the xDS server, the admin API, and the task that rebuilds the
//! snapshot whenever an endpoint source or a health result changes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use strait_config::Config;
use strait_config::xds::EdsEndpoint;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin;
use crate::endpoints::Sources;
use crate::snapshot::Snapshot;
use crate::xds::{Nodes, Xds};

/// Where the control plane listens; `None` takes the config's address (or, for the admin API,
/// 127.0.0.1:9902).
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The xDS (ADS) server.
    pub xds: Option<SocketAddr>,
    /// The admin API.
    pub admin: Option<SocketAddr>,
    /// The registration API.
    pub registry: Option<SocketAddr>,
}

impl Options {
    /// xDS and the admin API on free loopback ports (the registration API as the config says).
    pub fn loopback() -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            xds: Some(any),
            admin: Some(any),
            registry: None,
        }
    }
}

/// The admin API's address when neither the command line nor the config names one.
pub const DEFAULT_ADMIN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9902);
/// The xDS address when neither the command line nor the config names one.
pub const DEFAULT_XDS: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 18000);

/// Batches bursts of changes (a registration storm, many checks flipping at once) into one
/// snapshot.
const REBUILD_DEBOUNCE: Duration = Duration::from_millis(20);

/// A running control plane.
#[derive(Debug)]
pub struct ControlPlane {
    xds_addr: SocketAddr,
    admin_addr: SocketAddr,
    registry_addr: Option<SocketAddr>,
    sources: Arc<Sources>,
    nodes: Arc<Nodes>,
    snapshot: watch::Receiver<Arc<Snapshot>>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl ControlPlane {
    /// Binds the xDS server, the admin API and (when configured) the registration API, builds
    /// the first snapshot and starts serving.
    ///
    /// # Errors
    /// When an address cannot be bound.
    pub async fn start(config: Config, options: &Options) -> anyhow::Result<Self> {
        let xds_addr = options.xds.or(config.xds()).unwrap_or(DEFAULT_XDS);
        let admin_addr = options
            .admin
            .or(config.admin().map(strait_config::Admin::address))
            .unwrap_or(DEFAULT_ADMIN);
        let registry_addr = options.registry.or(config.registry());
        let (shutdown, stopped) = watch::channel(false);
        let mut tasks = Vec::new();

        let sources = Sources::start(config, stopped.clone());
        // Subscribed before the first build: a change the sources make while it is built (a
        // DNS answer, a first health check) must still trigger a rebuild.
        let changes = sources.subscribe();
        let first = Arc::new(build(&sources, 1));
        let (snapshot_tx, snapshot) = watch::channel(first);
        tasks.push(tokio::spawn(rebuild(
            Arc::clone(&sources),
            changes,
            snapshot_tx,
            stopped.clone(),
        )));

        let nodes = Arc::new(Nodes::default());
        let xds_listener = tokio::net::TcpListener::bind(xds_addr)
            .await
            .map_err(|e| anyhow::anyhow!("xDS could not bind {xds_addr}: {e}"))?;
        let xds_addr = xds_listener.local_addr()?;
        let service = Xds::new(snapshot.clone(), Arc::clone(&nodes)).service();
        let mut xds_stop = stopped.clone();
        tasks.push(tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(xds_listener);
            let served = tonic::transport::Server::builder()
                .http2_keepalive_interval(Some(Duration::from_secs(30)))
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = xds_stop.wait_for(|stop| *stop).await;
                })
                .await;
            if let Err(err) = served {
                tracing::error!(error = %err, "xDS server failed");
            }
        }));
        tracing::info!(address = %xds_addr, "xDS (ADS) listening");

        let registry_addr = match registry_addr {
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| anyhow::anyhow!("registry API could not bind {addr}: {e}"))?;
                let bound = listener.local_addr()?;
                tasks.push(tokio::spawn(crate::registry::serve(
                    listener,
                    Arc::clone(sources.registry()),
                    stopped.clone(),
                )));
                tracing::info!(address = %bound, "registration API listening");
                Some(bound)
            }
            None => None,
        };

        let admin_listener = tokio::net::TcpListener::bind(admin_addr)
            .await
            .map_err(|e| anyhow::anyhow!("admin API could not bind {admin_addr}: {e}"))?;
        let admin_addr = admin_listener.local_addr()?;
        let state = Arc::new(admin::State {
            sources: Arc::clone(&sources),
            nodes: Arc::clone(&nodes),
            snapshot: snapshot.clone(),
        });
        tasks.push(tokio::spawn(admin::serve(admin_listener, state, stopped)));
        tracing::info!(address = %admin_addr, "admin API listening");

        Ok(Self {
            xds_addr,
            admin_addr,
            registry_addr,
            sources,
            nodes,
            snapshot,
            shutdown,
            tasks,
        })
    }

    /// The xDS server's address.
    pub fn xds_addr(&self) -> SocketAddr {
        self.xds_addr
    }

    /// The admin API's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The registration API's address, when it runs.
    pub fn registry_addr(&self) -> Option<SocketAddr> {
        self.registry_addr
    }

    /// The endpoint sources (config, registry, DNS, health).
    pub fn sources(&self) -> &Arc<Sources> {
        &self.sources
    }

    /// Connected nodes and what they ACKed.
    pub fn nodes(&self) -> &Arc<Nodes> {
        &self.nodes
    }

    /// The snapshot being served.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.snapshot.borrow())
    }

    /// Replaces the config (listeners, routes, clusters); every stream gets what changed.
    pub fn set_config(&self, config: Config) {
        self.sources.set_config(config);
    }

    /// Stops serving and waits for the tasks.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

fn build(sources: &Sources, serial: u64) -> Snapshot {
    let config = sources.config();
    Snapshot::build(serial, &config, &|cluster| -> Vec<EdsEndpoint> {
        sources.endpoints(cluster)
    })
}

/// Rebuilds the snapshot whenever a source changes.
async fn rebuild(
    sources: Arc<Sources>,
    mut changes: watch::Receiver<u64>,
    snapshot: watch::Sender<Arc<Snapshot>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut serial = 1;
    loop {
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = stop.wait_for(|stop| *stop) => return,
        }
        tokio::time::sleep(REBUILD_DEBOUNCE).await;
        changes.borrow_and_update();
        serial += 1;
        let started = tokio::time::Instant::now();
        let next = Arc::new(build(&sources, serial));
        tracing::debug!(
            serial,
            elapsed_us = started.elapsed().as_micros(),
            "snapshot rebuilt"
        );
        snapshot.send_replace(next);
    }
}
