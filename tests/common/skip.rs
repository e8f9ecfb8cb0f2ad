//! The one way a test skips: it names itself and why, and under CI (`CI`
//! set) a skip fails the test unless CI's machine truly lacks what is
//! missing ([`Lack::ci_lacks`]). `.ci/run` collects every skip in the file
//! named by `RINGCORE_SKIP_LOG` and prints them at the end.

#![allow(dead_code)] // each test binary uses some of it
use std::fmt::Display;
use std::io::Write;

/// What a test needs and does not have here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lack {
    /// Root (network namespaces, raw sockets, machine-wide sysctls).
    Root,
    /// A program the test drives (CI installs every one it uses).
    Program(&'static str),
    /// A fixed port is held by another process, and the test has no
    /// network namespace of its own to use it in.
    Port,
    /// A kernel feature this kernel does not have.
    Kernel,
    /// A Kubernetes API server, which kubectl needs even for a dry run.
    KubernetesApi,
    /// A Docker daemon, to build the image.
    DockerDaemon,
    /// A nightly Rust toolchain (or cargo-fuzz), which fuzzing needs: a
    /// machine set up with only the stable toolchain cannot fetch one.
    NightlyToolchain,
}

impl Lack {
    /// True for what CI's machine does not have at all: a skip for these
    /// reasons passes under CI too. The list the README's testing section
    /// gives.
    pub fn ci_lacks(self) -> bool {
        matches!(
            self,
            Lack::KubernetesApi | Lack::DockerDaemon | Lack::NightlyToolchain
        )
    }
}

/// Records that the calling test skips for `reason`; the test then
/// returns. Panics under CI unless `lack` is something CI's machine lacks.
pub fn skip(lack: Lack, reason: impl Display) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    let line = format!("SKIPPED {test}: {reason}");
    eprintln!("{line}");
    if let Some(path) = std::env::var_os("RINGCORE_SKIP_LOG") {
        if let Ok(mut log) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(log, "{line}");
        }
    }
    if std::env::var_os("CI").is_some() && !lack.ci_lacks() {
        panic!("{line}\n(under CI only a missing Kubernetes API server, Docker daemon or nightly toolchain may skip a test: CI's machine has everything else)");
    }
}
