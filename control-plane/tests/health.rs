//! The health checker against real servers on loopback: HTTP, gRPC health v1 and TCP checks,
//! thresholds, timeouts, load spreading and target reconciliation.

#![allow(clippy::unwrap_used)] // test helpers unwrap: a failure is the test failing

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use strait_control_plane::health::{CheckSpec, Checker, EndpointHealth, Outcome, Protocol, Target};
use strait_testkit::grpc::BytesCodec;
use strait_testkit::{BlackHole, ClosedPort, GrpcEcho, assert_eventually, within};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::codegen::{BoxFuture, Service};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Code, Status};
use tracing::info;

// === an HTTP upstream whose status can change ===

#[derive(Default)]
struct HttpState {
    status: AtomicU16,
    delay_ms: AtomicU16,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// Each request's start time and Host header.
    seen: Mutex<Vec<(Instant, String)>>,
}

struct HttpUpstream {
    addr: SocketAddr,
    state: Arc<HttpState>,
    server: JoinHandle<()>,
}

impl HttpUpstream {
    async fn start(status: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(HttpState::default());
        state.status.store(status, Ordering::Relaxed);
        let shared = state.clone();
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| respond(state.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            state,
            server,
        }
    }

    fn set_status(&self, status: u16) {
        self.state.status.store(status, Ordering::Relaxed);
    }

    fn requests_from(&self, host: &str) -> usize {
        self.state
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, h)| h == host)
            .count()
    }

    fn requests(&self) -> usize {
        self.state.seen.lock().unwrap().len()
    }
}

impl Drop for HttpUpstream {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn respond(
    state: Arc<HttpState>,
    req: Request<Incoming>,
) -> Result<Response<Empty<Bytes>>, Infallible> {
    let host = req
        .headers()
        .get("host")
        .map(|h| h.to_str().unwrap().to_owned())
        .unwrap_or_default();
    state.seen.lock().unwrap().push((Instant::now(), host));
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let delay = state.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay.into())).await;
    }
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    let mut response = Response::new(Empty::new());
    *response.status_mut() =
        http::StatusCode::from_u16(state.status.load(Ordering::Relaxed)).unwrap();
    Ok(response)
}

// === a gRPC health v1 server (tonic, raw bytes) ===

const SERVING: u8 = 1;
const NOT_SERVING: u8 = 2;

#[derive(Clone, Default)]
struct HealthService {
    /// The status of the service named `web` and of the server (empty name).
    status: Arc<AtomicU8>,
    /// The service names asked about.
    asked: Arc<Mutex<Vec<String>>>,
}

impl NamedService for HealthService {
    const NAME: &'static str = "grpc.health.v1.Health";
}

impl Service<Request<tonic::body::Body>> for HealthService {
    type Response = Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<tonic::body::Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            if req.uri().path() != "/grpc.health.v1.Health/Check" {
                return Ok(Status::unimplemented("only Check").into_http());
            }
            Ok(Grpc::new(BytesCodec).unary(this, req).await)
        })
    }
}

impl UnaryService<Bytes> for HealthService {
    type Response = Bytes;
    type Future = std::future::Ready<Result<tonic::Response<Bytes>, Status>>;

    fn call(&mut self, req: tonic::Request<Bytes>) -> Self::Future {
        // HealthCheckRequest: an optional field 1 string (short names: one-byte length).
        let msg = req.into_inner();
        let service = if msg.len() > 2 {
            String::from_utf8_lossy(&msg[2..]).into_owned()
        } else {
            String::new()
        };
        self.asked.lock().unwrap().push(service.clone());
        std::future::ready(if service.is_empty() || service == "web" {
            let status = self.status.load(Ordering::Relaxed);
            Ok(tonic::Response::new(Bytes::from(vec![0x08, status])))
        } else {
            Err(Status::new(Code::NotFound, "unknown service"))
        })
    }
}

async fn start_grpc_health(status: u8) -> (SocketAddr, HealthService, JoinHandle<()>) {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = HealthService::default();
    service.status.store(status, Ordering::Relaxed);
    let router = tonic::transport::Server::builder().add_service(service.clone());
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let server = tokio::spawn(async move {
        let _ = router.serve_with_incoming(incoming).await;
    });
    (addr, service, server)
}

// === helpers ===

fn target(cluster: &str, address: SocketAddr, protocol: Protocol) -> Target {
    Target {
        cluster: cluster.into(),
        address,
        check: CheckSpec {
            protocol,
            interval: Duration::from_millis(50),
            timeout: Duration::from_secs(2),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            jitter: Duration::from_millis(5),
        },
    }
}

/// A target whose spec `tune` adjusts.
fn tuned(
    cluster: &str,
    address: SocketAddr,
    protocol: Protocol,
    tune: impl FnOnce(&mut CheckSpec),
) -> Target {
    let mut target = target(cluster, address, protocol);
    tune(&mut target.check);
    target
}

fn health(checker: &Checker, target: &Target) -> EndpointHealth {
    checker.health(&target.cluster, target.address).unwrap()
}

fn detail(checker: &Checker, target: &Target) -> String {
    health(checker, target)
        .last
        .map(|r| r.detail)
        .unwrap_or_default()
}

// === tests ===

#[tokio::test]
async fn http_endpoint_flips_after_the_thresholds() {
    let _trace = strait_testkit::trace_init();
    let upstream = HttpUpstream::start(200).await;
    let checker = Checker::new(8);
    let web = target("web", upstream.addr, Protocol::http("/healthz"));
    let mut flips = checker.subscribe();
    checker.set_targets(vec![web.clone()]);
    assert!(
        !health(&checker, &web).healthy,
        "unhealthy until the first check passes"
    );

    info!("the first pass makes it healthy");
    within(Duration::from_secs(5), "first flip", flips.changed())
        .await
        .unwrap();
    let h = health(&checker, &web);
    assert!(h.healthy);
    assert_eq!(h.last.as_ref().unwrap().outcome, Outcome::Pass);
    assert_eq!(detail(&checker, &web), "status 200");
    assert_eq!(
        upstream.requests_from("web"),
        upstream.requests(),
        "Host is the cluster name"
    );

    info!("503s: unhealthy after 3 failures in a row");
    upstream.set_status(503);
    within(Duration::from_secs(5), "flip to unhealthy", flips.changed())
        .await
        .unwrap();
    let h = health(&checker, &web);
    assert!(!h.healthy);
    assert!(h.consecutive_failures >= 3, "{h:?}");
    assert_eq!(detail(&checker, &web), "status 503");

    info!("200s again: healthy after 2 passes in a row");
    upstream.set_status(204);
    within(Duration::from_secs(5), "flip to healthy", flips.changed())
        .await
        .unwrap();
    let h = health(&checker, &web);
    assert!(h.healthy);
    assert!(h.consecutive_successes >= 2, "{h:?}");
    assert_eq!(detail(&checker, &web), "status 204");
}

#[tokio::test]
async fn http_checks_use_the_host_and_statuses_configured() {
    let upstream = HttpUpstream::start(418).await;
    let checker = Checker::new(8);
    let teapot = target(
        "tea",
        upstream.addr,
        Protocol::Http {
            path: "/brew".into(),
            host: Some("pot.internal".into()),
            expected: vec![418..=418],
        },
    );
    let default = target("tea2", upstream.addr, Protocol::http("/"));
    checker.set_targets(vec![teapot.clone(), default.clone()]);
    assert_eventually!(
        health(&checker, &teapot).healthy,
        "{:?}",
        health(&checker, &teapot)
    );
    assert_eventually!(health(&checker, &default).last.is_some());
    assert!(
        !health(&checker, &default).healthy,
        "418 is outside 200..=299"
    );
    assert!(upstream.requests_from("pot.internal") >= 1);
}

#[tokio::test]
async fn tcp_checks_pass_on_connect_and_fail_when_refused() {
    let upstream = HttpUpstream::start(200).await;
    let closed = ClosedPort::new();
    let checker = Checker::new(8);
    let open = target("open", upstream.addr, Protocol::Tcp);
    let refused = target("refused", closed.addr(), Protocol::Tcp);
    checker.set_targets(vec![open.clone(), refused.clone()]);
    assert_eventually!(health(&checker, &open).healthy);
    assert_eq!(detail(&checker, &open), "connected");
    assert_eventually!(health(&checker, &refused).consecutive_failures >= 2);
    let h = health(&checker, &refused);
    assert!(!h.healthy);
    let d = detail(&checker, &refused);
    assert!(
        d.starts_with("connect failed:") && d.contains("refused"),
        "{d}"
    );
}

#[tokio::test]
async fn checks_that_take_too_long_fail_with_a_timeout() {
    let hole = BlackHole::start().await;
    let checker = Checker::new(8);
    let slow = tuned("slow", hole.addr(), Protocol::http("/"), |c| {
        c.timeout = Duration::from_millis(200)
    });
    checker.set_targets(vec![slow.clone()]);
    assert_eventually!(health(&checker, &slow).last.is_some());
    let last = health(&checker, &slow).last.unwrap();
    assert_eq!(last.outcome, Outcome::Fail);
    assert_eq!(last.detail, "timed out after 200ms");
    assert!(last.latency >= Duration::from_millis(200), "{last:?}");
}

#[tokio::test]
async fn grpc_health_checks_follow_the_serving_status() {
    let _trace = strait_testkit::trace_init();
    let (addr, service, _server) = start_grpc_health(SERVING).await;
    let checker = Checker::new(8);
    let whole = target("grpc", addr, Protocol::grpc(None));
    let web = target("grpc-web", addr, Protocol::grpc(Some("web".into())));
    let unknown = target("grpc-other", addr, Protocol::grpc(Some("other".into())));
    let mut flips = checker.subscribe();
    checker.set_targets(vec![whole.clone(), web.clone(), unknown.clone()]);

    assert_eventually!(health(&checker, &whole).healthy && health(&checker, &web).healthy);
    assert_eq!(detail(&checker, &web), "SERVING");
    assert!(service.asked.lock().unwrap().iter().any(|s| s == "web"));
    assert!(service.asked.lock().unwrap().iter().any(String::is_empty));
    assert_eventually!(health(&checker, &unknown).last.is_some());
    assert!(!health(&checker, &unknown).healthy);
    assert_eq!(
        detail(&checker, &unknown),
        "grpc-status 5 (NOT_FOUND): unknown service"
    );

    info!("NOT_SERVING: unhealthy after the threshold");
    flips.mark_unchanged();
    service.status.store(NOT_SERVING, Ordering::Relaxed);
    assert_eventually!(!health(&checker, &web).healthy && !health(&checker, &whole).healthy);
    assert_eq!(detail(&checker, &web), "NOT_SERVING");
    assert!(flips.has_changed().unwrap());

    info!("a server without the health service answers UNIMPLEMENTED");
    let echo = GrpcEcho::start().await;
    let plain = target("echo", echo.addr(), Protocol::grpc(None));
    checker.set_targets(vec![plain.clone()]);
    assert_eventually!(health(&checker, &plain).last.is_some());
    let d = detail(&checker, &plain);
    assert!(d.starts_with("grpc-status 12 (UNIMPLEMENTED)"), "{d}");
}

#[tokio::test]
async fn concurrency_stays_within_the_limit() {
    let _trace = strait_testkit::trace_init();
    let upstream = HttpUpstream::start(200).await;
    upstream.state.delay_ms.store(30, Ordering::Relaxed);
    let checker = Checker::new(4);
    let targets: Vec<Target> = (0..60)
        .map(|i| {
            tuned(&format!("c{i}"), upstream.addr, Protocol::http("/"), |c| {
                c.interval = Duration::from_secs(10);
            })
        })
        .collect();
    checker.set_targets(targets);
    assert_eventually!(
        checker.all().iter().all(|(_, h)| h.healthy),
        "every target checked once"
    );
    let max = upstream.state.max_in_flight.load(Ordering::SeqCst);
    info!(max, "max checks in flight");
    assert!(max <= 4, "{max} checks in flight, limit 4");
    assert!(max >= 2, "the limit is used, not a serial loop ({max})");
}

#[tokio::test]
async fn first_checks_of_a_batch_are_spread() {
    let _trace = strait_testkit::trace_init();
    let upstream = HttpUpstream::start(200).await;
    let checker = Checker::new(256);
    let n = 200;
    let interval = Duration::from_millis(150);
    let targets: Vec<Target> = (0..n)
        .map(|i| {
            tuned(&format!("c{i}"), upstream.addr, Protocol::http("/"), |c| {
                c.interval = interval;
                c.jitter = Duration::ZERO;
            })
        })
        .collect();
    let start = Instant::now();
    checker.set_targets(targets);
    assert_eventually!(upstream.requests() >= n);
    let starts: Vec<Duration> = {
        let seen = upstream.state.seen.lock().unwrap();
        seen.iter()
            .take(n)
            .map(|(at, _)| at.duration_since(start))
            .collect()
    };
    let span = starts[n - 1] - starts[0];
    info!(?span, "first round span");
    // 200 targets, 1ms apart capped at the 150ms interval: a burst would take a few ms.
    assert!(
        span >= Duration::from_millis(100),
        "first checks took only {span:?}"
    );
    let mut buckets = [0usize; 64];
    for at in &starts {
        buckets[(at.as_millis() / 10).min(63) as usize] += 1;
    }
    let busiest = buckets.iter().max().copied().unwrap_or_default();
    assert!(
        busiest <= n / 2,
        "{busiest} of {n} checks started within the same 10ms"
    );
}

#[tokio::test]
async fn set_targets_keeps_state_and_stops_removed_targets() {
    let _trace = strait_testkit::trace_init();
    let upstream = HttpUpstream::start(200).await;
    let checker = Checker::new(8);
    let kept = target("kept", upstream.addr, Protocol::http("/"));
    let removed = target("removed", upstream.addr, Protocol::http("/"));
    checker.set_targets(vec![kept.clone(), removed.clone()]);
    assert_eventually!(health(&checker, &kept).healthy && health(&checker, &removed).healthy);

    info!("an unchanged target keeps its health; a new one starts unhealthy; removed ones go");
    let added = target("added", upstream.addr, Protocol::http("/"));
    let before = health(&checker, &kept);
    checker.set_targets(vec![kept.clone(), added.clone()]);
    let after = health(&checker, &kept);
    assert!(after.healthy);
    assert!(after.consecutive_successes >= before.consecutive_successes);
    assert!(checker.health("removed", removed.address).is_none());
    let removed_seen = upstream.requests_from("removed");
    let kept_seen = upstream.requests_from("kept");

    info!("while kept gets 5 more checks, removed gets none (one may have been in flight)");
    assert_eventually!(upstream.requests_from("kept") >= kept_seen + 5);
    assert!(upstream.requests_from("removed") <= removed_seen + 1);
    assert_eventually!(health(&checker, &added).healthy);

    info!("a changed spec restarts checks but keeps health");
    let changed = Target {
        check: CheckSpec {
            healthy_threshold: 5,
            ..kept.check.clone()
        },
        ..kept.clone()
    };
    checker.set_targets(vec![changed.clone(), added]);
    assert!(health(&checker, &changed).healthy);
    assert_eq!(
        checker
            .all()
            .into_iter()
            .find(|(t, _)| t.cluster == "kept")
            .unwrap()
            .0,
        changed
    );

    info!("dropping the checker stops every check");
    drop(checker);
    let total = upstream.requests();
    let other = HttpUpstream::start(200).await;
    let witness = Checker::new(1);
    let probe = target("witness", other.addr, Protocol::http("/"));
    witness.set_targets(vec![probe]);
    assert_eventually!(other.requests() >= 5);
    assert!(
        upstream.requests() <= total + 2,
        "checks continued after drop"
    );
}
