//! A per-process seccomp filter that denies io_uring, as container runtimes
//! do. Shared by the server's and loadgen's tests (loadgen's include this
//! file by path).

use std::process::Command;

/// Makes `command`'s process (and only it) fail io_uring_setup with
/// `errno`, as a container runtime's seccomp profile (Docker's default
/// among them) does: a seccomp filter installed between fork and exec, so
/// it is safe inside the parallel test suite.
pub fn deny_io_uring(command: &mut Command, errno: i32) {
    // io_uring_setup is 425 in the generic table x86_64 and aarch64 share.
    const IO_URING_SETUP: u32 = 425;
    let filter = vec![
        // Load the architecture; refuse to judge syscalls of another ABI.
        statement(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, 4),
        statement(JEQ, 1, 0, AUDIT_ARCH),
        statement(RET, 0, 0, libc::SECCOMP_RET_ALLOW),
        // Load the syscall number; io_uring_setup fails with `errno`.
        statement(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, 0),
        statement(JEQ, 0, 1, IO_URING_SETUP),
        statement(RET, 0, 0, libc::SECCOMP_RET_ERRNO | errno as u32),
        statement(RET, 0, 0, libc::SECCOMP_RET_ALLOW),
    ];
    install(command, filter);
}

/// Makes `command`'s process run under an allow-list of syscalls, as a
/// seccomp profile with `defaultAction: SCMP_ACT_ERRNO` does: every other
/// syscall fails with EPERM. Names this architecture lacks are skipped, as
/// libseccomp skips them; a name unknown on every architecture is an error.
pub fn allow_only(command: &mut Command, names: &[String]) -> Result<(), String> {
    let mut numbers = Vec::new();
    for name in names {
        match syscall_number(name) {
            Some(Some(nr)) => numbers.push(nr as u32),
            Some(None) => {} // not on this architecture
            None => return Err(format!("unknown syscall '{name}'")),
        }
    }
    if numbers.len() > 250 {
        return Err("more syscalls than one BPF jump reaches".into());
    }
    let deny = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
    let n = numbers.len();
    let mut filter = vec![
        statement(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, 4),
        statement(JEQ, 1, 0, AUDIT_ARCH),
        statement(RET, 0, 0, deny),
        statement(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, 0),
    ];
    for (i, &nr) in numbers.iter().enumerate() {
        // Jump over the remaining checks and the deny to the allow.
        filter.push(statement(JEQ, (n - i) as u8, 0, nr));
    }
    filter.push(statement(RET, 0, 0, deny));
    filter.push(statement(RET, 0, 0, libc::SECCOMP_RET_ALLOW));
    install(command, filter);
    Ok(())
}

const JEQ: u32 = libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K;
const RET: u32 = libc::BPF_RET | libc::BPF_K;

fn statement(code: u32, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// Installs `filter` in `command`'s process between fork and exec (with
/// no_new_privs, as an unprivileged runtime must).
fn install(command: &mut Command, filter: Vec<libc::sock_filter>) {
    use std::os::unix::process::CommandExt;
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

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

/// A syscall's number here: `Some(None)` for one this architecture lacks
/// (aarch64 has no legacy calls such as poll or access), `None` if unknown.
fn syscall_number(name: &str) -> Option<Option<libc::c_long>> {
    let nr = |nr: libc::c_long| Some(Some(nr));
    match name {
        "accept4" => nr(libc::SYS_accept4),
        "bind" => nr(libc::SYS_bind),
        "brk" => nr(libc::SYS_brk),
        "clone" => nr(libc::SYS_clone),
        "clone3" => nr(libc::SYS_clone3),
        "close" => nr(libc::SYS_close),
        "epoll_create1" => nr(libc::SYS_epoll_create1),
        "epoll_ctl" => nr(libc::SYS_epoll_ctl),
        "epoll_pwait" => nr(libc::SYS_epoll_pwait),
        "eventfd2" => nr(libc::SYS_eventfd2),
        "execve" => nr(libc::SYS_execve),
        "exit" => nr(libc::SYS_exit),
        "exit_group" => nr(libc::SYS_exit_group),
        "faccessat" => nr(libc::SYS_faccessat),
        "faccessat2" => nr(libc::SYS_faccessat2),
        "fcntl" => nr(libc::SYS_fcntl),
        "fstat" => nr(libc::SYS_fstat),
        "futex" => nr(libc::SYS_futex),
        "getpid" => nr(libc::SYS_getpid),
        "getrandom" => nr(libc::SYS_getrandom),
        "getsockname" => nr(libc::SYS_getsockname),
        "getsockopt" => nr(libc::SYS_getsockopt),
        "gettid" => nr(libc::SYS_gettid),
        "clock_gettime" => nr(libc::SYS_clock_gettime),
        "clock_nanosleep" => nr(libc::SYS_clock_nanosleep),
        "io_uring_enter" => nr(libc::SYS_io_uring_enter),
        "io_uring_register" => nr(libc::SYS_io_uring_register),
        "io_uring_setup" => nr(libc::SYS_io_uring_setup),
        "listen" => nr(libc::SYS_listen),
        "lseek" => nr(libc::SYS_lseek),
        "madvise" => nr(libc::SYS_madvise),
        "mmap" => nr(libc::SYS_mmap),
        "mprotect" => nr(libc::SYS_mprotect),
        "mremap" => nr(libc::SYS_mremap),
        "munmap" => nr(libc::SYS_munmap),
        "nanosleep" => nr(libc::SYS_nanosleep),
        "newfstatat" => nr(libc::SYS_newfstatat),
        "openat" => nr(libc::SYS_openat),
        "ppoll" => nr(libc::SYS_ppoll),
        "prctl" => nr(libc::SYS_prctl),
        "pread64" => nr(libc::SYS_pread64),
        "prlimit64" => nr(libc::SYS_prlimit64),
        "read" => nr(libc::SYS_read),
        "recvfrom" => nr(libc::SYS_recvfrom),
        "recvmsg" => nr(libc::SYS_recvmsg),
        "restart_syscall" => nr(libc::SYS_restart_syscall),
        "rseq" => nr(libc::SYS_rseq),
        "rt_sigaction" => nr(libc::SYS_rt_sigaction),
        "rt_sigprocmask" => nr(libc::SYS_rt_sigprocmask),
        "rt_sigreturn" => nr(libc::SYS_rt_sigreturn),
        "rt_sigtimedwait" => nr(libc::SYS_rt_sigtimedwait),
        "sched_getaffinity" => nr(libc::SYS_sched_getaffinity),
        "sched_setaffinity" => nr(libc::SYS_sched_setaffinity),
        "sched_yield" => nr(libc::SYS_sched_yield),
        "sendmsg" => nr(libc::SYS_sendmsg),
        "sendto" => nr(libc::SYS_sendto),
        "set_robust_list" => nr(libc::SYS_set_robust_list),
        "set_tid_address" => nr(libc::SYS_set_tid_address),
        "setsockopt" => nr(libc::SYS_setsockopt),
        "shutdown" => nr(libc::SYS_shutdown),
        "sigaltstack" => nr(libc::SYS_sigaltstack),
        "socket" => nr(libc::SYS_socket),
        "statx" => nr(libc::SYS_statx),
        "tgkill" => nr(libc::SYS_tgkill),
        "uname" => nr(libc::SYS_uname),
        "write" => nr(libc::SYS_write),
        // Calls aarch64's table does not have.
        #[cfg(target_arch = "x86_64")]
        "access" => nr(libc::SYS_access),
        #[cfg(target_arch = "x86_64")]
        "epoll_wait" => nr(libc::SYS_epoll_wait),
        #[cfg(target_arch = "x86_64")]
        "poll" => nr(libc::SYS_poll),
        #[cfg(target_arch = "x86_64")]
        "arch_prctl" => nr(libc::SYS_arch_prctl),
        #[cfg(target_arch = "aarch64")]
        "access" | "epoll_wait" | "poll" | "arch_prctl" => Some(None),
        _ => None,
    }
}
