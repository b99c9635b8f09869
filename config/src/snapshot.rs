//! A config with the version it was published as: the unit the proxy swaps on reload.

use std::sync::Arc;

use crate::model::Config;

/// A validated config and its version. Cloning is cheap; the config is shared.
#[derive(Debug, Clone)]
pub struct Snapshot {
    version: u64,
    config: Arc<Config>,
}

impl Snapshot {
    /// A snapshot of `config` as `version`. Versions increase with each publication; the proxy
    /// reports the one it serves.
    pub fn new(version: u64, config: impl Into<Arc<Config>>) -> Self {
        Self {
            version,
            config: config.into(),
        }
    }

    /// The version it was published as.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The config.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }
}
