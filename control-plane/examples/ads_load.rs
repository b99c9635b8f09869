//! Load for `benches/xds.sh`: many simulated ADS clients against a real `strait-cp` process.
//!
//! It writes a config with CLUSTERS x PER_CLUSTER endpoints, all TCP health-checked: one
//! endpoint is a listener this program owns (the "flip" endpoint), the others are closed
//! loopback ports (refused, so unhealthy). It starts `strait-cp` with it, opens STREAMS ADS
//! streams (CDS wildcard, then EDS for every cluster, ACKing every response), waits until every
//! stream has the flip endpoint healthy, then closes the flip listener and measures the time
//! until every stream has received, and ACKed, the endpoints with it unhealthy. Prints one JSON
//! line with the figures and strait-cp's CPU time and memory.
//!
//! usage: ads_load STRAIT_CP STREAMS CLUSTERS PER_CLUSTER [CP_CPU]

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark harness: failing loudly is right

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{HealthStatus, Node};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use prost::Message;
use strait_config::xds::type_url;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// What every stream reports: whether it has the flip endpoint healthy (1), unhealthy (2).
#[derive(Default)]
struct Counts {
    healthy: AtomicUsize,
    unhealthy: AtomicUsize,
    synced: AtomicUsize,
}

fn request(
    node: &str,
    type_url: &str,
    names: Vec<String>,
    version: &str,
    nonce: &str,
) -> DiscoveryRequest {
    DiscoveryRequest {
        version_info: version.to_owned(),
        node: Some(Node {
            id: node.to_owned(),
            ..Default::default()
        }),
        resource_names: names,
        type_url: type_url.to_owned(),
        response_nonce: nonce.to_owned(),
        ..Default::default()
    }
}

async fn client(
    xds: SocketAddr,
    id: usize,
    flip: SocketAddr,
    counts: Arc<Counts>,
    done: watch::Receiver<bool>,
) {
    let node = format!("sim-{id}");
    let mut ads = loop {
        match AggregatedDiscoveryServiceClient::connect(format!("http://{xds}")).await {
            Ok(client) => break client.max_decoding_message_size(256 * 1024 * 1024),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let (tx, rx) = mpsc::unbounded_channel();
    tx.send(request(&node, type_url::CLUSTER, vec![], "", ""))
        .unwrap();
    let mut inbound = ads
        .stream_aggregated_resources(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
        .await
        .expect("ADS stream")
        .into_inner();
    let mut eds_names = Vec::new();
    let mut state = 0u8; // 0 unknown, 1 healthy, 2 unhealthy
    let mut synced = false;
    let mut done = done;
    loop {
        let response = tokio::select! {
            r = inbound.message() => match r { Ok(Some(r)) => r, _ => return },
            _ = done.wait_for(|d| *d) => return,
        };
        if response.type_url == type_url::CLUSTER {
            let names: Vec<String> = response
                .resources
                .iter()
                .filter_map(|any| {
                    envoy_types::pb::envoy::config::cluster::v3::Cluster::decode(
                        any.value.as_slice(),
                    )
                    .ok()
                    .map(|c| c.name)
                })
                .collect();
            tx.send(request(
                &node,
                &response.type_url,
                vec![],
                &response.version_info,
                &response.nonce,
            ))
            .unwrap();
            if names != eds_names {
                eds_names = names;
                tx.send(request(
                    &node,
                    type_url::ENDPOINT,
                    eds_names.clone(),
                    "",
                    "",
                ))
                .unwrap();
            }
            continue;
        }
        // EDS: find the flip endpoint's health, then ACK.
        let mut flip_state = state;
        for any in &response.resources {
            let Ok(assignment) = ClusterLoadAssignment::decode(any.value.as_slice()) else {
                continue;
            };
            if assignment.cluster_name != "c0" {
                continue;
            }
            for locality in &assignment.endpoints {
                for endpoint in &locality.lb_endpoints {
                    let address = match &endpoint.host_identifier {
                        Some(envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier::Endpoint(e)) => e.address.clone(),
                        _ => None,
                    };
                    let port = match address.and_then(|a| a.address) {
                        Some(envoy_types::pb::envoy::config::core::v3::address::Address::SocketAddress(s)) => match s.port_specifier {
                            Some(envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(p)) => p,
                            _ => 0,
                        },
                        _ => 0,
                    };
                    if port == u32::from(flip.port()) {
                        flip_state = if endpoint.health_status == HealthStatus::Healthy as i32 {
                            1
                        } else {
                            2
                        };
                    }
                }
            }
        }
        tx.send(request(
            &node,
            &response.type_url,
            eds_names.clone(),
            &response.version_info,
            &response.nonce,
        ))
        .unwrap();
        if !synced {
            synced = true;
            counts.synced.fetch_add(1, Ordering::Relaxed);
        }
        if flip_state != state {
            match flip_state {
                1 => counts.healthy.fetch_add(1, Ordering::Relaxed),
                _ => counts.unhealthy.fetch_add(1, Ordering::Relaxed),
            };
            state = flip_state;
        }
    }
}

fn proc_stat(pid: u32) -> (f64, u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 (1-based), i.e. 11 and 12 after the command name.
    let ticks: f64 = fields
        .get(11)
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks / 100.0, kib("VmRSS:"), kib("VmHWM:"))
}

async fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "{what} did not happen within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    start.elapsed()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let cp_binary = args.get(1).expect("STRAIT_CP").clone();
    let streams: usize = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(1000);
    let clusters: usize = args.get(3).and_then(|v| v.parse().ok()).unwrap_or(100);
    let per_cluster: usize = args.get(4).and_then(|v| v.parse().ok()).unwrap_or(100);
    let cp_cpu = args.get(5).cloned();

    let flip = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let flip_addr = flip.local_addr().unwrap();
    // Keep accepting so that checks see a live endpoint.
    let flip_task = tokio::spawn(async move {
        loop {
            if let Ok((stream, _)) = flip.accept().await {
                drop(stream);
            }
        }
    });
    let free = |_: usize| {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let xds_port = free(0);
    let admin_port = free(0);
    let dir = std::env::temp_dir().join(format!("strait-ads-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut config = String::from(
        "listeners:\n  - name: main\n    address: 127.0.0.1:8080\n    virtual_hosts:\n      - name: all\n        domains: [\"*\"]\n        routes:\n          - match: { prefix: / }\n            cluster: c0\nclusters:\n",
    );
    // Closed loopback ports: bound once to find free ones, then released (refused when checked).
    let mut next_port = 20_000u32;
    for c in 0..clusters {
        config.push_str(&format!(
            "  - name: c{c}\n    health_check: {{ protocol: tcp, interval: 5s, timeout: 1s, unhealthy_threshold: 1, healthy_threshold: 1 }}\n    endpoints: ["
        ));
        for e in 0..per_cluster {
            if e > 0 {
                config.push_str(", ");
            }
            if c == 0 && e == 0 {
                config.push_str(&format!("\"{flip_addr}\""));
            } else {
                // 127.0.0.1 with ports from 20000 upward, skipping the flip endpoint's.
                let mut port = next_port;
                if port == u32::from(flip_addr.port()) {
                    port += 1;
                }
                next_port = port + 1;
                let host = 1 + (port / 65_536);
                let port = 1024 + port % 64_000;
                config.push_str(&format!("\"127.0.0.{host}:{port}\""));
            }
        }
        config.push_str("]\n");
    }
    let path = dir.join("cp.yaml");
    std::fs::write(&path, config).unwrap();
    let mut command = match &cp_cpu {
        Some(cpu) => {
            let mut c = std::process::Command::new("taskset");
            c.args(["-c", cpu]).arg(&cp_binary);
            c
        }
        None => std::process::Command::new(&cp_binary),
    };
    let child = command
        .args(["run", "--xds", &format!("127.0.0.1:{xds_port}")])
        .args(["--admin", &format!("127.0.0.1:{admin_port}")])
        .arg("--config")
        .arg(&path)
        .env("STRAIT_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("strait-cp starts");
    let pid = child.id();
    // strait-cp must not outlive this program, even when a wait below fails.
    let child = KillOnDrop(child);
    let xds: SocketAddr = format!("127.0.0.1:{xds_port}").parse().unwrap();

    let counts = Arc::new(Counts::default());
    let (done_tx, done) = watch::channel(false);
    let started = Instant::now();
    let tasks: Vec<_> = (0..streams)
        .map(|id| {
            tokio::spawn(client(
                xds,
                id,
                flip_addr,
                Arc::clone(&counts),
                done.clone(),
            ))
        })
        .collect();
    let sync = wait_until(
        Duration::from_secs(120),
        "initial sync of every stream",
        || counts.synced.load(Ordering::Relaxed) == streams,
    )
    .await;
    let sync = sync.max(started.elapsed());
    let healthy = wait_until(
        Duration::from_secs(60),
        "the flip endpoint healthy everywhere",
        || counts.healthy.load(Ordering::Relaxed) == streams,
    )
    .await;
    let _ = healthy;
    let (cpu_before, _, _) = proc_stat(pid);
    // The health change: the flip endpoint stops listening.
    flip_task.abort();
    let _ = flip_task.await;
    let closed = Instant::now();
    wait_until(
        Duration::from_secs(60),
        "the first stream to see it unhealthy",
        || counts.unhealthy.load(Ordering::Relaxed) >= 1,
    )
    .await;
    let first = closed.elapsed();
    wait_until(
        Duration::from_secs(60),
        "every stream to see it unhealthy",
        || counts.unhealthy.load(Ordering::Relaxed) == streams,
    )
    .await;
    let all = closed.elapsed();
    let (cpu_after, rss_kib, hwm_kib) = proc_stat(pid);
    println!(
        "{}",
        serde_json::json!({
            "streams": streams,
            "endpoints": clusters * per_cluster,
            "initial_sync_s": sync.as_secs_f64(),
            "detect_ms": first.as_secs_f64() * 1e3,
            "push_to_all_acks_ms": (all - first).as_secs_f64() * 1e3,
            "change_to_all_acks_ms": all.as_secs_f64() * 1e3,
            "cp_cpu_s_during_push": cpu_after - cpu_before,
            "cp_rss_mib": rss_kib as f64 / 1024.0,
            "cp_peak_rss_mib": hwm_kib as f64 / 1024.0,
        })
    );
    let _ = done_tx.send(true);
    for task in tasks {
        task.abort();
    }
    drop(child);
    let _ = std::fs::remove_dir_all(&dir);
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
