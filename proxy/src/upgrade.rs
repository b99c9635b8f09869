//! Binary upgrade without dropping a connection: a new `strait` takes the listening sockets of
//! the running one over a UNIX socket (`SCM_RIGHTS`), starts serving on them, then tells the old
//! one to drain and exit.
//!
//! The old process listens on a `SOCK_SEQPACKET` UNIX socket (`strait run --upgrade-socket
//! PATH`); the new one connects (`--upgrade-from PATH`). One message per packet:
//!
//! | from | message | with |
//! |---|---|---|
//! | new | `listeners` | |
//! | old | `{"kind":"listener","name":…,"address":…,"bound":…}` | the listener's sockets, one per old worker |
//! | old | `{"kind":"admin"}` | the admin API's socket |
//! | old | `{"kind":"end"}` | |
//! | new | `drain` (once it accepts on every socket) | |
//! | old | `draining` (after removing its upgrade socket, so the new one can take the path) | |
//!
//! The sockets are the same kernel objects, not copies: connections waiting in an accept queue
//! are accepted by whichever process takes them, and the old one serves what it already took
//! while it drains. No `SO_REUSEPORT` overlap of two socket sets, which would reset the
//! connections queued on the old set when it closes. Nothing here needs shared memory or host
//! IPC beyond the one socket file, so it works inside a container.

use std::io::{IoSlice, IoSliceMut, Read as _, Write as _};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
};
use serde_json::json;

use crate::reload::{BoundListener, Reloader};
use crate::server::Inherited;

/// The most descriptors one message carries (the kernel's `SCM_MAX_FD` is 253).
const MAX_FDS: usize = 250;

/// The largest message.
const MAX_MESSAGE: usize = 64 * 1024;

/// How long either side waits for the other's next message.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// The old process's side: answers one upgrade at a time on a UNIX socket.
#[derive(Debug)]
pub struct UpgradeServer {
    path: PathBuf,
}

impl UpgradeServer {
    /// Listens on `path` (replacing a stale socket file) and serves upgrade requests on a
    /// thread of its own. When a new process asks to take over, `drain` is sent once its
    /// request to drain arrived; the caller then shuts this process down.
    ///
    /// # Errors
    /// When the socket cannot be created or bound.
    pub fn start(
        path: &Path,
        reloader: Arc<Reloader>,
        admin: Option<std::net::TcpListener>,
        drain: tokio::sync::mpsc::UnboundedSender<()>,
    ) -> std::io::Result<Self> {
        let fd = seqpacket()?;
        if path.exists() {
            std::fs::remove_file(path)?;
        }
        rustix::net::bind(&fd, &SocketAddrUnix::new(path)?)?;
        rustix::net::listen(&fd, 4)?;
        let listener = UnixListener::from(fd);
        let owned = path.to_owned();
        std::thread::Builder::new()
            .name("strait-upgrade".into())
            .spawn(move || serve(&listener, &owned, &reloader, admin.as_ref(), &drain))?;
        tracing::info!(path = %path.display(), "accepting binary upgrades");
        Ok(Self {
            path: path.to_owned(),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn serve(
    listener: &UnixListener,
    path: &Path,
    reloader: &Reloader,
    admin: Option<&std::net::TcpListener>,
    drain: &tokio::sync::mpsc::UnboundedSender<()>,
) {
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(err) => {
                tracing::warn!(error = %err, "upgrade socket accept failed");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        match answer(&stream, path, reloader, admin) {
            Ok(true) => {
                let _ = drain.send(());
                return;
            }
            Ok(false) => {}
            Err(err) => tracing::warn!(error = %err, "binary upgrade aborted"),
        }
    }
}

/// Serves one new process; `Ok(true)` when it took over and this process must drain.
fn answer(
    mut stream: &UnixStream,
    path: &Path,
    reloader: &Reloader,
    admin: Option<&std::net::TcpListener>,
) -> std::io::Result<bool> {
    stream.set_read_timeout(Some(STEP_TIMEOUT))?;
    stream.set_write_timeout(Some(STEP_TIMEOUT))?;
    let mut buf = vec![0; MAX_MESSAGE];
    loop {
        let n = stream.read(&mut buf)?;
        match &buf[..n] {
            b"" => return Ok(false),
            b"listeners" => {
                let listeners = reloader.duplicate_listeners()?;
                tracing::info!(
                    listeners = listeners.len(),
                    "handing listening sockets to a new process"
                );
                for listener in &listeners {
                    let header = json!({
                        "kind": "listener",
                        "name": listener.name,
                        "address": listener.address.to_string(),
                        "bound": listener.bound.to_string(),
                    });
                    let fds: Vec<_> = listener.sockets.iter().map(AsFd::as_fd).collect();
                    if fds.len() > MAX_FDS {
                        return Err(std::io::Error::other(format!(
                            "listener {} has {} sockets; at most {MAX_FDS} can be handed over",
                            listener.name,
                            fds.len()
                        )));
                    }
                    send_with_fds(stream, header.to_string().as_bytes(), &fds)?;
                }
                if let Some(admin) = admin {
                    send_with_fds(
                        stream,
                        json!({ "kind": "admin" }).to_string().as_bytes(),
                        &[admin.as_fd()],
                    )?;
                }
                send_with_fds(stream, json!({ "kind": "end" }).to_string().as_bytes(), &[])?;
            }
            b"drain" => {
                // Free the path first: the new process listens on it next.
                let _ = std::fs::remove_file(path);
                stream.write_all(b"draining")?;
                tracing::info!("a new process took over the listening sockets; draining");
                return Ok(true);
            }
            other => {
                return Err(std::io::Error::other(format!(
                    "unexpected upgrade message {:?}",
                    String::from_utf8_lossy(other)
                )));
            }
        }
    }
}

/// A new `SOCK_SEQPACKET` UNIX socket: message boundaries kept, descriptors attached to one
/// message.
fn seqpacket() -> std::io::Result<OwnedFd> {
    Ok(rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

fn send_with_fds(
    stream: &UnixStream,
    bytes: &[u8],
    fds: &[std::os::fd::BorrowedFd<'_>],
) -> std::io::Result<()> {
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len().max(1)))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(std::io::Error::other(
            "descriptors do not fit the control buffer",
        ));
    }
    let sent = rustix::net::sendmsg(
        stream,
        &[IoSlice::new(bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    if sent != bytes.len() {
        return Err(std::io::Error::other("upgrade message truncated"));
    }
    Ok(())
}

fn recv_with_fds(stream: &UnixStream) -> std::io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut buf = vec![0; MAX_MESSAGE];
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = rustix::net::recvmsg(
        stream,
        &mut [IoSliceMut::new(&mut buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    if received.flags.contains(rustix::net::ReturnFlags::CTRUNC) {
        return Err(std::io::Error::other(
            "descriptors were truncated in transit",
        ));
    }
    buf.truncate(received.bytes);
    Ok((buf, fds))
}

/// The new process's side, between taking the sockets and telling the old process to drain.
#[derive(Debug)]
pub struct Takeover {
    stream: UnixStream,
}

impl Takeover {
    /// Connects to the running process at `path` and takes its listening sockets.
    ///
    /// # Errors
    /// When the old process cannot be reached or answers something unexpected.
    pub fn connect(path: &Path) -> std::io::Result<(Self, Inherited)> {
        let fd = seqpacket()?;
        rustix::net::connect(&fd, &SocketAddrUnix::new(path)?)?;
        let mut stream = UnixStream::from(fd);
        stream.set_read_timeout(Some(STEP_TIMEOUT))?;
        stream.set_write_timeout(Some(STEP_TIMEOUT))?;
        stream.write_all(b"listeners")?;
        let mut inherited = Inherited::default();
        // Bounded: one message per listener, the admin socket and the end.
        for _ in 0..100_000 {
            let (bytes, fds) = recv_with_fds(&stream)?;
            if bytes.is_empty() {
                return Err(std::io::Error::other(
                    "the old process closed the upgrade socket",
                ));
            }
            let header: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|err| std::io::Error::other(format!("bad upgrade message: {err}")))?;
            match header["kind"].as_str() {
                Some("listener") => {
                    let field = |name: &str| -> std::io::Result<String> {
                        header[name].as_str().map(str::to_owned).ok_or_else(|| {
                            std::io::Error::other(format!("upgrade message without {name}"))
                        })
                    };
                    let addr = |name: &str| -> std::io::Result<SocketAddr> {
                        field(name)?
                            .parse()
                            .map_err(|err| std::io::Error::other(format!("bad {name}: {err}")))
                    };
                    let sockets: Vec<std::net::TcpListener> =
                        fds.into_iter().map(std::net::TcpListener::from).collect();
                    for socket in &sockets {
                        socket.set_nonblocking(true)?;
                    }
                    inherited.listeners.push(BoundListener {
                        name: field("name")?,
                        address: addr("address")?,
                        bound: addr("bound")?,
                        sockets,
                    });
                }
                Some("admin") => {
                    inherited.admin = fds.into_iter().next().map(std::net::TcpListener::from);
                }
                Some("end") => return Ok((Self { stream }, inherited)),
                _ => {
                    return Err(std::io::Error::other(format!(
                        "unexpected upgrade message {header}"
                    )));
                }
            }
        }
        Err(std::io::Error::other("too many upgrade messages"))
    }

    /// Tells the old process to drain and exit, once this one serves; returns when it has
    /// released the upgrade socket's path.
    ///
    /// # Errors
    /// When the old process does not confirm.
    pub fn finish(mut self) -> std::io::Result<()> {
        self.stream.write_all(b"drain")?;
        let mut buf = [0; 64];
        let n = self.stream.read(&mut buf)?;
        if &buf[..n] == b"draining" {
            Ok(())
        } else {
            Err(std::io::Error::other(
                "the old process did not confirm the hand-over",
            ))
        }
    }
}
