//! Following a control plane: `strait run --xds ADDR[,ADDR…] --node-id ID` subscribes over ADS
//! (state of the world) and turns what it receives into the config a file would give.
//!
//! - Listeners and clusters are wildcard subscriptions; route configurations and endpoints are
//!   asked for by the names the listeners and clusters use.
//! - A config is applied only once it is complete (every listener's routes and every cluster's
//!   endpoints received: clusters warm before the listeners that use them) and valid.
//! - What Strait cannot honour, or what the validator rejects, is NACKed with the problems as
//!   `error_detail`, and the previous config keeps serving. A route naming a cluster that is
//!   not there yet, after a cluster update, is taken as the routes lagging behind (they come
//!   next in make-before-break order) rather than as an error of the clusters.
//! - When the control plane goes away, the last good config keeps serving; the client
//!   reconnects with exponential backoff and jitter, trying the next address each time.

use std::collections::BTreeSet;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3 as cluster;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use prost::Message;
use strait_config::Config;
use strait_config::xds::{self, Resources, type_url};
use tokio::sync::{mpsc, watch};

/// First reconnect delay; doubles up to [`MAX_BACKOFF`], with ±50 % jitter.
const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Applies a config built from xDS; `Err` is the reason for a NACK.
pub trait Apply {
    /// Applies `config`; `document` is its file-format form (JSON), for `/config`.
    ///
    /// # Errors
    /// Why the config could not be applied (the NACK's `error_detail`).
    fn apply(&mut self, config: Config, document: String) -> Result<(), String>;
}

/// Where to connect and who we are.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Control plane addresses (`host:port`), tried in turn.
    pub addresses: Vec<String>,
    /// This proxy's node id.
    pub node_id: String,
    /// This proxy's node cluster (defaults to the node id).
    pub node_cluster: String,
}

/// What the client knows across reconnects.
#[derive(Debug, Default)]
struct State {
    /// The latest resources received, per type.
    received: Resources,
    /// The resources of the config applied last.
    applied: Option<Resources>,
    /// Per type: the version last accepted, and the nonce last seen.
    versions: [(String, String); 4],
    eds_names: BTreeSet<String>,
    rds_names: BTreeSet<String>,
}

fn slot(type_url: &str) -> Option<usize> {
    [
        type_url::CLUSTER,
        type_url::ENDPOINT,
        type_url::LISTENER,
        type_url::ROUTE,
    ]
    .iter()
    .position(|t| *t == type_url)
}

/// Follows the control plane until `stop` turns true.
pub async fn follow(settings: Settings, applier: &mut impl Apply, mut stop: watch::Receiver<bool>) {
    let mut state = State::default();
    let mut failures: u32 = 0;
    let mut attempt: usize = 0;
    let mut rng = fastrand::Rng::new();
    loop {
        let Some(address) = settings
            .addresses
            .get(attempt % settings.addresses.len().max(1))
            .cloned()
        else {
            tracing::error!("no control plane address");
            return;
        };
        attempt += 1;
        let session = session(&address, &settings, &mut state, applier);
        let outcome = tokio::select! {
            outcome = session => outcome,
            _ = stop.wait_for(|stop| *stop) => return,
        };
        match outcome {
            Ok(received) => {
                tracing::warn!(control_plane = %address, "ADS stream closed by the control plane; reconnecting");
                if received {
                    failures = 0;
                }
            }
            Err(err) => {
                tracing::warn!(control_plane = %address, error = %err, "ADS stream failed; the last good config keeps serving");
            }
        }
        failures = failures.saturating_add(1);
        let base = MIN_BACKOFF
            .saturating_mul(1 << failures.min(8))
            .min(MAX_BACKOFF);
        let delay = base.mul_f64(0.5 + rng.f64());
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
    }
}

fn request(
    settings: &Settings,
    type_url: &str,
    names: impl IntoIterator<Item = String>,
    version: &str,
    nonce: &str,
    error: Option<String>,
) -> DiscoveryRequest {
    DiscoveryRequest {
        version_info: version.to_owned(),
        node: Some(Node {
            id: settings.node_id.clone(),
            cluster: settings.node_cluster.clone(),
            user_agent_name: "strait".to_owned(),
            ..Default::default()
        }),
        resource_names: names.into_iter().collect(),
        type_url: type_url.to_owned(),
        response_nonce: nonce.to_owned(),
        error_detail: error.map(|message| RpcStatus {
            code: 3, // INVALID_ARGUMENT
            message,
            details: Vec::new(),
        }),
        ..Default::default()
    }
}

/// One ADS stream; `Ok(true)` if it received anything before it ended.
async fn session(
    address: &str,
    settings: &Settings,
    state: &mut State,
    applier: &mut impl Apply,
) -> Result<bool, String> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| format!("bad address {address}: {e}"))?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut client =
        AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(256 * 1024 * 1024);
    let (tx, rx) = mpsc::unbounded_channel();
    // Resubscribe to everything, saying which versions this proxy already has.
    let send = |request: DiscoveryRequest| tx.send(request).map_err(|_| "stream closed".to_owned());
    send(request(
        settings,
        type_url::CLUSTER,
        [],
        &state.versions[0].0,
        "",
        None,
    ))?;
    send(request(
        settings,
        type_url::LISTENER,
        [],
        &state.versions[2].0,
        "",
        None,
    ))?;
    if !state.eds_names.is_empty() {
        send(request(
            settings,
            type_url::ENDPOINT,
            state.eds_names.clone(),
            &state.versions[1].0,
            "",
            None,
        ))?;
    }
    if !state.rds_names.is_empty() {
        send(request(
            settings,
            type_url::ROUTE,
            state.rds_names.clone(),
            &state.versions[3].0,
            "",
            None,
        ))?;
    }
    let mut inbound = client
        .stream_aggregated_resources(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
        .await
        .map_err(|status| format!("ADS: {status}"))?
        .into_inner();
    tracing::info!(control_plane = %address, node = %settings.node_id, "ADS stream open");
    let mut received = false;
    loop {
        let response = match inbound.message().await {
            Ok(Some(response)) => response,
            Ok(None) => return Ok(received),
            Err(status) => {
                return if received {
                    Ok(true)
                } else {
                    Err(format!("ADS: {status}"))
                };
            }
        };
        received = true;
        for request in handle(settings, state, applier, &response) {
            send(request)?;
        }
    }
}

/// Takes one response; returns the requests to send (the ACK or NACK, and subscription
/// changes).
fn handle(
    settings: &Settings,
    state: &mut State,
    applier: &mut impl Apply,
    response: &DiscoveryResponse,
) -> Vec<DiscoveryRequest> {
    let kind = response.type_url.as_str();
    let Some(index) = slot(kind) else {
        return Vec::new();
    };
    let names = |state: &State, index: usize| -> Vec<String> {
        match index {
            1 => state.eds_names.iter().cloned().collect(),
            3 => state.rds_names.iter().cloned().collect(),
            _ => Vec::new(),
        }
    };
    let nack = |state: &mut State, message: String| {
        tracing::warn!(type_url = kind, version = %response.version_info, "NACK:\n{message}");
        state.versions[index].1.clone_from(&response.nonce);
        vec![request(
            settings,
            kind,
            names(state, index),
            &state.versions[index].0.clone(),
            &response.nonce,
            Some(message),
        )]
    };
    let previous = state.received.clone();
    if let Err(message) = store(&mut state.received, kind, response) {
        return nack(state, message);
    }
    let mut requests = Vec::new();
    // Subscriptions follow what the clusters and listeners name.
    let eds: BTreeSet<String> = state
        .received
        .clusters
        .iter()
        .filter(|c| {
            matches!(c.cluster_discovery_type, Some(cluster::cluster::ClusterDiscoveryType::Type(t)) if t == cluster::cluster::DiscoveryType::Eds as i32)
        })
        .map(|c| match &c.eds_cluster_config {
            Some(eds) if !eds.service_name.is_empty() => eds.service_name.clone(),
            _ => c.name.clone(),
        })
        .collect();
    if eds != state.eds_names {
        state.eds_names = eds;
        state
            .received
            .assignments
            .retain(|a| state.eds_names.contains(&a.cluster_name));
        requests.push(request(
            settings,
            type_url::ENDPOINT,
            state.eds_names.clone(),
            &state.versions[1].0,
            &state.versions[1].1,
            None,
        ));
    }
    let rds: BTreeSet<String> = state
        .received
        .listeners
        .iter()
        .filter_map(rds_name)
        .collect();
    if rds != state.rds_names {
        state.rds_names = rds;
        state
            .received
            .routes
            .retain(|r| state.rds_names.contains(&r.name));
        requests.push(request(
            settings,
            type_url::ROUTE,
            state.rds_names.clone(),
            &state.versions[3].0,
            &state.versions[3].1,
            None,
        ));
    }

    let missing = xds::missing(&state.received);
    if missing.is_empty() && state.applied.as_ref() != Some(&state.received) {
        match xds::from_resources(&state.received) {
            Ok(config) => {
                let document = serde_json::to_string_pretty(&xds::to_document(&state.received))
                    .unwrap_or_default();
                if let Err(message) = applier.apply(config, document) {
                    state.received = previous;
                    let mut out = nack(state, message);
                    out.extend(requests);
                    return out;
                }
                state.applied = Some(state.received.clone());
            }
            Err(err) => {
                let message = err.to_string();
                // Not an error of this response, only of timing: no listener yet (clusters
                // and endpoints come first), or routes naming a cluster the new cluster set
                // lacks (the routes come next). Hold, and apply when the rest arrives.
                let lagging = message.lines().filter(|l| l.contains("(E0")).all(|l| {
                    l.contains("(E0004)") || (matches!(index, 0 | 1) && l.contains("(E0203)"))
                });
                if !lagging {
                    state.received = previous;
                    let mut out = nack(state, message);
                    out.extend(requests);
                    return out;
                }
                tracing::info!(
                    type_url = kind,
                    "waiting for listeners or routes that match the clusters"
                );
            }
        }
    } else if !missing.is_empty() {
        tracing::debug!(?missing, "warming: waiting for resources before applying");
    }
    state.versions[index] = (response.version_info.clone(), response.nonce.clone());
    let ack = request(
        settings,
        kind,
        names(state, index),
        &response.version_info,
        &response.nonce,
        None,
    );
    requests.insert(0, ack);
    requests
}

fn rds_name(l: &Listener) -> Option<String> {
    use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
        HttpConnectionManager, http_connection_manager::RouteSpecifier,
    };
    let chain = l.filter_chains.first()?;
    let filter = chain.filters.first()?;
    let Some(ConfigType::TypedConfig(any)) = &filter.config_type else {
        return None;
    };
    match HttpConnectionManager::decode(any.value.as_slice())
        .ok()?
        .route_specifier?
    {
        RouteSpecifier::Rds(rds) => Some(rds.route_config_name),
        _ => None,
    }
}

/// Takes a response's resources of one type into what is held.
fn store(
    resources: &mut Resources,
    kind: &str,
    response: &DiscoveryResponse,
) -> Result<(), String> {
    fn decode<M: Message + Default>(response: &DiscoveryResponse) -> Result<Vec<M>, String> {
        response
            .resources
            .iter()
            .map(|any| {
                if any.type_url != response.type_url {
                    return Err(format!(
                        "a resource of type {} in a {} response",
                        any.type_url, response.type_url
                    ));
                }
                M::decode(any.value.as_slice()).map_err(|e| format!("{}: {e}", response.type_url))
            })
            .collect()
    }
    // Listeners and clusters come as the complete set; route configurations and endpoints,
    // asked for by name, only those that changed: they update what is held.
    fn merge<M>(held: &mut Vec<M>, update: Vec<M>, name: impl Fn(&M) -> &str) {
        for item in update {
            match held.iter_mut().find(|h| name(h) == name(&item)) {
                Some(slot) => *slot = item,
                None => held.push(item),
            }
        }
    }
    match kind {
        type_url::LISTENER => resources.listeners = decode::<Listener>(response)?,
        type_url::CLUSTER => resources.clusters = decode::<cluster::Cluster>(response)?,
        type_url::ROUTE => merge(
            &mut resources.routes,
            decode::<RouteConfiguration>(response)?,
            |r| &r.name,
        ),
        type_url::ENDPOINT => merge(
            &mut resources.assignments,
            decode::<ClusterLoadAssignment>(response)?,
            |a| &a.cluster_name,
        ),
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use strait_config::{Format, parse};

    #[derive(Default)]
    struct Recorder {
        applied: Vec<Config>,
        refuse: Option<String>,
    }

    impl Apply for Recorder {
        fn apply(&mut self, config: Config, _document: String) -> Result<(), String> {
            if let Some(reason) = &self.refuse {
                return Err(reason.clone());
            }
            self.applied.push(config);
            Ok(())
        }
    }

    fn settings() -> Settings {
        Settings {
            addresses: vec!["127.0.0.1:1".into()],
            node_id: "n".into(),
            node_cluster: "n".into(),
        }
    }

    fn response(
        kind: &str,
        version: &str,
        resources: Vec<envoy_types::pb::google::protobuf::Any>,
    ) -> DiscoveryResponse {
        DiscoveryResponse {
            version_info: version.into(),
            resources,
            type_url: kind.into(),
            nonce: format!("{kind}-{version}"),
            ..Default::default()
        }
    }

    fn resources() -> Resources {
        let config = parse(
            "listeners:\n  - name: l\n    address: 127.0.0.1:8080\n    virtual_hosts:\n      - name: v\n        domains: [\"*\"]\n        routes:\n          - match: { prefix: / }\n            cluster: up\nclusters:\n  - name: up\n    endpoints: [\"127.0.0.1:7001\"]\n",
            Format::Yaml,
        )
        .expect("valid");
        xds::to_resources(&config)
    }

    fn nacks(requests: &[DiscoveryRequest]) -> Vec<String> {
        requests
            .iter()
            .filter_map(|r| r.error_detail.as_ref().map(|e| e.message.clone()))
            .collect()
    }

    #[test]
    fn clusters_and_endpoints_before_listeners_are_held_not_nacked() {
        let r = resources();
        let mut state = State::default();
        let mut applier = Recorder::default();
        let s = settings();
        let cds = handle(
            &s,
            &mut state,
            &mut applier,
            &response(
                type_url::CLUSTER,
                "1",
                r.clusters.iter().map(xds::any).collect(),
            ),
        );
        assert!(nacks(&cds).is_empty(), "{:?}", nacks(&cds));
        assert!(
            cds.iter()
                .any(|q| q.type_url == type_url::ENDPOINT && q.resource_names == ["up"]),
            "subscribes to the endpoints"
        );
        let eds = handle(
            &s,
            &mut state,
            &mut applier,
            &response(
                type_url::ENDPOINT,
                "1",
                r.assignments.iter().map(xds::any).collect(),
            ),
        );
        assert!(
            nacks(&eds).is_empty(),
            "no listener yet is not an error: {:?}",
            nacks(&eds)
        );
        assert!(applier.applied.is_empty());
        let lds = handle(
            &s,
            &mut state,
            &mut applier,
            &response(
                type_url::LISTENER,
                "1",
                r.listeners.iter().map(xds::any).collect(),
            ),
        );
        assert!(nacks(&lds).is_empty());
        assert!(
            applier.applied.is_empty(),
            "the listener waits for its routes"
        );
        let rds = handle(
            &s,
            &mut state,
            &mut applier,
            &response(
                type_url::ROUTE,
                "1",
                r.routes.iter().map(xds::any).collect(),
            ),
        );
        assert!(nacks(&rds).is_empty());
        assert_eq!(applier.applied.len(), 1, "complete: applied once");
    }

    #[test]
    fn a_refused_config_is_nacked_with_the_reason_and_the_previous_kept() {
        let r = resources();
        let mut state = State::default();
        let mut applier = Recorder::default();
        let s = settings();
        for (kind, items) in [
            (
                type_url::CLUSTER,
                r.clusters.iter().map(xds::any).collect::<Vec<_>>(),
            ),
            (
                type_url::ENDPOINT,
                r.assignments.iter().map(xds::any).collect(),
            ),
            (
                type_url::LISTENER,
                r.listeners.iter().map(xds::any).collect(),
            ),
            (type_url::ROUTE, r.routes.iter().map(xds::any).collect()),
        ] {
            handle(&s, &mut state, &mut applier, &response(kind, "1", items));
        }
        assert_eq!(applier.applied.len(), 1);
        applier.refuse = Some("listener l could not bind 127.0.0.1:8080".into());
        let mut changed = r.assignments[0].clone();
        changed.endpoints[0].lb_endpoints.clear();
        let out = handle(
            &s,
            &mut state,
            &mut applier,
            &response(type_url::ENDPOINT, "2", vec![xds::any(&changed)]),
        );
        assert_eq!(nacks(&out), ["listener l could not bind 127.0.0.1:8080"]);
        assert_eq!(
            out[0].version_info, "1",
            "the NACK names the version still in use"
        );
        assert_eq!(
            state.applied.as_ref().map(|a| a.assignments.clone()),
            Some(r.assignments)
        );
    }
}
