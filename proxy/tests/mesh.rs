//! A small mesh on loopback: strait-cp (in this process) and two `strait` proxies following it
//! over ADS, in front of real backends. A backend that dies stops getting traffic once its
//! health checks fail; a newly registered endpoint takes traffic within 2 s; a route change
//! reaches both proxies; a config the proxies must refuse is NACKed while they keep serving the
//! previous one; and when strait-cp restarts they keep serving, then resync.

#![allow(clippy::unwrap_used)] // test helpers unwrap: a failure is the test failing

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::process::{KillOnDrop, Log};
use http_body_util::BodyExt;
use strait_config::{Format, parse};
use strait_control_plane::server::{ControlPlane, Options};
use strait_testkit::{Upstream, http1_client, trace_init};
use tokio::time::Instant;

/// Health checks every 300 ms; two failures make an endpoint unhealthy.
const INTERVAL_MS: u64 = 300;
const UNHEALTHY_THRESHOLD: u64 = 2;

fn config(
    version: &str,
    extra_listener: Option<SocketAddr>,
    stable: SocketAddr,
) -> strait_config::Config {
    let extra = extra_listener.map_or(String::new(), |addr| {
        format!("  - name: extra\n    address: {addr}\n    virtual_hosts:\n      - name: all\n        domains: [\"*\"]\n        routes:\n          - match: {{ prefix: / }}\n            cluster: stable\n")
    });
    parse(
        &format!(
            r#"listeners:
  - name: main
    address: 127.0.0.1:0
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: {{ prefix: /version }}
            direct_response: {{ status: 200, body: "{version}" }}
          - match: {{ prefix: /stable }}
            cluster: stable
          - match: {{ prefix: / }}
            cluster: api
{extra}clusters:
  - name: api
    discovery: {{ registry: api }}
    health_check: {{ protocol: http, path: /, interval: {INTERVAL_MS}ms, timeout: 200ms, unhealthy_threshold: {UNHEALTHY_THRESHOLD}, healthy_threshold: 1 }}
  - name: stable
    endpoints: ["{stable}"]
registry: {{ address: 127.0.0.1:0 }}
"#
        ),
        Format::Yaml,
    )
    .unwrap()
}

async fn get(addr: SocketAddr, path: &str) -> Result<(u16, String, String), String> {
    let client = http1_client(addr).await.map_err(|e| e.to_string())?;
    let response = client.get(path).await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let upstream = response
        .headers()
        .get("x-upstream")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((
        status,
        upstream,
        String::from_utf8_lossy(&body).into_owned(),
    ))
}

/// Polls until `check` holds for the answer to `path` on every proxy, within `limit`.
async fn until_all(
    proxies: &[SocketAddr],
    path: &str,
    limit: Duration,
    check: impl Fn(&(u16, String, String)) -> bool,
) {
    let deadline = Instant::now() + limit;
    for proxy in proxies {
        loop {
            let answer = get(*proxy, path).await;
            if answer.as_ref().is_ok_and(&check) {
                break;
            }
            assert!(Instant::now() < deadline, "{proxy}{path}: still {answer:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn register(registry: SocketAddr, address: SocketAddr) {
    let client = http1_client(registry).await.unwrap();
    let request = http::Request::put(format!("/v1/services/api/endpoints/{address}"))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"{\"ttl\":\"1h\"}",
        )))
        .unwrap();
    let response = client.send(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(status.is_success(), "register {address}: {status} {body:?}");
}

fn spawn_proxy(xds: SocketAddr, node: &str) -> (KillOnDrop, Log, SocketAddr) {
    let mut child = KillOnDrop(Some(
        std::process::Command::new(common::process::STRAIT)
            .args(["run", "--xds", &xds.to_string(), "--node-id", node])
            .args([
                "--workers",
                "1",
                "--admin",
                "127.0.0.1:0",
                "--io",
                common::process::io_arg(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    let log = Log::new(child.get().stderr.take().unwrap());
    let addr = log.bound_address();
    (child, log, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_follow_strait_cp_through_failures_registrations_and_restarts() {
    let _trace = trace_init();
    let a = Upstream::builder().name("a").start().await;
    let b = Upstream::builder().name("b").start().await;
    let c = Upstream::builder().name("c").start().await;
    let stable = Upstream::builder().name("stable").start().await;
    let cp = ControlPlane::start(config("v1", None, stable.addr()), &Options::loopback())
        .await
        .unwrap();
    let xds = cp.xds_addr();
    let registry = cp.registry_addr().unwrap();
    register(registry, a.addr()).await;
    register(registry, b.addr()).await;

    let (_p1, _log1, proxy1) = spawn_proxy(xds, "proxy-1");
    let (_p2, _log2, proxy2) = spawn_proxy(xds, "proxy-2");
    let proxies = [proxy1, proxy2];

    // Both healthy registered endpoints take traffic through both proxies.
    for proxy in proxies {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut seen = BTreeMap::new();
        while seen.len() < 2 {
            assert!(Instant::now() < deadline, "{proxy}: only {seen:?}");
            if let Ok((200, upstream, _)) = get(proxy, "/").await {
                *seen.entry(upstream).or_insert(0) += 1;
            }
        }
    }

    // Getting there took no NACK: clusters and endpoints before listeners is warming.
    for (id, node) in cp.nodes().all() {
        for (kind, status) in node.types {
            assert!(status.nack.is_none(), "{id} {kind}: {:?}", status.nack);
        }
    }

    // Backend b dies: within interval x unhealthy_threshold + 1 s no request goes to it, and
    // none fails after that.
    let killed = Instant::now();
    drop(b);
    let bound = Duration::from_millis(INTERVAL_MS * UNHEALTHY_THRESHOLD + 1000);
    let mut last_bad = None;
    while killed.elapsed() < bound + Duration::from_secs(1) {
        for proxy in proxies {
            let answer = get(proxy, "/").await;
            if !matches!(&answer, Ok((200, upstream, _)) if upstream == "a") {
                last_bad = Some((killed.elapsed(), answer));
            }
        }
    }
    if let Some((at, answer)) = &last_bad {
        assert!(
            *at <= bound,
            "still {answer:?} {at:?} after b died (bound {bound:?})"
        );
    }
    for _ in 0..20 {
        for proxy in proxies {
            let (status, upstream, _) = get(proxy, "/").await.unwrap();
            assert_eq!((status, upstream.as_str()), (200, "a"));
        }
    }

    // A newly registered endpoint takes traffic within 2 s.
    let registered = Instant::now();
    register(registry, c.addr()).await;
    for proxy in proxies {
        loop {
            if let Ok((200, upstream, _)) = get(proxy, "/").await
                && upstream == "c"
            {
                break;
            }
            assert!(
                registered.elapsed() <= Duration::from_secs(2),
                "{proxy}: c took no traffic within 2 s"
            );
        }
    }

    // A route change reaches both proxies.
    cp.set_config(config("v2", None, stable.addr()));
    until_all(&proxies, "/version", Duration::from_secs(5), |a| {
        a.0 == 200 && a.2 == "v2"
    })
    .await;

    // A listener on a port that is taken: both proxies NACK and keep serving v2.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    cp.set_config(config(
        "v3",
        Some(taken.local_addr().unwrap()),
        stable.addr(),
    ));
    let nacked = strait_testkit::eventually(Duration::from_secs(10), || {
        let nodes = cp.nodes().all();
        ["proxy-1", "proxy-2"].iter().all(|id| {
            nodes.get(*id).is_some_and(|n| {
                n.types.values().any(|t| {
                    t.nack
                        .as_ref()
                        .is_some_and(|nack| nack.message.contains("could not bind"))
                })
            })
        })
    })
    .await;
    assert!(nacked, "both proxies NACK: {:?}", cp.nodes().all());
    for proxy in proxies {
        assert_eq!(get(proxy, "/version").await.unwrap().2, "v2");
    }

    // strait-cp goes away: the proxies keep serving; a new one (same address) resyncs them.
    drop(taken);
    cp.shutdown().await;
    for proxy in proxies {
        let (status, upstream, _) = get(proxy, "/stable").await.unwrap();
        assert_eq!((status, upstream.as_str()), (200, "stable"));
    }
    let cp = ControlPlane::start(
        config("v4", None, stable.addr()),
        &Options {
            xds: Some(xds),
            ..Options::loopback()
        },
    )
    .await
    .unwrap();
    until_all(&proxies, "/version", Duration::from_secs(20), |a| {
        a.0 == 200 && a.2 == "v4"
    })
    .await;
    cp.shutdown().await;
}
