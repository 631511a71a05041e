//! `patches`, `patchesStrategicMerge` and `patchesJson6902`: which resources each patch
//! reaches, and applying it.

use regex::Regex;
use serde_json::Value;
use shipshape_api::Selector as LabelSelector;
use shipshape_api::path::FieldPath;
use shipshape_api::yaml;

use crate::kustomization::{PatchOptions, Selector};
use crate::smp::{self, Outcome};
use crate::{Build, Loaded, Place, RenderError, Resource, same_namespace};

/// A patch's documents, read, with where each starts.
struct PatchText {
    documents: Vec<(Value, Place)>,
}

/// One compiled target selector.
pub(crate) struct Target {
    group: Option<Regex>,
    version: Option<Regex>,
    kind: Option<Regex>,
    name: Option<Regex>,
    namespace: Option<Regex>,
    labels: Option<LabelSelector>,
    annotations: Option<LabelSelector>,
}

impl Target {
    pub(crate) fn compile(selector: &Selector) -> Result<Target, String> {
        let field = |value: &Option<String>, name: &str| -> Result<Option<Regex>, String> {
            value
                .as_deref()
                .filter(|v| !v.is_empty())
                .map(|v| {
                    Regex::new(&format!("^(?:{v})$")).map_err(|e| {
                        format!("target.{name}: {v:?} is not a regular expression: {e}")
                    })
                })
                .transpose()
        };
        let selector_of = |value: &Option<String>,
                           name: &str|
         -> Result<Option<LabelSelector>, String> {
            value
                .as_deref()
                .filter(|v| !v.is_empty())
                .map(|v| LabelSelector::parse_text(v).map_err(|e| format!("target.{name}: {e}")))
                .transpose()
        };
        Ok(Target {
            group: field(&selector.group, "group")?,
            version: field(&selector.version, "version")?,
            kind: field(&selector.kind, "kind")?,
            name: field(&selector.name, "name")?,
            namespace: field(&selector.namespace, "namespace")?,
            labels: selector_of(&selector.label_selector, "labelSelector")?,
            annotations: selector_of(&selector.annotation_selector, "annotationSelector")?,
        })
    }

    /// Whether `resource` is selected: its current or any earlier name and namespace count.
    pub(crate) fn selects(&self, resource: &Resource) -> bool {
        let is =
            |regex: &Option<Regex>, value: &str| regex.as_ref().is_none_or(|r| r.is_match(value));
        is(&self.group, resource.group())
            && is(&self.version, resource.version())
            && is(&self.kind, resource.kind())
            && self
                .name
                .as_ref()
                .is_none_or(|r| resource.names.iter().any(|n| r.is_match(n)))
            && self
                .namespace
                .as_ref()
                .is_none_or(|r| resource.namespaces.iter().any(|n| r.is_match(n)))
            && self
                .labels
                .as_ref()
                .is_none_or(|s| s.matches(&resource.labels()))
            && self
                .annotations
                .as_ref()
                .is_none_or(|s| s.matches(&resource.annotations()))
    }
}

impl Build<'_> {
    /// The documents of a patch given as a file (`path`) or inline text, at `place`.
    fn patch_text(
        &mut self,
        loaded: &Loaded,
        path: Option<&str>,
        inline: Option<&str>,
        place: &Place,
    ) -> Result<PatchText, RenderError> {
        let (text, file, first_line) = match (path, inline) {
            (Some(path), None) => {
                let file = self.resolve(&loaded.dir, path, place)?;
                self.within(&loaded.dir, &file, place)?;
                let text = self.read_text(&file, place)?;
                (text, file, 0)
            }
            (None, Some(inline)) => (inline.to_string(), place.file.clone(), place.line),
            (Some(_), Some(_)) => {
                return Err(self.error(place, "a patch has a path or an inline patch, not both"));
            }
            (None, None) => {
                return Err(self.error(place, "a patch needs a path or an inline patch"));
            }
        };
        let at = |line: u32| Place {
            file: file.clone(),
            // An inline patch's lines are counted from its key in the kustomization.
            line: if first_line > 0 { first_line } else { line },
        };
        let documents = yaml::parse_documents(&text).map_err(|e| {
            self.error(
                &at(e.line()),
                format!("the patch is not valid YAML: {}", e.message()),
            )
        })?;
        Ok(PatchText {
            documents: documents
                .into_iter()
                .filter_map(|d| d.root)
                .map(|root| (root.to_json(), at(root.line)))
                .filter(|(value, _)| !value.is_null())
                .collect(),
        })
    }

    /// `patchesStrategicMerge`, `patches` and (later in the order) `patchesJson6902`.
    pub(crate) fn strategic_merge_patches(
        &mut self,
        loaded: &Loaded,
        resources: &mut Vec<Resource>,
    ) -> Result<(), RenderError> {
        for (index, entry) in loaded
            .kustomization
            .patches_strategic_merge
            .iter()
            .enumerate()
        {
            let place = loaded.place(
                &FieldPath::root()
                    .field("patchesStrategicMerge")
                    .index(index),
            );
            let inline = entry.contains('\n') || entry.contains(": ");
            let text = if inline {
                self.patch_text(loaded, None, Some(entry), &place)?
            } else {
                self.patch_text(loaded, Some(entry), None, &place)?
            };
            if text.documents.is_empty() {
                return Err(self.error(&place, "the patch is empty"));
            }
            for (document, at) in text.documents {
                self.apply_by_id(resources, &document, &at, &PatchOptions::default())?;
            }
        }
        Ok(())
    }

    pub(crate) fn patches(
        &mut self,
        loaded: &Loaded,
        resources: &mut Vec<Resource>,
    ) -> Result<(), RenderError> {
        for (index, entry) in loaded.kustomization.patches.iter().enumerate() {
            let place = loaded.place(&FieldPath::root().field("patches").index(index));
            let text = self.patch_text(
                loaded,
                entry.path.as_deref(),
                entry.patch.as_deref(),
                &place,
            )?;
            let options = entry
                .options
                .as_ref()
                .map_or_else(PatchOptions::default, |o| PatchOptions {
                    allow_name_change: o.allow_name_change,
                    allow_kind_change: o.allow_kind_change,
                });
            let json = text.documents.first().is_some_and(|(v, _)| v.is_array());
            match (&entry.target, json) {
                (None, true) => {
                    return Err(self.error(&place, "a JSON 6902 patch needs a target"));
                }
                (None, false) => {
                    for (document, at) in &text.documents {
                        self.apply_by_id(resources, document, at, &options)?;
                    }
                }
                (Some(selector), _) => {
                    if !json && text.documents.len() > 1 {
                        return Err(self.error(
                            &place,
                            "a patches entry with a target holds one strategic merge patch",
                        ));
                    }
                    let target =
                        Target::compile(selector).map_err(|why| self.error(&place, why))?;
                    for (document, at) in &text.documents {
                        self.apply_to_selected(resources, &target, document, at, &options, json)?;
                    }
                }
            }
        }
        Ok(())
    }

    pub(crate) fn json6902_patches(
        &mut self,
        loaded: &Loaded,
        resources: &mut Vec<Resource>,
    ) -> Result<(), RenderError> {
        for (index, entry) in loaded.kustomization.patches_json6902.iter().enumerate() {
            let place = loaded.place(&FieldPath::root().field("patchesJson6902").index(index));
            let Some(selector) = &entry.target else {
                return Err(self.error(&place, "patchesJson6902: target is missing"));
            };
            let text = self.patch_text(
                loaded,
                entry.path.as_deref(),
                entry.patch.as_deref(),
                &place,
            )?;
            let target = Target::compile(selector).map_err(|why| self.error(&place, why))?;
            let options = PatchOptions {
                allow_name_change: true,
                allow_kind_change: true,
            };
            let Some((document, at)) = text.documents.first() else {
                continue;
            };
            // A target that selects nothing is no error, as in kustomize.
            self.apply_to_selected(resources, &target, document, at, &options, true)?;
        }
        Ok(())
    }

    /// A strategic merge patch that names its target by kind and name.
    fn apply_by_id(
        &self,
        resources: &mut Vec<Resource>,
        patch: &Value,
        at: &Place,
        options: &PatchOptions,
    ) -> Result<(), RenderError> {
        let kind = crate::text(patch, "/kind");
        let name = crate::text(patch, "/metadata/name");
        if kind.is_empty() || name.is_empty() {
            return Err(self.error(at, "a strategic merge patch names its target's kind and metadata.name (or the patch entry gives a target)"));
        }
        let api_version = crate::text(patch, "/apiVersion");
        let namespace = crate::text(patch, "/metadata/namespace");
        let matches: Vec<usize> = resources
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                r.ids.iter().any(|(k, n)| k == kind && n == name)
                    && (api_version.is_empty() || r.api_version() == api_version)
                    && (!r.namespaced()
                        || r.namespaces.iter().any(|n| same_namespace(n, namespace)))
            })
            .map(|(index, _)| index)
            .collect();
        let shown = if namespace.is_empty() {
            name.to_string()
        } else {
            format!("{namespace}/{name}")
        };
        match matches.as_slice() {
            [] => Err(self.error(at, format!("the patch targets {kind} {shown}, which no resource defines"))),
            [index] => {
                let index = *index;
                if self.apply_one(&mut resources[index], patch, at, options, false)? {
                    resources.remove(index);
                }
                Ok(())
            }
            _ => Err(self.error(at, format!("the patch targets {kind} {shown}, which more than one resource is: give its namespace"))),
        }
    }

    /// A patch applied to every resource `target` selects; whether it selected any.
    fn apply_to_selected(
        &self,
        resources: &mut Vec<Resource>,
        target: &Target,
        patch: &Value,
        at: &Place,
        options: &PatchOptions,
        json: bool,
    ) -> Result<bool, RenderError> {
        let mut any = false;
        let mut index = 0;
        while index < resources.len() {
            if !target.selects(&resources[index]) {
                index += 1;
                continue;
            }
            any = true;
            if self.apply_one(&mut resources[index], patch, at, options, json)? {
                resources.remove(index);
            } else {
                index += 1;
            }
        }
        Ok(any)
    }

    /// Applies one patch document to one resource; true when the patch deletes it.
    fn apply_one(
        &self,
        resource: &mut Resource,
        patch: &Value,
        at: &Place,
        options: &PatchOptions,
        json: bool,
    ) -> Result<bool, RenderError> {
        let (kind, name) = (resource.kind().to_string(), resource.name().to_string());
        let mut object = resource.object.clone();
        if json {
            let operations: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| self.error(at, format!("not a JSON 6902 patch: {e}")))?;
            json_patch::patch(&mut object, &operations).map_err(|e| {
                self.error(
                    at,
                    format!(
                        "the JSON patch does not apply to {}: {e}",
                        resource.describe()
                    ),
                )
            })?;
        } else {
            // The patch's own name and kind only pick its target.
            let mut patch = patch.clone();
            if let Some(metadata) = patch.get_mut("metadata").and_then(Value::as_object_mut) {
                if !options.allow_name_change {
                    metadata.remove("name");
                }
                if resource.namespaced() {
                    metadata.remove("namespace");
                }
            }
            if let Some(map) = patch.as_object_mut()
                && !options.allow_kind_change
            {
                map.remove("kind");
                map.remove("apiVersion");
            }
            match smp::apply(&mut object, &patch, &kind) {
                Ok(Outcome::Delete) => return Ok(true),
                Ok(Outcome::Merged) => {}
                Err(why) => {
                    return Err(self.error(
                        at,
                        format!("the patch does not apply to {}: {why}", resource.describe()),
                    ));
                }
            }
        }
        let new_name = crate::text(&object, "/metadata/name").to_string();
        let new_kind = crate::text(&object, "/kind").to_string();
        if json {
            // A JSON patch may rename, move or re-kind what it patches; references follow.
            let new_namespace = crate::text(&object, "/metadata/namespace").to_string();
            resource.object = object;
            if new_name != name || new_kind != kind {
                resource.ids.push((new_kind.clone(), new_name.clone()));
            }
            if new_name != name {
                resource.names.push(new_name);
            }
            if resource.namespaces.last() != Some(&new_namespace) {
                resource.namespaces.push(new_namespace);
            }
            return Ok(false);
        }
        if new_name != name && !options.allow_name_change {
            return Err(self.error(
                at,
                format!(
                    "the patch renames {} to {new_name}: set options.allowNameChange",
                    resource.describe()
                ),
            ));
        }
        if new_kind != kind && !options.allow_kind_change {
            return Err(self.error(
                at,
                format!(
                    "the patch changes the kind of {} to {new_kind}: set options.allowKindChange",
                    resource.describe()
                ),
            ));
        }
        resource.object = object;
        if new_name != name || new_kind != kind {
            resource.ids.push((new_kind.clone(), new_name.clone()));
        }
        if new_name != name {
            resource.names.push(new_name);
        }
        Ok(false)
    }
}
