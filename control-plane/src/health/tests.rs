use std::time::Duration;

use tokio::time::Instant;

use super::grpc::{decode_status, encode_request, frame, unframe};
use super::schedule::{first_offset, next, sample};
use super::*;

fn result(outcome: Outcome) -> CheckResult {
    CheckResult {
        at: Instant::now(),
        outcome,
        detail: String::new(),
        latency: Duration::ZERO,
    }
}

fn spec(healthy: u32, unhealthy: u32) -> CheckSpec {
    CheckSpec {
        healthy_threshold: healthy,
        unhealthy_threshold: unhealthy,
        ..CheckSpec::new(Protocol::Tcp)
    }
}

/// Feeds outcomes (`+` pass, `-` fail) and returns `healthy` after each, as `H`/`u`.
fn run(spec: &CheckSpec, outcomes: &str) -> String {
    let mut health = EndpointHealth::new();
    outcomes
        .chars()
        .map(|c| {
            let outcome = if c == '+' {
                Outcome::Pass
            } else {
                Outcome::Fail
            };
            health.record(spec, result(outcome));
            if health.healthy { 'H' } else { 'u' }
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn thresholds_flip_health_as_envoy_does() {
    let cases = [
        // The first pass of a new endpoint makes it healthy whatever the threshold.
        (spec(3, 2), "+", "H"),
        (spec(3, 2), "-+", "uu"),
        (spec(3, 2), "-+++", "uuuH"),
        // unhealthy_threshold failures in a row make it unhealthy; a pass resets the count.
        (spec(2, 3), "+--+---", "HHHHHHu"),
        // healthy_threshold passes in a row bring it back; a failure resets the count.
        (spec(2, 1), "+-+-++", "HuuuuH"),
        (spec(1, 1), "+-+-", "HuHu"),
    ];
    for (spec, outcomes, expected) in cases {
        assert_eq!(run(&spec, outcomes), expected, "{outcomes} with {spec:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn record_counts_and_reports_flips() {
    let spec = spec(1, 2);
    let mut health = EndpointHealth::new();
    assert!(health.record(&spec, result(Outcome::Pass)));
    assert!(!health.record(&spec, result(Outcome::Pass)));
    assert_eq!(health.consecutive_successes, 2);
    assert!(!health.record(&spec, result(Outcome::Fail)));
    assert!(health.record(&spec, result(Outcome::Fail)));
    assert_eq!(
        (health.consecutive_successes, health.consecutive_failures),
        (0, 2)
    );
}

#[test]
fn first_checks_are_spread_at_most_1ms_apart_within_one_interval() {
    let second = Duration::from_secs(1);
    assert_eq!(
        first_offset(0, 1, second),
        Duration::ZERO,
        "one target: now"
    );
    // 10 targets: 1ms apart.
    let offsets: Vec<Duration> = (0..10).map(|i| first_offset(i, 10, second)).collect();
    assert_eq!(offsets[1], Duration::from_millis(1));
    assert_eq!(offsets[9], Duration::from_millis(9));
    // 10,000 targets, 1s interval: evenly over the interval, 100µs apart.
    assert_eq!(first_offset(1, 10_000, second), Duration::from_micros(100));
    assert_eq!(
        first_offset(9_999, 10_000, second),
        Duration::from_micros(999_900)
    );
    for i in 0..10_000 {
        assert!(first_offset(i, 10_000, second) < second);
    }
}

#[tokio::test(start_paused = true)]
async fn later_checks_keep_their_phase_and_skip_missed_turns() {
    let t0 = Instant::now();
    let interval = Duration::from_secs(5);
    let jitter = Duration::from_millis(300);
    assert_eq!(
        next(t0, interval, Duration::ZERO, t0 + Duration::from_millis(40)),
        t0 + interval
    );
    assert_eq!(next(t0, interval, jitter, t0), t0 + interval + jitter);
    let late = t0 + Duration::from_secs(7);
    assert_eq!(
        next(t0, interval, Duration::ZERO, late),
        late,
        "no catch-up burst"
    );
    assert_eq!(sample(jitter, 0.5), Duration::from_millis(150));
    assert_eq!(sample(jitter, 7.0), jitter);
}

#[test]
fn grpc_messages_round_trip() {
    assert!(encode_request("").is_empty());
    assert_eq!(&encode_request("web")[..], b"\x0a\x03web");
    assert_eq!(&frame(b"\x08\x01")[..], b"\x00\x00\x00\x00\x02\x08\x01");
    assert_eq!(
        unframe(b"\x00\x00\x00\x00\x02\x08\x01"),
        Some(&b"\x08\x01"[..])
    );
    assert_eq!(unframe(b"\x01\x00\x00\x00\x02\x08\x01"), None, "compressed");
    assert_eq!(unframe(b"\x00\x00\x00\x00\x05\x08\x01"), None, "short");
    assert_eq!(unframe(b"\x00\x00"), None);
    let cases: [(&[u8], Option<u64>); 7] = [
        (b"", Some(0)),
        (b"\x08\x01", Some(1)),
        (b"\x08\x02", Some(2)),
        // An unknown string field, then the status.
        (b"\x12\x02hi\x08\x01", Some(1)),
        (b"\x08", None),
        (b"\x12\x09hi", None),
        (b"\x0b", None),
    ];
    for (message, expected) in cases {
        assert_eq!(decode_status(message), expected, "{message:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn set_targets_keeps_unchanged_targets_and_forgets_removed_ones() {
    let checker = Checker::new(4);
    let target = |port: u16, interval: u64| Target {
        cluster: "web".into(),
        address: ([127, 0, 0, 1], port).into(),
        check: CheckSpec {
            interval: Duration::from_secs(interval),
            ..CheckSpec::new(Protocol::Tcp)
        },
    };
    checker.set_targets(vec![target(1, 5), target(2, 5)]);
    let generation = |port: u16| {
        checker.shared.lock()[&("web".to_owned(), ([127, 0, 0, 1], port).into())].generation
    };
    let (g1, g2) = (generation(1), generation(2));
    checker.set_targets(vec![target(1, 5), target(2, 9), target(3, 5)]);
    assert_eq!(generation(1), g1, "unchanged: same task");
    assert_ne!(generation(2), g2, "changed spec: restarted");
    assert_eq!(checker.all().len(), 3);
    checker.set_targets(vec![target(3, 5)]);
    let all = checker.all();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].0, target(3, 5));
    assert!(!all[0].1.healthy, "new targets start unhealthy");
    assert!(checker.health("web", ([127, 0, 0, 1], 1).into()).is_none());
}
