//! `configMapGenerator` and `secretGenerator`: ConfigMaps and Secrets made from literals,
//! files and env files, named with a hash of their content so that a change rolls the pods
//! that use them.

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use shipshape_api::path::FieldPath;

use crate::kustomization::{GeneratorArgs, GeneratorOptions};
use crate::{Build, Loaded, Origin, Place, RenderError, Resource, same_namespace};

/// What kustomize remembers of a generated object.
#[derive(Clone, Debug)]
pub(crate) struct Generated {
    /// Whether its name gets the content hash at the end of the build.
    pub hash: bool,
}

/// How a generator meets an object of the same name from a base.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Behavior {
    Create,
    Merge,
    Replace,
}

impl Build<'_> {
    pub(crate) fn generators(
        &mut self,
        loaded: &Loaded,
        resources: &mut Vec<Resource>,
    ) -> Result<(), RenderError> {
        let k = &loaded.kustomization;
        let global = k.generator_options.clone().unwrap_or_default();
        for (field, kind, entries) in [
            ("configMapGenerator", "ConfigMap", &k.config_map_generator),
            ("secretGenerator", "Secret", &k.secret_generator),
        ] {
            for (index, args) in entries.iter().enumerate() {
                let place = loaded.place(&FieldPath::root().field(field).index(index));
                let options = global.with(args.options.as_ref());
                self.generate(loaded, kind, args, &options, &place, resources)?;
            }
        }
        Ok(())
    }

    fn generate(
        &mut self,
        loaded: &Loaded,
        kind: &str,
        args: &GeneratorArgs,
        options: &GeneratorOptions,
        place: &Place,
        resources: &mut Vec<Resource>,
    ) -> Result<(), RenderError> {
        let Some(name) = args.name.as_deref().filter(|n| !n.is_empty()) else {
            return Err(self.error(place, format!("a {kind} generator needs a name")));
        };
        let behavior = match args.behavior.as_deref() {
            None | Some("" | "create") => Behavior::Create,
            Some("merge") => Behavior::Merge,
            Some("replace") => Behavior::Replace,
            Some(other) => {
                return Err(self.error(
                    place,
                    format!("behavior {other:?} is not create, merge or replace"),
                ));
            }
        };
        if kind == "ConfigMap" && args.secret_type.is_some() {
            return Err(self.error(place, "type is for secretGenerator entries"));
        }
        let mut data = BTreeMap::new();
        let mut binary = BTreeMap::new();
        self.sources(loaded, args, place, &mut data, &mut binary)?;
        let secret = kind == "Secret";
        let encode = |v: &[u8]| wrapped_base64(v);
        let data_value: Map<String, Value> = data
            .iter()
            .map(|(k, v)| {
                let v = if secret {
                    encode(v.as_bytes())
                } else {
                    v.clone()
                };
                (k.clone(), Value::String(v))
            })
            .collect();
        let binary_value: Map<String, Value> = binary
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(encode(v))))
            .collect();
        let mut object = json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": name}});
        let map = object.as_object_mut().expect("built as a mapping");
        if secret {
            let mut all = data_value;
            all.extend(binary_value);
            map.insert("data".into(), Value::Object(all));
            let secret_type = args.secret_type.clone().unwrap_or_else(|| "Opaque".into());
            map.insert("type".into(), Value::String(secret_type));
        } else {
            if !data_value.is_empty() {
                map.insert("data".into(), Value::Object(data_value));
            }
            if !binary_value.is_empty() {
                map.insert("binaryData".into(), Value::Object(binary_value));
            }
        }
        if options.immutable == Some(true) {
            map.insert("immutable".into(), Value::Bool(true));
        }
        if let Some(namespace) = &args.namespace {
            object["metadata"]["namespace"] = Value::String(namespace.clone());
        }
        if !options.labels.is_empty() {
            object["metadata"]["labels"] = json!(options.labels);
        }
        if !options.annotations.is_empty() {
            object["metadata"]["annotations"] = json!(options.annotations);
        }
        let hash = options.disable_name_suffix_hash != Some(true);
        let origin = Origin {
            file: place.file.clone(),
            line: place.line,
        };
        let namespace = args.namespace.as_deref().unwrap_or("");
        let matching: Vec<usize> = resources
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                r.kind() == kind
                    && r.api_version() == "v1"
                    && r.names.iter().any(|n| n == name)
                    && r.namespaces.iter().any(|ns| same_namespace(ns, namespace))
            })
            .map(|(at, _)| at)
            .collect();
        if matching.len() > 1 {
            return Err(self.error(place, format!("more than one {kind} named {name} could take this generator's data: give its namespace")));
        }
        let existing = matching.first().copied();
        match (behavior, existing) {
            (Behavior::Create, None) => {
                let mut resource = Resource::new(object, origin);
                resource.generated = Some(Generated { hash });
                resources.push(resource);
            }
            (Behavior::Create, Some(at)) => {
                return Err(self.error(
                    place,
                    format!(
                        "{kind} {name} already exists (from {}:{}): set behavior: merge or replace",
                        self.files.display(&resources[at].origin.file),
                        resources[at].origin.line
                    ),
                ));
            }
            (Behavior::Merge | Behavior::Replace, None) => {
                return Err(self.error(
                    place,
                    format!(
                        "behavior {}: no {kind} {name} to {} in the bases",
                        if behavior == Behavior::Merge {
                            "merge"
                        } else {
                            "replace"
                        },
                        if behavior == Behavior::Merge {
                            "merge into"
                        } else {
                            "replace"
                        }
                    ),
                ));
            }
            (Behavior::Merge | Behavior::Replace, Some(at)) => {
                let base = &mut resources[at];
                let mut merged = object;
                // Name, namespace and place are the base's; labels and annotations add up.
                for field in ["labels", "annotations"] {
                    let mut all =
                        crate::string_map(base.object.pointer(&format!("/metadata/{field}")));
                    all.extend(crate::string_map(
                        merged.pointer(&format!("/metadata/{field}")),
                    ));
                    if !all.is_empty() {
                        merged["metadata"][field] = json!(all);
                    }
                }
                merged["metadata"]["name"] = Value::String(base.name().to_string());
                match base.namespace() {
                    "" => {}
                    ns => merged["metadata"]["namespace"] = Value::String(ns.to_string()),
                }
                if behavior == Behavior::Merge {
                    for field in ["data", "binaryData"] {
                        let mut all = base
                            .object
                            .get(field)
                            .and_then(Value::as_object)
                            .cloned()
                            .unwrap_or_default();
                        if let Some(new) = merged.get(field).and_then(Value::as_object) {
                            all.extend(new.clone());
                        }
                        if !all.is_empty() {
                            merged[field] = Value::Object(all);
                        }
                    }
                    if (!secret || args.secret_type.is_none())
                        && let Some(old_type) = base.object.get("type")
                    {
                        merged["type"] = old_type.clone();
                    }
                    if base.object.get("immutable") == Some(&Value::Bool(true)) {
                        merged["immutable"] = Value::Bool(true);
                    }
                } else {
                    base.origin = origin;
                }
                let was_hashed = base.generated.as_ref().is_some_and(|g| g.hash);
                base.object = merged;
                base.generated = Some(Generated {
                    hash: was_hashed && hash,
                });
            }
        }
        Ok(())
    }

    /// The key-value pairs of `literals`, `envs` and `files`, in kustomize's order.
    fn sources(
        &mut self,
        loaded: &Loaded,
        args: &GeneratorArgs,
        place: &Place,
        data: &mut BTreeMap<String, String>,
        binary: &mut BTreeMap<String, Vec<u8>>,
    ) -> Result<(), RenderError> {
        let mut add = |build: &Build<'_>,
                       key: String,
                       value: Result<String, Vec<u8>>|
         -> Result<(), RenderError> {
            check_key(&key).map_err(|why| build.error(place, why))?;
            if data.contains_key(&key) || binary.contains_key(&key) {
                return Err(build.error(place, format!("the key {key:?} is given twice")));
            }
            match value {
                Ok(text) => data.insert(key, text),
                Err(bytes) => binary.insert(key, bytes).map(|_| String::new()),
            };
            Ok(())
        };
        let envs: Vec<&String> = args.envs.iter().chain(args.env.iter()).collect();
        for env in envs {
            let path = self.resolve(&loaded.dir, env, place)?;
            let text = self.read_text(&path, place)?;
            for (number, line) in text.lines().enumerate() {
                let line = if number == 0 {
                    line.trim_start_matches('\u{feff}')
                } else {
                    line
                };
                // Leading blanks go, trailing ones stay; no quotes are removed, as kustomize reads.
                let line = line.trim_start();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let (key, value) = line.split_once('=').unwrap_or((line, ""));
                if key.is_empty() {
                    continue;
                }
                let _ = number;
                add(self, key.to_string(), Ok(value.to_string()))?;
            }
        }
        for literal in &args.literals {
            let Some((key, value)) = literal.split_once('=').filter(|(k, _)| !k.is_empty()) else {
                return Err(self.error(place, format!("literal {literal:?} is not KEY=VALUE")));
            };
            add(self, key.to_string(), Ok(unquote(value).to_string()))?;
        }
        for file in &args.files {
            let (key, relative) = match file.split_once('=') {
                Some((key, path)) if !key.is_empty() && !path.is_empty() && !path.contains('=') => {
                    (Some(key.to_string()), path)
                }
                Some(_) => {
                    return Err(
                        self.error(place, format!("files: {file:?} is not PATH or KEY=PATH"))
                    );
                }
                None => (None, file.as_str()),
            };
            let path = self.resolve(&loaded.dir, relative, place)?;
            if self.files.is_dir(&path) {
                return Err(self.error(
                    place,
                    format!("{} is a folder: name its files", self.files.display(&path)),
                ));
            }
            let key = key.unwrap_or_else(|| path.rsplit('/').next().unwrap_or(&path).to_string());
            let bytes = self.read_file(&path, place)?;
            let value = String::from_utf8(bytes).map_err(|e| e.into_bytes());
            add(self, key, value)?;
        }
        Ok(())
    }
}

/// Base64 as kustomize writes generated values: in lines of 70 characters, each ended by a
/// line feed, when it is that long.
fn wrapped_base64(bytes: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    if encoded.len() < 70 {
        return encoded;
    }
    let mut out = String::with_capacity(encoded.len() + encoded.len() / 70 + 1);
    for chunk in encoded.as_bytes().chunks(70) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out
}

/// A literal's value without one pair of matching quotes around it.
fn unquote(value: &str) -> &str {
    for quote in ['"', '\''] {
        if value.len() >= 2 && value.starts_with(quote) && value.ends_with(quote) {
            return &value[1..value.len() - 1];
        }
    }
    value
}

/// ConfigMap and Secret keys: letters, digits, `-`, `_` and `.`, as Kubernetes allows.
fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("a data key is empty".into());
    }
    if key.len() > 253
        || !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "{key:?} is not a valid data key (letters, digits, '-', '_' or '.')"
        ));
    }
    if key == "." || key == ".." || key.starts_with("..") {
        return Err(format!("{key:?} is not a valid data key"));
    }
    Ok(())
}

/// Gives every generated object whose hash is on its content-hash suffix, as the last step of
/// the build (so overlays' merges count).
pub(crate) fn add_hashes(resources: &mut [Resource]) {
    for resource in resources.iter_mut() {
        if !resource.generated.as_ref().is_some_and(|g| g.hash) {
            continue;
        }
        if let Some(hash) = content_hash(&resource.object) {
            let name = format!("{}-{hash}", resource.name());
            resource.set_name(name);
        }
    }
}

/// kustomize's content hash of a ConfigMap or Secret: SHA-256 of a JSON encoding of its kind,
/// data (and binary data, or type), with Go's escaping, as ten characters.
pub(crate) fn content_hash(object: &Value) -> Option<String> {
    let kind = crate::text(object, "/kind");
    let mut encoded = Map::new();
    encoded.insert("kind".into(), Value::String(kind.to_string()));
    encoded.insert("name".into(), Value::String(String::new()));
    // A field that is missing hashes as an empty string, as kustomize's hasher reads it.
    let field = |name: &str| {
        object
            .get(name)
            .cloned()
            .unwrap_or(Value::String(String::new()))
    };
    encoded.insert("data".into(), field("data"));
    match kind {
        "ConfigMap" => {
            if let Some(binary) = object.get("binaryData").filter(|b| b.is_object()) {
                encoded.insert("binaryData".into(), binary.clone());
            }
        }
        "Secret" => {
            encoded.insert("type".into(), field("type"));
            if let Some(string_data) = object.get("stringData").filter(|b| b.is_object()) {
                encoded.insert("stringData".into(), string_data.clone());
            }
        }
        _ => return None,
    }
    let json = serde_json::to_string(&Value::Object(encoded)).ok()?;
    // Go's encoding/json escapes these; the hash is over its bytes.
    let json = json
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029");
    let digest = Sha256::digest(json.as_bytes());
    let hex: String = digest.iter().take(5).map(|b| format!("{b:02x}")).collect();
    Some(
        hex.chars()
            .map(|c| match c {
                '0' => 'g',
                '1' => 'h',
                '3' => 'k',
                'a' => 'm',
                'e' => 't',
                c => c,
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_match_kustomize() {
        // Each name as kustomize v5.5 prints it for the same generator.
        let cases = [
            (
                json!({"kind": "ConfigMap", "data": {"x": "1"}}),
                "hmg6f82fh6",
            ),
            (
                json!({"kind": "ConfigMap", "data": {"y": "2"}, "binaryData": {"bin.dat": "AAH/"}}),
                "b8mc97hb4d",
            ),
            (
                json!({"kind": "Secret", "data": {"x": "MQ=="}, "type": "Opaque"}),
                "bf2648c599",
            ),
            (
                json!({"kind": "Secret", "data": {"x": "MQ=="}, "type": "kubernetes.io/tls"}),
                "79cg2k2tfk",
            ),
            (
                json!({"kind": "ConfigMap", "data": {"x": "<a&b>"}}),
                "t87khbg59f",
            ),
            // kustomize's own hasher tests.
            (json!({"kind": "ConfigMap"}), "6ct58987ht"),
            (
                json!({"kind": "ConfigMap", "data": {"one": ""}}),
                "9g67k2htb6",
            ),
            (json!({"kind": "Secret", "type": "my-type"}), "5gmgkf8578"),
        ];
        for (object, hash) in cases {
            assert_eq!(content_hash(&object).as_deref(), Some(hash), "{object}");
        }
    }

    #[test]
    fn literals_lose_one_pair_of_quotes() {
        assert_eq!(unquote("\"a b\""), "a b");
        assert_eq!(unquote("'x'"), "x");
        assert_eq!(unquote("\"x'"), "\"x'");
        assert!(check_key("a.b-c_d").is_ok());
        assert!(check_key("a b").is_err());
    }
}
