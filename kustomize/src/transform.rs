//! The built-in transformers a kustomization's fields name, in the order kustomize runs them.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use shipshape_api::path::FieldPath;

use crate::fieldspecs::{self, COMMON_ANNOTATIONS, COMMON_LABELS, FieldSpec, REPLICAS};
use crate::kustomization::ImageSpec;
use crate::{Build, Loaded, RenderError, Resource};

impl Build<'_> {
    /// Runs this kustomization's transformers over everything it has accumulated.
    pub(crate) fn transform(
        &mut self,
        loaded: &Loaded,
        resources: &mut Vec<Resource>,
    ) -> Result<(), RenderError> {
        let k = &loaded.kustomization;
        self.strategic_merge_patches(loaded, resources)?;
        self.patches(loaded, resources)?;
        if let Some(namespace) = k.namespace.as_deref().filter(|n| !n.is_empty()) {
            for resource in resources.iter_mut() {
                set_namespace(resource, namespace);
            }
        }
        let prefix = k.name_prefix.as_deref().unwrap_or("");
        let suffix = k.name_suffix.as_deref().unwrap_or("");
        if !prefix.is_empty() || !suffix.is_empty() {
            for resource in resources.iter_mut().filter(|r| renamed_by_prefixes(r)) {
                let name = format!("{prefix}{}{suffix}", resource.name());
                resource.set_name(name);
                if !prefix.is_empty() {
                    resource.prefixes.push(prefix.to_string());
                }
                if !suffix.is_empty() {
                    resource.suffixes.push(suffix.to_string());
                }
            }
        }
        for set in &k.labels {
            let own: Vec<FieldSpec<'_>> = set
                .fields
                .iter()
                .map(|f| FieldSpec {
                    group: f.group.as_deref(),
                    version: f.version.as_deref(),
                    kind: f.kind.as_deref(),
                    path: f.path.trim_start_matches('/'),
                    create: f.create,
                })
                .collect();
            for resource in resources.iter_mut() {
                let claims = |spec: &FieldSpec<'_>| spec.path.contains("volumeClaimTemplates");
                let specs = COMMON_LABELS.iter().filter(|spec| {
                    spec.path == "metadata/labels"
                        || set.include_selectors
                        || (set.include_templates && fieldspecs::is_template(spec) && !claims(spec))
                        || (set.include_volume_claim_templates && claims(spec))
                });
                write_pairs(resource, &set.pairs, specs.chain(own.iter()));
            }
        }
        if !k.common_labels.is_empty() {
            for resource in resources.iter_mut() {
                write_pairs(resource, &k.common_labels, COMMON_LABELS.iter());
            }
        }
        if !k.common_annotations.is_empty() {
            for resource in resources.iter_mut() {
                write_pairs(resource, &k.common_annotations, COMMON_ANNOTATIONS.iter());
            }
        }
        self.json6902_patches(loaded, resources)?;
        for (index, replica) in k.replicas.iter().enumerate() {
            let place = loaded.place(&FieldPath::root().field("replicas").index(index));
            let mut found = false;
            for resource in resources
                .iter_mut()
                .filter(|r| r.names.contains(&replica.name))
            {
                let specs: Vec<&FieldSpec<'_>> =
                    REPLICAS.iter().filter(|s| s.applies_to(resource)).collect();
                for spec in specs {
                    found = true;
                    spec.visit(&mut resource.object, &mut |value| {
                        *value = Value::from(replica.count)
                    });
                }
            }
            if !found {
                return Err(self.error(
                    &place,
                    format!("replicas: no Deployment, ReplicaSet, StatefulSet or ReplicationController is named {}", replica.name),
                ));
            }
        }
        for (index, image) in k.images.iter().enumerate() {
            if image.name.is_empty() {
                let place = loaded.place(&FieldPath::root().field("images").index(index));
                return Err(self.error(&place, "images: name is missing"));
            }
            for resource in resources
                .iter_mut()
                .filter(|r| r.kind() != "CustomResourceDefinition")
            {
                update_images(&mut resource.object, image);
                for path in ["spec/volumes/image", "spec/template/spec/volumes/image"] {
                    crate::fieldspecs::visit_path(&mut resource.object, path, &mut |volume| {
                        if let Some(Value::String(current)) = volume.get_mut("reference")
                            && let Some(updated) = updated_image(current, image)
                        {
                            *current = updated;
                        }
                    });
                }
            }
        }
        Ok(())
    }
}

/// Whether `namePrefix` and `nameSuffix` rename this resource: not CustomResourceDefinitions
/// (their names are fixed by group and plural), APIServices (version.group) or Namespaces.
fn renamed_by_prefixes(resource: &Resource) -> bool {
    !(matches!(resource.kind(), "CustomResourceDefinition" | "Namespace")
        || resource.kind() == "APIService" && resource.group() == "apiregistration.k8s.io")
}

/// The namespace transformer on one resource: namespaced objects move (overwriting), binding
/// subjects named `default` follow, a `v1` Namespace object takes the name, and the service
/// namespaces of APIServices and CRD conversion webhooks follow. (Other subjects and webhook
/// services are re-pointed with name references, once the build is done.)
fn set_namespace(resource: &mut Resource, namespace: &str) {
    resource.transformed = true;
    let target = Value::String(namespace.to_string());
    match resource.kind() {
        "RoleBinding" | "ClusterRoleBinding" => {
            if let Some(subjects) = resource
                .object
                .pointer_mut("/subjects")
                .and_then(Value::as_array_mut)
            {
                for subject in subjects {
                    if subject.get("name").and_then(Value::as_str) == Some("default")
                        && let Some(map) = subject.as_object_mut()
                    {
                        map.insert("namespace".into(), target.clone());
                    }
                }
            }
        }
        "Namespace" if resource.api_version() == "v1" => {
            resource.set_name(namespace.to_string());
        }
        "APIService" if resource.group() == "apiregistration.k8s.io" => {
            if let Some(spec) = resource
                .object
                .pointer_mut("/spec")
                .and_then(Value::as_object_mut)
            {
                let service = spec
                    .entry("service")
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Some(service) = service.as_object_mut() {
                    service.insert("namespace".into(), target.clone());
                }
            }
        }
        "CustomResourceDefinition" => {
            if let Some(service) = resource
                .object
                .pointer_mut("/spec/conversion/webhook/clientConfig/service")
                .and_then(Value::as_object_mut)
            {
                service.insert("namespace".into(), target.clone());
            }
        }
        _ => {}
    }
    if resource.namespaced() {
        resource.set_namespace(namespace.to_string());
    }
}

/// Writes `pairs` into the maps `specs` name (labels or annotations).
fn write_pairs<'a, 'b: 'a>(
    resource: &mut Resource,
    pairs: &BTreeMap<String, String>,
    specs: impl Iterator<Item = &'a FieldSpec<'b>>,
) {
    let specs: Vec<&FieldSpec<'_>> = specs.filter(|s| s.applies_to(resource)).collect();
    for spec in specs {
        spec.visit(&mut resource.object, &mut |value| {
            if !value.is_object() {
                if !value.is_null() {
                    return;
                }
                *value = Value::Object(Map::new());
            }
            if let Some(map) = value.as_object_mut() {
                for (key, v) in pairs {
                    map.insert(key.clone(), Value::String(v.clone()));
                }
            }
        });
    }
}

/// kustomize's image transformer: every `image` of an item in a `containers` or
/// `initContainers` list, anywhere in the object.
fn update_images(value: &mut Value, image: &ImageSpec) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map.iter_mut() {
                if matches!(key.as_str(), "containers" | "initContainers")
                    && let Value::Array(items) = inner
                {
                    for item in items.iter_mut() {
                        if let Some(Value::String(current)) = item.get_mut("image")
                            && let Some(updated) = updated_image(current, image)
                        {
                            *current = updated;
                        }
                    }
                }
                update_images(inner, image);
            }
        }
        Value::Array(items) => {
            for item in items {
                update_images(item, image);
            }
        }
        _ => {}
    }
}

/// `current` with `image`'s new name, tag or digest, when its name is `image.name`.
pub(crate) fn updated_image(current: &str, image: &ImageSpec) -> Option<String> {
    let (rest, digest) = match current.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (current, None),
    };
    let slash = rest.rfind('/').map_or(0, |at| at + 1);
    let (name, tag) = match rest[slash..].rfind(':') {
        Some(at) => (&rest[..slash + at], Some(&rest[slash + at + 1..])),
        None => (rest, None),
    };
    if name != image.name {
        return None;
    }
    let name = image.new_name.as_deref().unwrap_or(name);
    let mut tag = tag.map(str::to_string);
    let mut digest = digest.map(str::to_string);
    if let Some(new_tag) = &image.new_tag {
        tag = Some(new_tag.clone());
        digest = None;
    }
    if let Some(new_digest) = &image.digest {
        digest = Some(new_digest.clone());
        if image.new_tag.is_none() {
            tag = None;
        }
    }
    if let Some(suffix) = &image.tag_suffix {
        tag = Some(format!("{}{suffix}", tag.unwrap_or_default()));
    }
    let mut out = name.to_string();
    if let Some(tag) = tag.filter(|t| !t.is_empty()) {
        out.push(':');
        out.push_str(&tag);
    }
    if let Some(digest) = digest {
        out.push('@');
        out.push_str(&digest);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(
        name: &str,
        new_name: Option<&str>,
        tag: Option<&str>,
        digest: Option<&str>,
    ) -> ImageSpec {
        ImageSpec {
            name: name.into(),
            new_name: new_name.map(Into::into),
            new_tag: tag.map(Into::into),
            digest: digest.map(Into::into),
            tag_suffix: None,
        }
    }

    #[test]
    fn images_match_by_name_and_change_tag_or_digest() {
        let t = image("nginx", None, Some("1.27"), None);
        assert_eq!(updated_image("nginx", &t).as_deref(), Some("nginx:1.27"));
        assert_eq!(
            updated_image("nginx:1.0", &t).as_deref(),
            Some("nginx:1.27")
        );
        assert_eq!(
            updated_image("nginx@sha256:ab", &t).as_deref(),
            Some("nginx:1.27")
        );
        assert_eq!(updated_image("nginxx:1", &t), None);
        assert_eq!(updated_image("docker.io/nginx:1", &t), None);
        let moved = image("localhost:5000/app", Some("reg.io/team/app"), None, None);
        assert_eq!(
            updated_image("localhost:5000/app:v1", &moved).as_deref(),
            Some("reg.io/team/app:v1")
        );
        let pinned = image("app", None, None, Some("sha256:cd"));
        assert_eq!(
            updated_image("app:v1", &pinned).as_deref(),
            Some("app@sha256:cd")
        );
    }
}
