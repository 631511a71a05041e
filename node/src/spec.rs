//! A container's OCI runtime spec, built with the `oci-spec` crate from a pod's container and
//! its image: Kubernetes' rules for command and args over entrypoint and cmd, the environment,
//! the user and groups, the pod's network namespace, resource limits as cgroup limits, the
//! security context (privileged containers as containerd's CRI makes them, `RuntimeDefault`
//! seccomp as [`crate::seccomp`] describes), and the pod's resolv.conf, hosts and hostname
//! files.
//!
//! [`plan`] is pure (pod JSON and image in, a [`ContainerPlan`] or a one-line reason out), so
//! the kubelet can report `CreateContainerConfigError` before touching containerd.

use shipshape_api::pointer::At;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceBuilder,
    LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxMemoryBuilder, LinuxNamespaceBuilder,
    LinuxNamespaceType, LinuxResourcesBuilder, MountBuilder, ProcessBuilder, RootBuilder, Spec,
    SpecBuilder, UserBuilder, get_default_mounts,
};
use serde_json::Value;
use shipshape_api::quantity::Quantity;

use crate::image::ResolvedImage;

/// Docker's (and so Kubernetes') default capability set.
const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// Every capability Linux knows (to `CAP_CHECKPOINT_RESTORE`, 5.9), in the kernel's numbering.
const ALL_CAPABILITIES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// A file bind-mounted into the container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindMount {
    /// Where it appears in the container.
    pub destination: String,
    /// The host path.
    pub source: PathBuf,
    /// Mounted read-only.
    pub read_only: bool,
}

/// Everything a container's spec is made of, decided before anything runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerPlan {
    /// The process and its arguments.
    pub args: Vec<String>,
    /// `NAME=value` pairs, image first, then the container's (later wins).
    pub env: Vec<String>,
    /// The working directory.
    pub cwd: String,
    /// The user and group ids.
    pub uid: u32,
    /// The primary group.
    pub gid: u32,
    /// Supplementary groups: the pod's `supplementalGroups`, then its `fsGroup`.
    pub additional_gids: Vec<u32>,
    /// The pod's hostname (`spec.hostname`, else its name).
    pub hostname: String,
    /// Memory limit in bytes.
    pub memory_limit: Option<i64>,
    /// CPU limit in millicores.
    pub cpu_limit_milli: Option<i64>,
    /// CPU request in millicores (the cgroup's relative weight).
    pub cpu_request_milli: Option<i64>,
    /// The root filesystem is read-only.
    pub read_only_root: bool,
    /// Capabilities to add and to drop (without the `CAP_` prefix, upper case).
    pub add_capabilities: Vec<String>,
    /// Capabilities to drop; `ALL` drops every default.
    pub drop_capabilities: Vec<String>,
    /// Whether the process may gain privileges (setuid binaries).
    pub allow_privilege_escalation: bool,
    /// `securityContext.privileged`: every capability and host device, no masked or
    /// read-only paths, a writable /sys.
    pub privileged: bool,
    /// `hostNetwork`: the host's network and UTS namespaces, not the pod's.
    pub host_network: bool,
    /// `seccompProfile: RuntimeDefault` (the container's, else the pod's): the runtime's
    /// default filter; otherwise the container runs unconfined, as Kubernetes' default is.
    pub runtime_default_seccomp: bool,
}

fn text_list(value: Option<&Value>) -> Option<Vec<String>> {
    value.and_then(Value::as_array).map(|list| {
        list.iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    })
}

fn quantity(container: &Value, pointer: &str) -> Result<Option<Quantity>, String> {
    match container.at(pointer) {
        None => Ok(None),
        Some(value) => Quantity::from_json(value)
            .map(Some)
            .map_err(|e| format!("{}: {e}", pointer.trim_start_matches('/').replace('/', "."))),
    }
}

/// The CFS period, as the kubelet sets it (100 ms).
const CPU_PERIOD: u64 = 100_000;

/// The CFS quota for a CPU limit, as the kubelet's `MilliCPUToQuota`: the limit's share of
/// the period, at least 1 ms; a limit too large to express saturates instead of overflowing.
fn cpu_quota(milli: i64) -> i64 {
    let period = i64::try_from(CPU_PERIOD).unwrap_or(i64::MAX);
    (milli.saturating_mul(period) / 1000).max(1000)
}

/// The cgroup v1 shares for a CPU request, as the kubelet's `MilliCPUToShares`: 1024 per cpu,
/// between 2 and 262,144 (the kernel's range).
fn cpu_shares(milli: i64) -> u64 {
    let shares = milli.max(0).saturating_mul(1024) / 1000;
    u64::try_from(shares).unwrap_or(0).clamp(2, 262_144)
}

/// The security context field `field` of the container, else of the pod.
fn security<'a>(pod: &'a Value, container: &'a Value, field: &str) -> Option<&'a Value> {
    container
        .at(&format!("/securityContext/{field}"))
        .or_else(|| pod.at(&format!("/spec/securityContext/{field}")))
}

/// Decides a container's process, user, limits and security from the pod, the container, the
/// image and the environment the kubelet resolved (ConfigMap and Secret references).
pub fn plan(
    pod: &Value,
    container: &Value,
    image: &ResolvedImage,
    resolved_env: &[(String, String)],
) -> Result<ContainerPlan, String> {
    // Kubernetes: command replaces the entrypoint (and drops the image's cmd); args replace cmd.
    let command = text_list(container.get("command"));
    let args = text_list(container.get("args"));
    let process = match (command, args) {
        (Some(command), args) => [command, args.unwrap_or_default()].concat(),
        (None, Some(args)) => [image.entrypoint.clone(), args].concat(),
        (None, None) => [image.entrypoint.clone(), image.cmd.clone()].concat(),
    };
    if process.is_empty() {
        return Err(format!(
            "no command: the image {} has no entrypoint or cmd and the container sets none",
            image.name
        ));
    }
    let hostname = crate::pod_worker::pod_hostname(pod);
    let mut env: Vec<String> = image.env.clone();
    let mut set = |name: &str, value: &str| {
        env.retain(|e| e.split('=').next() != Some(name));
        env.push(format!("{name}={value}"));
    };
    set("HOSTNAME", &hostname);
    for (name, value) in resolved_env {
        set(name, value);
    }
    let cwd = container
        .get("workingDir")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| image.working_dir.clone())
        .unwrap_or_else(|| "/".into());

    let (image_uid, image_gid) = match image.user.as_deref() {
        None => (0, 0),
        Some(user) => {
            let (u, g) = user.split_once(':').unwrap_or((user, "0"));
            match (u.parse::<u32>(), g.parse::<u32>()) {
                (Ok(u), Ok(g)) => (u, g),
                _ => {
                    return Err(format!(
                        "the image {} runs as user {user:?}, which is not numeric; set securityContext.runAsUser",
                        image.name
                    ));
                }
            }
        }
    };
    let number = |field: &str| {
        security(pod, container, field)
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
    };
    let group_id = |v: &Value| v.as_u64().and_then(|n| u32::try_from(n).ok());
    let mut additional_gids: Vec<u32> = pod
        .at("/spec/securityContext/supplementalGroups")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(group_id)
        .collect();
    if let Some(fs_group) = pod.at("/spec/securityContext/fsGroup").and_then(group_id)
        && !additional_gids.contains(&fs_group)
    {
        additional_gids.push(fs_group);
    }
    let uid = number("runAsUser").unwrap_or(image_uid);
    let gid = number("runAsGroup").unwrap_or(image_gid);
    if security(pod, container, "runAsNonRoot").and_then(Value::as_bool) == Some(true) && uid == 0 {
        return Err(format!(
            "container has runAsNonRoot and image {} will run as root",
            image.name
        ));
    }
    let memory_limit = quantity(container, "/resources/limits/memory")?
        .map(|q| i64::try_from(q.units()).unwrap_or(i64::MAX));
    let cpu_limit_milli = quantity(container, "/resources/limits/cpu")?
        .map(|q| i64::try_from(q.milli()).unwrap_or(i64::MAX));
    let cpu_request_milli = quantity(container, "/resources/requests/cpu")?
        .map(|q| i64::try_from(q.milli()).unwrap_or(i64::MAX));
    let privileged = container
        .at("/securityContext/privileged")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let seccomp = security(pod, container, "seccompProfile/type").and_then(Value::as_str);
    if let Some(kind) = seccomp.filter(|k| !matches!(*k, "RuntimeDefault" | "Unconfined")) {
        return Err(format!(
            "securityContext.seccompProfile.type {kind:?} is not supported: use RuntimeDefault or Unconfined"
        ));
    }
    let capabilities = |field: &str| {
        text_list(container.at(&format!("/securityContext/capabilities/{field}")))
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.trim_start_matches("CAP_").to_ascii_uppercase())
            .collect::<Vec<_>>()
    };
    Ok(ContainerPlan {
        args: process,
        env,
        cwd,
        uid,
        gid,
        additional_gids,
        hostname,
        memory_limit,
        cpu_limit_milli,
        cpu_request_milli,
        read_only_root: container
            .at("/securityContext/readOnlyRootFilesystem")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        add_capabilities: capabilities("add"),
        drop_capabilities: capabilities("drop"),
        // Privileged implies it (validation refuses privileged with it false).
        allow_privilege_escalation: privileged
            || container
                .at("/securityContext/allowPrivilegeEscalation")
                .and_then(Value::as_bool)
                .unwrap_or(true),
        privileged,
        host_network: pod.at("/spec/hostNetwork").and_then(Value::as_bool) == Some(true),
        runtime_default_seccomp: seccomp == Some("RuntimeDefault"),
    })
}

fn capability_set(plan: &ContainerPlan, host: &HostAccess) -> Vec<Capability> {
    // containerd's CRI: a privileged container has every capability, whatever add and drop say.
    let mut names: Vec<String> = if plan.privileged {
        host.capabilities.clone()
    } else if plan.drop_capabilities.iter().any(|c| c == "ALL") {
        Vec::new()
    } else {
        DEFAULT_CAPABILITIES
            .iter()
            .map(|c| c.to_string())
            .filter(|c| !plan.drop_capabilities.contains(c))
            .collect()
    };
    for add in plan.add_capabilities.iter().filter(|_| !plan.privileged) {
        if !names.contains(add) {
            names.push(add.clone());
        }
    }
    names
        .iter()
        .filter_map(|name| {
            serde_json::from_value::<Capability>(Value::String(format!("CAP_{name}"))).ok()
        })
        .collect()
}

/// What a privileged container is given of the host, as containerd's CRI gives it: the
/// host's device nodes and every capability the kubelet itself holds (`cap.Current()`; a
/// capability outside our own bounding set cannot be granted, and runc fails on it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostAccess {
    /// The device nodes under /dev.
    pub devices: Vec<HostDevice>,
    /// Capability names (without `CAP_`).
    pub capabilities: Vec<String>,
}

/// Reads what a privileged container is given: [`host_devices`] and our bounding set.
pub fn host_access() -> HostAccess {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let bounding = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    HostAccess {
        devices: host_devices(),
        capabilities: capabilities_in(bounding),
    }
}

/// The names of the capabilities set in `mask` (bit n is capability n).
fn capabilities_in(mask: u64) -> Vec<String> {
    ALL_CAPABILITIES
        .iter()
        .enumerate()
        .filter(|(bit, _)| mask >> bit & 1 == 1)
        .map(|(_, name)| name.to_string())
        .collect()
}

/// A device node of the host, which a privileged container is given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostDevice {
    /// Its path, the same inside the container.
    pub path: PathBuf,
    /// A block device (else a character device).
    pub block: bool,
    /// Major number.
    pub major: i64,
    /// Minor number.
    pub minor: i64,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// The host's device nodes under /dev, as containerd's `HostDevices` lists them for a
/// privileged container: the pseudo-terminal, shared-memory and message-queue directories
/// (the container has its own) and /dev/console left out.
pub fn host_devices() -> Vec<HostDevice> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut found = Vec::new();
    let mut pending = vec![PathBuf::from("/dev")];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let kind = meta.file_type();
            if kind.is_dir() {
                let name = entry.file_name();
                let skipped = ["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"];
                if !skipped.iter().any(|s| name == *s) {
                    pending.push(path);
                }
                continue;
            }
            if path == Path::new("/dev/console")
                || !(kind.is_block_device() || kind.is_char_device())
            {
                continue;
            }
            let dev = meta.rdev();
            // glibc's gnu_dev_major / gnu_dev_minor.
            let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
            let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
            found.push(HostDevice {
                path,
                block: kind.is_block_device(),
                major: i64::try_from(major).unwrap_or(0),
                minor: i64::try_from(minor).unwrap_or(0),
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
            });
        }
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    found
}

/// The OCI runtime spec for `plan`, joining the network namespace at `netns`, in cgroup
/// `cgroups_path`, with `mounts` bound in; `host` is what a privileged container is given.
pub fn runtime_spec(
    plan: &ContainerPlan,
    netns: &Path,
    cgroups_path: &str,
    mounts: &[BindMount],
    host: &HostAccess,
) -> Result<Spec, String> {
    let oci = |e: oci_spec::OciSpecError| format!("building the runtime spec: {e}");
    let devices = &host.devices;
    let capabilities = capability_set(plan, host);
    let caps: std::collections::HashSet<Capability> = capabilities.into_iter().collect();
    let process = ProcessBuilder::default()
        .terminal(false)
        .args(plan.args.clone())
        .env(plan.env.clone())
        .cwd(plan.cwd.clone())
        .user(
            UserBuilder::default()
                .uid(plan.uid)
                .gid(plan.gid)
                .additional_gids(plan.additional_gids.clone())
                .build()
                .map_err(oci)?,
        )
        .capabilities(
            LinuxCapabilitiesBuilder::default()
                .bounding(caps.clone())
                .effective(caps.clone())
                .permitted(caps.clone())
                .build()
                .map_err(oci)?,
        )
        .no_new_privileges(!plan.allow_privilege_escalation)
        .build()
        .map_err(oci)?;
    let mut all_mounts = get_default_mounts();
    if plan.privileged {
        // containerd's CRI: /sys and the cgroup filesystem writable for a privileged container.
        for mount in &mut all_mounts {
            if matches!(mount.typ().as_deref(), Some("sysfs" | "cgroup"))
                && let Some(options) = mount.options().clone()
            {
                let options = options
                    .into_iter()
                    .map(|o| if o == "ro" { "rw".to_string() } else { o })
                    .collect();
                mount.set_options(Some(options));
            }
        }
    }
    for mount in mounts {
        let mut options = vec!["rbind".to_string()];
        options.push(if mount.read_only { "ro" } else { "rw" }.to_string());
        all_mounts.push(
            MountBuilder::default()
                .destination(PathBuf::from(&mount.destination))
                .typ("bind")
                .source(mount.source.clone())
                .options(options)
                .build()
                .map_err(oci)?,
        );
    }
    let namespace = |typ: LinuxNamespaceType, path: Option<&Path>| {
        let mut builder = LinuxNamespaceBuilder::default();
        builder = builder.typ(typ);
        if let Some(path) = path {
            builder = builder.path(path.to_path_buf());
        }
        builder.build()
    };
    let namespaces = vec![
        namespace(LinuxNamespaceType::Pid, None).map_err(oci)?,
        namespace(LinuxNamespaceType::Ipc, None).map_err(oci)?,
        namespace(LinuxNamespaceType::Mount, None).map_err(oci)?,
    ];
    let mut namespaces = namespaces;
    // hostNetwork: the host's network and hostname (Kubernetes shares UTS with it too).
    if !plan.host_network {
        namespaces.push(namespace(LinuxNamespaceType::Uts, None).map_err(oci)?);
        namespaces.push(namespace(LinuxNamespaceType::Network, Some(netns)).map_err(oci)?);
    }
    let mut memory = LinuxMemoryBuilder::default();
    if let Some(limit) = plan.memory_limit {
        // No swap beyond the limit, so the limit is what OOM-kills (as Kubernetes does).
        memory = memory.limit(limit).swap(limit);
    }
    let mut cpu = LinuxCpuBuilder::default();
    if let Some(milli) = plan.cpu_limit_milli {
        cpu = cpu.quota(cpu_quota(milli)).period(CPU_PERIOD);
    }
    if let Some(milli) = plan.cpu_request_milli {
        cpu = cpu.shares(cpu_shares(milli));
    }
    let mut resources = LinuxResourcesBuilder::default()
        .memory(memory.build().map_err(oci)?)
        .cpu(cpu.build().map_err(oci)?);
    let mut linux = LinuxBuilder::default();
    if plan.privileged {
        // Every device allowed, the host's nodes created, nothing masked or read-only.
        let allow_all = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .access("rwm")
            .build()
            .map_err(oci)?;
        resources = resources.devices(vec![allow_all]);
        let devices = devices
            .iter()
            .map(|d| {
                LinuxDeviceBuilder::default()
                    .path(d.path.clone())
                    .typ(if d.block {
                        LinuxDeviceType::B
                    } else {
                        LinuxDeviceType::C
                    })
                    .major(d.major)
                    .minor(d.minor)
                    .file_mode(d.mode)
                    .uid(d.uid)
                    .gid(d.gid)
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(oci)?;
        linux = linux
            .devices(devices)
            .masked_paths(Vec::new())
            .readonly_paths(Vec::new());
    } else {
        linux = linux
            .masked_paths(oci_spec::runtime::get_default_maskedpaths())
            .readonly_paths(oci_spec::runtime::get_default_readonly_paths());
    }
    // containerd's CRI: a privileged container is never filtered, whatever it asks.
    if plan.runtime_default_seccomp && !plan.privileged {
        linux = linux
            .seccomp(crate::seccomp::runtime_default(&caps, std::env::consts::ARCH).map_err(oci)?);
    }
    let linux = linux
        .namespaces(namespaces)
        .cgroups_path(PathBuf::from(cgroups_path))
        .resources(resources.build().map_err(oci)?)
        .build()
        .map_err(oci)?;
    SpecBuilder::default()
        .version("1.0.2")
        .process(process)
        .root(
            RootBuilder::default()
                .path("rootfs")
                .readonly(plan.read_only_root)
                .build()
                .map_err(oci)?,
        )
        .mounts(all_mounts)
        .linux(linux)
        .build()
        .map_err(oci)
        .map(|mut spec| {
            // The host's UTS namespace keeps the host's name: runc may not set one there.
            spec.set_hostname((!plan.host_network).then(|| plan.hostname.clone()));
            spec
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cpu_limits_and_requests_from_any_number_become_kernel_values() {
        assert_eq!(cpu_quota(500), 50_000);
        assert_eq!(cpu_quota(1), 1000, "at least 1 ms per period");
        assert_eq!(cpu_quota(i64::MAX), i64::MAX / 1000);
        assert_eq!(cpu_shares(250), 256);
        assert_eq!(cpu_shares(0), 2);
        assert_eq!(cpu_shares(-5), 2);
        assert_eq!(cpu_shares(i64::MAX), 262_144);
        assert_eq!(cpu_shares(1_000_000), 262_144);
    }

    /// The runtime spec of `plan` with no host access, as JSON.
    fn spec_json(plan: &ContainerPlan) -> Value {
        let spec = runtime_spec(
            plan,
            Path::new("/run/netns/x"),
            "/c",
            &[],
            &HostAccess::default(),
        )
        .expect("spec");
        serde_json::to_value(&spec).expect("json")
    }

    fn image() -> ResolvedImage {
        ResolvedImage {
            name: "docker.io/library/busybox:1.35".into(),
            id: "sha256:c".into(),
            top_layer: "sha256:l".into(),
            entrypoint: vec!["/bin/entry".into()],
            cmd: vec!["default".into()],
            env: vec!["PATH=/bin".into(), "MODE=image".into()],
            working_dir: None,
            user: None,
        }
    }

    fn pod() -> Value {
        json!({"metadata": {"name": "web-1", "namespace": "shop"}, "spec": {}})
    }

    #[test]
    fn command_and_args_override_the_image_as_kubernetes_does() {
        let p = |c: Value| plan(&pod(), &c, &image(), &[]).expect("plan").args;
        assert_eq!(p(json!({})), vec!["/bin/entry", "default"]);
        assert_eq!(p(json!({"args": ["x"]})), vec!["/bin/entry", "x"]);
        assert_eq!(p(json!({"command": ["sh"]})), vec!["sh"]);
        assert_eq!(
            p(json!({"command": ["sh"], "args": ["-c", "true"]})),
            vec!["sh", "-c", "true"]
        );
    }

    #[test]
    fn environment_user_and_limits() {
        let container = json!({
            "workingDir": "/srv",
            "resources": {"limits": {"memory": "64Mi", "cpu": "500m"}, "requests": {"cpu": "250m"}},
            "securityContext": {"runAsUser": 1000, "readOnlyRootFilesystem": true,
                                "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}},
        });
        let env = [("MODE".to_string(), "pod".to_string())];
        let plan = plan(&pod(), &container, &image(), &env).expect("plan");
        assert!(plan.env.contains(&"MODE=pod".to_string()));
        assert!(!plan.env.contains(&"MODE=image".to_string()));
        assert!(plan.env.contains(&"HOSTNAME=web-1".to_string()));
        assert_eq!(plan.cwd, "/srv");
        assert_eq!(plan.uid, 1000);
        assert_eq!(plan.additional_gids, Vec::<u32>::new());
        assert_eq!(plan.memory_limit, Some(64 * 1024 * 1024));
        assert_eq!(plan.cpu_limit_milli, Some(500));
        let spec = runtime_spec(
            &plan,
            Path::new("/run/netns/x"),
            "/shipshape/a/b",
            &[],
            &HostAccess::default(),
        )
        .expect("spec");
        let json = serde_json::to_value(&spec).expect("json");
        assert_eq!(json["root"]["readonly"], true);
        assert_eq!(
            json["linux"]["resources"]["memory"]["limit"],
            64 * 1024 * 1024
        );
        assert_eq!(json["linux"]["resources"]["cpu"]["quota"], 50_000);
        assert_eq!(json["linux"]["resources"]["cpu"]["shares"], 256);
        assert_eq!(
            json["process"]["capabilities"]["bounding"],
            json!(["CAP_NET_BIND_SERVICE"])
        );
        let network = json["linux"]["namespaces"]
            .as_array()
            .and_then(|n| n.iter().find(|n| n["type"] == "network"))
            .cloned();
        assert_eq!(
            network.map(|n| n["path"].clone()),
            Some(json!("/run/netns/x"))
        );
    }

    #[test]
    fn a_privileged_container_gets_what_containerd_gives_it() {
        let container = json!({"securityContext": {"privileged": true,
            "allowPrivilegeEscalation": true, "capabilities": {"drop": ["ALL"]}}});
        let plan = plan(&pod(), &container, &image(), &[]).expect("plan");
        assert!(plan.privileged);
        let null = HostDevice {
            path: "/dev/null".into(),
            block: false,
            major: 1,
            minor: 3,
            mode: 0o666,
            uid: 0,
            gid: 0,
        };
        let host = HostAccess {
            devices: vec![null],
            // Our own bounding set less CAP_SYS_MODULE (16) and CAP_SYS_TIME (25).
            capabilities: capabilities_in(0x1ff_ffff_ffff & !(1 << 16) & !(1 << 25)),
        };
        let spec = runtime_spec(&plan, Path::new("/run/netns/x"), "/c", &[], &host).expect("spec");
        let json = serde_json::to_value(&spec).expect("json");
        let bounding = json["process"]["capabilities"]["bounding"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            bounding.len(),
            ALL_CAPABILITIES.len() - 2,
            "every capability we hold, drop ALL or not"
        );
        assert!(bounding.contains(&json!("CAP_SYS_ADMIN")));
        assert!(!bounding.contains(&json!("CAP_SYS_MODULE")));
        assert!(bounding.contains(&json!("CAP_CHECKPOINT_RESTORE")));
        assert_eq!(json["process"]["noNewPrivileges"], false);
        for paths in ["maskedPaths", "readonlyPaths"] {
            assert!(
                json["linux"][paths].as_array().is_none_or(Vec::is_empty),
                "{paths}: {}",
                json["linux"][paths]
            );
        }
        let options = |destination: &str| {
            json["mounts"]
                .as_array()
                .and_then(|m| m.iter().find(|m| m["destination"] == destination))
                .map(|m| m["options"].clone())
        };
        let sys = options("/sys").expect("/sys");
        assert!(
            sys.as_array()
                .is_some_and(|o| o.contains(&json!("rw")) && !o.contains(&json!("ro"))),
            "{sys}"
        );
        assert_eq!(
            json["linux"]["devices"],
            json!([{"path": "/dev/null", "type": "c", "major": 1, "minor": 3,
                    "fileMode": 0o666, "uid": 0, "gid": 0}])
        );
        assert_eq!(
            json["linux"]["resources"]["devices"],
            json!([{"allow": true, "access": "rwm"}])
        );

        // Unprivileged: the defaults stay.
        let plain = super::plan(&pod(), &json!({}), &image(), &[]).expect("plan");
        let json = spec_json(&plain);
        assert!(
            json["linux"]["maskedPaths"]
                .as_array()
                .is_some_and(|p| !p.is_empty())
        );
        assert!(json["linux"]["devices"].is_null());
        assert_eq!(
            json["process"]["capabilities"]["bounding"]
                .as_array()
                .map(Vec::len),
            Some(DEFAULT_CAPABILITIES.len())
        );
    }

    #[test]
    fn a_host_network_pod_joins_no_network_or_uts_namespace() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"hostNetwork": true}});
        let plan = plan(&pod, &json!({}), &image(), &[]).expect("plan");
        assert!(plan.host_network);
        let json = spec_json(&plan);
        let kinds: Vec<Value> = json["linux"]["namespaces"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|n| n["type"].clone())
            .collect();
        assert_eq!(kinds, [json!("pid"), json!("ipc"), json!("mount")]);
        assert!(json["hostname"].is_null());
        // Without it: the pod's namespace and name, as before.
        let plain =
            super::plan(&pod_json_without_host_network(), &json!({}), &image(), &[]).expect("plan");
        let json = spec_json(&plain);
        assert_eq!(json["hostname"], "p");
        assert_eq!(
            json["linux"]["namespaces"].as_array().map(Vec::len),
            Some(5)
        );
    }

    fn pod_json_without_host_network() -> Value {
        json!({"metadata": {"name": "p"}, "spec": {"hostNetwork": false}})
    }

    #[test]
    fn host_devices_are_read_from_dev() {
        let devices = host_devices();
        let null = devices
            .iter()
            .find(|d| d.path == Path::new("/dev/null"))
            .expect("/dev/null");
        assert_eq!((null.block, null.major, null.minor), (false, 1, 3));
        assert!(devices.iter().all(|d| !d.path.starts_with("/dev/pts")));
        assert!(devices.iter().all(|d| d.path != Path::new("/dev/console")));
    }

    #[test]
    fn supplemental_groups_and_fs_group_are_the_processs_groups() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"securityContext":
            {"supplementalGroups": [10, 20], "fsGroup": 2000}}});
        let plan = plan(&pod, &json!({}), &image(), &[]).expect("plan");
        assert_eq!(plan.additional_gids, vec![10, 20, 2000]);
        let json = spec_json(&plan);
        assert_eq!(
            json["process"]["user"]["additionalGids"],
            json!([10, 20, 2000])
        );
    }

    #[test]
    fn runtime_default_seccomp_follows_pod_and_container_and_skips_privileged() {
        let seccomp = |pod: &Value, container: Value| {
            let plan = plan(pod, &container, &image(), &[]).expect("plan");
            let spec = runtime_spec(
                &plan,
                Path::new("/run/netns/x"),
                "/c",
                &[],
                &HostAccess {
                    devices: Vec::new(),
                    capabilities: ALL_CAPABILITIES.iter().map(|c| c.to_string()).collect(),
                },
            )
            .expect("spec");
            serde_json::to_value(&spec).expect("json")["linux"]["seccomp"].clone()
        };
        let restricted = json!({"metadata": {"name": "p"}, "spec": {"securityContext":
            {"seccompProfile": {"type": "RuntimeDefault"}}}});
        let profile = seccomp(&restricted, json!({}));
        assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(profile["defaultErrnoRet"], 1);
        let names = |profile: &Value| -> Vec<Value> {
            profile["syscalls"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|r| r["names"].as_array().cloned().unwrap_or_default())
                .collect()
        };
        assert!(names(&profile).contains(&json!("read")));
        assert!(!names(&profile).contains(&json!("mount")));
        // The capabilities the container ends up with decide the gated calls.
        let admin = seccomp(
            &restricted,
            json!({"securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}),
        );
        assert!(names(&admin).contains(&json!("mount")));
        let chroot = |profile: &Value| names(profile).contains(&json!("chroot"));
        assert!(chroot(&profile));
        assert!(!chroot(&seccomp(
            &restricted,
            json!({"securityContext": {"capabilities": {"drop": ["ALL"]}}})
        )));
        // The container's own profile wins over the pod's, either way.
        assert!(
            seccomp(
                &restricted,
                json!({"securityContext": {"seccompProfile": {"type": "Unconfined"}}})
            )
            .is_null()
        );
        assert_eq!(
            seccomp(
                &pod(),
                json!({"securityContext": {"seccompProfile": {"type": "RuntimeDefault"}}})
            )["defaultAction"],
            "SCMP_ACT_ERRNO"
        );
        assert!(seccomp(&pod(), json!({})).is_null(), "unset is Unconfined");
        // containerd: a privileged container is never filtered.
        assert!(
            seccomp(
                &restricted,
                json!({"securityContext": {"privileged": true,
                    "seccompProfile": {"type": "RuntimeDefault"}}})
            )
            .is_null()
        );
        let error = plan(
            &pod(),
            &json!({"securityContext": {"seccompProfile": {"type": "Localhost",
                "localhostProfile": "audit.json"}}}),
            &image(),
            &[],
        )
        .expect_err("no profile directory");
        assert!(error.contains("seccompProfile"), "{error}");
    }

    #[test]
    fn refuses_root_when_run_as_non_root() {
        let container = json!({"securityContext": {"runAsNonRoot": true}});
        let error = plan(&pod(), &container, &image(), &[]).expect_err("root image");
        assert!(error.contains("runAsNonRoot"), "{error}");
        let container = json!({"securityContext": {"runAsNonRoot": true, "runAsUser": 10}});
        assert!(plan(&pod(), &container, &image(), &[]).is_ok());
    }
}
