//! Test logging: one global subscriber, filtered by `RUST_LOG`, written through libtest's
//! capture so output shows only for failing tests.

use std::sync::Once;

use tracing_subscriber::EnvFilter;

/// Marker returned by [`trace_init`], so tests can write `let _trace = trace_init();`.
#[derive(Debug, Clone, Copy)]
pub struct Trace(());

/// Installs the global tracing subscriber once per test binary; later calls do nothing.
///
/// The filter comes from `RUST_LOG` (default `info`). Output goes through the test writer, so
/// libtest shows it only for failing tests (or with `--nocapture`). If another subscriber was
/// installed first, that one stays.
pub fn trace_init() -> Trace {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        // Ignoring the error: a subscriber set elsewhere in the same binary is fine.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
    Trace(())
}
