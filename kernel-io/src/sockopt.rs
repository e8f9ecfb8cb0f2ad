//! Socket options and control messages that `libc` and socket2 do not
//! wrap: UDP segmentation offload (GSO) and receive coalescing (GRO).

use std::io;
use std::os::fd::AsRawFd;

/// `SOL_UDP`, which `libc` does not export.
pub const SOL_UDP: libc::c_int = 17;
/// `UDP_SEGMENT` (GSO send size), which `libc` does not export.
pub const UDP_SEGMENT: libc::c_int = 103;
/// `UDP_GRO` (coalesce received trains), which `libc` does not export.
pub const UDP_GRO: libc::c_int = 104;

/// Sets an integer socket option (for the ones socket2 does not wrap).
pub fn set_int_option(
    socket: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` is a live c_int and the length passed matches it.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Finds the UDP_GRO control message in `control` (a received msghdr's
/// control data) and returns its segment size.
pub fn gro_segment(mut control: &[u8]) -> Option<usize> {
    const HEADER: usize = std::mem::size_of::<libc::cmsghdr>();
    while control.len() >= HEADER {
        // SAFETY: at least HEADER bytes remain; read_unaligned has no alignment need.
        let header: libc::cmsghdr = unsafe { std::ptr::read_unaligned(control.as_ptr().cast()) };
        let len = header.cmsg_len as usize;
        if len < HEADER || len > control.len() {
            return None;
        }
        if header.cmsg_level == SOL_UDP && header.cmsg_type == UDP_GRO && len >= HEADER + 4 {
            let data: [u8; 4] = control[HEADER..HEADER + 4].try_into().ok()?;
            return usize::try_from(i32::from_ne_bytes(data)).ok();
        }
        let step = (len + 7) & !7;
        control = control.get(step..)?;
    }
    None
}
