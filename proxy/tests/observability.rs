//! The admin API and metrics: exact counts after known traffic, histograms, connection reuse,
//! readiness across shutdown, and the config, cluster and worker views.

#![allow(clippy::unwrap_used)] // test helpers unwrap: a failure is the test failing

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::{TestProxy, cluster, config, sample, scrape};
use http::Request;
use http_body_util::{BodyExt, Empty};
use strait_testkit::{ClosedPort, Upstream, assert_eventually, http1_client, trace_init};

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let client = http1_client(addr).await.unwrap();
    let response = client.get(path).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

const ROUTES: &str = r#"- name: api
  match: { prefix: /api }
  cluster: a
- name: teapot
  match: { path: /teapot }
  direct_response: { status: 418, body: "short and stout" }
- name: down
  match: { prefix: /down }
  cluster: down
"#;

#[tokio::test]
async fn metrics_count_exactly_what_was_served() {
    let _trace = trace_init();
    let upstream = Upstream::builder().name("a").http1_only().start().await;
    let closed = ClosedPort::new();
    let clusters = format!(
        "{}{}",
        cluster("a", "http1", &[upstream.addr()]),
        cluster("down", "http1", &[closed.addr()])
    );
    let yaml = config(ROUTES, &clusters).replace("domains: [\"*\"]", "domains: [\"known\"]");
    let proxy = TestProxy::start(&yaml, 1);

    let client = http1_client(proxy.addr()).await.unwrap();
    let send = |path: &'static str, host: &'static str| {
        let request = Request::get(path)
            .header("host", host)
            .body(Empty::<Bytes>::new())
            .unwrap();
        client.send(request)
    };
    for _ in 0..5 {
        let response = send("/api/x", "known").await.unwrap();
        assert_eq!(response.status(), 200);
        response.into_body().collect().await.unwrap();
    }
    for _ in 0..2 {
        let response = send("/teapot", "known").await.unwrap();
        assert_eq!(response.status(), 418);
        response.into_body().collect().await.unwrap();
    }
    for _ in 0..3 {
        let response = send("/api/x", "unknown").await.unwrap();
        assert_eq!(response.status(), 404);
        response.into_body().collect().await.unwrap();
    }
    let response = send("/down", "known").await.unwrap();
    assert_eq!(response.status(), 502);
    response.into_body().collect().await.unwrap();

    let backend = format!(
        r#"strait_io_backend{{backend="{}"}}"#,
        proxy.server().globals().io_backend
    );
    let expected = [
        (
            r#"strait_requests_total{listener="test",route="api",cluster="a",class="2xx"}"#,
            5.0,
        ),
        (
            r#"strait_requests_total{listener="test",route="teapot",cluster="",class="4xx"}"#,
            2.0,
        ),
        (
            r#"strait_requests_total{listener="test",route="",cluster="",class="4xx"}"#,
            3.0,
        ),
        (
            r#"strait_requests_total{listener="test",route="down",cluster="down",class="5xx"}"#,
            1.0,
        ),
        (
            r#"strait_requests_total{listener="test",route="api",cluster="a",class="5xx"}"#,
            0.0,
        ),
        (r#"strait_worker_requests_total{worker="0"}"#, 11.0),
        (
            r#"strait_downstream_connections_total{listener="test",worker="0"}"#,
            1.0,
        ),
        (
            r#"strait_downstream_connections_active{listener="test",worker="0"}"#,
            1.0,
        ),
        (
            r#"strait_request_duration_seconds_count{listener="test"}"#,
            11.0,
        ),
        (
            r#"strait_upstream_request_duration_seconds_count{cluster="a"}"#,
            5.0,
        ),
        (r#"strait_upstream_connections_total{cluster="a"}"#, 1.0),
        (
            r#"strait_upstream_connection_reuses_total{cluster="a"}"#,
            4.0,
        ),
        (
            r#"strait_upstream_connect_failures_total{cluster="down"}"#,
            1.0,
        ),
        (r#"strait_upstream_requests_active{cluster="a"}"#, 0.0),
        (r#"strait_config_version"#, 1.0),
        (backend.as_str(), 1.0),
    ];
    // The last response's duration is recorded when hyper finishes with its body, which may
    // be just after the client read it: scrape until it shows, for at most 5 s.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = scrape(&proxy).await;
        let all = expected
            .iter()
            .all(|(series, want)| sample(&text, series) == Some(*want));
        if all {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            for (series, want) in expected {
                assert_eq!(sample(&text, series), Some(want), "{series}\n{text}");
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn histograms_move_with_latency() {
    let _trace = trace_init();
    let upstream = Upstream::builder().name("a").start().await;
    let yaml = config(
        "- name: api\n  match: { prefix: / }\n  cluster: a\n",
        &cluster("a", "http1", &[upstream.addr()]),
    );
    let proxy = TestProxy::start(&yaml, 1);
    let (status, _) = get(proxy.addr(), "/delay/300").await;
    assert_eq!(status, 200);
    let bucket = |le: &str| {
        format!(r#"strait_upstream_request_duration_seconds_bucket{{cluster="a",le="{le}"}}"#)
    };
    let text = scrape(&proxy).await;
    assert_eq!(sample(&text, &bucket("0.25")), Some(0.0), "{text}");
    assert_eq!(sample(&text, &bucket("0.5")), Some(1.0), "{text}");
    assert_eq!(sample(&text, &bucket("+Inf")), Some(1.0), "{text}");
    let sum = sample(
        &text,
        r#"strait_upstream_request_duration_seconds_sum{cluster="a"}"#,
    )
    .unwrap();
    assert!((0.3..0.5).contains(&sum), "sum {sum}");
}

#[tokio::test]
async fn ready_flips_to_not_ready_when_shutdown_starts() {
    let _trace = trace_init();
    let upstream = Upstream::start().await;
    let yaml = config(
        "- match: { prefix: / }\n  cluster: a\n",
        &cluster("a", "http1", &[upstream.addr()]),
    );
    let proxy = TestProxy::start(&yaml, 1);
    let admin = proxy.admin();
    assert_eq!(get(admin, "/ready").await.0, 200);
    assert_eq!(get(admin, "/live").await.0, 200);

    let addr = proxy.addr();
    let in_flight = tokio::spawn(async move { get(addr, "/delay/1000").await.0 });
    assert_eventually!(upstream.requests_seen() == 1);
    let server = proxy.take();
    let shutdown = tokio::task::spawn_blocking(move || server.shutdown());
    // The admin API keeps answering while the in-flight request drains.
    let admin_client = http1_client(admin).await.unwrap();
    let mut saw_not_ready = false;
    for _ in 0..100 {
        let response = admin_client.get("/ready").await.unwrap();
        let status = response.status();
        response.into_body().collect().await.unwrap();
        if status == 503 {
            saw_not_ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(saw_not_ready, "/ready turns 503 once shutdown starts");
    assert_eq!(in_flight.await.unwrap(), 200, "in-flight request completes");
    tokio::time::timeout(Duration::from_secs(10), shutdown)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn config_clusters_and_workers_views() {
    let _trace = trace_init();
    let upstream = Upstream::start().await;
    let yaml = config(
        "- match: { prefix: / }\n  cluster: a\n",
        &cluster("a", "http1", &[upstream.addr()]),
    );
    let proxy = TestProxy::start(&yaml, 2);
    for _ in 0..3 {
        assert_eq!(get(proxy.addr(), "/").await.0, 200);
    }
    let admin = proxy.admin();

    let (status, body) = get(admin, "/config?format=json").await;
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["version"], 1);
    assert_eq!(json["config"]["clusters"][0]["name"], "a");
    let (status, body) = get(admin, "/config").await;
    assert_eq!(status, 200);
    assert!(body.starts_with("# version: 1\n"), "{body}");
    assert!(body.contains("name: a"), "{body}");
    assert_eq!(get(admin, "/config?format=xml").await.0, 400);

    let (_, body) = get(admin, "/clusters").await;
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let endpoint = &json["clusters"][0]["endpoints"][0];
    assert_eq!(endpoint["address"], upstream.addr().to_string());
    assert_eq!(endpoint["weight"], 1);
    assert_eq!(endpoint["health"], "healthy");
    assert_eq!(endpoint["in_flight"], 0);
    assert_eq!(endpoint["requests"], 3);

    let (_, body) = get(admin, "/workers").await;
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let workers = json["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2);
    let requests: u64 = workers
        .iter()
        .map(|w| w["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(requests, 3);
    let connections: u64 = workers
        .iter()
        .map(|w| w["connections_total"].as_u64().unwrap())
        .sum();
    assert_eq!(connections, 3);
    assert_eq!(get(admin, "/nope").await.0, 404);
}

#[tokio::test]
async fn trace_context_is_propagated_or_started() {
    let _trace = trace_init();
    let upstream = Upstream::start().await;
    let yaml = config(
        "- match: { prefix: / }\n  cluster: a\n",
        &cluster("a", "http1", &[upstream.addr()]),
    );
    let proxy = TestProxy::start(&yaml, 1);
    let client = http1_client(proxy.addr()).await.unwrap();

    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let request = Request::get("/")
        .header("traceparent", incoming)
        .header("tracestate", "vendor=opaque")
        .body(Empty::<Bytes>::new())
        .unwrap();
    client
        .send(request)
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap();
    let seen = upstream.last_request().unwrap();
    let forwarded = seen.header("traceparent").unwrap().to_owned();
    assert_eq!(forwarded.len(), 55);
    assert_eq!(
        &forwarded[..36],
        &incoming[..36],
        "same version and trace id"
    );
    assert_ne!(
        &forwarded[36..52],
        &incoming[36..52],
        "the proxy's own span id"
    );
    assert_eq!(&forwarded[52..], "-01", "flags kept");
    assert_eq!(seen.header("tracestate"), Some("vendor=opaque"));

    client
        .get("/")
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap();
    let started = upstream
        .last_request()
        .unwrap()
        .header("traceparent")
        .unwrap()
        .to_owned();
    assert_eq!(started.len(), 55);
    assert!(started.starts_with("00-"));
    assert_ne!(&started[3..35], &incoming[3..35], "a new trace id");
    assert_ne!(&started[3..35], "00000000000000000000000000000000");

    let request = Request::get("/")
        .header("traceparent", "garbage")
        .body(Empty::<Bytes>::new())
        .unwrap();
    client
        .send(request)
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap();
    let replaced = upstream
        .last_request()
        .unwrap()
        .header("traceparent")
        .unwrap()
        .to_owned();
    assert!(
        replaced.starts_with("00-") && replaced.len() == 55,
        "invalid traceparent replaced: {replaced}"
    );
}

#[tokio::test]
async fn access_log_lines_are_json_with_the_right_fields() {
    let _trace = trace_init();
    let upstream = Upstream::builder().name("a").start().await;
    let dir = std::env::temp_dir().join(format!("strait-access-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("access.log");
    let _ = std::fs::remove_file(&path);
    let yaml = format!(
        "{}access_log: {{ output: {}, format: json }}\n",
        config(
            "- name: api\n  match: { prefix: / }\n  cluster: a\n",
            &cluster("a", "http1", &[upstream.addr()])
        ),
        path.display()
    );
    let proxy = TestProxy::start(&yaml, 1);
    let client = http1_client(proxy.addr()).await.unwrap();
    let request = Request::post("/items?x=1")
        .header("host", "shop.example")
        .header("x-request-id", "req-1")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .body(http_body_util::Full::new(Bytes::from_static(b"hello")))
        .unwrap();
    let response = client.send(request).await.unwrap();
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.unwrap();
    client
        .get("/status/503")
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap();

    let mut lines = Vec::new();
    assert_eventually!(
        {
            lines = std::fs::read_to_string(&path)
                .unwrap_or_default()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>();
            lines.len() == 2
        },
        "two access-log lines written"
    );
    let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(first["method"], "POST");
    assert_eq!(first["authority"], "shop.example");
    assert_eq!(first["path"], "/items?x=1");
    assert_eq!(first["protocol"], "HTTP/1.1");
    assert_eq!(first["status"], 200);
    assert_eq!(first["bytes_in"], 5);
    assert_eq!(
        first["bytes_out"], 1,
        "the upstream answers with its one-letter name"
    );
    assert_eq!(first["upstream"], upstream.addr().to_string());
    assert_eq!(first["request_id"], "req-1");
    assert_eq!(first["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(first["route"], "api");
    assert_eq!(first["cluster"], "a");
    assert_eq!(first["listener"], "test");
    assert_eq!(first["worker"], 0);
    assert!(first["error"].is_null());
    assert!(first["duration_ms"].as_f64().unwrap() >= 0.0);
    assert!(first["start_time"].as_str().unwrap().ends_with('Z'));
    let second: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(second["status"], 503);
    assert_eq!(second["path"], "/status/503");
    assert_eq!(
        second["request_id"].as_str().unwrap().len(),
        36,
        "generated request id"
    );

    let text = scrape(&proxy).await;
    assert_eq!(
        sample(&text, "strait_access_log_lines_written_total"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "strait_access_log_lines_dropped_total"),
        Some(0.0),
        "{text}"
    );
}
