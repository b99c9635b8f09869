//! The in-process proxy harness shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

pub mod h2raw;
pub mod load;
pub mod process;
pub mod raw;
pub mod streams;

use std::net::SocketAddr;
use std::time::Duration;

use strait_config::{Format, parse};
use strait_proxy::admin::ConfigSource;
use strait_proxy::{IoMode, Options, Server};

/// A proxy running in this process on real sockets, shut down when dropped.
pub struct TestProxy {
    server: Option<Server>,
    addr: SocketAddr,
}

impl TestProxy {
    /// Starts a proxy from YAML whose first listener binds 127.0.0.1:0.
    pub fn start(yaml: &str, workers: usize) -> Self {
        Self::start_with(yaml, workers, io_mode())
    }

    /// Starts a proxy on a given I/O backend.
    pub fn start_with(yaml: &str, workers: usize, io: IoMode) -> Self {
        let config = match parse(yaml, Format::Yaml) {
            Ok(config) => config,
            Err(err) => panic!(
                "test config is invalid:\n{}\n{yaml}",
                err.render("test.yaml")
            ),
        };
        let options = Options {
            workers,
            drain_timeout: Duration::from_secs(2),
            admin: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            source: Some(ConfigSource {
                text: yaml.to_owned(),
                format: Format::Yaml,
            }),
            io,
            ..Options::default()
        };
        let server = Server::start(config, &options).expect("proxy starts");
        let addr = server.addrs()[0].1;
        Self {
            server: Some(server),
            addr,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin API's address.
    pub fn admin(&self) -> SocketAddr {
        self.server().admin_addr().expect("admin API runs in tests")
    }

    /// Takes the server out, to shut it down from another thread.
    pub fn take(mut self) -> Server {
        self.server.take().expect("running")
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("running")
    }

    /// Shuts down (blocking until the workers exit).
    pub fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown();
        }
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown();
        }
    }
}

/// The backend under test: `STRAIT_TEST_IO=uring|epoll|auto` (default auto). CI runs the suite
/// once per backend.
pub fn io_mode() -> IoMode {
    match std::env::var("STRAIT_TEST_IO").as_deref() {
        Ok("uring") => IoMode::Uring,
        Ok("epoll") => IoMode::Epoll,
        _ => IoMode::Auto,
    }
}

/// YAML for one listener on port 0 with the given routes and clusters.
pub fn config(routes: &str, clusters: &str) -> String {
    format!(
        "listeners:\n  - name: test\n    address: 127.0.0.1:0\n    virtual_hosts:\n      - name: all\n        domains: [\"*\"]\n        routes:\n{}\nclusters:\n{}\n",
        indent(routes, 10),
        indent(clusters, 2)
    )
}

/// A cluster entry named `name` with `protocol` over `endpoints`.
pub fn cluster(name: &str, protocol: &str, endpoints: &[SocketAddr]) -> String {
    let list: Vec<String> = endpoints.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "- name: {name}\n  protocol: {protocol}\n  connect_timeout: 1s\n  endpoints: [{}]\n",
        list.join(", ")
    )
}

/// The usual single-route config: everything to cluster `up`.
pub fn single(protocol: &str, endpoints: &[SocketAddr]) -> String {
    config(
        "- match: { prefix: / }\n  cluster: up\n",
        &cluster("up", protocol, endpoints),
    )
}

/// The single-route config (HTTP/1.1 upstream `upstream`) with listener `limits` (YAML flow
/// mapping entries, e.g. `idle_timeout: 300ms`).
pub fn with_limits(limits: &str, upstream: SocketAddr) -> String {
    single("http1", &[upstream]).replacen(
        "    virtual_hosts:",
        &format!("    limits: {{ {limits} }}\n    virtual_hosts:"),
        1,
    )
}

fn indent(text: &str, by: usize) -> String {
    let pad = " ".repeat(by);
    text.lines().map(|l| format!("{pad}{l}\n")).collect()
}

/// The proxy's `/metrics` page.
///
/// # Panics
/// When the admin endpoint does not answer 200.
pub async fn scrape(proxy: &TestProxy) -> String {
    let client = strait_testkit::http1_client(proxy.admin())
        .await
        .expect("connect to admin");
    let response = client.get("/metrics").await.expect("GET /metrics");
    assert_eq!(response.status(), 200, "GET /metrics");
    body_text(response).await
}

/// A response's whole body, as text.
pub async fn body_text(response: http::Response<hyper::body::Incoming>) -> String {
    use http_body_util::BodyExt as _;
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The value of one sample line (`name{labels} value`) in a scrape, if present.
pub fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|line| {
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}
