//! Making sure RLIMIT_NOFILE allows the connections we promise to accept.

use anyhow::bail;

/// The default connection limit when RLIMIT_NOFILE allows it.
const DEFAULT_MAX_CONNECTIONS: usize = 65_536;

/// Raises the soft RLIMIT_NOFILE as far as needed (up to the hard limit) and
/// returns the connection limit to use: `requested`, or the default capped by
/// what the limit allows. `reserved` descriptors are kept for sockets, rings
/// and eventfds.
pub fn settle_max_connections(requested: Option<usize>, reserved: usize) -> anyhow::Result<usize> {
    let reserved = reserved + 32; // stdio, metrics endpoint, a little slack
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit for getrlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        bail!(
            "cannot read RLIMIT_NOFILE: {}",
            std::io::Error::last_os_error()
        );
    }
    let hard = usize::try_from(limit.rlim_max).unwrap_or(usize::MAX);
    let wanted = match requested {
        Some(n) => n,
        None => DEFAULT_MAX_CONNECTIONS.min(hard.saturating_sub(reserved)),
    };
    if wanted == 0 {
        bail!("RLIMIT_NOFILE is {} (hard {hard}): too low to accept any connection; raise it with `ulimit -n`", limit.rlim_cur);
    }
    let needed = wanted + reserved;
    if needed > hard {
        bail!(
            "--max-connections {wanted} needs about {needed} file descriptors but RLIMIT_NOFILE allows {} (hard limit {hard}); raise it (`ulimit -n {needed}` as root, or LimitNOFILE= in a systemd unit) or lower --max-connections",
            limit.rlim_cur
        );
    }
    if usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX) < needed {
        let raised = libc::rlimit {
            rlim_cur: needed as libc::rlim_t,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit not above the hard limit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            bail!(
                "cannot raise RLIMIT_NOFILE to {needed}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(wanted)
}
