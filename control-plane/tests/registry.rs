//! The registration API over real HTTP on loopback: register, heartbeat, deregister, listing,
//! TTL expiry and every kind of refusal.

#![allow(clippy::unwrap_used)] // test helpers unwrap: a failure is the test failing

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};
use strait_control_plane::registry::{self, Registry};
use strait_testkit::{assert_eventually, http1_client, read_body_bytes, within};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::info;

/// A registry and its API on `127.0.0.1:0`; stops the server when dropped.
struct Api {
    addr: SocketAddr,
    registry: Arc<Registry>,
    stop: watch::Sender<bool>,
    server: Option<JoinHandle<()>>,
}

impl Api {
    async fn start() -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let registry = Registry::new();
        let (stop, shutdown) = watch::channel(false);
        let server = tokio::spawn(registry::serve(listener, registry.clone(), shutdown));
        Self {
            addr,
            registry,
            stop,
            server: Some(server),
        }
    }

    /// Sends one request on a fresh connection; returns the status, the `Allow` header and
    /// the body as JSON (`Null` when empty).
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: &str,
    ) -> (StatusCode, Option<String>, Value) {
        let client = http1_client(self.addr).await.unwrap();
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap();
        let response = client.send(req).await.unwrap();
        let status = response.status();
        let allow = response
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = read_body_bytes(response.into_body()).await.unwrap();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        (status, allow, value)
    }

    async fn put(&self, path: &str, body: &str) -> (StatusCode, Value) {
        let (status, _, value) = self.call(Method::PUT, path, body).await;
        (status, value)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let (status, _, value) = self.call(Method::GET, path, "").await;
        (status, value)
    }

    async fn stop(mut self) {
        self.stop.send_replace(true);
        let server = self.server.take().unwrap();
        within(Duration::from_secs(10), "registry API shutdown", server)
            .await
            .unwrap();
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        if let Some(server) = &self.server {
            server.abort();
        }
    }
}

/// A problem the API should report: field, value, and the start of the rule.
type Expected = (&'static str, &'static str, &'static str);

const EP: &str = "/v1/services/web/endpoints/127.0.0.1:8080";

#[tokio::test]
async fn registers_lists_heartbeats_and_deregisters() {
    let _trace = strait_testkit::trace_init();
    let api = Api::start().await;

    info!("a first PUT creates the endpoint with its attributes");
    let (status, body) = api
        .put(
            EP,
            r#"{"weight":2,"zone":"eu-1a","metadata":{"version":"v2"},"ttl":"45s"}"#,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["service"], "web");
    assert_eq!(body["address"], "127.0.0.1:8080");
    assert_eq!(body["weight"], 2);
    assert_eq!(body["zone"], "eu-1a");
    assert_eq!(body["metadata"], json!({"version": "v2"}));
    assert_eq!(body["ttl"], "45s");
    assert!(body["expires_in_ms"].as_u64().unwrap() <= 45_000);

    info!("the same PUT again is an update (200), an empty body takes the defaults");
    let (status, _) = api
        .put(
            EP,
            r#"{"weight":2,"zone":"eu-1a","metadata":{"version":"v2"},"ttl":"45s"}"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = api
        .put("/v1/services/web/endpoints/127.0.0.2:8080", "")
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["weight"], 1);
    assert_eq!(body["ttl"], "30s");
    assert_eq!(body["zone"], Value::Null);

    info!("IPv6 addresses work percent-encoded");
    let (status, body) = api
        .put("/v1/services/api/endpoints/%5B::1%5D:9000", "{}")
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["address"], "[::1]:9000");

    info!("listings");
    let (status, body) = api.get("/v1/services").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["services"]["web"].as_array().unwrap().len(), 2);
    assert_eq!(body["services"]["api"].as_array().unwrap().len(), 1);
    assert!(body["version"].as_u64().unwrap() >= 3);
    let (status, body) = api.get("/v1/services/web").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["endpoints"][0]["address"], "127.0.0.1:8080");
    let (_, same) = api.get("/v1/services/web/endpoints").await;
    let addresses = |v: &Value| -> Vec<Value> {
        v["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["address"].clone())
            .collect()
    };
    assert_eq!(addresses(&same), addresses(&body));
    let (status, body) = api.get("/v1/services/nobody").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["endpoints"], json!([]));
    let (status, body) = api.get(EP).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["weight"], 2);

    info!("heartbeat and deregister");
    let (status, _, body) = api.call(Method::POST, &format!("{EP}/heartbeat"), "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["address"], "127.0.0.1:8080");
    let (status, _, body) = api.call(Method::DELETE, EP, "").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(body, Value::Null);
    assert_eq!(api.registry.endpoints("web").len(), 1);

    info!("an unknown endpoint is 404 for heartbeat, delete and get");
    for method in [Method::POST, Method::DELETE, Method::GET] {
        let path = if method == Method::POST {
            format!("{EP}/heartbeat")
        } else {
            EP.to_owned()
        };
        let (status, _, body) = api.call(method.clone(), &path, "").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method}");
        assert_eq!(body["error"], "endpoint_not_found");
        assert_eq!(
            body["message"],
            r#"endpoint 127.0.0.1:8080 of service "web" is not registered"#
        );
    }
    api.stop().await;
}

#[tokio::test]
async fn bad_requests_name_the_field_the_value_and_the_rule() {
    let _trace = strait_testkit::trace_init();
    let api = Api::start().await;
    // (path, body, [(field, value, rule prefix)])
    let cases: &[(&str, &str, &[Expected])] = &[
        (
            "/v1/services/we%20b/endpoints/127.0.0.1:80",
            "",
            &[(
                "service",
                "we b",
                "must be 1 to 128 characters of A-Za-z0-9._-",
            )],
        ),
        (
            "/v1/services/web/endpoints/localhost:80",
            "",
            &[("address", "localhost:80", "must be ip:port")],
        ),
        (
            "/v1/services/web/endpoints/127.0.0.1:0",
            "",
            &[("address", "127.0.0.1:0", "port must be between 1 and 65535")],
        ),
        (
            "/v1/services/web/endpoints/0.0.0.0:80",
            "",
            &[(
                "address",
                "0.0.0.0:80",
                "must not be an unspecified address",
            )],
        ),
        (
            EP,
            r#"{"weight":0}"#,
            &[("weight", "0", "must be between 1 and 1000")],
        ),
        (
            EP,
            r#"{"weight":1001}"#,
            &[("weight", "1001", "must be between 1 and 1000")],
        ),
        (
            EP,
            r#"{"weight":"2"}"#,
            &[("weight", "\"2\"", "must be an integer between 1 and 1000")],
        ),
        (
            EP,
            r#"{"weight":1.5}"#,
            &[("weight", "1.5", "must be an integer between 1 and 1000")],
        ),
        (
            EP,
            r#"{"ttl":"30"}"#,
            &[(
                "ttl",
                "30",
                "must be a whole number followed by ms, s, m or h",
            )],
        ),
        (
            EP,
            r#"{"ttl":"500ms"}"#,
            &[("ttl", "500ms", "must be between 1s and 1h")],
        ),
        (EP, r#"{"ttl":30}"#, &[("ttl", "30", "must be a string")]),
        (
            EP,
            r#"{"zone":"eu 1"}"#,
            &[("zone", "eu 1", "must be 1 to 128 characters")],
        ),
        (
            EP,
            r#"{"wieght":2}"#,
            &[(
                "body",
                "",
                "must be a JSON object with optional weight, zone, metadata and ttl (unknown field `wieght`, expected one of `weight`, `zone`, `metadata`, `ttl`",
            )],
        ),
        (
            EP,
            r#"{"weight":2"#,
            &[("body", "", "must be a JSON object")],
        ),
        (EP, r#"[1]"#, &[("body", "", "must be a JSON object")]),
        (
            "/v1/services/web/endpoints/127.0.0.1:80",
            r#"{"weight":0,"ttl":"2h","zone":""}"#,
            &[
                ("weight", "0", "must be between"),
                ("zone", "", "must be 1 to 128"),
                ("ttl", "2h", "must be between 1s and 1h"),
            ],
        ),
        (
            "/v1/services/b%20d/endpoints/nope",
            r#"{"weight":0}"#,
            &[
                ("service", "b d", "must be"),
                ("address", "nope", "must be ip:port"),
            ],
        ),
    ];
    for (path, body, expected) in cases {
        let (status, response) = api.put(path, body).await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "PUT {path} {body}: {response}"
        );
        assert_eq!(response["error"], "invalid_registration", "{response}");
        let problems = response["problems"].as_array().unwrap();
        assert_eq!(
            problems.len(),
            expected.len(),
            "PUT {path} {body}: {response}"
        );
        for (problem, (field, value, rule)) in problems.iter().zip(expected.iter()) {
            assert_eq!(problem["field"], *field, "{response}");
            assert_eq!(problem["value"], *value, "{response}");
            let got = problem["rule"].as_str().unwrap();
            assert!(
                got.starts_with(rule),
                "rule {got:?} should start with {rule:?}"
            );
        }
        let message = response["message"].as_str().unwrap();
        assert!(message.starts_with("invalid registration: "), "{message}");
    }
    assert!(
        api.registry.services().is_empty(),
        "nothing invalid was stored"
    );

    info!("the message reads as one line for a human");
    let (_, response) = api.put(EP, r#"{"weight":0}"#).await;
    assert_eq!(
        response["message"],
        r#"invalid registration: weight: must be between 1 and 1000, got "0""#
    );

    info!("bad path parameters are 400 for heartbeat and delete too");
    let (status, _, response) = api
        .call(
            Method::POST,
            "/v1/services/web/endpoints/nope/heartbeat",
            "",
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(response["problems"][0]["field"], "address");
    api.stop().await;
}

#[tokio::test]
async fn oversized_bodies_wrong_methods_and_unknown_paths_are_refused() {
    let _trace = strait_testkit::trace_init();
    let api = Api::start().await;

    info!("a body over 64 KiB gets 413");
    let big = format!(r#"{{"zone":"{}"}}"#, "a".repeat(70 * 1024));
    let (status, response) = api.put(EP, &big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{response}");
    assert_eq!(response["problems"][0]["field"], "body");
    assert_eq!(response["message"], "body: must be at most 65536 bytes");

    info!("wrong methods get 405 with Allow");
    let cases = [
        (Method::POST, EP.to_owned(), "GET, PUT, DELETE"),
        (Method::GET, format!("{EP}/heartbeat"), "POST"),
        (Method::DELETE, "/v1/services".to_owned(), "GET"),
        (Method::PUT, "/v1/services/web".to_owned(), "GET"),
    ];
    for (method, path, allowed) in cases {
        let (status, allow, response) = api.call(method.clone(), &path, "").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert_eq!(allow.as_deref(), Some(allowed));
        assert_eq!(
            response["message"],
            format!("{method} is not allowed on {path}; allowed: {allowed}")
        );
    }

    info!("unknown paths get 404");
    for path in [
        "/",
        "/v2/services",
        "/v1/services/web/nodes",
        "/v1/services/web/endpoints/127.0.0.1:80/beat",
    ] {
        let (status, response) = api.get(path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(response["error"], "not_found");
    }
    api.stop().await;
}

#[tokio::test]
async fn endpoints_whose_ttl_lapses_are_removed() {
    let _trace = strait_testkit::trace_init();
    let api = Api::start().await;
    let expiry = registry::spawn_expiry(api.registry.clone(), Duration::from_millis(50));
    let mut versions = api.registry.subscribe();

    info!("two endpoints with a 1s TTL; one keeps sending heartbeats");
    let kept = "/v1/services/web/endpoints/127.0.0.1:1001";
    let lapsed = "/v1/services/web/endpoints/127.0.0.1:1002";
    assert_eq!(
        api.put(kept, r#"{"ttl":"1s"}"#).await.0,
        StatusCode::CREATED
    );
    assert_eq!(
        api.put(lapsed, r#"{"ttl":"1s"}"#).await.0,
        StatusCode::CREATED
    );
    versions.mark_unchanged();

    let heartbeat = format!("{kept}/heartbeat");
    let removed = within(
        Duration::from_secs(5),
        "the lapsed endpoint's removal",
        async {
            loop {
                let (status, _, _) = api.call(Method::POST, &heartbeat, "").await;
                assert_eq!(
                    status,
                    StatusCode::OK,
                    "the kept endpoint must stay registered"
                );
                if api.registry.endpoints("web").len() == 1 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        },
    );
    removed.await;
    assert_eventually!(
        versions.has_changed().unwrap(),
        within = Duration::from_secs(2)
    );
    let (_, body) = api.get("/v1/services/web").await;
    let endpoints = body["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 1);
    assert_eq!(endpoints[0]["address"], "127.0.0.1:1001");
    assert_eq!(
        api.call(Method::POST, &format!("{lapsed}/heartbeat"), "")
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    expiry.abort();
    api.stop().await;
}

#[tokio::test]
async fn shutdown_lets_open_connections_finish() {
    let api = Api::start().await;
    let client = http1_client(api.addr).await.unwrap();
    let response = client.get("/v1/services").await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    read_body_bytes(response.into_body()).await.unwrap();
    info!("an idle keep-alive connection does not hold shutdown up");
    api.stop().await;
    assert_eventually!(client.is_closed(), within = Duration::from_secs(5));
}
