//! Background tasks owned by a test server: aborted when the server is dropped.

use tokio::task::JoinHandle;

/// A spawned task that is aborted when this handle is dropped.
///
/// Test servers own their accept loop through one of these, so dropping the server closes its
/// listener and every connection it serves.
#[derive(Debug)]
pub(crate) struct Background(JoinHandle<()>);

impl Background {
    /// Spawns `fut` on the current tokio runtime.
    ///
    /// # Panics
    ///
    /// Panics when called outside a tokio runtime (as [`tokio::spawn`] does).
    pub(crate) fn spawn<F>(fut: F) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        Self(tokio::spawn(fut))
    }

    /// Whether the task has ended.
    pub(crate) fn is_finished(&self) -> bool {
        self.0.is_finished()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.0.abort();
    }
}
