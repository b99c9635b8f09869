//! The io_uring backend: a per-worker [`Driver`] and the sockets and listeners it drives.
//! All of the backend's `unsafe` code lives in this module, each block with a SAFETY comment.
#![allow(unsafe_code)]

mod driver;
mod socket;

pub use driver::{Driver, OpId};
pub use socket::{UringListener, UringSocket};

use io_uring::{IoUring, opcode};

/// Why io_uring cannot be used here, or `Ok` when it can.
///
/// # Errors
/// The reason, as the kernel gave it: EPERM from a container's seccomp profile, ENOSYS,
/// `kernel.io_uring_disabled`, or a missing opcode.
pub fn probe() -> Result<(), String> {
    let ring = IoUring::new(8).map_err(|err| format!("io_uring_setup failed: {err}"))?;
    let mut probe = io_uring::Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|err| format!("io_uring probe failed: {err}"))?;
    for (name, code) in [
        ("ACCEPT", opcode::AcceptMulti::CODE),
        ("RECV", opcode::Recv::CODE),
        ("SEND", opcode::Send::CODE),
        ("CONNECT", opcode::Connect::CODE),
        ("ASYNC_CANCEL", opcode::AsyncCancel::CODE),
    ] {
        if !probe.is_supported(code) {
            return Err(format!("io_uring lacks the {name} opcode"));
        }
    }
    Ok(())
}
