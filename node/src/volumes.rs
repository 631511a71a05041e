//! Pod volumes on a real node: ConfigMap and Secret contents as files (with `items`, modes and
//! the object's updates), downward API values (pod fields and container resources, as files
//! and as env values) and projections of all three, emptyDir directories (a tmpfs for
//! `medium: Memory`, a measured size for `sizeLimit`), fsGroup ownership, and hostPath checks.
//! Each volume is a directory under the pod's directory, bind-mounted into the containers that
//! mount it; files are replaced by rename, so a container never reads a half-written file.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::Value;
use shipshape_api::Kind;

/// The data of a ConfigMap (`data` and `binaryData`) or a Secret (`data` decoded, and
/// `stringData`), by key.
pub fn object_data(kind: Kind, object: &Value) -> BTreeMap<String, Vec<u8>> {
    let mut data = declared_data(kind, object);
    if kind != Kind::Secret {
        for (key, value) in text_entries(object, "binaryData") {
            data.insert(key.clone(), decode_base64(value));
        }
    }
    data
}

/// What a ConfigMap or Secret holds as text: `data` (decoded for a Secret) with a Secret's
/// `stringData` merged over it, as the API server does on write; a ConfigMap's `binaryData`
/// left out.
fn declared_data(kind: Kind, object: &Value) -> BTreeMap<String, Vec<u8>> {
    let mut data = BTreeMap::new();
    for (key, value) in text_entries(object, "data") {
        let bytes = if kind == Kind::Secret {
            decode_base64(value)
        } else {
            value.as_bytes().to_vec()
        };
        data.insert(key.clone(), bytes);
    }
    if kind == Kind::Secret {
        for (key, value) in text_entries(object, "stringData") {
            data.insert(key.clone(), value.as_bytes().to_vec());
        }
    }
    data
}

/// The entries of map `field` of `object`, values as text (a non-string reads as empty).
fn text_entries<'a>(object: &'a Value, field: &str) -> impl Iterator<Item = (&'a String, &'a str)> {
    object
        .get(field)
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(key, value)| (key, value.as_str().unwrap_or_default()))
}

/// Base64 as Kubernetes stores bytes; validation refuses anything else, so a stray value
/// reads as empty rather than failing the pod.
fn decode_base64(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap_or_default()
}

/// The variables `envFrom` takes from a ConfigMap or Secret, as the kubelet does: `data` only
/// (a ConfigMap's `binaryData` is for files: its bytes, NULs included, cannot be a variable),
/// each key behind `prefix`, in key order. Names that are not variable names (Kubernetes'
/// `[-._a-zA-Z][-._a-zA-Z0-9]*`) are returned apart, to be skipped with an event.
pub fn env_from(kind: Kind, object: &Value, prefix: &str) -> (Vec<(String, String)>, Vec<String>) {
    let mut found = Vec::new();
    let mut skipped = Vec::new();
    for (key, bytes) in declared_data(kind, object) {
        let name = format!("{prefix}{key}");
        if is_env_var_name(&name) {
            found.push((name, String::from_utf8_lossy(&bytes).into_owned()));
        } else {
            skipped.push(name);
        }
    }
    (found, skipped)
}

/// The value of key `key` of a ConfigMap or Secret for a `configMapKeyRef`/`secretKeyRef`
/// variable, as the kubelet reads it: from `data` only, so a key that is only in a
/// ConfigMap's `binaryData` is not found (the container fails to start unless the reference
/// is optional).
pub fn env_value(kind: Kind, object: &Value, key: &str) -> Option<String> {
    declared_data(kind, object)
        .remove(key)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

/// Kubernetes' `IsEnvVarName`.
fn is_env_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || matches!(c, '-' | '.' | '_'))
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

/// A file to write into a volume: relative path, contents, mode.
pub type VolumeFile = (String, Vec<u8>, u32);

/// The files a configMap or secret volume source holds: every key, or only `items` (each at
/// its `path`, with its `mode`), with `defaultMode` (Kubernetes: 0644) otherwise.
pub fn files(source: &Value, data: &BTreeMap<String, Vec<u8>>) -> Result<Vec<VolumeFile>, String> {
    let mode = |v: Option<&Value>| v.and_then(Value::as_u64).map(|m| (m & 0o777) as u32);
    let default_mode = mode(source.get("defaultMode")).unwrap_or(0o644);
    let optional = source.get("optional").and_then(Value::as_bool) == Some(true);
    let Some(items) = source.get("items").and_then(Value::as_array) else {
        return Ok(data
            .iter()
            .map(|(k, v)| (k.clone(), v.clone(), default_mode))
            .collect());
    };
    let mut out = Vec::new();
    for item in items {
        let key = item.get("key").and_then(Value::as_str).unwrap_or_default();
        let path = item.get("path").and_then(Value::as_str).unwrap_or(key);
        if path.starts_with('/') || path.split('/').any(|p| p == "..") {
            return Err(format!(
                "items path {path:?} must be relative and stay inside the volume"
            ));
        }
        match data.get(key) {
            Some(value) => out.push((
                path.to_string(),
                value.clone(),
                mode(item.get("mode")).unwrap_or(default_mode),
            )),
            None if optional => {}
            None => return Err(format!("key {key:?} is not in the object")),
        }
    }
    Ok(out)
}

/// Makes `dir` hold exactly `files`: changed files are replaced by rename, others removed.
pub async fn write_files(dir: &Path, files: &[VolumeFile]) -> std::io::Result<()> {
    tokio::fs::create_dir_all(dir).await?;
    for (path, bytes, mode) in files {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        let same = tokio::fs::read(&target)
            .await
            .is_ok_and(|old| &old == bytes);
        if !same {
            let temporary = target.with_extension("shipshape-new");
            tokio::fs::write(&temporary, bytes).await?;
            tokio::fs::rename(&temporary, &target).await?;
        }
        tokio::fs::set_permissions(&target, std::fs::Permissions::from_mode(*mode)).await?;
    }
    // Keys removed from the object disappear from the volume.
    let mut entries = tokio::fs::read_dir(dir).await?;
    while let Some(entry) = entries.next_entry().await? {
        let name = entry.file_name().to_string_lossy().into_owned();
        let top_level_kept = files
            .iter()
            .any(|(path, _, _)| path == &name || path.starts_with(&format!("{name}/")));
        if !top_level_kept {
            let path = entry.path();
            if entry.file_type().await?.is_dir() {
                tokio::fs::remove_dir_all(path).await?;
            } else {
                tokio::fs::remove_file(path).await?;
            }
        }
    }
    Ok(())
}

/// Where a pod runs, which the downward API offers beside the pod object's own fields.
#[derive(Clone, Debug)]
pub struct Placement {
    /// The node's name (`spec.nodeName`).
    pub node: String,
    /// The pod's address, once its network is up.
    pub pod_ip: Option<std::net::Ipv4Addr>,
    /// The node's address (`status.hostIP`).
    pub host_ip: std::net::Ipv4Addr,
}

/// What the node offers pods: the limit the downward API reports for a container that sets
/// none, as the kubelet's `MergeContainerResourceLimits` does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Allocatable {
    /// Millicores.
    pub cpu_milli: u64,
    /// Bytes of memory.
    pub memory: u64,
    /// Bytes of the filesystem holding pods' writable layers and emptyDirs.
    pub ephemeral_storage: u64,
}

/// The value of downward API `fieldPath` for `pod`, formatted as the kubelet does: maps as
/// sorted `key="value"` lines (Go's `%q` quoting), a missing label or annotation as empty.
pub fn pod_field(pod: &Value, placement: &Placement, path: &str) -> Result<String, String> {
    use shipshape_api::pointer::At;
    let text = |pointer: &str| {
        pod.at(pointer)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let subscript = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix("['"))
            .and_then(|rest| rest.strip_suffix("']"))
    };
    let map_entry = |field: &str, key: &str| {
        pod.get("metadata")
            .and_then(|m| m.get(field))
            .and_then(|m| m.get(key))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let pod_ip = placement
        .pod_ip
        .map(|ip| ip.to_string())
        .unwrap_or_default();
    Ok(match path {
        "metadata.name" => text("/metadata/name"),
        "metadata.namespace" => text("/metadata/namespace"),
        "metadata.uid" => text("/metadata/uid"),
        "metadata.labels" => format_map(pod.at("/metadata/labels")),
        "metadata.annotations" => format_map(pod.at("/metadata/annotations")),
        "spec.nodeName" => placement.node.clone(),
        // The ServiceAccount admission plugin names `default` when the pod names none.
        "spec.serviceAccountName" => Some(text("/spec/serviceAccountName"))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".into()),
        "status.podIP" | "status.podIPs" => pod_ip,
        "status.hostIP" | "status.hostIPs" => placement.host_ip.to_string(),
        other => {
            if let Some(key) = subscript("metadata.labels") {
                map_entry("labels", key)
            } else if let Some(key) = subscript("metadata.annotations") {
                map_entry("annotations", key)
            } else {
                return Err(format!("fieldRef {other} is not supported"));
            }
        }
    })
}

/// A label or annotation map as the kubelet's `fieldpath.FormatMap` writes it.
fn format_map(map: Option<&Value>) -> String {
    let mut lines: Vec<(String, String)> = map
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    lines.sort();
    lines
        .iter()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Go's `strconv.Quote`, which `%q` uses: printable characters as they are, the rest escaped.
fn go_quote(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The value of downward API `resource` (`limits.cpu`, `requests.memory`, …) of container
/// `container` in `pod`, divided by `divisor` and rounded up as the kubelet does. A limit the
/// container does not set is the node's allocatable; a request it does not set is its limit
/// if it sets one (the API server's defaulting), else zero.
pub fn container_resource(
    pod: &Value,
    container: &str,
    resource: &str,
    divisor: Option<&Value>,
    allocatable: &Allocatable,
) -> Result<String, String> {
    use shipshape_api::pointer::At;
    use shipshape_api::quantity::Quantity;
    let spec = ["/spec/containers", "/spec/initContainers"]
        .iter()
        .filter_map(|p| pod.at(p).and_then(Value::as_array))
        .flatten()
        .find(|c| c.get("name").and_then(Value::as_str) == Some(container))
        .ok_or_else(|| format!("resourceFieldRef: no container named {container:?}"))?;
    let (kind, name) = resource
        .split_once('.')
        .filter(|(kind, _)| matches!(*kind, "limits" | "requests"))
        .ok_or_else(|| format!("resourceFieldRef {resource} is not supported"))?;
    let declared = |kind: &str| -> Result<Option<Quantity>, String> {
        spec.get("resources")
            .and_then(|r| r.get(kind))
            .and_then(|m| m.get(name))
            .map(|q| Quantity::from_json(q).map_err(|e| format!("{kind}.{name}: {e}")))
            .transpose()
    };
    let saturate = |n: u64| Quantity::from_units(i64::try_from(n).unwrap_or(i64::MAX));
    let node_limit = match name {
        "cpu" => Quantity::from_milli(i64::try_from(allocatable.cpu_milli).unwrap_or(i64::MAX)),
        "memory" => saturate(allocatable.memory),
        "ephemeral-storage" => saturate(allocatable.ephemeral_storage),
        _ => return Err(format!("resourceFieldRef {resource} is not supported")),
    };
    let value = match kind {
        "limits" => declared("limits")?.unwrap_or(node_limit),
        _ => declared("requests")?
            .or(declared("limits")?)
            .unwrap_or_default(),
    };
    let divisor = match divisor {
        None => None,
        Some(d) => Some(Quantity::from_json(d).map_err(|e| format!("divisor: {e}"))?),
    }
    .filter(|d| *d != Quantity::default());
    // cpu in millicores, the rest in whole units, as the kubelet's `convertResource*ToString`.
    let (amount, per) = if name == "cpu" {
        (value.milli(), divisor.map_or(1000, |d| d.milli()))
    } else {
        (value.units(), divisor.map_or(1, |d| d.units()))
    };
    if per <= 0 {
        return Err(format!(
            "resourceFieldRef {resource}: divisor must be positive"
        ));
    }
    let quotient = amount.div_euclid(per) + i128::from(amount.rem_euclid(per) != 0);
    Ok(quotient.to_string())
}

/// The files of a downwardAPI volume (or projection): each item at its `path`, with its
/// `mode` or `default_mode`.
pub fn downward_files(
    pod: &Value,
    placement: &Placement,
    allocatable: &Allocatable,
    source: &Value,
    default_mode: u32,
) -> Result<Vec<VolumeFile>, String> {
    let mut out = Vec::new();
    for item in source
        .get("items")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let path = item.get("path").and_then(Value::as_str).unwrap_or_default();
        check_item_path(path)?;
        let value = if let Some(field) = item
            .get("fieldRef")
            .and_then(|f| f.get("fieldPath"))
            .and_then(Value::as_str)
        {
            pod_field(pod, placement, field)?
        } else if let Some(reference) = item.get("resourceFieldRef") {
            let text = |field: &str| {
                reference
                    .get(field)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
            };
            container_resource(
                pod,
                text("containerName"),
                text("resource"),
                reference.get("divisor"),
                allocatable,
            )?
        } else {
            return Err(format!("item {path:?} needs fieldRef or resourceFieldRef"));
        };
        out.push((
            path.to_string(),
            value.into_bytes(),
            item_mode(item, default_mode),
        ));
    }
    Ok(out)
}

/// The files of a projected volume: every source's files, with the volume's `defaultMode`
/// (Kubernetes: 0644) where an item sets no mode. ConfigMap and Secret data come from `data`
/// by source index (`None`: the object is missing, which an optional source allows).
pub fn projected_files(
    pod: &Value,
    placement: &Placement,
    allocatable: &Allocatable,
    volume: &Value,
    data: &[Option<BTreeMap<String, Vec<u8>>>],
) -> Result<Vec<VolumeFile>, String> {
    let default_mode = file_mode(volume.get("defaultMode")).unwrap_or(0o644);
    let mut out: Vec<VolumeFile> = Vec::new();
    let sources = volume
        .get("sources")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for (index, source) in sources.iter().enumerate() {
        let object = source.get("configMap").or_else(|| source.get("secret"));
        let files = if let Some(object) = object {
            let mut object = object.clone();
            // A projection's object source takes its mode from the projection, not itself.
            if let Some(map) = object.as_object_mut() {
                map.insert("defaultMode".into(), Value::from(default_mode));
            }
            match data.get(index).and_then(Option::as_ref) {
                Some(data) => files(&object, data)?,
                None => Vec::new(),
            }
        } else if let Some(downward) = source.get("downwardAPI") {
            downward_files(pod, placement, allocatable, downward, default_mode)?
        } else {
            return Err(format!(
                "sources[{index}]: only configMap, secret and downwardAPI projections are supported"
            ));
        };
        for file in files {
            if out.iter().any(|(path, _, _)| *path == file.0) {
                return Err(format!("two sources project the path {:?}", file.0));
            }
            out.push(file);
        }
    }
    Ok(out)
}

fn file_mode(value: Option<&Value>) -> Option<u32> {
    value.and_then(Value::as_u64).map(|m| (m & 0o777) as u32)
}

fn item_mode(item: &Value, default_mode: u32) -> u32 {
    file_mode(item.get("mode")).unwrap_or(default_mode)
}

fn check_item_path(path: &str) -> Result<(), String> {
    if path.is_empty() || path.starts_with('/') || path.split('/').any(|p| p == "..") {
        return Err(format!(
            "items path {path:?} must be relative and stay inside the volume"
        ));
    }
    Ok(())
}

/// The size of the filesystem holding `path`, in bytes (0 when `df` cannot tell): the node's
/// allocatable ephemeral storage.
pub async fn filesystem_size(path: &Path) -> u64 {
    let output = tokio::process::Command::new("df")
        .args(["--output=size", "-B1"])
        .arg(path)
        .output()
        .await;
    output
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .nth(1)
                .and_then(|line| line.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The size and free bytes of the filesystem holding `path` (`df`), or `None` when `df`
/// cannot tell: what image garbage collection measures the disk by.
pub async fn filesystem_space(path: &Path) -> Option<(u64, u64)> {
    let output = tokio::process::Command::new("df")
        .args(["--output=size,avail", "-B1"])
        .arg(path)
        .output()
        .await
        .ok()
        .filter(|o| o.status.success())?;
    let text = String::from_utf8_lossy(&output.stdout);
    let mut numbers = text.lines().nth(1)?.split_whitespace();
    let size = numbers.next()?.parse().ok()?;
    let available = numbers.next()?.parse().ok()?;
    Some((size, available))
}

/// The bytes `dir` takes on disk (`du -s -x -B1`, as the kubelet measures an emptyDir without
/// filesystem quotas), or `None` when it cannot be measured.
pub async fn disk_usage(dir: &Path) -> Option<u64> {
    let output = tokio::process::Command::new("du")
        .args(["-s", "-x", "-B1"])
        .arg(dir)
        .output()
        .await
        .ok()
        .filter(|o| o.status.success())?;
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
}

/// The size of a memory-backed emptyDir, as the kubelet's `calculateEmptyDirMemorySize`: the
/// node's allocatable memory, lowered to the pod's memory limit when every container sets one,
/// lowered to the volume's `sizeLimit` when that is smaller still.
pub fn memory_volume_size(pod: &Value, size_limit: Option<&Value>, node_memory: u64) -> u64 {
    use shipshape_api::pointer::At;
    use shipshape_api::quantity::Quantity;
    let limit_of = |container: &Value| {
        container
            .at("/resources/limits/memory")
            .and_then(|q| Quantity::from_json(q).ok())
            .and_then(|q| u64::try_from(q.units()).ok())
    };
    let group = |pointer: &str| -> Vec<Option<u64>> {
        pod.at(pointer)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(limit_of)
            .collect()
    };
    let (containers, init) = (group("/spec/containers"), group("/spec/initContainers"));
    let mut size = node_memory;
    // The pod's limit (its cgroup's): the containers' sum, or the largest init container's if
    // that is more; only when every one of them declares a limit.
    if containers.iter().chain(&init).all(Option::is_some) {
        let sum = containers
            .iter()
            .flatten()
            .fold(0u64, |sum, l| sum.saturating_add(*l));
        let pod_limit = init.iter().flatten().fold(sum, |max, l| max.max(*l));
        if pod_limit > 0 && pod_limit <= size {
            size = pod_limit;
        }
    }
    if let Some(limit) = size_limit
        .and_then(|q| Quantity::from_json(q).ok())
        .and_then(|q| u64::try_from(q.units()).ok())
        && limit > 0
        && limit <= size
    {
        size = limit;
    }
    size
}

/// The mount points at or under `dir`, deepest first, from `/proc/self/mountinfo`.
fn mounts_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<std::path::PathBuf> = table
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|point| std::path::PathBuf::from(unescape_mount_path(point)))
        .filter(|point| point.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// The kernel writes space, tab, newline and backslash in mountinfo paths as octal escapes.
fn unescape_mount_path(point: &str) -> String {
    point
        .replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Mounts a tmpfs of `size` bytes at `dir` (a memory-backed emptyDir), unless one is there;
/// true when it mounted one now.
pub async fn mount_tmpfs(dir: &Path, size: u64) -> Result<bool, String> {
    if mounts_under(dir).iter().any(|point| point == dir) {
        return Ok(false);
    }
    let output = tokio::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o"])
        .arg(format!("nosuid,nodev,size={size}"))
        .arg("tmpfs")
        .arg(dir)
        .output()
        .await
        .map_err(|e| format!("mount: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "mounting a tmpfs at {}: {}",
            dir.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(true)
}

/// Unmounts every mount at or under `dir` (memory-backed emptyDirs), deepest first, so the
/// directory can be removed without reaching into a mounted filesystem.
pub async fn unmount_all_under(dir: &Path) {
    for point in mounts_under(dir) {
        let result = tokio::process::Command::new("umount")
            .arg(&point)
            .output()
            .await;
        let failed = match &result {
            Ok(output) if output.status.success() => None,
            Ok(output) => Some(String::from_utf8_lossy(&output.stderr).trim().to_string()),
            Err(e) => Some(e.to_string()),
        };
        if let Some(why) = failed {
            // Lazily, so a mount still busy goes once its last user does.
            let _ = tokio::process::Command::new("umount")
                .arg("-l")
                .arg(&point)
                .output()
                .await;
            tracing::warn!(mount = %point.display(), %why, "unmounting a pod volume failed");
        }
    }
}

/// Gives an emptyDir the permissions Kubernetes gives it: writable by every user (0777), and
/// with `fs_group` its group, setgid so that new files join it too.
pub fn empty_dir_permissions(dir: &Path, fs_group: Option<u32>) -> std::io::Result<()> {
    let mode = match fs_group {
        Some(gid) => {
            std::os::unix::fs::chown(dir, None, Some(gid))?;
            0o2777
        }
        None => 0o777,
    };
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
}

/// With `fs_group`, the files the kubelet writes into a volume (ConfigMap, Secret, downward
/// API) belong to that group and are group-readable, as the kubelet's `SetVolumeOwnership`
/// makes them for a read-only volume.
pub fn files_for_group(files: &mut [VolumeFile], fs_group: Option<u32>) {
    if fs_group.is_some() {
        for (_, _, mode) in files.iter_mut() {
            *mode |= 0o440;
        }
    }
}

/// Gives `dir` and everything under it to group `gid` (directories setgid and group-listable).
pub fn give_to_group(dir: &Path, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(dir, None, Some(gid))?;
    let meta = std::fs::symlink_metadata(dir)?;
    if meta.is_dir() {
        let mode = meta.permissions().mode() & 0o7777;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o2050))?;
        for entry in std::fs::read_dir(dir)? {
            give_to_group(&entry?.path(), gid)?;
        }
    }
    Ok(())
}

/// Checks (or creates, for the `…OrCreate` types) a hostPath volume's path.
pub async fn check_host_path(source: &Value) -> Result<(), String> {
    let path = source
        .get("path")
        .and_then(Value::as_str)
        .ok_or("hostPath needs a path")?;
    let path = Path::new(path);
    let kind = source.get("type").and_then(Value::as_str).unwrap_or("");
    let io = |e: std::io::Error| format!("hostPath {}: {e}", path.display());
    match kind {
        "" => Ok(()),
        "DirectoryOrCreate" => tokio::fs::create_dir_all(path).await.map_err(io),
        "FileOrCreate" => {
            if !path.exists() {
                if let Some(parent) = path.parent() {
                    tokio::fs::create_dir_all(parent).await.map_err(io)?;
                }
                tokio::fs::write(path, b"").await.map_err(io)?;
            }
            Ok(())
        }
        "Directory" if path.is_dir() => Ok(()),
        "File" if path.is_file() => Ok(()),
        "Socket" | "CharDevice" | "BlockDevice" if path.exists() => Ok(()),
        other => Err(format!(
            "hostPath {} is not a {other} on this node",
            path.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn env_from_takes_data_only_and_sets_invalid_names_apart() {
        let config = json!({
            "data": {"MODE": "fast", "log.level": "debug", "1st": "x", "has space": "y"},
            "binaryData": {"BLOB": "AAE="},
        });
        let (found, skipped) = env_from(Kind::ConfigMap, &config, "");
        assert_eq!(
            found,
            [
                ("MODE".to_string(), "fast".to_string()),
                ("log.level".to_string(), "debug".to_string()),
            ]
        );
        assert_eq!(skipped, ["1st", "has space"]);
        // A prefix can make a key valid.
        let (found, skipped) = env_from(Kind::ConfigMap, &config, "APP_");
        assert_eq!(found.len(), 3, "MODE, log.level and APP_1st");
        assert_eq!(skipped, ["APP_has space"]);
        assert!(found.iter().all(|(name, _)| name != "APP_BLOB"));
        let secret = json!({"data": {"TOKEN": "aGk="}, "stringData": {"USER": "ada"}});
        let (found, _) = env_from(Kind::Secret, &secret, "");
        assert_eq!(
            found,
            [
                ("TOKEN".to_string(), "hi".to_string()),
                ("USER".to_string(), "ada".to_string()),
            ]
        );
    }

    #[test]
    fn key_references_read_data_and_never_binary_data() {
        let config = json!({"data": {"MODE": "fast"}, "binaryData": {"BLOB": "AAE="}});
        assert_eq!(
            env_value(Kind::ConfigMap, &config, "MODE").as_deref(),
            Some("fast")
        );
        assert_eq!(env_value(Kind::ConfigMap, &config, "BLOB"), None);
        assert_eq!(env_value(Kind::ConfigMap, &config, "ABSENT"), None);
        let secret = json!({"data": {"TOKEN": "aGk="}, "stringData": {"USER": "ada"}});
        assert_eq!(
            env_value(Kind::Secret, &secret, "TOKEN").as_deref(),
            Some("hi")
        );
        assert_eq!(
            env_value(Kind::Secret, &secret, "USER").as_deref(),
            Some("ada")
        );
    }

    #[test]
    fn secrets_are_decoded_and_config_maps_keep_binary_data() {
        let secret = json!({"data": {"a": "aGk="}, "stringData": {"b": "plain"}});
        let data = object_data(Kind::Secret, &secret);
        assert_eq!(data["a"], b"hi");
        assert_eq!(data["b"], b"plain");
        let config = json!({"data": {"a": "text"}, "binaryData": {"b": "AAE="}});
        let data = object_data(Kind::ConfigMap, &config);
        assert_eq!(data["a"], b"text");
        assert_eq!(data["b"], vec![0u8, 1]);
    }

    #[test]
    fn items_select_keys_paths_and_modes() {
        let data = BTreeMap::from([
            ("a".to_string(), b"1".to_vec()),
            ("b".to_string(), b"2".to_vec()),
        ]);
        let all = files(&json!({"defaultMode": 0o400}), &data).expect("files");
        assert_eq!(
            all,
            vec![
                ("a".into(), b"1".to_vec(), 0o400),
                ("b".into(), b"2".to_vec(), 0o400)
            ]
        );
        let some = files(
            &json!({"items": [{"key": "b", "path": "conf/b.txt", "mode": 0o600}]}),
            &data,
        )
        .expect("files");
        assert_eq!(some, vec![("conf/b.txt".into(), b"2".to_vec(), 0o600)]);
        assert!(files(&json!({"items": [{"key": "zz", "path": "x"}]}), &data).is_err());
        assert!(files(&json!({"items": [{"key": "a", "path": "../x"}]}), &data).is_err());
    }

    fn downward_pod() -> Value {
        json!({
            "metadata": {"name": "web-1", "namespace": "shop", "uid": "u-1",
                "labels": {"tier": "front", "app": "web"},
                "annotations": {"note": "say \"hi\"\n\tbye", "empty": ""}},
            "spec": {"containers": [
                {"name": "web", "resources": {
                    "limits": {"cpu": "250m", "memory": "100M"},
                    "requests": {"cpu": "100m"}}},
                {"name": "sidecar"},
            ]},
        })
    }

    fn placement() -> Placement {
        Placement {
            node: "node-1".into(),
            pod_ip: Some(std::net::Ipv4Addr::new(10, 244, 1, 5)),
            host_ip: std::net::Ipv4Addr::new(10, 244, 1, 1),
        }
    }

    const NODE: Allocatable = Allocatable {
        cpu_milli: 2000,
        memory: 4 << 30,
        ephemeral_storage: 10_000_000_000,
    };

    #[test]
    fn downward_api_fields_read_as_the_kubelet_writes_them() {
        let pod = downward_pod();
        let field = |path: &str| pod_field(&pod, &placement(), path).expect(path);
        assert_eq!(field("metadata.name"), "web-1");
        assert_eq!(field("metadata.namespace"), "shop");
        assert_eq!(field("metadata.uid"), "u-1");
        // Sorted, Go-quoted, no trailing newline (fieldpath.FormatMap).
        assert_eq!(field("metadata.labels"), "app=\"web\"\ntier=\"front\"");
        assert_eq!(
            field("metadata.annotations"),
            "empty=\"\"\nnote=\"say \\\"hi\\\"\\n\\tbye\""
        );
        assert_eq!(field("metadata.labels['tier']"), "front");
        assert_eq!(field("metadata.labels['missing']"), "");
        assert_eq!(field("metadata.annotations['note']"), "say \"hi\"\n\tbye");
        assert_eq!(field("spec.nodeName"), "node-1");
        assert_eq!(field("spec.serviceAccountName"), "default");
        assert_eq!(field("status.podIP"), "10.244.1.5");
        assert_eq!(field("status.podIPs"), "10.244.1.5");
        assert_eq!(field("status.hostIP"), "10.244.1.1");
        assert_eq!(field("status.hostIPs"), "10.244.1.1");
        assert!(pod_field(&pod, &placement(), "spec.hostname").is_err());
    }

    #[test]
    fn resource_fields_round_up_and_unset_limits_are_the_nodes() {
        let pod = downward_pod();
        let value = |container: &str, resource: &str, divisor: Option<Value>| {
            container_resource(&pod, container, resource, divisor.as_ref(), &NODE).expect(resource)
        };
        // cpu: whole cores by default, rounded up; 1m gives millicores.
        assert_eq!(value("web", "limits.cpu", None), "1");
        assert_eq!(value("web", "limits.cpu", Some(json!("1m"))), "250");
        assert_eq!(value("web", "requests.cpu", Some(json!("1m"))), "100");
        // memory: bytes by default; 100M is 95.37Mi, which rounds up to 96.
        assert_eq!(value("web", "limits.memory", None), "100000000");
        assert_eq!(value("web", "limits.memory", Some(json!("1Mi"))), "96");
        // An unset request defaults to the limit, as the API server does.
        assert_eq!(value("web", "requests.memory", Some(json!("1M"))), "100");
        // A container without limits: the node's allocatable; without requests: zero.
        assert_eq!(value("sidecar", "limits.cpu", None), "2");
        assert_eq!(value("sidecar", "limits.memory", Some(json!("1Gi"))), "4");
        assert_eq!(
            value("sidecar", "limits.ephemeral-storage", Some(json!("1G"))),
            "10"
        );
        assert_eq!(value("sidecar", "requests.cpu", None), "0");
        assert_eq!(value("sidecar", "requests.ephemeral-storage", None), "0");
        // A zero divisor means unset.
        assert_eq!(value("web", "limits.cpu", Some(json!("0"))), "1");
        assert!(container_resource(&pod, "nope", "limits.cpu", None, &NODE).is_err());
        assert!(container_resource(&pod, "web", "limits.gpu", None, &NODE).is_err());
    }

    #[test]
    fn projected_volumes_merge_their_sources_under_one_mode() {
        let pod = downward_pod();
        let volume = json!({"defaultMode": 0o440, "sources": [
            {"configMap": {"name": "conf", "items": [{"key": "a", "path": "conf/a"}]}},
            {"secret": {"name": "creds"}},
            {"secret": {"name": "absent", "optional": true}},
            {"downwardAPI": {"items": [
                {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                {"path": "cpu", "mode": 0o400, "resourceFieldRef":
                    {"containerName": "web", "resource": "limits.cpu", "divisor": "1m"}}]}},
        ]});
        let config = BTreeMap::from([("a".to_string(), b"1".to_vec())]);
        let secret = BTreeMap::from([("token".to_string(), b"s3cret".to_vec())]);
        let data = [Some(config.clone()), Some(secret), None, None];
        let files = projected_files(&pod, &placement(), &NODE, &volume, &data).expect("files");
        assert_eq!(
            files,
            vec![
                ("conf/a".into(), b"1".to_vec(), 0o440),
                ("token".into(), b"s3cret".to_vec(), 0o440),
                (
                    "labels".into(),
                    b"app=\"web\"\ntier=\"front\"".to_vec(),
                    0o440
                ),
                ("cpu".into(), b"250".to_vec(), 0o400),
            ]
        );
        let clash =
            json!({"sources": [{"configMap": {"name": "c"}}, {"configMap": {"name": "d"}}]});
        let error = projected_files(
            &pod,
            &placement(),
            &NODE,
            &clash,
            &[Some(config.clone()), Some(config)],
        )
        .expect_err("same key twice");
        assert!(error.contains("\"a\""), "{error}");
        let token = json!({"sources": [{"serviceAccountToken": {"path": "token"}}]});
        assert!(projected_files(&pod, &placement(), &NODE, &token, &[None]).is_err());
        // A downwardAPI volume's own mode applies when an item sets none.
        let downward =
            json!({"items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]});
        assert_eq!(
            downward_files(&pod, &placement(), &NODE, &downward, 0o600).expect("files"),
            vec![("name".into(), b"web-1".to_vec(), 0o600)]
        );
    }

    #[test]
    fn memory_volumes_are_sized_as_the_kubelet_sizes_them() {
        let gib = 1u64 << 30;
        let pod = |limits: &[Option<&str>]| {
            let containers: Vec<Value> = limits
                .iter()
                .map(|l| match l {
                    Some(l) => json!({"resources": {"limits": {"memory": l}}}),
                    None => json!({}),
                })
                .collect();
            json!({"spec": {"containers": containers}})
        };
        // The node's memory unless every container has a limit.
        assert_eq!(
            memory_volume_size(&pod(&[Some("1Gi"), None]), None, 8 * gib),
            8 * gib
        );
        assert_eq!(
            memory_volume_size(&pod(&[Some("1Gi"), Some("1Gi")]), None, 8 * gib),
            2 * gib
        );
        // sizeLimit only lowers it.
        let limit = json!("64Mi");
        assert_eq!(
            memory_volume_size(&pod(&[None]), Some(&limit), 8 * gib),
            64 << 20
        );
        let huge = json!("100Gi");
        assert_eq!(
            memory_volume_size(&pod(&[Some("1Gi")]), Some(&huge), 8 * gib),
            gib
        );
    }

    #[tokio::test]
    async fn disk_usage_counts_what_a_directory_holds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let before = disk_usage(dir.path()).await.expect("du");
        std::fs::write(dir.path().join("blob"), vec![7u8; 2 << 20]).expect("write");
        let after = disk_usage(dir.path()).await.expect("du");
        assert!(after >= before + (2 << 20), "{before} then {after}");
        assert_eq!(disk_usage(&dir.path().join("absent")).await, None);
    }

    /// Unmounts whatever a test mounted under its directory, even when an assertion fails.
    struct UnmountOnDrop(std::path::PathBuf);

    impl Drop for UnmountOnDrop {
        fn drop(&mut self) {
            for point in mounts_under(&self.0) {
                let _ = std::process::Command::new("umount")
                    .arg("-l")
                    .arg(point)
                    .status();
            }
        }
    }

    fn is_root() -> bool {
        std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|id| id == "0"))
                .unwrap_or(false)
        })
    }

    #[tokio::test]
    async fn a_memory_volume_is_a_tmpfs_of_its_size_until_unmounted() {
        if !is_root() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI runs as root: mounting must run there"
            );
            eprintln!("skipped: mounting a tmpfs needs root");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let _guard = UnmountOnDrop(dir.path().to_path_buf());
        let volume = dir.path().join("volumes").join("cache");
        std::fs::create_dir_all(&volume).expect("mkdir");
        assert!(mount_tmpfs(&volume, 1 << 20).await.expect("mount"));
        // Twice is once: a restarted kubelet prepares the volume again.
        assert!(!mount_tmpfs(&volume, 1 << 20).await.expect("mount again"));
        assert_eq!(mounts_under(dir.path()), vec![volume.clone()]);
        let table = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let line = table
            .lines()
            .find(|l| l.split(' ').nth(4) == Some(volume.to_str().expect("utf-8")))
            .expect("mounted");
        assert!(
            line.contains(" - tmpfs ") && line.contains("size=1024k"),
            "{line}"
        );
        assert!(
            std::fs::write(volume.join("big"), vec![0u8; 2 << 20]).is_err(),
            "a write past the size fails"
        );
        unmount_all_under(dir.path()).await;
        assert!(mounts_under(dir.path()).is_empty());
        assert!(
            !volume.join("big").exists(),
            "the tmpfs's files went with it"
        );
    }

    #[test]
    fn an_empty_dir_is_everyones_and_an_fs_group_owns_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let plain = dir.path().join("plain");
        std::fs::create_dir(&plain).expect("mkdir");
        empty_dir_permissions(&plain, None).expect("permissions");
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o7777;
        assert_eq!(mode(&plain), 0o777);
        if is_root() {
            use std::os::unix::fs::MetadataExt;
            let shared = dir.path().join("shared");
            std::fs::create_dir(&shared).expect("mkdir");
            empty_dir_permissions(&shared, Some(2000)).expect("permissions");
            assert_eq!(mode(&shared), 0o2777);
            assert_eq!(std::fs::metadata(&shared).expect("meta").gid(), 2000);
            let config = dir.path().join("config");
            std::fs::create_dir_all(config.join("sub")).expect("mkdir");
            std::fs::write(config.join("sub").join("key"), b"v").expect("write");
            give_to_group(&config, 3000).expect("chgrp");
            assert_eq!(
                std::fs::metadata(config.join("sub").join("key"))
                    .expect("meta")
                    .gid(),
                3000
            );
            assert_eq!(mode(&config.join("sub")) & 0o2050, 0o2050);
        }
        let mut files = vec![("k".to_string(), Vec::new(), 0o400)];
        files_for_group(&mut files, None);
        assert_eq!(files[0].2, 0o400);
        files_for_group(&mut files, Some(1));
        assert_eq!(files[0].2, 0o440);
    }

    #[tokio::test]
    async fn a_volume_follows_its_object() {
        let dir = tempfile::tempdir().expect("tempdir");
        let volume = dir.path().join("v");
        write_files(
            &volume,
            &[
                ("a".into(), b"1".to_vec(), 0o644),
                ("b".into(), b"2".to_vec(), 0o644),
            ],
        )
        .await
        .expect("write");
        write_files(&volume, &[("a".into(), b"changed".to_vec(), 0o644)])
            .await
            .expect("write");
        assert_eq!(std::fs::read(volume.join("a")).expect("a"), b"changed");
        assert!(!volume.join("b").exists(), "a removed key disappears");
    }
}
