//! The admin API: metrics, readiness, liveness, the active config, clusters and workers.
//!
//! It runs on a thread of its own with a current-thread runtime, away from the workers, and
//! only reads what they publish (metric shards, the snapshot, the ready flag). Every endpoint
//! answers `GET`; `/config` also takes `PUT` with a new config (YAML, or JSON with
//! `Content-Type: application/json` or `?format=json`): 200 with the new version, or 400 with
//! every problem while the previous config keeps serving.
//!
//! | path | answer |
//! |---|---|
//! | `/metrics` | Prometheus text format (docs/metrics.md) |
//! | `/ready` | 200 when every listener is bound and a config is active; 503 before and during shutdown |
//! | `/live` | 200 while the process runs |
//! | `/config` | the active config and its version; `?format=json` or `?format=yaml` (default: as loaded); `PUT` applies a new one |
//! | `/clusters` | JSON: each cluster's endpoints with weight, health, in-flight requests, ejection |
//! | `/workers` | JSON: each worker's connections and requests, to see load skew |

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use strait_config::Format;
use tokio::sync::watch;

use crate::metrics::{Collected, Shard};
use crate::reload::{ReloadError, Reloader};
use crate::snapshot::SharedSnapshot;

/// The config text a snapshot was loaded from, for `/config`.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    /// The document as loaded.
    pub text: String,
    /// Its format.
    pub format: Format,
}

/// What the admin API reads.
#[derive(Debug)]
pub struct AdminState {
    /// The active snapshot.
    pub snapshot: SharedSnapshot,
    /// Applies new configs, and knows the text of the active one.
    pub reloader: Arc<Reloader>,
    /// The metrics.
    pub collected: Collected,
    /// The workers' shards.
    pub shards: Vec<Arc<Shard>>,
    /// Whether the proxy is ready for traffic.
    pub ready: Arc<AtomicBool>,
}

/// A running admin server.
#[derive(Debug)]
pub struct Admin {
    addr: SocketAddr,
    listener: std::net::TcpListener,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl Admin {
    /// Binds `addr` and serves on a thread of its own.
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub fn start(addr: SocketAddr, state: Arc<AdminState>) -> std::io::Result<Self> {
        Self::start_on(std::net::TcpListener::bind(addr)?, state)
    }

    /// Serves on an already listening socket (one taken over from an older process).
    ///
    /// # Errors
    /// When the socket cannot be used.
    pub fn start_on(
        listener: std::net::TcpListener,
        state: Arc<AdminState>,
    ) -> std::io::Result<Self> {
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let kept = listener.try_clone()?;
        let (stop, stopped) = watch::channel(false);
        let thread = std::thread::Builder::new()
            .name("strait-admin".into())
            .spawn(move || {
                // Reloads run here (and on the blocking pool): never at the workers' expense.
                crate::reload::lower_thread_priority();
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .on_thread_start(crate::reload::lower_thread_priority)
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(err) => {
                        tracing::error!(error = %err, "admin runtime failed to start");
                        return;
                    }
                };
                runtime.block_on(serve(listener, state, stopped));
            })?;
        tracing::info!(address = %addr, "admin API listening");
        Ok(Self {
            addr,
            listener: kept,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A duplicate of the listening socket, to hand to a new binary.
    ///
    /// # Errors
    /// When the descriptor cannot be duplicated.
    pub fn duplicate_listener(&self) -> std::io::Result<std::net::TcpListener> {
        self.listener.try_clone()
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    state: Arc<AdminState>,
    mut stopped: watch::Receiver<bool>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(err) => {
            tracing::error!(error = %err, "admin listener failed");
            return;
        }
    };
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.wait_for(|stop| *stop) => return,
        };
        let Ok((stream, _)) = accepted else {
            continue;
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let state = Arc::clone(&state);
                async move {
                    if req.method() == Method::PUT && req.uri().path() == "/config" {
                        return Ok::<_, Infallible>(put_config(state, req).await);
                    }
                    Ok::<_, Infallible>(answer(&state, &req))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn answer(state: &AdminState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET is supported (and PUT on /config)\n",
        );
    }
    match req.uri().path() {
        "/metrics" => {
            let mut response = text(StatusCode::OK, state.collected.encode());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(
                    prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                ),
            );
            response
        }
        "/ready" if state.ready.load(Ordering::Acquire) => text(StatusCode::OK, "ready\n"),
        "/ready" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        "/live" => text(StatusCode::OK, "live\n"),
        "/config" => config(state, req.uri().query()),
        "/clusters" => json_response(&clusters(state)),
        "/workers" => json_response(&workers(state)),
        _ => text(
            StatusCode::NOT_FOUND,
            "unknown admin path; see /metrics /ready /live /config /clusters /workers\n",
        ),
    }
}

/// The largest config `PUT /config` takes.
const MAX_CONFIG_BYTES: usize = 64 * 1024 * 1024;

/// `PUT /config`: validates and applies the body; the reload itself (binding listeners,
/// waiting for workers) runs on the blocking pool.
async fn put_config(state: Arc<AdminState>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let json = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "format=json"))
        || req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
    let format = if json { Format::Json } else { Format::Yaml };
    let body = match Limited::new(req.into_body(), MAX_CONFIG_BYTES)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(err) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("the config could not be read (at most {MAX_CONFIG_BYTES} bytes): {err}\n"),
            );
        }
    };
    let Ok(body) = String::from_utf8(body.to_vec()) else {
        return text(StatusCode::BAD_REQUEST, "the config is not UTF-8\n");
    };
    let reloader = Arc::clone(&state.reloader);
    let outcome = tokio::task::spawn_blocking(move || reloader.apply(&body, format)).await;
    match outcome {
        Ok(Ok(applied)) => json_response(&json!({
            "version": applied.version,
            "listeners_added": applied.added,
            "listeners_removed": applied.removed,
            "warnings": applied.warnings,
        })),
        Ok(Err(err @ ReloadError::Bind { .. })) => {
            text(StatusCode::CONFLICT, format!("config rejected: {err}\n"))
        }
        Ok(Err(err)) => text(StatusCode::BAD_REQUEST, format!("{err}\n")),
        Err(err) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the reload did not finish: {err}\n"),
        ),
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn json_response(value: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut body = serde_json::to_string_pretty(value).unwrap_or_else(|_| "{}".to_owned());
    body.push('\n');
    let mut response = text(StatusCode::OK, body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

fn config(state: &AdminState, query: Option<&str>) -> Response<Full<Bytes>> {
    let version = state.snapshot.load().version();
    let Some(source) = state.reloader.source() else {
        return text(
            StatusCode::NOT_FOUND,
            "the active config was not loaded from a document\n",
        );
    };
    let wanted = match query.and_then(|q| q.split('&').find_map(|p| p.strip_prefix("format="))) {
        Some("json") => Format::Json,
        Some("yaml") => Format::Yaml,
        None => source.format,
        Some(_) => return text(StatusCode::BAD_REQUEST, "format must be json or yaml\n"),
    };
    let body = if wanted == source.format {
        Ok(source.text)
    } else {
        strait_config::convert(&source.text, source.format, wanted)
    };
    match body {
        Ok(body) => match wanted {
            Format::Json => {
                let config: serde_json::Value =
                    serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
                json_response(&json!({ "version": version, "config": config }))
            }
            Format::Yaml => text(StatusCode::OK, format!("# version: {version}\n{body}")),
        },
        Err(err) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{}\n", err.render("config")),
        ),
    }
}

fn clusters(state: &AdminState) -> serde_json::Value {
    let snapshot = state.snapshot.load();
    let clusters: Vec<_> = snapshot
        .config()
        .clusters()
        .iter()
        .map(|cluster| {
            let endpoints: Vec<_> = cluster
                .endpoints()
                .iter()
                .map(|endpoint| {
                    let (mut in_flight, mut requests) = (0i64, 0u64);
                    for shard in &state.shards {
                        for stats in shard.clusters().iter().filter(|c| c.name == cluster.name()) {
                            for e in stats
                                .endpoints()
                                .iter()
                                .filter(|e| e.addr == endpoint.address())
                            {
                                in_flight += e.in_flight.get();
                                requests += e.requests.get();
                            }
                        }
                    }
                    json!({
                        "address": endpoint.address().to_string(),
                        "weight": endpoint.weight(),
                        // Active health checking and outlier detection arrive with the control
                        // plane; until then every configured endpoint is taken as healthy.
                        "health": "healthy",
                        "ejected": false,
                        "in_flight": in_flight,
                        "requests": requests,
                    })
                })
                .collect();
            json!({ "name": cluster.name(), "endpoints": endpoints })
        })
        .collect();
    json!({ "version": snapshot.version(), "clusters": clusters })
}

fn workers(state: &AdminState) -> serde_json::Value {
    let workers: Vec<_> = state
        .shards
        .iter()
        .map(|shard| {
            let listeners = shard.listeners();
            let total: u64 = listeners.iter().map(|l| l.connections_total.get()).sum();
            let active: i64 = listeners.iter().map(|l| l.connections_active.get()).sum();
            json!({
                "worker": shard.worker(),
                "connections_total": total,
                "connections_active": active,
                "requests": shard.requests.get(),
            })
        })
        .collect();
    json!({ "workers": workers })
}
