//! The output order: kustomize's legacy kind order (what `kustomize build` prints unless told
//! otherwise), or the order resources were read in (`sortOptions.order: fifo`).

use crate::Resource;
use crate::kustomization::SortOptions;

/// Kinds printed first, in this order.
const FIRST: [&str; 22] = [
    "Namespace",
    "ResourceQuota",
    "StorageClass",
    "CustomResourceDefinition",
    "ServiceAccount",
    "PodSecurityPolicy",
    "Role",
    "ClusterRole",
    "RoleBinding",
    "ClusterRoleBinding",
    "ConfigMap",
    "Secret",
    "Endpoints",
    "Service",
    "LimitRange",
    "PriorityClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "Deployment",
    "StatefulSet",
    "CronJob",
    "PodDisruptionBudget",
];

/// Kinds printed last, in this order.
const LAST: [&str; 2] = [
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
];

/// How a build's output is ordered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SortOrder {
    /// By kind (`first` kinds, then the rest by kind, then `last`), then by name.
    Legacy {
        first: Vec<String>,
        last: Vec<String>,
    },
    /// As read.
    Fifo,
}

impl Default for SortOrder {
    fn default() -> Self {
        SortOrder::Legacy {
            first: FIRST.iter().map(|s| s.to_string()).collect(),
            last: LAST.iter().map(|s| s.to_string()).collect(),
        }
    }
}

impl SortOrder {
    pub(crate) fn from_options(options: Option<&SortOptions>) -> Result<SortOrder, String> {
        let Some(options) = options else {
            return Ok(SortOrder::default());
        };
        match options.order.as_deref() {
            Some("fifo") => {
                if options.legacy_sort_options.is_some() {
                    return Err("sortOptions: legacySortOptions goes with order: legacy".into());
                }
                Ok(SortOrder::Fifo)
            }
            Some("legacy") | None => Ok(match &options.legacy_sort_options {
                Some(legacy) => SortOrder::Legacy {
                    first: legacy.order_first.clone(),
                    last: legacy.order_last.clone(),
                },
                None => SortOrder::default(),
            }),
            Some(other) => Err(format!("sortOptions.order {other:?} is not legacy or fifo")),
        }
    }
}

/// Sorts `resources` as `order` says (stable, so equal keys keep their read order).
pub(crate) fn sort(resources: &mut [Resource], order: &SortOrder) {
    let SortOrder::Legacy { first, last } = order else {
        return;
    };
    let rank = |r: &Resource| -> (usize, String, String) {
        let kind = r.kind();
        let rank = match (
            first.iter().position(|k| k == kind),
            last.iter().position(|k| k == kind),
        ) {
            (Some(at), _) => at,
            (None, Some(at)) => first.len() + 1 + at,
            (None, None) => first.len(),
        };
        // kustomize's tie-breaks: `group_version_kind` across kinds, `namespace|name` within
        // one (an empty part as `~G`, `~V`, `~X`, `~N`, which sort after letters).
        let or = |s: &str, empty: &str| {
            if s.is_empty() {
                empty.to_string()
            } else {
                s.to_string()
            }
        };
        let gvk = format!(
            "{}_{}_{}",
            or(r.group(), "~G"),
            or(r.version(), "~V"),
            or(kind, "~K")
        );
        let id = format!("{}|{}", or(r.namespace(), "~X"), or(r.name(), "~N"));
        (rank, gvk, id)
    };
    resources.sort_by_cached_key(rank);
}
