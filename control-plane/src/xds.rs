//! The xDS v3 server: Aggregated Discovery Service, state of the world.
//!
//! Per stream and per resource type the server keeps what the client subscribed to, the version
//! and nonce it last sent, and what the client ACKed or NACKed, as
//! <https://www.envoyproxy.io/docs/envoy/latest/api-docs/xds_protocol> describes:
//!
//! - a request whose `response_nonce` is not the last nonce sent for its type is stale and only
//!   updates the subscription;
//! - a request with the last nonce ACKs (`error_detail` empty) or NACKs that version; a NACKed
//!   version is not sent again, the next change is;
//! - when the snapshot changes, types are sent in make-before-break order (CDS, EDS, LDS, RDS),
//!   each only if what the stream subscribed to changed (the version is a hash of the content);
//!   listeners and clusters as the complete set, route configurations and endpoints (asked for
//!   by name) only those that changed.
//!
//! Delta xDS is not served; clients fall back to state of the world.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::snapshot::{Snapshot, Subscription, TYPE_ORDER, wildcard_type};

/// What a node last received, ACKed and NACKed for one resource type.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TypeStatus {
    /// The version last sent.
    pub sent: Option<String>,
    /// The version last ACKed.
    pub acked: Option<String>,
    /// The last NACK: the version refused and why.
    pub nack: Option<Nack>,
    /// Responses sent.
    pub responses: u64,
}

/// A refused version.
#[derive(Debug, Clone, Serialize)]
pub struct Nack {
    /// The version the client refused.
    pub version: String,
    /// Its `error_detail` message.
    pub message: String,
    /// When, in seconds since the Unix epoch.
    pub at: u64,
}

/// A node as the control plane sees it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeStatus {
    /// Open ADS streams from this node.
    pub streams: usize,
    /// Its cluster (`node.cluster`).
    pub cluster: String,
    /// Its user agent (`envoy`, `grpc-python`, `strait`).
    pub user_agent: String,
    /// Per resource type URL.
    pub types: HashMap<String, TypeStatus>,
}

/// Every node that has connected, for the admin API and metrics.
#[derive(Debug, Default)]
pub struct Nodes {
    nodes: Mutex<HashMap<String, NodeStatus>>,
    /// NACKs received, in all.
    pub nacks: AtomicU64,
    /// Responses sent, in all.
    pub responses: AtomicU64,
}

impl Nodes {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, NodeStatus>> {
        self.nodes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A copy of every node's status.
    pub fn all(&self) -> HashMap<String, NodeStatus> {
        self.lock().clone()
    }

    /// Nodes with at least one open stream.
    pub fn connected(&self) -> usize {
        self.lock().values().filter(|n| n.streams > 0).count()
    }

    fn update(&self, node: &str, f: impl FnOnce(&mut NodeStatus)) {
        f(self.lock().entry(node.to_owned()).or_default());
    }
}

/// The ADS service.
#[derive(Debug, Clone)]
pub struct Xds {
    snapshot: watch::Receiver<Arc<Snapshot>>,
    nodes: Arc<Nodes>,
    nonces: Arc<AtomicU64>,
}

impl Xds {
    /// Serves `snapshot` (and every later one) to each stream.
    pub fn new(snapshot: watch::Receiver<Arc<Snapshot>>, nodes: Arc<Nodes>) -> Self {
        Self {
            snapshot,
            nodes,
            nonces: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The tonic service.
    pub fn service(self) -> AggregatedDiscoveryServiceServer<Self> {
        AggregatedDiscoveryServiceServer::new(self)
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(256 * 1024 * 1024)
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Xds {
    type StreamAggregatedResourcesStream = ReceiverStream<Result<DiscoveryResponse, Status>>;
    type DeltaAggregatedResourcesStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        // Two responses queued at most: a slow client holds back its own stream, not memory.
        let (tx, rx) = mpsc::channel(2);
        let stream = Stream {
            tx,
            snapshot: self.snapshot.clone(),
            nodes: Arc::clone(&self.nodes),
            nonces: Arc::clone(&self.nonces),
            node: None,
            types: HashMap::new(),
        };
        tokio::spawn(stream.run(request.into_inner()));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn delta_aggregated_resources(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented(
            "strait-cp serves state-of-the-world ADS only; use StreamAggregatedResources",
        ))
    }
}

/// One type's state on one stream.
#[derive(Debug)]
struct TypeState {
    subscription: Subscription,
    sent_version: Option<String>,
    sent_subscription: Option<Subscription>,
    nonce: Option<String>,
    /// The version the client NACKed last; not sent again.
    nacked: Option<String>,
    /// Content hash of each named resource last sent (RDS and EDS only send what changed).
    sent: HashMap<String, u64>,
}

struct Stream {
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
    snapshot: watch::Receiver<Arc<Snapshot>>,
    nodes: Arc<Nodes>,
    nonces: Arc<AtomicU64>,
    node: Option<String>,
    types: HashMap<String, TypeState>,
}

impl Stream {
    async fn run(mut self, mut inbound: Streaming<DiscoveryRequest>) {
        loop {
            tokio::select! {
                request = inbound.message() => match request {
                    Ok(Some(request)) => {
                        if self.handle(request).await.is_err() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(status) => {
                        tracing::debug!(node = ?self.node, %status, "ADS stream ended");
                        break;
                    }
                },
                changed = self.snapshot.changed() => {
                    if changed.is_err() || self.push_all().await.is_err() {
                        break;
                    }
                }
            }
        }
        if let Some(node) = &self.node {
            self.nodes
                .update(node, |n| n.streams = n.streams.saturating_sub(1));
            tracing::info!(node = %node, "ADS stream closed");
        }
    }

    async fn handle(&mut self, request: DiscoveryRequest) -> Result<(), ()> {
        if self.node.is_none() {
            let node = request.node.clone().unwrap_or_default();
            let id = if node.id.is_empty() {
                "(no id)".to_owned()
            } else {
                node.id.clone()
            };
            tracing::info!(node = %id, user_agent = %node.user_agent_name, "ADS stream opened");
            self.nodes.update(&id, |n| {
                n.streams += 1;
                n.cluster.clone_from(&node.cluster);
                n.user_agent.clone_from(&node.user_agent_name);
            });
            self.node = Some(id);
        }
        let node = self.node.clone().unwrap_or_default();
        let type_url = request.type_url.clone();
        if !TYPE_ORDER.contains(&type_url.as_str()) {
            tracing::debug!(node = %node, %type_url, "request for a type strait-cp does not serve");
            return Ok(());
        }
        let names: BTreeSet<String> = request.resource_names.iter().cloned().collect();
        let subscription = if (names.is_empty() && wildcard_type(&type_url)) || names.contains("*")
        {
            Subscription::Wildcard
        } else {
            Subscription::Names(names)
        };
        let state = self.types.entry(type_url.clone()).or_insert(TypeState {
            subscription: subscription.clone(),
            sent_version: None,
            sent_subscription: None,
            nonce: None,
            nacked: None,
            sent: HashMap::new(),
        });
        if !request.response_nonce.is_empty() {
            if state.nonce.as_deref() != Some(request.response_nonce.as_str()) {
                // Stale: a response crossed this request. Keep the subscription only.
                state.subscription = subscription;
                return Ok(());
            }
            match &request.error_detail {
                Some(error) => {
                    let version = state.sent_version.clone().unwrap_or_default();
                    tracing::warn!(node = %node, %type_url, %version, message = %error.message, "NACK");
                    state.nacked = Some(version.clone());
                    // What the client holds is unknown now: the next push sends everything.
                    state.sent.clear();
                    self.nodes.nacks.fetch_add(1, Ordering::Relaxed);
                    let at = SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs());
                    let message = error.message.clone();
                    self.nodes.update(&node, |n| {
                        n.types.entry(type_url.clone()).or_default().nack = Some(Nack {
                            version,
                            message,
                            at,
                        });
                    });
                }
                None => {
                    let version = request.version_info.clone();
                    self.nodes.update(&node, |n| {
                        n.types.entry(type_url.clone()).or_default().acked = Some(version);
                    });
                }
            }
        }
        state.subscription = subscription;
        self.push(&type_url).await
    }

    /// Sends every subscribed type whose content changed, in make-before-break order.
    async fn push_all(&mut self) -> Result<(), ()> {
        for type_url in TYPE_ORDER {
            if self.types.contains_key(type_url) {
                self.push(type_url).await?;
            }
        }
        Ok(())
    }

    /// Sends `type_url` if what the stream subscribed to differs from what it was last sent.
    /// Listeners and clusters go as the complete set; route configurations and endpoints, which
    /// clients ask for by name, only the resources that changed or were newly asked for (the
    /// protocol's state-of-the-world rule for non-wildcard types), so one endpoint's health
    /// change sends one load assignment, not all of them.
    async fn push(&mut self, type_url: &str) -> Result<(), ()> {
        let snapshot = Arc::clone(&self.snapshot.borrow_and_update());
        let Some(state) = self.types.get_mut(type_url) else {
            return Ok(());
        };
        let selection = snapshot.select(type_url, &state.subscription);
        let version = selection.version;
        let unchanged = state.sent_version.as_deref() == Some(version.as_str())
            && state.sent_subscription.as_ref() == Some(&state.subscription);
        if unchanged || state.nacked.as_deref() == Some(version.as_str()) {
            return Ok(());
        }
        let complete = wildcard_type(type_url);
        if !complete {
            // Forget what the client no longer asks for: asked again, it is sent again.
            state
                .sent
                .retain(|name, _| selection.items.iter().any(|(n, _)| n == name));
        }
        let resources: Vec<_> = selection
            .items
            .iter()
            .filter(|(name, hash)| complete || state.sent.get(name) != Some(hash))
            .filter_map(|(name, _)| snapshot.resource(type_url, name).cloned())
            .collect();
        state.sent_version = Some(version.clone());
        state.sent_subscription = Some(state.subscription.clone());
        state.nacked = None;
        if !complete {
            for (name, hash) in &selection.items {
                state.sent.insert(name.clone(), *hash);
            }
            if resources.is_empty() {
                return Ok(());
            }
        }
        // Named types go in batches of about MAX_RESPONSE_BYTES: tonic keeps a stream's encode
        // buffer as large as the largest message it sent, so one 300 KiB response per stream
        // would hold 300 KiB per stream for good. Each batch is a response of its own; the
        // client ACKs the last one.
        let batches = if complete {
            vec![resources]
        } else {
            batch(resources)
        };
        let mut sent = 0;
        for resources in batches {
            let nonce = self.nonces.fetch_add(1, Ordering::Relaxed).to_string();
            state.nonce = Some(nonce.clone());
            let response = DiscoveryResponse {
                version_info: version.clone(),
                resources,
                type_url: type_url.to_owned(),
                nonce,
                ..Default::default()
            };
            self.tx.send(Ok(response)).await.map_err(|_| ())?;
            sent += 1;
        }
        if let Some(node) = &self.node {
            self.nodes.update(node, |n| {
                let status = n.types.entry(type_url.to_owned()).or_default();
                status.sent = Some(version);
                status.responses += sent;
            });
        }
        self.nodes.responses.fetch_add(sent, Ordering::Relaxed);
        Ok(())
    }
}

/// The largest batch of named resources one response carries (a single larger resource goes
/// alone).
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

fn batch(
    resources: Vec<envoy_types::pb::google::protobuf::Any>,
) -> Vec<Vec<envoy_types::pb::google::protobuf::Any>> {
    use prost::Message;
    let mut batches = Vec::new();
    let mut current = Vec::new();
    let mut size = 0;
    for resource in resources {
        let len = resource.encoded_len();
        if !current.is_empty() && size + len > MAX_RESPONSE_BYTES {
            batches.push(std::mem::take(&mut current));
            size = 0;
        }
        size += len;
        current.push(resource);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}
