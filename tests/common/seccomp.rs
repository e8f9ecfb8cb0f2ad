//! A per-process seccomp filter that denies io_uring, as container runtimes
//! do. Shared by the server's and loadgen's tests (loadgen's include this
//! file by path).

use std::process::Command;

/// Makes `command`'s process (and only it) fail io_uring_setup with
/// `errno`, as a container runtime's seccomp profile (Docker's default
/// among them) does: a seccomp filter installed between fork and exec, so
/// it is safe inside the parallel test suite.
pub fn deny_io_uring(command: &mut Command, errno: i32) {
    use std::os::unix::process::CommandExt;
    // io_uring_setup is 425 in the generic table x86_64 and aarch64 share.
    const IO_URING_SETUP: u32 = 425;
    #[cfg(target_arch = "x86_64")]
    const AUDIT_ARCH: u32 = 0xC000_003E;
    #[cfg(target_arch = "aarch64")]
    const AUDIT_ARCH: u32 = 0xC000_00B7;
    let statement = |code: u32, jt: u8, jf: u8, k: u32| libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    let filter = [
        // Load the architecture; refuse to judge syscalls of another ABI.
        statement(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, 4),
        statement(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            1,
            0,
            AUDIT_ARCH,
        ),
        statement(libc::BPF_RET | libc::BPF_K, 0, 0, libc::SECCOMP_RET_ALLOW),
        // Load the syscall number; io_uring_setup fails with `errno`.
        statement(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, 0),
        statement(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            0,
            1,
            IO_URING_SETUP,
        ),
        statement(
            libc::BPF_RET | libc::BPF_K,
            0,
            0,
            libc::SECCOMP_RET_ERRNO | errno as u32,
        ),
        statement(libc::BPF_RET | libc::BPF_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ];
    // SAFETY: the closure runs in the child between fork and exec and only
    // makes two prctl calls on data that lives in the parent's copied memory.
    unsafe {
        command.pre_exec(move || {
            let program = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr().cast_mut(),
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &program as *const _,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
