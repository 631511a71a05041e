//! The `kustomization.yaml` file: the fields kustomize v5 reads, typed; fields shipshape does
//! not render are refused by name rather than ignored.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// One kustomization (or component) file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Kustomization {
    pub api_version: Option<String>,
    pub kind: Option<String>,
    #[allow(dead_code)]
    pub metadata: Option<Value>,
    #[serde(default)]
    pub resources: Vec<String>,
    /// The older name for folder resources.
    #[serde(default)]
    pub bases: Vec<String>,
    #[serde(default)]
    pub components: Vec<String>,
    pub namespace: Option<String>,
    pub name_prefix: Option<String>,
    pub name_suffix: Option<String>,
    #[serde(default)]
    pub common_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub labels: Vec<LabelSet>,
    #[serde(default)]
    pub common_annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub images: Vec<ImageSpec>,
    #[serde(default)]
    pub replicas: Vec<ReplicaSpec>,
    #[serde(default)]
    pub config_map_generator: Vec<GeneratorArgs>,
    #[serde(default)]
    pub secret_generator: Vec<GeneratorArgs>,
    pub generator_options: Option<GeneratorOptions>,
    #[serde(default)]
    pub patches: Vec<PatchSpec>,
    #[serde(default)]
    pub patches_strategic_merge: Vec<String>,
    #[serde(default)]
    pub patches_json6902: Vec<Json6902Spec>,
    pub sort_options: Option<SortOptions>,
    // Read only to be refused by name.
    pub crds: Option<Value>,
    pub helm_charts: Option<Value>,
    pub helm_globals: Option<Value>,
    pub helm_chart_inflation_generator: Option<Value>,
    pub generators: Option<Value>,
    pub transformers: Option<Value>,
    pub validators: Option<Value>,
    pub replacements: Option<Value>,
    pub vars: Option<Value>,
    pub openapi: Option<Value>,
    pub configurations: Option<Value>,
    pub build_metadata: Option<Value>,
    pub name_suffix_hash: Option<Value>,
}

impl Kustomization {
    /// The first field set here that shipshape does not render, and why.
    pub fn refused_field(&self) -> Option<(&'static str, &'static str)> {
        let set = |v: &Option<Value>| match v {
            None | Some(Value::Null) => false,
            Some(Value::Array(items)) => !items.is_empty(),
            Some(Value::Object(map)) => !map.is_empty(),
            Some(_) => true,
        };
        let fields: [(&Option<Value>, &str, &str); 13] = [
            (
                &self.crds,
                "crds",
                "custom schemas for kustomize are not supported",
            ),
            (
                &self.helm_charts,
                "helmCharts",
                "Helm charts are not supported yet: commit the output of `helm template` instead",
            ),
            (
                &self.helm_globals,
                "helmGlobals",
                "Helm charts are not supported yet",
            ),
            (
                &self.helm_chart_inflation_generator,
                "helmChartInflationGenerator",
                "Helm charts are not supported yet",
            ),
            (
                &self.generators,
                "generators",
                "generator plugins are not supported",
            ),
            (
                &self.transformers,
                "transformers",
                "transformer plugins are not supported",
            ),
            (
                &self.validators,
                "validators",
                "validator plugins are not supported",
            ),
            (
                &self.replacements,
                "replacements",
                "replacements are not supported yet",
            ),
            (
                &self.vars,
                "vars",
                "vars are not supported (kustomize deprecated them for replacements)",
            ),
            (
                &self.openapi,
                "openapi",
                "custom OpenAPI schemas are not supported",
            ),
            (
                &self.configurations,
                "configurations",
                "custom transformer configurations are not supported",
            ),
            (
                &self.build_metadata,
                "buildMetadata",
                "buildMetadata is not supported yet",
            ),
            (
                &self.name_suffix_hash,
                "nameSuffixHash",
                "not a kustomization field",
            ),
        ];
        fields
            .into_iter()
            .find(|(value, _, _)| set(value))
            .map(|(_, field, why)| (field, why))
    }
}

/// One entry of `labels`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct LabelSet {
    #[serde(default)]
    pub pairs: BTreeMap<String, String>,
    #[serde(default)]
    pub include_selectors: bool,
    #[serde(default)]
    pub include_templates: bool,
    #[serde(default)]
    pub include_volume_claim_templates: bool,
    #[serde(default)]
    pub fields: Vec<FieldSpecArgs>,
}

/// A field spec a kustomization writes (`labels[].fields`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct FieldSpecArgs {
    pub path: String,
    pub group: Option<String>,
    pub version: Option<String>,
    pub kind: Option<String>,
    #[serde(default)]
    pub create: bool,
}

/// One entry of `images`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ImageSpec {
    pub name: String,
    pub new_name: Option<String>,
    pub new_tag: Option<String>,
    pub digest: Option<String>,
    pub tag_suffix: Option<String>,
}

/// One entry of `replicas`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReplicaSpec {
    pub name: String,
    pub count: i64,
}

/// One `configMapGenerator` or `secretGenerator` entry.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct GeneratorArgs {
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub behavior: Option<String>,
    #[serde(default)]
    pub literals: Vec<String>,
    #[serde(default)]
    pub files: Vec<String>,
    #[serde(default)]
    pub envs: Vec<String>,
    /// The older, single-file form of `envs`.
    pub env: Option<String>,
    pub options: Option<GeneratorOptions>,
    /// A Secret's type (Opaque when unset).
    #[serde(rename = "type")]
    pub secret_type: Option<String>,
}

/// `generatorOptions`, and a generator's own `options`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct GeneratorOptions {
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    pub disable_name_suffix_hash: Option<bool>,
    pub immutable: Option<bool>,
}

impl GeneratorOptions {
    /// These options with `own` (a generator's) laid over them.
    pub fn with(&self, own: Option<&GeneratorOptions>) -> GeneratorOptions {
        let mut merged = self.clone();
        if let Some(own) = own {
            merged.labels.extend(own.labels.clone());
            merged.annotations.extend(own.annotations.clone());
            // Either one saying so is enough, as in kustomize.
            if own.disable_name_suffix_hash == Some(true) {
                merged.disable_name_suffix_hash = Some(true);
            }
            if own.immutable == Some(true) {
                merged.immutable = Some(true);
            }
        }
        merged
    }
}

/// One entry of `patches`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct PatchSpec {
    pub path: Option<String>,
    pub patch: Option<String>,
    pub target: Option<Selector>,
    pub options: Option<PatchOptions>,
}

/// A patch's `options`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct PatchOptions {
    #[serde(default)]
    pub allow_name_change: bool,
    #[serde(default)]
    pub allow_kind_change: bool,
}

/// Which resources a patch applies to.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Selector {
    pub group: Option<String>,
    pub version: Option<String>,
    pub kind: Option<String>,
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub label_selector: Option<String>,
    pub annotation_selector: Option<String>,
}

/// One entry of `patchesJson6902`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Json6902Spec {
    pub target: Option<Selector>,
    pub path: Option<String>,
    pub patch: Option<String>,
}

/// `sortOptions`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct SortOptions {
    pub order: Option<String>,
    pub legacy_sort_options: Option<LegacySortOptions>,
}

/// `sortOptions.legacySortOptions`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct LegacySortOptions {
    #[serde(default)]
    pub order_first: Vec<String>,
    #[serde(default)]
    pub order_last: Vec<String>,
}
