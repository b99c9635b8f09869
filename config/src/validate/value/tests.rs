use std::time::Duration;

use proptest::prelude::*;

use super::*;

fn rule(result: Result<impl std::fmt::Debug, Violation>) -> String {
    result.expect_err("must be rejected").rule
}

#[test]
fn durations_take_a_whole_number_and_a_unit() {
    let cases = [
        ("1ms", Duration::from_millis(1)),
        ("250ms", Duration::from_millis(250)),
        ("5s", Duration::from_secs(5)),
        ("1m", Duration::from_secs(60)),
        ("90s", Duration::from_secs(90)),
        ("1h", Duration::from_secs(3600)),
        ("60m", Duration::from_secs(3600)),
        ("3600000ms", Duration::from_secs(3600)),
        ("007s", Duration::from_secs(7)),
    ];
    for (text, want) in cases {
        assert_eq!(duration(text), Ok(want), "{text}");
    }
}

#[test]
fn durations_reject_other_shapes_with_an_example() {
    for text in [
        "", "5", "s", "5S", "5 s", " 5s", "1.5s", "-5s", "+5s", "5sec", "5d", "1h30m", "5us",
    ] {
        let err = duration(text).expect_err(text);
        assert_eq!(
            err.rule, "must be a whole number followed by ms, s, m or h",
            "{text}"
        );
        assert_eq!(err.hint.as_deref(), Some(r#"example: "250ms""#), "{text}");
    }
}

#[test]
fn durations_are_above_zero_and_at_most_an_hour() {
    assert_eq!(rule(duration("0s")), "must be greater than 0");
    assert_eq!(rule(duration("0ms")), "must be greater than 0");
    assert_eq!(rule(duration("61m")), "must be at most 1h");
    assert_eq!(rule(duration("3600001ms")), "must be at most 1h");
    assert_eq!(rule(duration("2h")), "must be at most 1h");
    // Overflowing the multiplication or the integer itself is "too long", not a panic.
    assert_eq!(
        rule(duration("18446744073709551615h")),
        "must be at most 1h"
    );
    assert_eq!(
        rule(duration("99999999999999999999999s")),
        "must be at most 1h"
    );
}

#[test]
fn domains_parse_to_exact_suffix_or_any() {
    let cases = [
        ("*", DomainMatch::Any),
        (
            "api.example.com",
            DomainMatch::Exact("api.example.com".into()),
        ),
        (
            "API.Example.COM",
            DomainMatch::Exact("api.example.com".into()),
        ),
        ("localhost", DomainMatch::Exact("localhost".into())),
        ("10.0.0.1", DomainMatch::Exact("10.0.0.1".into())),
        ("[::1]", DomainMatch::Exact("[::1]".into())),
        ("*.example.com", DomainMatch::Suffix(".example.com".into())),
        ("*.Example.com", DomainMatch::Suffix(".example.com".into())),
        ("x-1.a-b.io", DomainMatch::Exact("x-1.a-b.io".into())),
    ];
    for (text, want) in cases {
        assert_eq!(domain(text), Ok(want), "{text}");
    }
}

#[test]
fn domains_reject_bad_syntax() {
    let cases = [
        ("", "must be a host name"),
        ("example.com.", "must be a host name"),
        (".example.com", "must be a host name"),
        ("a..b", "must be a host name"),
        ("-a.com", "must be a host name"),
        ("a-.com", "must be a host name"),
        ("under_score.com", "must be a host name"),
        ("sp ace.com", "must be a host name"),
        ("[not-ip]", "must be a host name"),
        ("*.", "may use \"*\" only alone or as a leading \"*.\""),
        ("**", "may use \"*\" only alone or as a leading \"*.\""),
        (
            "*example.com",
            "may use \"*\" only alone or as a leading \"*.\"",
        ),
        (
            "api.*.com",
            "may use \"*\" only alone or as a leading \"*.\"",
        ),
        ("*.*.com", "may use \"*\" only alone or as a leading \"*.\""),
        ("example.com:8080", "must not include a port"),
    ];
    for (text, want) in cases {
        assert_eq!(rule(domain(text)), want, "{text}");
    }
    let long_label = format!("{}.com", "a".repeat(64));
    assert_eq!(rule(domain(&long_label)), "must be a host name");
    let long_name = vec!["a".repeat(63); 5].join(".");
    assert_eq!(rule(domain(&long_name)), "must be a host name");
}

#[test]
fn suffix_domains_need_a_label_before_the_suffix() {
    let suffix = domain("*.example.com").expect("valid");
    assert!(suffix.matches("api.example.com"));
    assert!(suffix.matches("a.b.example.com"));
    assert!(!suffix.matches("example.com"));
    assert!(!suffix.matches(".example.com"));
    assert!(!suffix.matches("badexample.com"));
}

#[test]
fn socket_addresses_need_an_ip_and_a_port() {
    assert_eq!(
        socket_addr("127.0.0.1:8080", true).map(|a| a.port()),
        Ok(8080)
    );
    assert_eq!(socket_addr("[::1]:9", true).map(|a| a.port()), Ok(9));
    assert_eq!(socket_addr("127.0.0.1:0", false).map(|a| a.port()), Ok(0));
    assert_eq!(
        rule(socket_addr("127.0.0.1:0", true)),
        "must have a non-zero port"
    );
    assert!(rule(socket_addr("localhost:80", true)).starts_with("must be an IP address"));
    assert!(rule(socket_addr("127.0.0.1", true)).starts_with("must be an IP address"));
    assert!(rule(socket_addr("127.0.0.1:65536", true)).starts_with("must be an IP address"));
}

#[test]
fn header_names_are_lowercased_tokens_and_values_are_visible_ascii() {
    assert_eq!(header_name("X-Canary"), Ok("x-canary".to_owned()));
    assert_eq!(
        header_name("a!#$%&'*+-.^_`|~9"),
        Ok("a!#$%&'*+-.^_`|~9".to_owned())
    );
    for bad in ["", "x canary", "x:y", ":authority", "x\ny", "é"] {
        assert!(header_name(bad).is_err(), "{bad:?}");
    }
    assert_eq!(header_value("a b\tc ~!"), Ok("a b\tc ~!".to_owned()));
    assert_eq!(header_value(""), Ok(String::new()));
    for bad in ["a\r\nb", "a\nb", "café", "\0", "\x7f"] {
        assert!(header_value(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn methods_are_uppercased_tokens() {
    assert_eq!(method("get"), Ok("GET".to_owned()));
    assert_eq!(method("PURGE"), Ok("PURGE".to_owned()));
    assert!(method("").is_err());
    assert!(method("GE T").is_err());
}

#[test]
fn authorities_are_hosts_with_optional_ports() {
    for good in [
        "api.internal",
        "api.internal:8443",
        "10.0.0.1:80",
        "[::1]",
        "[::1]:443",
        "API.Example.com",
    ] {
        assert_eq!(authority(good), Ok(good.to_owned()), "{good}");
    }
    for bad in [
        "",
        ":80",
        "api:0",
        "api:99999",
        "api:",
        "http://api",
        "a b",
        "[::1",
        "api.internal:80:80",
    ] {
        assert!(authority(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn regexes_are_anchored_and_report_one_line() {
    let re = anchored_regex("/a|/b").expect("valid");
    assert!(re.is_match("/a"));
    assert!(re.is_match("/b"));
    assert!(!re.is_match("/a/b"), "alternation stays inside the anchors");
    let err = anchored_regex("(").expect_err("unclosed");
    assert_eq!(err.hint.as_deref(), Some("unclosed group"));
}

#[test]
fn ints_are_range_checked_and_converted() {
    assert_eq!(int::<u32>(1, 1, 1000), Ok(1));
    assert_eq!(int::<u32>(1000, 1, 1000), Ok(1000));
    assert_eq!(rule(int::<u32>(0, 1, 1000)), "must be between 1 and 1000");
    assert_eq!(rule(int::<u32>(-1, 1, 1000)), "must be between 1 and 1000");
    assert_eq!(
        rule(int::<u16>(70_000, 1, 100_000)),
        "must be between 1 and 100000"
    );
}

proptest! {
    #[test]
    fn every_in_range_duration_parses_back(n in 1u64..=3_600_000) {
        // The same duration written in each unit that divides it.
        let units = [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)];
        for (unit, ms) in units {
            if n % ms == 0 {
                let text = format!("{}{unit}", n / ms);
                prop_assert_eq!(duration(&text), Ok(Duration::from_millis(n)));
            }
        }
    }

    #[test]
    fn duration_never_panics(text in "\\PC{0,12}") {
        let _ = duration(&text);
    }

    #[test]
    fn suffix_domain_matches_exactly_the_hosts_below_it(label in "[a-z0-9]{1,10}", base in "[a-z]{1,10}\\.[a-z]{2,5}") {
        let suffix = domain(&format!("*.{base}")).expect("valid suffix");
        let below = format!("{label}.{base}");
        let glued = format!("{label}{base}");
        prop_assert!(suffix.matches(&below));
        prop_assert!(!suffix.matches(&base));
        prop_assert!(!suffix.matches(&glued));
    }
}
