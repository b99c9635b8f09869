//! The control plane's admin API (GET only, JSON unless noted):
//!
//! | path | answer |
//! |---|---|
//! | `/nodes` | every node that connected: open streams, and per resource type the version sent, the version ACKed, the last NACK with its reason |
//! | `/endpoints` | every cluster's endpoints: where they came from, weight, health and the last check result |
//! | `/registry` | the registered services and endpoints with their expiry |
//! | `/snapshot` | the snapshot serial and the resource names of each type |
//! | `/metrics` | Prometheus text format |
//! | `/ready`, `/live` | 200 |

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use strait_config::xds::type_url;
use tokio::sync::watch;

use crate::endpoints::Sources;
use crate::snapshot::{Snapshot, TYPE_ORDER};
use crate::xds::Nodes;

/// What the admin API reads.
#[derive(Debug)]
pub struct State {
    /// Config, registry, DNS and health.
    pub sources: Arc<Sources>,
    /// Connected nodes.
    pub nodes: Arc<Nodes>,
    /// The snapshot served.
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
}

/// Serves the admin API until `stop` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<State>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stop| *stop) => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(answer(&state, &req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

fn json_body(value: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut body = serde_json::to_string_pretty(value).unwrap_or_else(|_| "{}".to_owned());
    body.push('\n');
    respond(StatusCode::OK, "application/json", body)
}

fn answer(state: &State, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "only GET is supported\n".to_owned(),
        );
    }
    match req.uri().path() {
        "/nodes" => json_body(&json!({ "nodes": state.nodes.all() })),
        "/endpoints" => json_body(&endpoints(state)),
        "/registry" => json_body(&registry(state)),
        "/snapshot" => {
            let snapshot = Arc::clone(&state.snapshot.borrow());
            let types: serde_json::Map<String, serde_json::Value> = TYPE_ORDER
                .iter()
                .map(|t| ((*t).to_owned(), json!(snapshot.names(t))))
                .collect();
            json_body(
                &json!({ "serial": snapshot.serial(), "bytes": snapshot.bytes(), "types": types }),
            )
        }
        "/metrics" => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics(state),
        ),
        "/ready" | "/live" => respond(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            "ok\n".to_owned(),
        ),
        _ => respond(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "unknown admin path; see /nodes /endpoints /registry /snapshot /metrics /ready\n"
                .to_owned(),
        ),
    }
}

fn endpoints(state: &State) -> serde_json::Value {
    let config = state.sources.config();
    let clusters: Vec<_> = config
        .clusters()
        .iter()
        .map(|cluster| {
            let source = match cluster.discovery() {
                Some(strait_config::Discovery::Dns { host, port }) => format!("dns {host}:{port}"),
                Some(strait_config::Discovery::Registry(service)) => format!("registry {service}"),
                _ => "static".to_owned(),
            };
            let endpoints: Vec<_> = state
                .sources
                .endpoints(cluster)
                .into_iter()
                .map(|e| {
                    let check = state.sources.checker().health(cluster.name(), e.address);
                    json!({
                        "address": e.address.to_string(),
                        "weight": e.weight,
                        "healthy": e.healthy,
                        "check": check.map(|h| format!("{h:?}")),
                    })
                })
                .collect();
            json!({
                "name": cluster.name(),
                "source": source,
                "health_checked": cluster.health_check().is_some(),
                "endpoints": endpoints,
            })
        })
        .collect();
    json!({ "clusters": clusters })
}

fn registry(state: &State) -> serde_json::Value {
    let now = tokio::time::Instant::now();
    let services: serde_json::Map<String, serde_json::Value> = state
        .sources
        .registry()
        .services()
        .into_iter()
        .map(|(service, endpoints)| {
            let endpoints: Vec<_> = endpoints
                .into_iter()
                .map(|e| {
                    json!({
                        "address": e.address.to_string(),
                        "weight": e.weight,
                        "zone": e.zone,
                        "metadata": e.metadata,
                        "expires_in_ms": e.expires_at.saturating_duration_since(now).as_millis(),
                    })
                })
                .collect();
            (service, json!(endpoints))
        })
        .collect();
    json!({ "services": services })
}

fn metrics(state: &State) -> String {
    let mut out = String::new();
    let nodes = state.nodes.all();
    let snapshot = Arc::clone(&state.snapshot.borrow());
    let _ = writeln!(
        out,
        "# HELP strait_cp_xds_connected_nodes Nodes with an open ADS stream."
    );
    let _ = writeln!(out, "# TYPE strait_cp_xds_connected_nodes gauge");
    let _ = writeln!(
        out,
        "strait_cp_xds_connected_nodes {}",
        state.nodes.connected()
    );
    let _ = writeln!(
        out,
        "# HELP strait_cp_xds_responses_total Discovery responses sent."
    );
    let _ = writeln!(out, "# TYPE strait_cp_xds_responses_total counter");
    let _ = writeln!(
        out,
        "strait_cp_xds_responses_total {}",
        state.nodes.responses.load(Ordering::Relaxed)
    );
    let _ = writeln!(out, "# HELP strait_cp_xds_nacks_total NACKs received.");
    let _ = writeln!(out, "# TYPE strait_cp_xds_nacks_total counter");
    let _ = writeln!(
        out,
        "strait_cp_xds_nacks_total {}",
        state.nodes.nacks.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP strait_cp_snapshot_serial Snapshots built since start."
    );
    let _ = writeln!(out, "# TYPE strait_cp_snapshot_serial gauge");
    let _ = writeln!(out, "strait_cp_snapshot_serial {}", snapshot.serial());
    let _ = writeln!(
        out,
        "# HELP strait_cp_node_acked Whether the node ACKed the version of a type being served (1) or not yet (0)."
    );
    let _ = writeln!(out, "# TYPE strait_cp_node_acked gauge");
    for (id, node) in &nodes {
        for (kind, status) in &node.types {
            let short = [
                (type_url::LISTENER, "listener"),
                (type_url::ROUTE, "route"),
                (type_url::CLUSTER, "cluster"),
                (type_url::ENDPOINT, "endpoint"),
            ]
            .iter()
            .find(|(t, _)| t == kind)
            .map_or("other", |(_, s)| s);
            let acked = i32::from(status.sent.is_some() && status.sent == status.acked);
            let _ = writeln!(
                out,
                "strait_cp_node_acked{{node=\"{}\",type=\"{short}\"}} {acked}",
                id.replace(['"', '\\', '\n'], "_")
            );
        }
    }
    let config = state.sources.config();
    let _ = writeln!(
        out,
        "# HELP strait_cp_endpoints Endpoints by cluster and health."
    );
    let _ = writeln!(out, "# TYPE strait_cp_endpoints gauge");
    for cluster in config.clusters() {
        let endpoints = state.sources.endpoints(cluster);
        let healthy = endpoints.iter().filter(|e| e.healthy).count();
        let _ = writeln!(
            out,
            "strait_cp_endpoints{{cluster=\"{}\",health=\"healthy\"}} {healthy}",
            cluster.name()
        );
        let _ = writeln!(
            out,
            "strait_cp_endpoints{{cluster=\"{}\",health=\"unhealthy\"}} {}",
            cluster.name(),
            endpoints.len() - healthy
        );
    }
    out
}
