//! Running the `strait` binary from a test: its log, its bound address, and cleanup.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The binary under test.
pub const STRAIT: &str = env!("CARGO_BIN_EXE_strait");

/// Writes `text` to `name` in a directory of this test process's own.
pub fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let path = temp_dir(name).join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A fresh directory of this test process's own.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("strait-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Collects a child's log lines (read on a thread of its own, so the child never blocks on a
/// full pipe).
#[derive(Clone)]
pub struct Log {
    lines: Arc<Mutex<Vec<String>>>,
}

impl Log {
    pub fn new(stderr: impl std::io::Read + Send + 'static) -> Self {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Self { lines }
    }

    /// The first line containing every one of `patterns`, waiting up to `limit` for it.
    pub fn wait_for(&self, patterns: &[&str], limit: Duration) -> String {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(line) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| patterns.iter().all(|p| l.contains(p)))
            {
                return line.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no log line with {patterns:?} within {limit:?}; log:\n{}",
                self.lines.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether a line containing `pattern` was logged.
    pub fn contains(&self, pattern: &str) -> bool {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(pattern))
    }

    /// The address of the first listener the proxy reports listening on.
    pub fn bound_address(&self) -> SocketAddr {
        self.address_in(&["listening", "address="])
    }

    /// The address the admin API reports listening on.
    #[allow(dead_code)] // not every test binary that includes this module asks
    pub fn admin_address(&self) -> SocketAddr {
        self.address_in(&["admin API listening", "address="])
    }

    /// The `address=` of the first line with every one of `patterns`.
    fn address_in(&self, patterns: &[&str]) -> SocketAddr {
        let line = self.wait_for(patterns, Duration::from_secs(20));
        let at = line.find("address=").unwrap();
        line[at + 8..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }
}

/// Kills the child process if the test fails before it exits.
pub struct KillOnDrop(pub Option<std::process::Child>);

impl KillOnDrop {
    pub fn get(&mut self) -> &mut std::process::Child {
        self.0.as_mut().unwrap()
    }

    /// Sends a signal (`TERM`, `HUP`, ...) with kill(1).
    pub fn signal(&mut self, name: &str) {
        let pid = self.get().id().to_string();
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} {pid}");
    }

    /// Waits (on the blocking pool, at most `limit`) for the child to exit.
    pub async fn wait(mut self, limit: Duration) -> std::process::ExitStatus {
        let mut child = self.0.take().unwrap();
        let waited = tokio::task::spawn_blocking(move || {
            let deadline = tokio::time::Instant::now() + limit;
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    return Ok(status);
                }
                if tokio::time::Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .await
        .unwrap();
        waited.unwrap_or_else(|()| panic!("the process did not exit within {limit:?}"))
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

/// Starts `strait run` with the admin API on a free port, `extra` flags and `config`; its log
/// is collected.
pub fn spawn_run(config: &std::path::Path, extra: &[&str]) -> (KillOnDrop, Log) {
    spawn_run_under(&[], config, extra)
}

/// [`spawn_run`] through `wrapper`, a command that executes the rest of its arguments (e.g.
/// one that installs a seccomp filter first); no wrapper when empty.
pub fn spawn_run_under(
    wrapper: &[&str],
    config: &std::path::Path,
    extra: &[&str],
) -> (KillOnDrop, Log) {
    let (program, before) = match wrapper.split_first() {
        Some((program, rest)) => (*program, [rest, &[STRAIT]].concat()),
        None => (STRAIT, Vec::new()),
    };
    let mut child = KillOnDrop(Some(
        std::process::Command::new(program)
            .args(before)
            .args(["run", "--admin", "127.0.0.1:0"])
            .args(extra)
            .arg("--config")
            .arg(config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    let log = Log::new(child.get().stderr.take().unwrap());
    (child, log)
}

/// The `--io` value matching `STRAIT_TEST_IO`.
pub fn io_arg() -> &'static str {
    match std::env::var("STRAIT_TEST_IO").as_deref() {
        Ok("epoll") => "epoll",
        Ok("uring") => "uring",
        _ => "auto",
    }
}
