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

/// The default `--memory-limit`: a quarter of the memory this process may
/// use, the machine's (`MemTotal`) or its control group's if that is less,
/// so that clients that never read cannot take the machine, or the
/// container, down with them.
pub fn default_memory_limit() -> u64 {
    let machine = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| mem_total(&text))
        .unwrap_or(4 << 30);
    let group = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|text| cgroup_memory_limit(&text, |path| std::fs::read_to_string(path).ok()));
    // Whole MiB, so that it prints as a size one can type back.
    let quarter = group.map_or(machine, |g| g.min(machine)) / 4;
    (quarter >> 20).max(1) << 20
}

/// `MemTotal` from /proc/meminfo, in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The tightest memory limit of the control group named in `proc_cgroup`
/// (the text of /proc/self/cgroup) and of its ancestors, read through
/// `read` (v2: `memory.max`; v1: the memory controller's
/// `memory.limit_in_bytes`); `None` where nothing limits it.
fn cgroup_memory_limit(proc_cgroup: &str, read: impl Fn(&str) -> Option<String>) -> Option<u64> {
    let mut tightest: Option<u64> = None;
    for line in proc_cgroup.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let (root, file) = match controllers {
            "" => ("/sys/fs/cgroup", "memory.max"),
            c if c.split(',').any(|c| c == "memory") => {
                ("/sys/fs/cgroup/memory", "memory.limit_in_bytes")
            }
            _ => continue,
        };
        // The group itself, then each ancestor up to the root.
        let mut dir = path.trim_end_matches('/').to_string();
        loop {
            let limit = read(&format!("{root}{dir}/{file}"))
                .and_then(|text| text.trim().parse::<u64>().ok()) // "max": none
                .filter(|&bytes| bytes < 1 << 60); // v1 writes "none" as ~2^63
            if let Some(bytes) = limit {
                tightest = Some(tightest.map_or(bytes, |t| t.min(bytes)));
            }
            match dir.rfind('/') {
                Some(cut) => dir.truncate(cut),
                None => break,
            }
        }
    }
    tightest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_memory_limit_is_a_whole_mib_within_a_quarter_of_the_machine() {
        let machine = mem_total(&std::fs::read_to_string("/proc/meminfo").unwrap()).unwrap();
        let limit = default_memory_limit();
        assert!(
            limit >= 1 << 20 && limit <= machine / 4,
            "{limit} of {machine}"
        );
        assert_eq!(limit % (1 << 20), 0);
    }

    #[test]
    fn mem_total_is_read_in_bytes() {
        let meminfo = "MemTotal:       24683784 kB\nMemFree:        1000 kB\n";
        assert_eq!(mem_total(meminfo), Some(24683784 * 1024));
        assert_eq!(mem_total("MemFree: 3 kB\n"), None);
    }

    #[test]
    fn the_tightest_limit_of_a_group_and_its_ancestors_counts() {
        let files = |path: &str| {
            match path {
                "/sys/fs/cgroup/kubepods/memory.max" => Some("2147483648\n"),
                "/sys/fs/cgroup/kubepods/pod1/memory.max" => Some("max\n"),
                "/sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes" => Some("536870912\n"),
                "/sys/fs/cgroup/memory/memory.limit_in_bytes" => Some("9223372036854771712\n"),
                _ => None,
            }
            .map(str::to_string)
        };
        assert_eq!(
            cgroup_memory_limit("0::/kubepods/pod1\n", files),
            Some(2 << 30)
        );
        assert_eq!(
            cgroup_memory_limit("4:memory:/docker/abc\n0::/\n", files),
            Some(512 << 20)
        );
        assert_eq!(cgroup_memory_limit("4:memory:/\n0::/\n", files), None);
        assert_eq!(cgroup_memory_limit("garbage\n", files), None);
    }
}
