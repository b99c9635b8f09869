//! The `strait` binary: `validate`, `run` with a graceful SIGTERM, and `demo --check`.

#![allow(clippy::unwrap_used)] // test helpers unwrap: a failure is the test failing

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use http_body_util::BodyExt;
use strait_testkit::{Upstream, http1_client, trace_init};

const STRAIT: &str = env!("CARGO_BIN_EXE_strait");

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("strait-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn validate_prints_every_problem_and_fails() {
    let path = temp_file(
        "bad.yaml",
        "listeners:\n  - name: l\n    address: 127.0.0.1:0\n    virtual_hosts:\n      - name: v\n        domains: [\"*\"]\n        routes:\n          - match: { prefix: / }\n            cluster: paymnets\n          - match: { prefix: /x }\n            cluster: web\n            timeout: 0s\nclusters:\n  - name: payments\n    endpoints: [\"127.0.0.1:9\"]\n  - name: search\n    endpoints: [\"127.0.0.1:10\"]\n",
    );
    let output = Command::new(STRAIT)
        .arg("validate")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("has 3 problems"), "{stderr}");
    assert!(stderr.contains("routes[0].cluster (E0203)"), "{stderr}");
    assert!(
        stderr.contains("\"payments\""),
        "the hint names the close match: {stderr}"
    );
    assert!(stderr.contains("routes[1].cluster (E0203)"), "{stderr}");
    assert!(stderr.contains("routes[1].timeout (E0207)"), "{stderr}");

    let good = temp_file("good.yaml", strait_proxy::demo::CONFIG);
    let output = Command::new(STRAIT)
        .arg("validate")
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Reads the proxy's log until it reports the bound address of a listener.
fn bound_address(stderr: impl std::io::Read + Send + 'static) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            // Keep draining stderr after the address so the child never blocks on a full pipe.
            if !sent
                && line.contains("listening")
                && let Some(at) = line.find("address=")
            {
                let addr = line[at + 8..]
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_owned();
                let _ = tx.send(addr);
                sent = true;
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("proxy logs its address")
        .parse()
        .unwrap()
}

#[tokio::test]
async fn sigterm_stops_accepting_finishes_in_flight_requests_and_exits_zero() {
    let _trace = trace_init();
    let upstream = Upstream::start().await;
    let config = temp_file(
        "run.yaml",
        &format!(
            "listeners:\n  - name: l\n    address: 127.0.0.1:0\n    virtual_hosts:\n      - name: v\n        domains: [\"*\"]\n        routes:\n          - match: {{ prefix: / }}\n            cluster: up\nclusters:\n  - name: up\n    endpoints: [\"{}\"]\n",
            upstream.addr()
        ),
    );
    let mut child = KillOnDrop(Some(
        Command::new(STRAIT)
            .args([
                "run",
                "--workers",
                "2",
                "--drain-timeout",
                "10",
                "--admin",
                "127.0.0.1:0",
                "--config",
            ])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    let addr = bound_address(child.get().stderr.take().unwrap());

    let client = http1_client(addr).await.unwrap();
    let in_flight = tokio::spawn(async move {
        let response = client.get("/delay/1500").await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, body)
    });
    strait_testkit::assert_eventually!(upstream.requests_seen() == 1, "request reached upstream");

    let pid = child.get().id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );

    let refused = strait_testkit::eventually(Duration::from_secs(5), || {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err()
    })
    .await;
    assert!(refused, "new connections are refused once shutdown starts");
    assert!(
        !in_flight.is_finished(),
        "the in-flight request is still being served"
    );

    let (status, body) = tokio::time::timeout(Duration::from_secs(10), in_flight)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, 200, "the in-flight request completes");
    assert!(!body.is_empty());
    let mut process = child.0.take().unwrap();
    let exit = tokio::task::spawn_blocking(move || process.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit.code(), Some(0));
}

/// Kills the child process if the test fails before it exits.
struct KillOnDrop(Option<std::process::Child>);

impl KillOnDrop {
    fn get(&mut self) -> &mut std::process::Child {
        self.0.as_mut().unwrap()
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn demo_check_routes_splits_and_balances() {
    let output = Command::new(STRAIT)
        .args([
            "demo",
            "--check",
            "--workers",
            "1",
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains(r#"{"backend-a": 5, "backend-b": 5}"#),
        "round robin: {stdout}"
    );
    assert!(
        stdout.contains(r#"/a/x                       5 requests -> {"backend-a": 5}"#),
        "{stdout}"
    );
}
