//! A closed-loop HTTP/1.1 load generator for tests that change the proxy under traffic.
//!
//! Each connection sends `GET path` back to back on a kept-alive connection and counts every
//! answer. A response with `Connection: close` ends the connection cleanly and the next request
//! opens a new one. Anything else that goes wrong (a status other than 200, a reset, a timeout,
//! a connect failure) is a failure, recorded with its reason.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use http_body_util::BodyExt;
use strait_testkit::http1_client;
use tokio::time::Instant;

/// What the load saw.
#[derive(Debug, Default)]
pub struct Report {
    /// 200 responses read to the end.
    pub ok: u64,
    /// Failed requests, with why (at most 20 kept).
    pub failures: Vec<String>,
    /// Failed requests in all.
    pub failed: u64,
    /// Connections closed cleanly by `Connection: close`.
    pub closed_cleanly: u64,
    /// Requests per second over the run.
    pub rate: f64,
}

impl Report {
    /// Prints the figures and fails the test if any request failed.
    pub fn assert_no_failure(&self, what: &str) {
        eprintln!(
            "{what}: {} requests ok at {:.0} req/s, {} failed, {} connections closed cleanly",
            self.ok, self.rate, self.failed, self.closed_cleanly
        );
        assert_eq!(
            self.failed, 0,
            "{what}: failed requests: {:?}",
            self.failures
        );
    }
}

/// Load running in the background until [`Load::finish`].
pub struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    started: Instant,
    tasks: Vec<tokio::task::JoinHandle<Report>>,
}

impl Load {
    /// Starts `connections` connections sending `GET path` to `addr`. With `reconnect` false,
    /// a connection closed by the proxy is not replaced (clients of a listener going away).
    pub fn start(addr: SocketAddr, path: &str, connections: usize, reconnect: bool) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let tasks = (0..connections)
            .map(|_| {
                tokio::spawn(run(
                    addr,
                    path.to_owned(),
                    Arc::clone(&stop),
                    Arc::clone(&done),
                    reconnect,
                ))
            })
            .collect();
        Self {
            stop,
            done,
            started: Instant::now(),
            tasks,
        }
    }

    /// Requests answered so far.
    pub fn answered(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Waits (bounded) until at least `n` more requests were answered.
    pub async fn wait_for(&self, n: u64) {
        let target = self.answered() + n;
        let reached =
            strait_testkit::eventually(Duration::from_secs(20), || self.answered() >= target).await;
        assert!(reached, "load stalled: {} answered", self.answered());
    }

    /// Stops the load and sums what every connection saw.
    pub async fn finish(self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = Report::default();
        for task in self.tasks {
            let report = tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("load connection stops in time")
                .expect("load connection task");
            total.ok += report.ok;
            total.failed += report.failed;
            total.closed_cleanly += report.closed_cleanly;
            for failure in report.failures {
                if total.failures.len() < 20 {
                    total.failures.push(failure);
                }
            }
        }
        #[allow(clippy::cast_precision_loss)]
        let rate = (total.ok + total.failed) as f64 / self.started.elapsed().as_secs_f64();
        total.rate = rate;
        total
    }
}

async fn run(
    addr: SocketAddr,
    path: String,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    reconnect: bool,
) -> Report {
    fn fail(report: &mut Report, why: String) {
        report.failed += 1;
        if report.failures.len() < 20 {
            report.failures.push(why);
        }
    }
    let mut report = Report::default();
    let mut client = None;
    let mut connected_once = false;
    // Bounded: a test runs the load for seconds, far below this many requests.
    for _ in 0..10_000_000u64 {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if client.is_none() {
            if connected_once && !reconnect {
                break;
            }
            match http1_client(addr).await {
                Ok(c) => {
                    client = Some(c.with_timeout(Duration::from_secs(5)));
                    connected_once = true;
                }
                Err(err) => {
                    fail(&mut report, format!("connect: {err:#}"));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(c) = client.as_ref() else { continue };
        match c.get(&path).await {
            Ok(response) => {
                let status = response.status();
                let closing = response
                    .headers()
                    .get(http::header::CONNECTION)
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
                let body =
                    tokio::time::timeout(Duration::from_secs(5), response.into_body().collect())
                        .await;
                match body {
                    Ok(Ok(_)) if status == 200 => {
                        report.ok += 1;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Ok(body)) => fail(
                        &mut report,
                        format!("status {status}: {:?}", body.to_bytes()),
                    ),
                    Ok(Err(err)) => fail(&mut report, format!("body: {err}")),
                    Err(_) => fail(&mut report, "body timed out".to_owned()),
                }
                if closing {
                    report.closed_cleanly += 1;
                    client = None;
                }
            }
            Err(err) => {
                fail(&mut report, format!("request: {err:#}"));
                client = None;
            }
        }
    }
    report
}
