//! Re-reads the config file when it changes on disk.
//!
//! The file's directory is watched (inotify), not the file: editors save by writing a new file
//! and renaming it over the old one, and Kubernetes updates a mounted ConfigMap by swapping a
//! `..data` symlink, so the file's own inode may never see an event. Any event in the directory
//! starts a debounce; once the directory has been quiet for [`DEBOUNCE`], the file is read and
//! applied if its text differs from the active config's.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fs::inotify;

use super::Reloader;

/// How long the directory must be quiet before the file is read.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// How often the watcher checks whether it should stop.
const STOP_CHECK: Duration = Duration::from_millis(500);

/// A running watcher; dropping it stops the thread.
#[derive(Debug)]
pub struct FileWatcher {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FileWatcher {
    /// Watches `path`'s directory and applies the file through `reloader` when it changes.
    ///
    /// # Errors
    /// When inotify cannot be set up (no inotify instances left, or the directory is gone).
    pub fn start(path: &Path, reloader: Arc<Reloader>) -> std::io::Result<Self> {
        let path = std::path::absolute(path)?;
        let dir = path
            .parent()
            .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
        let fd = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)?;
        inotify::add_watch(
            &fd,
            &dir,
            inotify::WatchFlags::CLOSE_WRITE
                | inotify::WatchFlags::MOVED_TO
                | inotify::WatchFlags::CREATE
                | inotify::WatchFlags::DELETE
                | inotify::WatchFlags::MODIFY
                | inotify::WatchFlags::ATTRIB,
        )?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("strait-config-watch".into())
            .spawn(move || run(&fd, &path, &reloader, &stopping))?;
        tracing::info!(directory = %dir.display(), "watching the config file for changes");
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for FileWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(fd: &std::os::fd::OwnedFd, path: &Path, reloader: &Reloader, stop: &AtomicBool) {
    super::lower_thread_priority();
    let mut buf = [std::mem::MaybeUninit::uninit(); 4096];
    let mut pending = false;
    while !stop.load(Ordering::Acquire) {
        let wait = if pending { DEBOUNCE } else { STOP_CHECK };
        let timeout = Timespec::try_from(wait).unwrap_or(Timespec {
            tv_sec: 0,
            tv_nsec: 200_000_000,
        });
        let mut fds = [PollFd::new(fd, PollFlags::IN)];
        match rustix::event::poll(&mut fds, Some(&timeout)) {
            Ok(0) => {
                if pending {
                    pending = false;
                    // Problems are logged and counted by the reloader.
                    let _ = reloader.apply_file(path);
                }
            }
            Ok(_) => {
                // Drain the events; which file changed does not matter (see the module docs).
                let mut reader = inotify::Reader::new(fd, &mut buf);
                for _ in 0..1024 {
                    match reader.next() {
                        Ok(_) => pending = true,
                        Err(_) => break,
                    }
                }
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(err) => {
                tracing::error!(error = %err, "config watcher failed; SIGHUP still reloads");
                return;
            }
        }
    }
}
