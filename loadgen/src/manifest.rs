//! What a result needs to be reproduced: the machine, the kernel and its
//! settings that change results, loadgen's build, and the command line.
//! Every `--json` result carries one as `manifest`; `loadgen report` says
//! where merged results differ in it.

use std::collections::BTreeMap;

use serde::Serialize;

/// How and where a result was made.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Manifest {
    /// loadgen's version.
    pub loadgen_version: &'static str,
    /// The git commit loadgen was built from ("unknown" outside a checkout).
    pub loadgen_commit: &'static str,
    /// The whole command line, program name first.
    pub command_line: Vec<String>,
    /// The kernel release and build (`uname -r`, `uname -v`).
    pub kernel: String,
    /// The CPU model (`/proc/cpuinfo`), if readable.
    pub cpu_model: Option<String>,
    /// CPUs online.
    pub cpus: usize,
    /// CPU 0's frequency governor, where the machine exposes one (VMs
    /// often do not).
    pub governor: Option<String>,
    /// CPUs the load threads were pinned to (`--cpus`; empty: unpinned).
    pub pinning: Vec<usize>,
    /// The I/O path the load threads used ("io_uring", "epoll"), where
    /// the mode has a choice.
    pub io: Option<String>,
    /// RLIMIT_NOFILE: soft and hard limit on open descriptors.
    pub rlimit_nofile: [u64; 2],
    /// The sysctls that change results, as the kernel reports them.
    pub sysctls: BTreeMap<&'static str, String>,
}

/// The sysctls a result depends on: the accept backlog's cap, socket
/// buffer caps, and the ports a client's connections can use.
const SYSCTLS: [&str; 4] = [
    "net.core.somaxconn",
    "net.core.rmem_max",
    "net.core.wmem_max",
    "net.ipv4.ip_local_port_range",
];

impl Manifest {
    /// Reads the machine as it is now, for a run pinned to `pinning` that
    /// did its I/O through `io`.
    pub fn collect(pinning: &[usize], io: Option<&str>) -> Self {
        let read = |path: &str| {
            std::fs::read_to_string(path)
                .ok()
                .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        };
        let kernel = [
            read("/proc/sys/kernel/osrelease"),
            read("/proc/sys/kernel/version"),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, model)| model.trim().to_string())
            });
        let sysctls = SYSCTLS
            .iter()
            .filter_map(|name| {
                let path = format!("/proc/sys/{}", name.replace('.', "/"));
                read(&path).map(|v| (*name, v))
            })
            .collect();
        Self {
            loadgen_version: env!("CARGO_PKG_VERSION"),
            loadgen_commit: env!("LOADGEN_COMMIT"),
            command_line: std::env::args().collect(),
            kernel,
            cpu_model,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            governor: read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
            pinning: pinning.to_vec(),
            io: io.map(str::to_string),
            rlimit_nofile: nofile_limits(),
            sysctls,
        }
    }

    /// `value` (a result) with this manifest added as `manifest`.
    pub fn attach(&self, value: impl Serialize) -> serde_json::Result<serde_json::Value> {
        let mut value = serde_json::to_value(value)?;
        if let serde_json::Value::Object(fields) = &mut value {
            fields.insert("manifest".into(), serde_json::to_value(self)?);
        }
        Ok(value)
    }
}

/// RLIMIT_NOFILE's soft and hard limits.
fn nofile_limits() -> [u64; 2] {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return [0, 0];
    }
    [limit.rlim_cur, limit.rlim_max]
}

/// Where the manifests of `results` (name, JSON) differ: one line per
/// field, naming each distinct value and the results that had it. Results
/// without a manifest (older loadgen) are left out.
pub fn differences(results: &[(String, &serde_json::Value)]) -> Vec<String> {
    let mut fields: BTreeMap<String, BTreeMap<String, Vec<&str>>> = BTreeMap::new();
    for (name, json) in results {
        let Some(manifest) = json.get("manifest").and_then(|m| m.as_object()) else {
            continue;
        };
        for (key, value) in manifest {
            fields
                .entry(key.clone())
                .or_default()
                .entry(value.to_string())
                .or_default()
                .push(name);
        }
    }
    fields
        .into_iter()
        .filter(|(_, values)| values.len() > 1)
        .map(|(key, values)| {
            let seen: Vec<String> = values
                .iter()
                .map(|(value, names)| format!("{value} in {}", names.join(", ")))
                .collect();
            format!("{key}: {}", seen.join("; "))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_reads_this_machine() {
        let m = Manifest::collect(&[1], Some("io_uring"));
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        assert!(m.kernel.starts_with(release.trim()), "{m:?}");
        assert_eq!(m.cpus, std::thread::available_parallelism().unwrap().get());
        assert_eq!(m.sysctls.len(), SYSCTLS.len(), "{m:?}");
        let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn").unwrap();
        assert_eq!(m.sysctls["net.core.somaxconn"], somaxconn.trim());
        assert!(m.rlimit_nofile[0] > 0 && m.rlimit_nofile[0] <= m.rlimit_nofile[1]);
        let json = m.attach(serde_json::json!({"mode": "tcp"})).unwrap();
        assert_eq!(json["manifest"]["pinning"], serde_json::json!([1]));
        assert_eq!(json["mode"], "tcp");
    }

    #[test]
    fn differences_name_the_field_the_values_and_the_results() {
        let a = serde_json::json!({"manifest": {"kernel": "6.1", "cpus": 2}});
        let b = serde_json::json!({"manifest": {"kernel": "6.18", "cpus": 2}});
        let old = serde_json::json!({"mode": "tcp"});
        let d = differences(&[
            ("a.json".into(), &a),
            ("b.json".into(), &b),
            ("old.json".into(), &old),
        ]);
        assert_eq!(
            d,
            vec![r#"kernel: "6.1" in a.json; "6.18" in b.json"#.to_string()]
        );
        assert!(differences(&[("a.json".into(), &a), ("c.json".into(), &a)]).is_empty());
    }
}
