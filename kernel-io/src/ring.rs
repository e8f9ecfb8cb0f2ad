//! Creating a worker's io_uring, with the best setup flags the kernel takes,
//! and explaining why io_uring is unavailable when it is.

use std::io;

use io_uring::IoUring;

use crate::Unavailable;

/// Which optional setup flags a ring was created with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingMode {
    /// SINGLE_ISSUER + DEFER_TASKRUN + COOP_TASKRUN: completions are processed
    /// only when this thread enters the kernel, never by interrupting it.
    DeferTaskrun,
    /// COOP_TASKRUN only (kernels 5.19 to 6.0).
    CoopTaskrun,
    /// No optional flag.
    Plain,
    /// SQPOLL: a kernel thread polls the submission queue (idle ms).
    SqPoll(u32),
}

impl RingMode {
    /// A short human name.
    pub fn describe(self) -> &'static str {
        match self {
            RingMode::DeferTaskrun => "single-issuer, defer-taskrun, coop-taskrun",
            RingMode::CoopTaskrun => "coop-taskrun",
            RingMode::Plain => "no optional setup flags",
            RingMode::SqPoll(_) => "sqpoll (a kernel thread polls each submission queue)",
        }
    }
}

/// Creates a ring with a kernel thread that polls its submission queue
/// (IORING_SETUP_SQPOLL), sleeping after `idle` without work: submissions
/// then need no system call while it is awake. Incompatible with
/// DEFER_TASKRUN, which the default ring uses.
pub fn create_sqpoll(
    entries: u32,
    idle: std::time::Duration,
) -> Result<(IoUring, RingMode), Unavailable> {
    let idle_ms = u32::try_from(idle.as_millis()).unwrap_or(u32::MAX).max(1);
    let mut builder = IoUring::builder();
    builder
        .setup_cqsize(entries.saturating_mul(4))
        .setup_clamp()
        .setup_sqpoll(idle_ms);
    builder
        .build(entries)
        .map(|ring| (ring, RingMode::SqPoll(idle_ms)))
        .map_err(|e| unavailable(&e))
}

/// Creates a ring of `entries` SQEs and 4x CQEs, trying the best flags first.
pub fn create(entries: u32) -> Result<(IoUring, RingMode), Unavailable> {
    let cq = entries.saturating_mul(4);
    type Configure = fn(&mut io_uring::Builder);
    let attempts: [(RingMode, Configure); 3] = [
        (RingMode::DeferTaskrun, |b| {
            b.setup_single_issuer()
                .setup_defer_taskrun()
                .setup_coop_taskrun();
        }),
        (RingMode::CoopTaskrun, |b| {
            b.setup_coop_taskrun();
        }),
        (RingMode::Plain, |_| {}),
    ];
    let mut last = None;
    for (mode, configure) in attempts {
        let mut builder = IoUring::builder();
        builder.setup_cqsize(cq).setup_clamp();
        configure(&mut builder);
        match builder.build(entries) {
            Ok(ring) => return Ok((ring, mode)),
            // EINVAL: this kernel does not know a flag; try fewer.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last = Some(e),
            Err(e) => return Err(unavailable(&e)),
        }
    }
    Err(unavailable(&last.unwrap_or_else(|| {
        io::Error::from_raw_os_error(libc::EINVAL)
    })))
}

/// The oldest kernel whose io_uring has everything the engine uses:
/// multishot accept and receive, and provided-buffer rings.
pub const MIN_KERNEL: (u32, u32) = (6, 0);

/// Names the cause of a refused buffer-ring registration (`what`'s).
pub fn buffer_ring_refused(what: &str, err: &io::Error) -> Unavailable {
    let cause = match err.raw_os_error() {
        Some(libc::ENOMEM) => "not enough locked memory (ENOMEM): as a user without CAP_IPC_LOCK the ring's entries count against RLIMIT_MEMLOCK; raise it (`ulimit -l`, `docker run --ulimit memlock=-1`)".to_string(),
        _ => format!(
            "{err}; the engine needs Linux {}.{} or newer",
            MIN_KERNEL.0, MIN_KERNEL.1
        ),
    };
    Unavailable(format!("the kernel refused {what} buffer ring: {cause}"))
}

/// `(major, minor)` of a kernel release string such as `6.1.0-13-amd64`.
pub fn release_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Names the cause of an io_uring_setup failure and what to do about it.
pub fn unavailable(err: &io::Error) -> Unavailable {
    let sysctl = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    let cause = match (err.raw_os_error(), sysctl) {
        (Some(libc::EPERM), Some(2)) => {
            "disabled for every process by sysctl kernel.io_uring_disabled=2; run `sysctl kernel.io_uring_disabled=0` as root".to_string()
        }
        (Some(libc::EPERM), Some(1)) => {
            "restricted by sysctl kernel.io_uring_disabled=1 to root and the group in kernel.io_uring_group; run as one of them, or set the sysctl to 0".to_string()
        }
        (Some(libc::EPERM), _) => {
            "io_uring_setup was refused (EPERM), most likely by a seccomp filter of a container runtime; allow io_uring_setup/io_uring_enter/io_uring_register in the seccomp profile (e.g. docker --security-opt seccomp=unconfined)".to_string()
        }
        (Some(libc::ENOSYS), _) => {
            "io_uring_setup does not exist here (ENOSYS): either the kernel is older than 5.1 or built without CONFIG_IO_URING, or a seccomp filter (Docker's default profile) blocks it; ringcore needs Linux 6.0 or newer with io_uring allowed".to_string()
        }
        (Some(libc::ENOMEM), _) => {
            "not enough locked memory for the ring (ENOMEM): without CAP_IPC_LOCK, io_uring's memory counts against RLIMIT_MEMLOCK; raise it (`ulimit -l`; in Docker `--ulimit memlock=-1`) or use fewer ring entries".to_string()
        }
        _ => format!("io_uring_setup failed: {err}"),
    };
    Unavailable(cause)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_releases_parse_to_major_and_minor() {
        assert_eq!(release_version("6.1.0-13-amd64"), Some((6, 1)));
        assert_eq!(release_version("5.15.0"), Some((5, 15)));
        assert_eq!(release_version("6.12"), Some((6, 12)));
        assert!(release_version("5.15.0").unwrap() < MIN_KERNEL);
        assert_eq!(release_version("linux"), None);
    }

    #[test]
    fn causes_are_named() {
        let msg = unavailable(&io::Error::from_raw_os_error(libc::ENOSYS)).to_string();
        assert!(msg.contains("seccomp") && msg.contains("6.0"), "{msg}");
        let msg = unavailable(&io::Error::from_raw_os_error(libc::EPERM)).to_string();
        assert!(
            msg.contains("io_uring_disabled") || msg.contains("seccomp"),
            "{msg}"
        );
    }

    #[test]
    fn this_kernel_gives_a_ring() {
        let (ring, _mode) = create(8).expect("io_uring is enabled on the test machines");
        assert!(ring.params().sq_entries() >= 8);
    }
}
