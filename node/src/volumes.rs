//! Pod volumes on a real node: ConfigMap and Secret contents as files (with `items`, modes and
//! the object's updates), emptyDir directories, and hostPath checks. Each volume is a directory
//! under the pod's directory, bind-mounted into the containers that mount it; files are
//! replaced by rename, so a container never reads a half-written file.

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
