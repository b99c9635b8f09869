//! Access log tests: exact lines, timestamps, and a writer that blocks.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use strait_config::{LogField, LogFormat, LogOutput, TemplatePart};

use super::access_log::{AccessLogger, Entry, StopError};
use super::json::write_rfc3339;

/// Upper bound on any wait; a healthy run takes milliseconds.
const WAIT: Duration = Duration::from_secs(10);

fn entry() -> Entry<'static> {
    Entry {
        start_time: UNIX_EPOCH + Duration::from_millis(1_795_896_953_970),
        duration: Duration::from_micros(12_345),
        method: "GET",
        authority: "api.example.com",
        path: "/v1/users?id=7",
        protocol: "HTTP/1.1",
        status: 200,
        bytes_in: 0,
        bytes_out: 1234,
        upstream: Some(SocketAddr::from(([10, 0, 0, 2], 8080))),
        error: None,
        request_id: "req-1",
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736",
        worker: 3,
        listener: "public",
        route: "users",
        cluster: "api",
        client: SocketAddr::from(([192, 0, 2, 1], 51000)),
    }
}

fn line(entry: &Entry<'_>, format: &LogFormat) -> String {
    let mut out = String::new();
    entry.write_line(format, &mut out);
    out
}

fn rfc3339(time: SystemTime) -> String {
    let mut out = String::new();
    write_rfc3339(&mut out, time);
    out
}

/// A text template: each part that names a field is that field, anything else a literal.
fn text_format(parts: &[&str]) -> LogFormat {
    let part = |text: &&str| match LogField::from_name(text) {
        Some(field) => TemplatePart::Field(field),
        None => TemplatePart::Literal((*text).to_owned()),
    };
    LogFormat::Text(parts.iter().map(part).collect())
}

/// A file path under the temp dir that no other test or run uses.
fn temp_path(name: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("strait-{name}-{}-{n}.log", std::process::id()))
}

#[test]
fn json_line_has_every_field() {
    let expected = concat!(
        r#"{"start_time":"2026-11-28T20:15:53.970Z","duration_ms":12.345,"method":"GET","#,
        r#""authority":"api.example.com","path":"/v1/users?id=7","protocol":"HTTP/1.1","#,
        r#""status":200,"bytes_in":0,"bytes_out":1234,"upstream":"10.0.0.2:8080","error":null,"#,
        r#""request_id":"req-1","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","worker":3,"#,
        r#""listener":"public","route":"users","cluster":"api","client":"192.0.2.1:51000"}"#,
        "\n",
    );
    assert_eq!(line(&entry(), &LogFormat::Json), expected);

    let failed = Entry {
        upstream: None,
        error: Some("no_route"),
        status: 404,
        ..entry()
    };
    let json = line(&failed, &LogFormat::Json);
    assert!(json.contains(r#""status":404,"#), "{json}");
    assert!(
        json.contains(r#""upstream":null,"error":"no_route","#),
        "{json}"
    );
}

#[test]
fn text_template_is_exact() {
    let format = text_format(&[
        "start_time",
        " ",
        "method",
        " ",
        "path",
        " ",
        "status",
        " ",
        "duration_ms",
        "ms up=",
        "upstream",
        " err=",
        "error",
        " from ",
        "client",
    ]);
    assert_eq!(
        line(&entry(), &format),
        "2026-11-28T20:15:53.970Z GET /v1/users?id=7 200 12.345ms up=10.0.0.2:8080 err=- \
         from 192.0.2.1:51000\n"
    );
    let failed = Entry {
        upstream: None,
        error: Some("upstream_timeout"),
        ..entry()
    };
    let text = line(&failed, &format);
    assert!(text.contains(" up=- err=upstream_timeout "), "{text}");
}

#[test]
fn hostile_values_stay_on_one_line() {
    let evil = Entry {
        path: "/a\"b\\c\nd\re\u{1}",
        method: "G\tET",
        ..entry()
    };
    let json = line(&evil, &LogFormat::Json);
    assert!(json.contains(r#""method":"G\tET","#), "{json}");
    assert!(json.contains(r#""path":"/a\"b\\c\nd\re\u0001","#), "{json}");
    let text = line(&evil, &text_format(&["method", " ", "path"]));
    assert_eq!(text, "G\\tET /a\\\"b\\\\c\\nd\\re\\u0001\n");
    for line in [json, text] {
        assert_eq!(line.matches('\n').count(), 1, "{line:?}");
    }
}

#[test]
fn durations_have_three_decimals() {
    for (micros, expected) in [
        (0, "0.000"),
        (999, "0.999"),
        (1_000, "1.000"),
        (60_000_007, "60000.007"),
    ] {
        let entry = Entry {
            duration: Duration::from_micros(micros),
            ..entry()
        };
        let text = line(&entry, &text_format(&["duration_ms"]));
        assert_eq!(text.trim_end(), expected);
    }
}

#[test]
fn formats_known_timestamps() {
    let cases = [
        (0, "1970-01-01T00:00:00.000Z"),
        (951_782_400_000, "2000-02-29T00:00:00.000Z"),
        (1_795_896_953_970, "2026-11-28T20:15:53.970Z"),
        (4_107_542_399_999, "2100-02-28T23:59:59.999Z"),
        (4_107_542_400_000, "2100-03-01T00:00:00.000Z"),
    ];
    for (millis, expected) in cases {
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_millis(millis)),
            expected
        );
    }
    assert_eq!(
        rfc3339(UNIX_EPOCH - Duration::from_millis(1)),
        "1969-12-31T23:59:59.999Z"
    );
    assert_eq!(
        rfc3339(UNIX_EPOCH - Duration::from_secs(2_208_988_800)),
        "1900-01-01T00:00:00.000Z"
    );
}

#[test]
fn dates_agree_with_counting_days() {
    let (mut year, mut month, mut day) = (1900, 1, 1);
    for days in -25_567i64..=47_846 {
        let secs = Duration::from_secs(days.unsigned_abs() * 86_400);
        let time = if days < 0 {
            UNIX_EPOCH - secs
        } else {
            UNIX_EPOCH + secs
        };
        assert_eq!(
            rfc3339(time),
            format!("{year:04}-{month:02}-{day:02}T00:00:00.000Z")
        );
        let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
        let february = if leap { 29 } else { 28 };
        let month_days = [31, february, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        day += 1;
        if day > month_days[month - 1] {
            (day, month) = (1, month + 1);
        }
        if month > 12 {
            (month, year) = (1, year + 1);
        }
    }
    assert_eq!((year, month, day), (2101, 1, 1));
}

#[test]
fn file_output_is_appended_and_flushed_on_stop() {
    let path = temp_path("append");
    let output = LogOutput::File(path.clone());
    for run in 0..2 {
        let logger = AccessLogger::open(&output, LogFormat::Json, 64).expect("open log file");
        let (first, second) = (logger.handle(), logger.handle());
        first.log(&Entry {
            request_id: "a",
            worker: run,
            ..entry()
        });
        second.clone().log(&Entry {
            request_id: "b",
            worker: run,
            ..entry()
        });
        drop((first, second));
        let totals = logger
            .flush_and_stop(WAIT)
            .expect("writer drains and exits");
        assert_eq!((totals.written, totals.dropped), (2, 0));
    }
    let contents = std::fs::read_to_string(&path).expect("read log file");
    let _ = std::fs::remove_file(&path);
    let lines: Vec<&str> = contents.lines().collect();
    assert_eq!(lines.len(), 4, "{contents}");
    for (i, written) in lines.iter().enumerate() {
        let expected = Entry {
            request_id: ["a", "b"][i % 2],
            worker: i / 2,
            ..entry()
        };
        assert_eq!(format!("{written}\n"), line(&expected, &LogFormat::Json));
    }
}

#[test]
fn stop_times_out_while_a_handle_is_alive() {
    let logger =
        AccessLogger::with_writer(LogFormat::Json, 4, Box::new(io::sink())).expect("spawn");
    let handle = logger.handle();
    let result = logger.flush_and_stop(Duration::from_millis(50));
    assert!(
        matches!(result, Err(StopError::TimedOut { .. })),
        "{result:?}"
    );
    drop(handle);
}

/// Blocks the first `write` until released, and records everything written.
struct GateWriter {
    entered: Sender<()>,
    release: Option<Receiver<()>>,
    written: Arc<Mutex<Vec<u8>>>,
}

impl Write for GateWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(release) = self.release.take() {
            let _ = self.entered.send(());
            let _ = release.recv_timeout(WAIT);
        }
        self.written
            .lock()
            .expect("not poisoned")
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_blocked_writer_never_blocks_log() {
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let sink = Arc::new(Mutex::new(Vec::new()));
    let gate = GateWriter {
        entered: entered_tx,
        release: Some(release_rx),
        written: Arc::clone(&sink),
    };
    let logger = AccessLogger::with_writer(LogFormat::Json, 8, Box::new(gate)).expect("spawn");
    let handle = logger.handle();

    // The writer takes the first line, finds the queue empty, flushes, and blocks in `write`.
    handle.log(&entry());
    entered
        .recv_timeout(WAIT)
        .expect("writer reached the blocking write");

    // 999 more: 8 fill the queue, 991 are dropped; on another thread so a block fails the test.
    let (done_tx, done) = mpsc::channel();
    let worker = thread::spawn(move || {
        for _ in 1..1000 {
            handle.log(&entry());
        }
        let _ = done_tx.send(handle.dropped());
        handle
    });
    let dropped = done
        .recv_timeout(WAIT)
        .expect("log() returned while the writer was blocked");
    assert_eq!(dropped, 1000 - 8 - 1);
    assert_eq!(logger.dropped(), 991);
    assert_eq!(
        logger.written(),
        1,
        "only the first line reached the writer"
    );

    release.send(()).expect("writer is waiting");
    drop(worker.join().expect("logging thread"));
    let totals = logger
        .flush_and_stop(WAIT)
        .expect("writer drains and exits");
    assert_eq!(
        (totals.written, totals.dropped, totals.write_errors),
        (9, 991, 0)
    );
    let sink = sink.lock().expect("not poisoned");
    let contents = std::str::from_utf8(&sink).expect("lines are UTF-8");
    assert_eq!(contents, line(&entry(), &LogFormat::Json).repeat(9));
}
