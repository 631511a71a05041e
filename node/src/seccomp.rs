//! The seccomp filter a container gets for `seccompProfile: RuntimeDefault`.
//!
//! Kubernetes defines `RuntimeDefault` as "the container runtime's default profile"; on
//! containerd that is Docker's default profile (moby's `profiles/seccomp/default.json`, which
//! containerd's `contrib/seccomp` follows). This module restates that profile as data, in the
//! OCI `linux.seccomp` form runc loads:
//!
//! - every system call not named fails with `EPERM`;
//! - [`ALLOWED`] is what any process may call, and [`PERSONAS`] the `personality(2)` values;
//! - [`ARCHITECTURES`] lists, per host architecture, the compatibility ABIs the filter also
//!   covers (so a 32-bit binary cannot slip past it) and the calls only that architecture has;
//! - [`BY_CAPABILITY`] allows the calls that need a capability only when the container holds
//!   it, so dropping a capability also closes the kernel surface behind it;
//! - without `CAP_SYS_ADMIN`, `clone` is allowed only without namespace flags, and `clone3`
//!   (whose flags sit behind a pointer a filter cannot read) fails with `ENOSYS`, which makes
//!   glibc fall back to `clone`.
//!
//! It follows Docker 25 and containerd 2, which stopped allowing `io_uring_*` (its requests
//! bypass seccomp); where the two differ (Docker lets anyone call `name_to_handle_at` and
//! refuses `AF_VSOCK` sockets), it follows Docker. The calls Docker gates on kernel 4.8
//! (`ptrace` and the process-memory calls, which could escape a filter on older kernels) are
//! allowed outright: shipshape's nodes run kernels far newer. A privileged container gets no
//! profile at all, as containerd does; that choice is the caller's (`spec.rs`).

use std::collections::HashSet;

use oci_spec::OciSpecError;
use oci_spec::runtime::{
    Arch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompOperator, LinuxSyscall,
};

/// `EPERM`: what a call outside the profile returns, as Docker's `defaultErrnoRet`.
const EPERM: u32 = 1;

/// `ENOSYS`: what `clone3` returns without `CAP_SYS_ADMIN`, so callers fall back to `clone`.
const ENOSYS: u32 = 38;

/// `AF_VSOCK`: Docker refuses sockets of this family (they reach the hypervisor, not the
/// container's network namespace).
const AF_VSOCK: u64 = 40;

/// The `clone` flags that create namespaces: `CLONE_NEWNS`, `CLONE_NEWCGROUP`, `CLONE_NEWUTS`,
/// `CLONE_NEWIPC`, `CLONE_NEWUSER`, `CLONE_NEWPID` and `CLONE_NEWNET`.
pub const CLONE_NAMESPACE_FLAGS: u64 =
    0x0002_0000 | 0x0200_0000 | 0x0400_0000 | 0x0800_0000 | 0x1000_0000 | 0x2000_0000 | 0x4000_0000;

/// The `personality(2)` values any process may set: `PER_LINUX`, `PER_LINUX32`, `UNAME26`,
/// `UNAME26 | PER_LINUX32`, and `0xffffffff`, which only queries the current one.
pub const PERSONAS: [u64; 5] = [0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

/// The system calls any container may make, whatever its capabilities (`socket` is allowed
/// separately, for every family but `AF_VSOCK`).
pub const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_time64",
    "futex_waitv",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "process_vm_readv",
    "process_vm_writev",
    "pselect6",
    "pselect6_time64",
    "ptrace",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

/// What the profile holds for one host architecture.
#[derive(Clone, Copy, Debug)]
pub struct ArchitectureRules {
    /// The host architecture, as Rust names it (`std::env::consts::ARCH`).
    pub host: &'static str,
    /// The ABIs the filter applies to: the native one and its compatibility ABIs.
    pub abis: &'static [Arch],
    /// Calls only this architecture has, allowed to every container.
    pub allowed: &'static [&'static str],
    /// Which argument of `clone` holds its flags (s390 swaps the first two).
    pub clone_flags_argument: usize,
}

/// The architectures Docker's profile names; any other host gets its native ABI only.
pub const ARCHITECTURES: &[ArchitectureRules] = &[
    ArchitectureRules {
        host: "x86_64",
        abis: &[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32],
        allowed: &["arch_prctl", "modify_ldt"],
        clone_flags_argument: 0,
    },
    ArchitectureRules {
        host: "x86",
        abis: &[Arch::ScmpArchX86],
        allowed: &["modify_ldt"],
        clone_flags_argument: 0,
    },
    ArchitectureRules {
        host: "aarch64",
        abis: &[Arch::ScmpArchAarch64, Arch::ScmpArchArm],
        allowed: ARM_CALLS,
        clone_flags_argument: 0,
    },
    ArchitectureRules {
        host: "arm",
        abis: &[Arch::ScmpArchArm],
        allowed: ARM_CALLS,
        clone_flags_argument: 0,
    },
    ArchitectureRules {
        host: "s390x",
        abis: &[Arch::ScmpArchS390x, Arch::ScmpArchS390],
        allowed: &[
            "s390_pci_mmio_read",
            "s390_pci_mmio_write",
            "s390_runtime_instr",
        ],
        clone_flags_argument: 1,
    },
    ArchitectureRules {
        host: "riscv64",
        abis: &[Arch::ScmpArchRiscv64],
        allowed: &["riscv_flush_icache"],
        clone_flags_argument: 0,
    },
];

/// The ARM-only calls (cache flushing, TLS, the ARM argument orders of two file calls).
const ARM_CALLS: &[&str] = &[
    "arm_fadvise64_64",
    "arm_sync_file_range",
    "sync_file_range2",
    "breakpoint",
    "cacheflush",
    "set_tls",
];

/// Calls allowed only to a container whose bounding set holds the capability: the kernel
/// would refuse most of them anyway, and the filter keeps that surface closed.
pub const BY_CAPABILITY: &[(Capability, &[&str])] = &[
    (Capability::DacReadSearch, &["open_by_handle_at"]),
    (
        Capability::SysAdmin,
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    (Capability::SysBoot, &["reboot"]),
    (Capability::SysChroot, &["chroot"]),
    (
        Capability::SysModule,
        &["delete_module", "init_module", "finit_module"],
    ),
    (Capability::SysPacct, &["acct"]),
    (
        Capability::SysPtrace,
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
    ),
    (Capability::SysRawio, &["iopl", "ioperm"]),
    (
        Capability::SysTime,
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    (Capability::SysTtyConfig, &["vhangup"]),
    (
        Capability::SysNice,
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    (Capability::Syslog, &["syslog"]),
    (Capability::Bpf, &["bpf"]),
    (Capability::Perfmon, &["perf_event_open"]),
];

fn rule(names: &[&str], action: LinuxSeccompAction) -> LinuxSyscall {
    let mut rule = LinuxSyscall::default();
    rule.set_names(names.iter().map(|n| n.to_string()).collect());
    rule.set_action(action);
    rule
}

fn argument(
    index: usize,
    op: LinuxSeccompOperator,
    value: u64,
    value_two: Option<u64>,
) -> Result<LinuxSeccompArg, OciSpecError> {
    let arg = LinuxSeccompArgBuilder::default()
        .index(index)
        .op(op)
        .value(value);
    match value_two {
        Some(two) => arg.value_two(two),
        None => arg,
    }
    .build()
}

/// The `RuntimeDefault` profile for a container holding `capabilities` (its bounding set) on a
/// host of architecture `host` (`std::env::consts::ARCH`). Fails only if `oci-spec` refuses
/// an argument rule, which it does not for these.
pub fn runtime_default(
    capabilities: &HashSet<Capability>,
    host: &str,
) -> Result<LinuxSeccomp, OciSpecError> {
    let allow = LinuxSeccompAction::ScmpActAllow;
    let arch = ARCHITECTURES.iter().find(|a| a.host == host);
    let mut syscalls = vec![rule(ALLOWED, allow)];
    let mut socket = rule(&["socket"], allow);
    socket.set_args(Some(vec![argument(
        0,
        LinuxSeccompOperator::ScmpCmpNe,
        AF_VSOCK,
        None,
    )?]));
    syscalls.push(socket);
    // One rule per persona: the arguments of one rule must all match, so alternatives are
    // separate rules.
    for persona in PERSONAS {
        let mut personality = rule(&["personality"], allow);
        personality.set_args(Some(vec![argument(
            0,
            LinuxSeccompOperator::ScmpCmpEq,
            persona,
            None,
        )?]));
        syscalls.push(personality);
    }
    if let Some(arch) = arch.filter(|a| !a.allowed.is_empty()) {
        syscalls.push(rule(arch.allowed, allow));
    }
    for (capability, names) in BY_CAPABILITY {
        if capabilities.contains(capability) {
            syscalls.push(rule(names, allow));
        }
    }
    if !capabilities.contains(&Capability::SysAdmin) {
        // Allowed when (flags & CLONE_NAMESPACE_FLAGS) == 0: threads and forks, no namespaces.
        let mut clone = rule(&["clone"], allow);
        let index = arch.map_or(0, |a| a.clone_flags_argument);
        clone.set_args(Some(vec![argument(
            index,
            LinuxSeccompOperator::ScmpCmpMaskedEq,
            CLONE_NAMESPACE_FLAGS,
            Some(0),
        )?]));
        syscalls.push(clone);
        let mut clone3 = rule(&["clone3"], LinuxSeccompAction::ScmpActErrno);
        clone3.set_errno_ret(Some(ENOSYS));
        syscalls.push(clone3);
    }
    let mut profile = LinuxSeccomp::default();
    profile.set_default_action(LinuxSeccompAction::ScmpActErrno);
    profile.set_default_errno_ret(Some(EPERM));
    profile.set_architectures(arch.map(|a| a.abis.to_vec()));
    profile.set_syscalls(Some(syscalls));
    Ok(profile)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn profile_for(capabilities: &HashSet<Capability>, host: &str) -> LinuxSeccomp {
        runtime_default(capabilities, host).expect("profile")
    }

    /// The rules naming `call`, as runc reads them.
    fn rules_for(profile: &LinuxSeccomp, call: &str) -> Vec<Value> {
        let json = serde_json::to_value(profile).unwrap_or_default();
        json["syscalls"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| {
                r["names"]
                    .as_array()
                    .is_some_and(|n| n.contains(&json!(call)))
            })
            .cloned()
            .collect()
    }

    /// Whether `call` is allowed whatever its arguments.
    fn allowed_outright(profile: &LinuxSeccomp, call: &str) -> bool {
        rules_for(profile, call)
            .iter()
            .any(|r| r["action"] == "SCMP_ACT_ALLOW" && r["args"].is_null())
    }

    fn docker_defaults() -> HashSet<Capability> {
        [
            Capability::Chown,
            Capability::DacOverride,
            Capability::Fsetid,
            Capability::Fowner,
            Capability::Mknod,
            Capability::NetRaw,
            Capability::Setgid,
            Capability::Setuid,
            Capability::Setfcap,
            Capability::Setpcap,
            Capability::NetBindService,
            Capability::SysChroot,
            Capability::Kill,
            Capability::AuditWrite,
        ]
        .into_iter()
        .collect()
    }

    #[test]
    fn everything_unnamed_fails_with_eperm_on_every_abi_of_the_host() {
        let profile = profile_for(&docker_defaults(), "x86_64");
        let json = serde_json::to_value(&profile).unwrap_or_default();
        assert_eq!(json["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(json["defaultErrnoRet"], 1);
        assert_eq!(
            json["architectures"],
            json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
        );
        let arm =
            serde_json::to_value(profile_for(&docker_defaults(), "aarch64")).unwrap_or_default();
        assert_eq!(
            arm["architectures"],
            json!(["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"])
        );
        // An architecture Docker does not name: the native ABI only, no foreign calls.
        let other = profile_for(&docker_defaults(), "mips");
        assert!(other.architectures().is_none());
        assert!(!allowed_outright(&other, "arch_prctl"));
    }

    #[test]
    fn ordinary_calls_are_allowed_and_dangerous_ones_are_not() {
        let profile = profile_for(&docker_defaults(), "x86_64");
        for call in [
            "read",
            "write",
            "openat",
            "execve",
            "futex",
            "epoll_wait",
            "arch_prctl",
        ] {
            assert!(allowed_outright(&profile, call), "{call}");
        }
        for call in [
            "mount",
            "umount2",
            "unshare",
            "setns",
            "reboot",
            "init_module",
            "kexec_load",
            "keyctl",
            "add_key",
            "bpf",
            "perf_event_open",
            "io_uring_setup",
            "userfaultfd",
            "settimeofday",
            "swapon",
        ] {
            assert!(
                rules_for(&profile, call).is_empty(),
                "{call} must fall to EPERM"
            );
        }
        // modify_ldt is x86's; ARM has its own.
        let arm = profile_for(&docker_defaults(), "aarch64");
        assert!(!allowed_outright(&arm, "arch_prctl"));
        assert!(allowed_outright(&arm, "cacheflush"));
    }

    #[test]
    fn calls_behind_a_capability_are_allowed_only_with_it() {
        let plain = profile_for(&docker_defaults(), "x86_64");
        // CAP_SYS_CHROOT is one of the defaults.
        assert!(allowed_outright(&plain, "chroot"));
        let gated = [
            (Capability::SysPtrace, "kcmp"),
            (Capability::SysModule, "finit_module"),
            (Capability::SysBoot, "reboot"),
            (Capability::SysTime, "clock_settime"),
            (Capability::SysNice, "mbind"),
            (Capability::SysRawio, "iopl"),
            (Capability::SysPacct, "acct"),
            (Capability::Syslog, "syslog"),
            (Capability::Bpf, "bpf"),
            (Capability::DacReadSearch, "open_by_handle_at"),
        ];
        for (capability, call) in gated {
            assert!(
                !allowed_outright(&plain, call),
                "{call} without {capability}"
            );
            let mut with = docker_defaults();
            with.insert(capability);
            assert!(
                allowed_outright(&profile_for(&with, "x86_64"), call),
                "{call} with {capability}"
            );
        }
        let mut none = docker_defaults();
        none.remove(&Capability::SysChroot);
        assert!(!allowed_outright(&profile_for(&none, "x86_64"), "chroot"));
    }

    #[test]
    fn clone_may_not_make_namespaces_and_clone3_says_enosys_without_sys_admin() {
        let profile = profile_for(&docker_defaults(), "x86_64");
        assert_eq!(CLONE_NAMESPACE_FLAGS, 2_114_060_288, "Docker's mask");
        assert_eq!(
            rules_for(&profile, "clone"),
            vec![json!({"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 0, "value": CLONE_NAMESPACE_FLAGS, "valueTwo": 0,
                          "op": "SCMP_CMP_MASKED_EQ"}]})]
        );
        assert_eq!(
            rules_for(&profile, "clone3"),
            vec![json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38})]
        );
        // s390 passes clone's flags second.
        let s390 = profile_for(&docker_defaults(), "s390x");
        assert_eq!(rules_for(&s390, "clone")[0]["args"][0]["index"], 1);

        let mut admin = docker_defaults();
        admin.insert(Capability::SysAdmin);
        let admin = profile_for(&admin, "x86_64");
        for call in ["clone", "clone3", "mount", "unshare", "setns"] {
            let rules = rules_for(&admin, call);
            assert!(allowed_outright(&admin, call), "{call}");
            assert!(
                rules.iter().all(|r| r["action"] == "SCMP_ACT_ALLOW"),
                "{call}: {rules:?}"
            );
        }
    }

    #[test]
    fn personality_and_socket_are_allowed_only_for_the_values_docker_allows() {
        let profile = profile_for(&docker_defaults(), "x86_64");
        let personas: Vec<Value> = rules_for(&profile, "personality")
            .iter()
            .map(|r| r["args"][0]["value"].clone())
            .collect();
        assert_eq!(personas, PERSONAS.map(|p| json!(p)).to_vec());
        assert!(!allowed_outright(&profile, "personality"));
        assert_eq!(
            rules_for(&profile, "socket"),
            vec![json!({"names": ["socket"], "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 0, "value": 40, "op": "SCMP_CMP_NE"}]})]
        );
    }
}
