use std::net::SocketAddr;
use std::time::Duration;

use super::*;

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

#[tokio::test(start_paused = true)]
async fn register_is_an_idempotent_upsert() {
    let registry = Registry::new();
    let mut versions = registry.subscribe();
    let reg = Registration::new(addr("10.0.0.1:80"));

    let (_, upsert) = registry.upsert("web", reg.clone()).unwrap();
    assert_eq!(upsert, Upsert::Created);
    assert!(versions.has_changed().unwrap());
    versions.mark_unchanged();

    let (_, upsert) = registry.upsert("web", reg.clone()).unwrap();
    assert_eq!(upsert, Upsert::Refreshed);
    assert!(
        !versions.has_changed().unwrap(),
        "a refresh alone is not a change"
    );

    let (endpoint, upsert) = registry
        .upsert("web", Registration { weight: 5, ..reg })
        .unwrap();
    assert_eq!(upsert, Upsert::Updated);
    assert_eq!(endpoint.weight, 5);
    assert!(versions.has_changed().unwrap());
    assert_eq!(registry.endpoints("web"), vec![endpoint]);
}

#[tokio::test(start_paused = true)]
async fn heartbeat_extends_the_ttl_and_lapsed_endpoints_expire() {
    let registry = Registry::new();
    let a = addr("10.0.0.1:80");
    let reg = Registration {
        ttl: Duration::from_secs(2),
        ..Registration::new(a)
    };
    registry.register("web", reg).unwrap();

    tokio::time::advance(Duration::from_millis(1500)).await;
    let beat = registry.heartbeat("web", a).unwrap();
    assert_eq!(beat.expires_at, Instant::now() + Duration::from_secs(2));

    tokio::time::advance(Duration::from_millis(1500)).await;
    assert_eq!(registry.expire(), 0, "the heartbeat kept it alive");
    assert_eq!(registry.endpoints("web").len(), 1);

    tokio::time::advance(Duration::from_millis(500)).await;
    assert!(
        registry.endpoints("web").is_empty(),
        "lapsed endpoints are invisible"
    );
    assert!(registry.services().is_empty());
    let version = registry.version();
    assert_eq!(registry.expire(), 1);
    assert!(registry.version() > version);
    assert!(matches!(
        registry.heartbeat("web", a),
        Err(RegistryError::NotFound { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn heartbeat_after_the_ttl_lapsed_is_not_found() {
    let registry = Registry::new();
    let a = addr("10.0.0.1:80");
    registry
        .register(
            "web",
            Registration {
                ttl: Duration::from_secs(1),
                ..Registration::new(a)
            },
        )
        .unwrap();
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(matches!(
        registry.heartbeat("web", a),
        Err(RegistryError::NotFound { .. })
    ));
    assert!(registry.services().is_empty());
    let (_, upsert) = registry.upsert("web", Registration::new(a)).unwrap();
    assert_eq!(upsert, Upsert::Created);
}

#[tokio::test(start_paused = true)]
async fn expiry_task_removes_lapsed_endpoints_and_stops_with_the_registry() {
    let registry = Registry::new();
    let mut versions = registry.subscribe();
    registry
        .register(
            "web",
            Registration {
                ttl: Duration::from_secs(1),
                ..Registration::new(addr("10.0.0.1:80"))
            },
        )
        .unwrap();
    versions.mark_unchanged();
    let task = spawn_expiry(registry.clone(), Duration::from_millis(100));

    tokio::time::timeout(Duration::from_secs(2), versions.changed())
        .await
        .expect("expiry within 2s")
        .unwrap();
    assert!(registry.services().is_empty());

    drop(registry);
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .expect("the task ends once the registry is dropped")
        .unwrap();
}

#[test]
fn deregister_removes_and_reports_unknown_endpoints() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let registry = Registry::new();
        let a = addr("10.0.0.1:80");
        registry.register("web", Registration::new(a)).unwrap();
        registry.deregister("web", a).unwrap();
        assert!(registry.services().is_empty());
        assert_eq!(
            registry.deregister("web", a),
            Err(RegistryError::NotFound {
                service: "web".into(),
                address: a
            })
        );
    });
}

#[test]
fn validation_lists_every_problem() {
    let reg = Registration {
        address: addr("0.0.0.0:0"),
        weight: 0,
        zone: Some("us east".into()),
        metadata: [("ok".to_owned(), "x".repeat(2000))].into(),
        ttl: Duration::from_millis(500),
    };
    let problems = reg.validate().unwrap_err();
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(fields, ["address", "weight", "zone", "metadata.ok", "ttl"]);
    assert_eq!(
        problems[1].to_string(),
        r#"weight: must be between 1 and 1000, got "0""#
    );
    assert_eq!(
        problems[4].to_string(),
        r#"ttl: must be between 1s and 1h, got "500ms""#
    );
}

#[test]
fn service_names_follow_cluster_name_rules() {
    for good in ["web", "a.b-c_d", "X9"] {
        assert!(validate::service(good).is_ok(), "{good}");
    }
    for bad in ["", "a b", "a/b", "é", &"x".repeat(129)] {
        assert!(validate::service(bad).is_err(), "{bad}");
    }
}

#[test]
fn ttl_text_uses_the_config_duration_grammar() {
    assert_eq!(validate::ttl_text("30s").unwrap(), Duration::from_secs(30));
    assert_eq!(
        validate::ttl_text("1500ms").unwrap(),
        Duration::from_millis(1500)
    );
    assert_eq!(validate::ttl_text("1h").unwrap(), Duration::from_secs(3600));
    for bad in ["", "30", "1.5s", "-1s", "30 s", "99999999999999999999h"] {
        let problem = validate::ttl_text(bad).unwrap_err();
        assert!(problem.rule.starts_with("must be a whole number"), "{bad}");
    }
    for out in ["999ms", "2h", "0s"] {
        let problem = validate::ttl_text(out).unwrap_err();
        assert_eq!(problem.rule, "must be between 1s and 1h", "{out}");
    }
}

#[test]
fn durations_format_in_the_largest_exact_unit() {
    let cases = [
        (Duration::from_secs(30), "30s"),
        (Duration::from_millis(1500), "1500ms"),
        (Duration::from_secs(120), "2m"),
        (Duration::from_secs(3600), "1h"),
        (Duration::ZERO, "0ms"),
    ];
    for (duration, text) in cases {
        assert_eq!(format_duration(duration), text);
    }
}
