//! A container's OCI runtime spec, built with the `oci-spec` crate from a pod's container and
//! its image: Kubernetes' rules for command and args over entrypoint and cmd, the environment,
//! the user, the pod's network namespace, resource limits as cgroup limits, the security
//! context, and the pod's resolv.conf, hosts and hostname files.
//!
//! [`plan`] is pure (pod JSON and image in, a [`ContainerPlan`] or a one-line reason out), so
//! the kubelet can report `CreateContainerConfigError` before touching containerd.

use shipshape_api::pointer::At;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxMemoryBuilder,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResourcesBuilder, MountBuilder, ProcessBuilder,
    RootBuilder, Spec, SpecBuilder, UserBuilder, get_default_mounts,
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
    /// The pod's hostname (its name).
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
    let hostname = pod
        .at("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("pod")
        .to_string();
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
        allow_privilege_escalation: container
            .at("/securityContext/allowPrivilegeEscalation")
            .and_then(Value::as_bool)
            .unwrap_or(true),
    })
}

fn capability_set(plan: &ContainerPlan) -> Vec<Capability> {
    let mut names: Vec<String> = if plan.drop_capabilities.iter().any(|c| c == "ALL") {
        Vec::new()
    } else {
        DEFAULT_CAPABILITIES
            .iter()
            .map(|c| c.to_string())
            .filter(|c| !plan.drop_capabilities.contains(c))
            .collect()
    };
    for add in &plan.add_capabilities {
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

/// The OCI runtime spec for `plan`, joining the network namespace at `netns`, in cgroup
/// `cgroups_path`, with `mounts` bound in.
pub fn runtime_spec(
    plan: &ContainerPlan,
    netns: &Path,
    cgroups_path: &str,
    mounts: &[BindMount],
) -> Result<Spec, String> {
    let oci = |e: oci_spec::OciSpecError| format!("building the runtime spec: {e}");
    let capabilities = capability_set(plan);
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
        namespace(LinuxNamespaceType::Uts, None).map_err(oci)?,
        namespace(LinuxNamespaceType::Mount, None).map_err(oci)?,
        namespace(LinuxNamespaceType::Network, Some(netns)).map_err(oci)?,
    ];
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
    let resources = LinuxResourcesBuilder::default()
        .memory(memory.build().map_err(oci)?)
        .cpu(cpu.build().map_err(oci)?)
        .build()
        .map_err(oci)?;
    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .cgroups_path(PathBuf::from(cgroups_path))
        .resources(resources)
        .masked_paths(oci_spec::runtime::get_default_maskedpaths())
        .readonly_paths(oci_spec::runtime::get_default_readonly_paths())
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
        .hostname(plan.hostname.clone())
        .mounts(all_mounts)
        .linux(linux)
        .build()
        .map_err(oci)
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
        assert_eq!(plan.memory_limit, Some(64 * 1024 * 1024));
        assert_eq!(plan.cpu_limit_milli, Some(500));
        let spec =
            runtime_spec(&plan, Path::new("/run/netns/x"), "/shipshape/a/b", &[]).expect("spec");
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
    fn refuses_root_when_run_as_non_root() {
        let container = json!({"securityContext": {"runAsNonRoot": true}});
        let error = plan(&pod(), &container, &image(), &[]).expect_err("root image");
        assert!(error.contains("runAsNonRoot"), "{error}");
        let container = json!({"securityContext": {"runAsNonRoot": true, "runAsUser": 10}});
        assert!(plan(&pod(), &container, &image(), &[]).is_ok());
    }
}
