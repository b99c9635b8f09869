//! The `strait` binary: `validate`, `run` with a graceful SIGTERM, reloads on a file change and
//! on SIGHUP, `demo --check`, and `--io` where a seccomp filter makes the kernel refuse io_uring.

#![allow(clippy::unwrap_used)] // test helpers unwrap: a failure is the test failing

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::process::{KillOnDrop, Log, STRAIT, spawn_run, spawn_run_under, temp_dir, temp_file};
use http_body_util::BodyExt;
use strait_testkit::{Upstream, http1_client, trace_init};

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
    let addr = Log::new(child.get().stderr.take().unwrap()).bound_address();

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

fn answering(body: &str) -> String {
    format!(
        "listeners:\n  - name: l\n    address: 127.0.0.1:0\n    virtual_hosts:\n      - name: v\n        domains: [\"*\"]\n        routes:\n          - match: {{ prefix: / }}\n            direct_response: {{ status: 200, body: \"{body}\" }}\n"
    )
}

async fn body_of(addr: std::net::SocketAddr) -> String {
    let client = http1_client(addr).await.unwrap();
    let response = client.get("/").await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

/// Waits (bounded) until `/` answers `want`.
async fn until_answers(addr: std::net::SocketAddr, want: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = body_of(addr).await;
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still answering {got:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn file_changes_reload_the_config_and_bad_ones_are_rejected() {
    let _trace = trace_init();
    // Laid out as Kubernetes mounts a ConfigMap: config.yaml -> ..data/config.yaml, and
    // ..data -> a versioned directory, swapped atomically on update.
    let dir = temp_dir("watch");
    std::fs::create_dir(dir.join("v1")).unwrap();
    std::fs::write(dir.join("v1/config.yaml"), answering("one")).unwrap();
    std::os::unix::fs::symlink("v1", dir.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/config.yaml", dir.join("config.yaml")).unwrap();
    let config = dir.join("config.yaml");
    let (child, log) = spawn_run(&config, &["--workers", "1"]);
    let addr = log.bound_address();
    log.wait_for(&["watching the config file"], Duration::from_secs(10));
    assert_eq!(body_of(addr).await, "one");

    // ConfigMap update: a new directory, and the ..data link replaced by a rename.
    std::fs::create_dir(dir.join("v2")).unwrap();
    std::fs::write(dir.join("v2/config.yaml"), answering("two")).unwrap();
    std::os::unix::fs::symlink("v2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    until_answers(addr, "two").await;

    // An editor's save: write a temporary file, rename it over the real one.
    std::fs::remove_file(&config).unwrap();
    std::fs::write(dir.join(".config.yaml.swp"), answering("three")).unwrap();
    std::fs::rename(dir.join(".config.yaml.swp"), &config).unwrap();
    until_answers(addr, "three").await;

    // A bad edit is rejected with its problems logged; the last good config keeps serving.
    std::fs::write(
        dir.join(".bad"),
        "listeners:\n  - name: l\n    address: nowhere\n",
    )
    .unwrap();
    std::fs::rename(dir.join(".bad"), &config).unwrap();
    log.wait_for(&["config rejected"], Duration::from_secs(10));
    log.wait_for(&["listeners[0].address"], Duration::from_secs(5));
    assert_eq!(body_of(addr).await, "three");
    drop(child);
}

#[tokio::test]
async fn sighup_reloads_the_config_file() {
    let _trace = trace_init();
    let config = temp_file("hup.yaml", &answering("before"));
    let (mut child, log) = spawn_run(&config, &["--workers", "1", "--no-watch"]);
    let addr = log.bound_address();
    assert_eq!(body_of(addr).await, "before");
    std::fs::write(&config, answering("after")).unwrap();
    child.signal("HUP");
    until_answers(addr, "after").await;
    assert!(log.contains("SIGHUP: reloading"));
    child.signal("TERM");
    let exit = child.wait(Duration::from_secs(15)).await;
    assert_eq!(exit.code(), Some(0));
}

/// Starts `strait run --io IO` on `config` where the kernel refuses io_uring with `errno`
/// (`EPERM` as under Docker's default seccomp profile, or `ENOSYS` as on a kernel without it):
/// `tests/seccomp/deny_io_uring.py` installs the seccomp filter and executes the binary.
#[cfg(target_arch = "x86_64")]
fn spawn_without_io_uring(errno: &str, io: &str, config: &std::path::Path) -> (KillOnDrop, Log) {
    let wrapper = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/seccomp/deny_io_uring.py"
    );
    spawn_run_under(&["python3", wrapper, errno], config, &["--io", io])
}

#[cfg(target_arch = "x86_64")]
#[tokio::test]
async fn auto_falls_back_to_epoll_where_the_kernel_refuses_io_uring() {
    let _trace = trace_init();
    let upstream = Upstream::start().await;
    let config = temp_file(
        "no-uring.yaml",
        &common::single("http1", &[upstream.addr()]),
    );
    for (errno, reason) in [
        ("EPERM", "Operation not permitted"),
        ("ENOSYS", "Function not implemented"),
    ] {
        let (_child, log) = spawn_without_io_uring(errno, "auto", &config);
        log.wait_for(
            &[
                "io_uring unavailable; using epoll",
                "io_uring_setup",
                reason,
            ],
            Duration::from_secs(20),
        );
        log.wait_for(&["socket I/O backend", "epoll"], Duration::from_secs(20));
        let addr = log.bound_address();
        let seen = upstream.requests_seen();
        let response = http1_client(addr).await.unwrap().get("/").await.unwrap();
        assert_eq!(response.status(), 200, "{errno}");
        assert_eq!(upstream.requests_seen(), seen + 1, "{errno}");

        let metrics = http1_client(log.admin_address())
            .await
            .unwrap()
            .get("/metrics")
            .await
            .unwrap();
        let text = metrics.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&text);
        assert!(
            text.contains("strait_io_backend{backend=\"epoll\"} 1"),
            "{errno}: {text}"
        );
    }
}

#[cfg(target_arch = "x86_64")]
#[tokio::test]
async fn io_uring_asked_for_where_the_kernel_refuses_it_fails_with_the_reason() {
    let config = temp_file("uring-only.yaml", strait_proxy::demo::CONFIG);
    let (child, log) = spawn_without_io_uring("EPERM", "uring", &config);
    let status = child.wait(Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(1));
    log.wait_for(
        &[
            "io_uring is not available",
            "io_uring_setup failed",
            "Operation not permitted",
        ],
        Duration::from_secs(5),
    );
    assert!(!log.contains("listening"), "nothing was served");
}
