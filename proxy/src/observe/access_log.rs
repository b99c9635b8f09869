//! The access log: one line per request, formatted on the worker, written by one thread.
//!
//! Workers never wait for the log. Each worker holds a [`LogHandle`]; [`LogHandle::log`] formats
//! the line on the worker (JSON or a text template) and offers it to a bounded queue with
//! `try_send`. When the queue is full, or the writer is gone, the line is dropped and counted, and
//! the request goes on. One writer thread, owned by the process-wide [`AccessLogger`], drains the
//! queue into a `BufWriter` over stdout, stderr or a file; when the queue is empty it flushes
//! and sleeps for a short interval instead of waiting on the queue, so a worker's `try_send`
//! never has to wake it. [`AccessLogger::written`] and [`AccessLogger::dropped`] count both outcomes.

use std::cell::Cell;
use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime};

use strait_config::{AccessLog, LogField, LogFormat, LogOutput, TemplatePart};

use super::json;

/// What one request did, borrowed from the request's state for the length of `log`.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// When the request head was received.
    pub start_time: SystemTime,
    /// From `start_time` until the response ended.
    pub duration: Duration,
    pub method: &'a str,
    pub authority: &'a str,
    /// Path and query.
    pub path: &'a str,
    /// `HTTP/1.1` or `HTTP/2`.
    pub protocol: &'a str,
    pub status: u16,
    /// Request body bytes received from downstream.
    pub bytes_in: u64,
    /// Response body bytes sent downstream.
    pub bytes_out: u64,
    /// The endpoint that served the request, if one was picked.
    pub upstream: Option<SocketAddr>,
    /// The `x-strait-error` kind, e.g. `upstream_timeout`.
    pub error: Option<&'a str>,
    pub request_id: &'a str,
    pub trace_id: &'a str,
    pub worker: usize,
    pub listener: &'a str,
    pub route: &'a str,
    pub cluster: &'a str,
    /// The downstream peer.
    pub client: SocketAddr,
}

impl Entry<'_> {
    /// Appends the line for `format`, ending with `\n`.
    pub fn write_line(&self, format: &LogFormat, out: &mut String) {
        match format {
            LogFormat::Json => {
                out.push('{');
                for (i, field) in LogField::ALL.iter().enumerate() {
                    out.push_str(if i == 0 { "\"" } else { ",\"" });
                    out.push_str(field.as_str());
                    out.push_str("\":");
                    self.value(*field).write(true, out);
                }
                out.push('}');
            }
            LogFormat::Text(parts) => {
                for part in parts {
                    match part {
                        TemplatePart::Literal(text) => out.push_str(text),
                        TemplatePart::Field(field) => self.value(*field).write(false, out),
                    }
                }
            }
        }
        out.push('\n');
    }

    fn value(&self, field: LogField) -> Value<'_> {
        match field {
            LogField::StartTime => Value::Time(self.start_time),
            LogField::DurationMs => Value::Millis(self.duration),
            LogField::Method => Value::Text(Some(self.method)),
            LogField::Authority => Value::Text(Some(self.authority)),
            LogField::Path => Value::Text(Some(self.path)),
            LogField::Protocol => Value::Text(Some(self.protocol)),
            LogField::Status => Value::Number(self.status.into()),
            LogField::BytesIn => Value::Number(self.bytes_in),
            LogField::BytesOut => Value::Number(self.bytes_out),
            LogField::Upstream => Value::Addr(self.upstream),
            LogField::Error => Value::Text(self.error),
            LogField::RequestId => Value::Text(Some(self.request_id)),
            LogField::TraceId => Value::Text(Some(self.trace_id)),
            LogField::Worker => Value::Number(self.worker as u64),
            LogField::Listener => Value::Text(Some(self.listener)),
            LogField::Route => Value::Text(Some(self.route)),
            LogField::Cluster => Value::Text(Some(self.cluster)),
            LogField::Client => Value::Addr(Some(self.client)),
        }
    }
}

/// One field's value, before formatting.
enum Value<'a> {
    Text(Option<&'a str>),
    Number(u64),
    Addr(Option<SocketAddr>),
    Time(SystemTime),
    Millis(Duration),
}

impl Value<'_> {
    /// Appends the value. JSON quotes strings and writes `null` when absent; text escapes strings
    /// the same way, so a value cannot end the line, but does not quote them, and writes `-`.
    fn write(self, json: bool, out: &mut String) {
        let quote = if json { "\"" } else { "" };
        // Writing to a String cannot fail: `unwrap_or_default` only discards the `Ok(())`.
        match self {
            Self::Text(None) | Self::Addr(None) => out.push_str(if json { "null" } else { "-" }),
            Self::Number(n) => write!(out, "{n}").unwrap_or_default(),
            Self::Millis(d) => {
                let micros = d.as_micros();
                write!(out, "{}.{:03}", micros / 1000, micros % 1000).unwrap_or_default();
            }
            Self::Text(Some(text)) => {
                out.push_str(quote);
                json::escape_into(out, text);
                out.push_str(quote);
            }
            Self::Addr(Some(addr)) => write!(out, "{quote}{addr}{quote}").unwrap_or_default(),
            Self::Time(time) => {
                out.push_str(quote);
                json::write_rfc3339(out, time);
                out.push_str(quote);
            }
        }
    }
}

/// The process-wide access log: owns the writer thread; hands out one [`LogHandle`] per worker.
///
/// Dropping the logger and every handle ends the writer once it has drained the queue;
/// [`AccessLogger::flush_and_stop`] also waits for that.
#[derive(Debug)]
pub struct AccessLogger {
    queue: Queue,
    writer: JoinHandle<()>,
    stopped: Receiver<()>,
}

/// Why [`AccessLogger::flush_and_stop`] did not see the writer finish.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StopError {
    /// Handles are still alive, or the output blocks; the thread is left to finish on its own.
    #[error("access log writer still running after {after:?}")]
    TimedOut { after: Duration },
    #[error("access log writer panicked")]
    Panicked,
}

/// Reads an access log's counters, for the metrics.
#[derive(Debug, Clone)]
pub struct Counts(Arc<Shared>);

impl crate::metrics::LineCounts for Counts {
    fn line_counts(&self) -> (u64, u64) {
        let totals = self.0.totals();
        (totals.written, totals.dropped)
    }
}

/// An access log's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// Lines the writer accepted (written, or buffered for writing).
    pub written: u64,
    /// Lines dropped because the queue was full or the writer gone.
    pub dropped: u64,
    /// Writes and flushes that failed; the writer reports the first with `tracing::warn!`.
    pub write_errors: u64,
}

/// Where the writer thread writes.
type Output = Box<dyn Write + Send>;

/// The sending side of the queue, cloned into every handle.
#[derive(Debug, Clone)]
struct Queue {
    tx: SyncSender<String>,
    format: Arc<LogFormat>,
    shared: Arc<Shared>,
}

/// Counters the writer and the handles share.
#[derive(Debug, Default)]
struct Shared {
    written: AtomicU64,
    write_errors: AtomicU64,
    /// Each live handle's dropped-line counter (locked only to add or remove a handle, or read).
    handles: Mutex<Vec<Arc<AtomicU64>>>,
    /// Dropped lines of handles that no longer exist.
    retired: AtomicU64,
}

impl AccessLogger {
    /// Opens the configured output and starts the writer; see [`AccessLogger::open`].
    ///
    /// # Errors
    /// Opening the file or spawning the thread failed.
    pub fn new(config: &AccessLog) -> io::Result<Self> {
        let format = config.format().clone();
        Self::open(config.output(), format, config.queue_size())
    }

    /// Opens `output` (a file is created when missing and appended to) and starts the writer.
    ///
    /// # Errors
    /// Opening the file or spawning the thread failed.
    pub fn open(output: &LogOutput, format: LogFormat, queue_size: usize) -> io::Result<Self> {
        let output: Output = match output {
            LogOutput::Stdout => Box::new(io::stdout()),
            LogOutput::Stderr => Box::new(io::stderr()),
            LogOutput::File(path) => {
                Box::new(OpenOptions::new().append(true).create(true).open(path)?)
            }
        };
        Self::with_writer(format, queue_size, output)
    }

    /// Starts a writer thread over any output, e.g. an in-memory sink in tests. A `queue_size`
    /// of 0 is taken as 1.
    ///
    /// # Errors
    /// Spawning the thread failed.
    pub fn with_writer(format: LogFormat, queue_size: usize, output: Output) -> io::Result<Self> {
        // A zero-capacity sync_channel is a rendezvous: try_send would fail unless the writer
        // happened to be waiting, so an empty queue is not offered.
        let (tx, rx) = mpsc::sync_channel(queue_size.max(1));
        let (stopped_tx, stopped) = mpsc::sync_channel(1);
        let shared = Arc::new(Shared::default());
        let writer_shared = Arc::clone(&shared);
        let writer = thread::Builder::new()
            .name("strait-access-log".into())
            .spawn(move || {
                write_lines(&rx, BufWriter::new(output), &writer_shared);
                let _ = stopped_tx.send(());
            })?;
        let format = Arc::new(format);
        let queue = Queue { tx, format, shared };
        Ok(Self {
            queue,
            writer,
            stopped,
        })
    }

    /// A handle for one worker. Each handle, clones included, counts its own dropped lines.
    pub fn handle(&self) -> LogHandle {
        LogHandle::new(self.queue.clone())
    }

    /// Lines the writer has accepted (written or buffered for writing).
    pub fn written(&self) -> u64 {
        self.queue.shared.written.load(Ordering::Relaxed)
    }

    /// Lines dropped because the queue was full or the writer gone, over all handles.
    pub fn dropped(&self) -> u64 {
        self.totals().dropped
    }

    /// All counters.
    pub fn totals(&self) -> Totals {
        self.queue.shared.totals()
    }

    /// A reader of the counters that outlives neither the logger's lines nor its handles.
    pub fn counts(&self) -> Counts {
        Counts(Arc::clone(&self.queue.shared))
    }

    /// Stops taking lines and waits up to `timeout` for the writer to drain the queue, flush and
    /// exit, then returns the final counters. Handles must be dropped first (workers drop theirs
    /// when they exit); lines they log until then are still written.
    ///
    /// # Errors
    /// [`StopError::TimedOut`] if the writer is still running after `timeout`,
    /// [`StopError::Panicked`] if it panicked.
    pub fn flush_and_stop(self, timeout: Duration) -> Result<Totals, StopError> {
        let shared = Arc::clone(&self.queue.shared);
        drop(self.queue);
        match self.stopped.recv_timeout(timeout) {
            Err(RecvTimeoutError::Timeout) => Err(StopError::TimedOut { after: timeout }),
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                self.writer.join().map_err(|_| StopError::Panicked)?;
                Ok(shared.totals())
            }
        }
    }
}

impl Shared {
    fn handles(&self) -> MutexGuard<'_, Vec<Arc<AtomicU64>>> {
        self.handles.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn totals(&self) -> Totals {
        let handles = self.handles();
        let live: u64 = handles.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        Totals {
            written: self.written.load(Ordering::Relaxed),
            dropped: live + self.retired.load(Ordering::Relaxed),
            write_errors: self.write_errors.load(Ordering::Relaxed),
        }
    }
}

/// Bounds on a new line's starting capacity: enough for a typical JSON line, and one long path
/// does not make every later line allocate as much.
const MIN_LINE: usize = 256;
const MAX_LINE_HINT: usize = 2048;

/// One worker's way into the access log. `Send` but not `Sync`: its dropped-line counter is
/// written with a plain load and store, which is only correct with a single writer.
#[derive(Debug)]
pub struct LogHandle {
    queue: Queue,
    dropped: Arc<AtomicU64>,
    /// The capacity the next line starts with: the last line's length, within bounds.
    capacity: Cell<usize>,
    _not_sync: PhantomData<Cell<()>>,
}

impl LogHandle {
    fn new(queue: Queue) -> Self {
        let dropped = Arc::new(AtomicU64::new(0));
        queue.shared.handles().push(Arc::clone(&dropped));
        let capacity = Cell::new(MIN_LINE);
        Self {
            queue,
            dropped,
            capacity,
            _not_sync: PhantomData,
        }
    }

    /// Formats `entry` and queues it for the writer; never blocks. When the queue is full or the
    /// writer is gone, the line is dropped and counted in [`LogHandle::dropped`].
    pub fn log(&self, entry: &Entry<'_>) {
        let mut line = String::with_capacity(self.capacity.get());
        entry.write_line(&self.queue.format, &mut line);
        self.capacity.set(line.len().clamp(MIN_LINE, MAX_LINE_HINT));
        if self.queue.tx.try_send(line).is_err() {
            bump(&self.dropped);
        }
    }

    /// Lines this handle dropped.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Clone for LogHandle {
    fn clone(&self) -> Self {
        Self::new(self.queue.clone())
    }
}

impl Drop for LogHandle {
    fn drop(&mut self) {
        let shared = &self.queue.shared;
        let mut handles = shared.handles();
        handles.retain(|c| !Arc::ptr_eq(c, &self.dropped));
        // Under the lock, so `totals` never sees the count in both places or in neither.
        shared.retired.fetch_add(self.dropped(), Ordering::Relaxed);
    }
}

/// Writes queued lines until every sender is gone. It flushes only when the queue is empty, so
/// under load one write carries many lines.
/// How long the writer sleeps once the queue is empty. Senders never wake it (no futex on the
/// request path); under load one write carries many lines, and a line waits at most this long.
const DRAIN_INTERVAL: Duration = Duration::from_millis(20);

fn write_lines(rx: &Receiver<String>, mut out: BufWriter<Output>, shared: &Shared) {
    let fail = |error: io::Error| {
        if shared.write_errors.fetch_add(1, Ordering::Relaxed) == 0 {
            tracing::warn!(%error, "access log write failed; further failures are only counted");
        }
    };
    loop {
        match rx.try_recv() {
            Ok(line) => match out.write_all(line.as_bytes()) {
                Ok(()) => bump(&shared.written),
                Err(error) => fail(error),
            },
            Err(TryRecvError::Empty) => {
                out.flush().unwrap_or_else(fail);
                thread::sleep(DRAIN_INTERVAL);
            }
            Err(TryRecvError::Disconnected) => {
                out.flush().unwrap_or_else(fail);
                return;
            }
        }
    }
}

/// Adds one to a counter that only one thread writes: a plain load and store, no locked
/// read-modify-write.
fn bump(counter: &AtomicU64) {
    counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}
