//! The fleet file (`fleet.yaml` at the top of the repository): which folder each cluster of a
//! fleet syncs, and the waves a new commit rolls out in. Every cluster reads the same file from
//! Git; nothing central decides. Parsed strictly, as manifests are: an unknown or misspelt
//! field is an error naming the line, never a rule silently not applied.
//!
//! ```yaml
//! apiVersion: shipshape.dev/v1alpha1
//! kind: Fleet
//! targets:                      # first match wins; a cluster no target names syncs --path
//! - clusterSelector: {matchLabels: {region: eu}}
//!   path: clusters/eu
//! rollout:
//!   onFailure: Halt             # Halt (default) or Continue
//!   waves:                      # a cluster is in the first wave it matches
//!   - name: canary
//!     clusterNames: [store-0001]
//!     soak: 10m                 # healthy this long before the next wave may take the commit
//!   - name: eu
//!     clusterSelector: {matchLabels: {region: eu}}
//!     maxUnavailable: 10%       # clusters of the wave that may lack the commit (count or %)
//! ```

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::{Deserialize, Serialize};

use crate::path::FieldPath;
use crate::selector::Selector;
use crate::yaml;

/// The fleet file's name, at the top of the repository (not of `--path`: the file says which
/// path each cluster syncs).
pub const FLEET_FILE: &str = "fleet.yaml";

/// The fleet file's `apiVersion`.
pub const FLEET_API_VERSION: &str = "shipshape.dev/v1alpha1";

/// A cluster as the fleet sees it: its name and labels (`up --cluster-name --cluster-label`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ClusterIdentity {
    /// Unique in the fleet; names its status ref.
    pub name: String,
    /// What wave and target selectors match.
    pub labels: BTreeMap<String, String>,
}

/// Which clusters a target or wave is for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Clusters {
    /// These clusters, by name.
    Names(BTreeSet<String>),
    /// The clusters whose labels the selector matches.
    Selector(Selector),
}

impl Clusters {
    /// Whether `cluster` is one of these.
    pub fn contains(&self, cluster: &ClusterIdentity) -> bool {
        match self {
            Clusters::Names(names) => names.contains(&cluster.name),
            Clusters::Selector(selector) => selector.matches(&cluster.labels),
        }
    }
}

/// The folder some clusters sync instead of `--path`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    /// Who syncs it.
    pub clusters: Clusters,
    /// Repository-relative, no `..`.
    pub path: String,
}

/// How many clusters of a wave may lack a commit while the next wave takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MaxUnavailable {
    /// At most this many.
    Count(u32),
    /// At most this percentage of the wave's clusters, rounded down (as Kubernetes rounds
    /// `maxUnavailable`).
    Percent(u32),
}

impl MaxUnavailable {
    /// The count for a wave of `members` clusters.
    pub fn of(self, members: usize) -> usize {
        match self {
            MaxUnavailable::Count(count) => count as usize,
            MaxUnavailable::Percent(percent) => members * percent as usize / 100,
        }
    }
}

/// One step of a rollout.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Wave {
    /// Shown in `fleet status`; unique in the file.
    pub name: String,
    /// Who is in it (a cluster is in the first wave it matches).
    pub clusters: Clusters,
    /// Seconds a cluster of this wave must stay Synced and Healthy on a commit before later
    /// waves may take it.
    pub soak_seconds: i64,
    /// How many of this wave's clusters may lack a commit (down, still progressing) while later
    /// waves take it.
    pub max_unavailable: MaxUnavailable,
}

/// What a cluster that reports a commit Failed or Degraded does to its rollout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize)]
pub enum OnFailure {
    /// The commit goes no further: later waves stay on their last good commit until a newer
    /// commit passes.
    #[default]
    Halt,
    /// The failed cluster counts as unavailable, within `maxUnavailable`.
    Continue,
}

/// A parsed, checked fleet file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Fleet {
    /// Which folder each cluster syncs (first match wins).
    pub targets: Vec<Target>,
    /// The rollout's waves, in order.
    pub waves: Vec<Wave>,
    /// What a failure does.
    pub on_failure: OnFailure,
}

impl Fleet {
    /// The wave `cluster` is in: the first that matches it (`None`: it follows the branch).
    pub fn wave_of(&self, cluster: &ClusterIdentity) -> Option<usize> {
        self.waves.iter().position(|w| w.clusters.contains(cluster))
    }

    /// The folder `cluster` syncs, when a target names it.
    pub fn path_for(&self, cluster: &ClusterIdentity) -> Option<&str> {
        self.targets
            .iter()
            .find(|t| t.clusters.contains(cluster))
            .map(|t| t.path.as_str())
    }
}

/// Why a fleet file was refused: its line and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct FleetError {
    /// The file, as displayed.
    pub file: String,
    /// The line at fault.
    pub line: u32,
    /// What is wrong, and what would be right.
    pub message: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FleetFile {
    api_version: String,
    kind: String,
    #[serde(default)]
    targets: Vec<TargetFile>,
    rollout: Option<RolloutFile>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TargetFile {
    cluster_names: Option<Vec<String>>,
    cluster_selector: Option<LabelSelector>,
    path: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RolloutFile {
    #[serde(default)]
    on_failure: OnFailure,
    waves: Vec<WaveFile>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WaveFile {
    name: String,
    cluster_names: Option<Vec<String>>,
    cluster_selector: Option<LabelSelector>,
    #[serde(default)]
    soak: Option<String>,
    #[serde(default)]
    max_unavailable: Option<serde_json::Value>,
}

/// Parses and checks the fleet file `text`, shown as `display` in errors.
pub fn parse(text: &str, display: &str) -> Result<Fleet, FleetError> {
    let error = |line: u32, message: String| FleetError {
        file: display.to_string(),
        line,
        message,
    };
    let documents = yaml::parse_documents(text).map_err(|e| error(e.line(), e.message()))?;
    let mut roots = documents.into_iter().filter_map(|d| d.root);
    let Some(node) = roots.next() else {
        return Err(error(1, "the fleet file is empty".into()));
    };
    if let Some(extra) = roots.next() {
        return Err(error(extra.line, "a fleet file holds one document".into()));
    }
    let file: FleetFile = serde_path_to_error::deserialize(node.to_json()).map_err(|e| {
        let field = FieldPath::from(e.path());
        let inner = e.inner().to_string();
        let inner = inner
            .split(", expected")
            .next()
            .unwrap_or(&inner)
            .to_string();
        let message = if field.is_root() {
            inner
        } else {
            format!("{field}: {inner}")
        };
        error(node.line_of(&field), message)
    })?;
    let at = |path: &FieldPath| node.line_of(path);
    if file.api_version != FLEET_API_VERSION {
        return Err(error(
            at(&FieldPath::root().field("apiVersion")),
            format!(
                "apiVersion: \"{}\" is not {FLEET_API_VERSION}",
                file.api_version
            ),
        ));
    }
    if file.kind != "Fleet" {
        return Err(error(
            at(&FieldPath::root().field("kind")),
            format!("kind: \"{}\" is not Fleet", file.kind),
        ));
    }
    let mut fleet = Fleet::default();
    for (index, target) in file.targets.into_iter().enumerate() {
        let path = FieldPath::root().field("targets").index(index);
        let clusters = clusters(target.cluster_names, target.cluster_selector, &path)
            .map_err(|(field, why)| error(at(&field), format!("{field}: {why}")))?;
        let folder = target.path.trim_matches('/').to_string();
        if folder.is_empty()
            || target.path.starts_with('/')
            || folder.split('/').any(|part| part == ".." || part == ".")
        {
            let field = path.field("path");
            return Err(error(
                at(&field),
                format!(
                    "{field}: \"{}\" is not a folder inside the repository (relative, no . or ..)",
                    target.path
                ),
            ));
        }
        fleet.targets.push(Target {
            clusters,
            path: folder,
        });
    }
    if let Some(rollout) = file.rollout {
        fleet.on_failure = rollout.on_failure;
        let mut names = BTreeSet::new();
        if rollout.waves.is_empty() {
            let field = FieldPath::root().field("rollout").field("waves");
            return Err(error(
                at(&field),
                format!("{field}: a rollout needs a wave"),
            ));
        }
        for (index, wave) in rollout.waves.into_iter().enumerate() {
            let path = FieldPath::root()
                .field("rollout")
                .field("waves")
                .index(index);
            let field_error =
                |field: FieldPath, why: String| error(at(&field), format!("{field}: {why}"));
            if let Err(why) = crate::names::dns1123_label(&wave.name) {
                return Err(field_error(path.field("name"), why));
            }
            if !names.insert(wave.name.clone()) {
                return Err(field_error(
                    path.field("name"),
                    format!("\"{}\" names two waves", wave.name),
                ));
            }
            let clusters = clusters(wave.cluster_names, wave.cluster_selector, &path)
                .map_err(|(field, why)| field_error(field, why))?;
            let soak_seconds = match &wave.soak {
                None => 0,
                Some(text) => {
                    duration_seconds(text).map_err(|why| field_error(path.field("soak"), why))?
                }
            };
            let max_unavailable = match &wave.max_unavailable {
                None => MaxUnavailable::Count(0),
                Some(value) => max_unavailable(value)
                    .map_err(|why| field_error(path.field("maxUnavailable"), why))?,
            };
            fleet.waves.push(Wave {
                name: wave.name,
                clusters,
                soak_seconds,
                max_unavailable,
            });
        }
    }
    Ok(fleet)
}

/// Exactly one of `clusterNames` and `clusterSelector`.
fn clusters(
    names: Option<Vec<String>>,
    selector: Option<LabelSelector>,
    path: &FieldPath,
) -> Result<Clusters, (FieldPath, String)> {
    match (names, selector) {
        (Some(names), None) => {
            if names.is_empty() {
                return Err((path.field("clusterNames"), "names no cluster".into()));
            }
            for (index, name) in names.iter().enumerate() {
                cluster_name(name).map_err(|why| (path.field("clusterNames").index(index), why))?;
            }
            Ok(Clusters::Names(names.into_iter().collect()))
        }
        (None, Some(selector)) => {
            let field = path.field("clusterSelector");
            Selector::parse(&selector, &field)
                .map(Clusters::Selector)
                .map_err(|problems| match problems.into_iter().next() {
                    Some(problem) => (problem.path, problem.message),
                    None => (field, "is not a label selector".into()),
                })
        }
        (Some(_), Some(_)) => Err((
            path.field("clusterSelector"),
            "give clusterNames or clusterSelector, not both".into(),
        )),
        (None, None) => Err((
            path.clone(),
            "says which clusters with clusterNames or clusterSelector".into(),
        )),
    }
}

/// A cluster's name: a DNS-1123 label, so it can name a Git ref and a DNS entry alike.
pub fn cluster_name(name: &str) -> Result<(), String> {
    crate::names::dns1123_label(name)
}

/// Seconds in a Go-style duration: `90s`, `10m`, `1h30m`, `0`.
pub fn duration_seconds(text: &str) -> Result<i64, String> {
    let bad = || format!("\"{text}\" is not a duration (such as 90s, 10m, 1h30m)");
    if text == "0" {
        return Ok(0);
    }
    let mut total: i64 = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return Err(bad()),
        };
        let value: i64 = number.parse().map_err(|_| bad())?;
        number.clear();
        total = value
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    if !number.is_empty() || text.is_empty() {
        return Err(bad());
    }
    Ok(total)
}

fn max_unavailable(value: &serde_json::Value) -> Result<MaxUnavailable, String> {
    let bad = || format!("{value} is not a count or a percentage (such as 1 or 10%)");
    if let Some(count) = value.as_u64() {
        return u32::try_from(count)
            .map(MaxUnavailable::Count)
            .map_err(|_| bad());
    }
    let text = value.as_str().ok_or_else(bad)?;
    let percent = text.strip_suffix('%').ok_or_else(bad)?;
    let percent: u32 = percent.parse().map_err(|_| bad())?;
    if percent > 100 {
        return Err(bad());
    }
    Ok(MaxUnavailable::Percent(percent))
}

/// Labels as `up --cluster-label` takes them (`region=eu,ring=canary`): what [`parse_labels`]
/// reads back.
pub fn labels_text(labels: &BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.join(",")
}

/// Parses `key=value,key=value` (`up --cluster-label`), checked as Kubernetes labels.
pub fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    for pair in text.split(',').filter(|p| !p.is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(format!("\"{pair}\" is not key=value"));
        };
        crate::names::qualified_name(key).map_err(|why| format!("label key \"{key}\": {why}"))?;
        crate::names::label_value(value)
            .map_err(|why| format!("label {key}: value \"{value}\": {why}"))?;
        labels.insert(key.to_string(), value.to_string());
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "apiVersion: shipshape.dev/v1alpha1\nkind: Fleet\ntargets:\n- clusterSelector: {matchLabels: {region: eu}}\n  path: clusters/eu/\nrollout:\n  waves:\n  - name: canary\n    clusterNames: [store-1]\n    soak: 1h30m\n  - name: eu\n    clusterSelector:\n      matchExpressions:\n      - {key: region, operator: In, values: [eu]}\n    maxUnavailable: 25%\n";

    fn cluster(name: &str, labels: &[(&str, &str)]) -> ClusterIdentity {
        ClusterIdentity {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn reads_targets_and_waves() {
        let fleet = parse(FILE, "fleet.yaml").expect("parses");
        assert_eq!(fleet.on_failure, OnFailure::Halt);
        assert_eq!(fleet.waves.len(), 2);
        assert_eq!(fleet.waves[0].soak_seconds, 5400);
        assert_eq!(fleet.waves[1].max_unavailable, MaxUnavailable::Percent(25));
        assert_eq!(fleet.waves[1].max_unavailable.of(7), 1);
        let canary = cluster("store-1", &[("region", "eu")]);
        let eu = cluster("store-2", &[("region", "eu")]);
        let us = cluster("store-3", &[("region", "us")]);
        assert_eq!(fleet.wave_of(&canary), Some(0), "first match wins");
        assert_eq!(fleet.wave_of(&eu), Some(1));
        assert_eq!(fleet.wave_of(&us), None);
        assert_eq!(fleet.path_for(&eu), Some("clusters/eu"));
        assert_eq!(fleet.path_for(&us), None);
    }

    #[test]
    fn refuses_what_it_would_not_honour() {
        let cases = [
            (
                FILE.replace("soak: 1h30m", "soak: 1d"),
                "fleet.yaml:10: rollout.waves[0].soak: \"1d\" is not a duration (such as 90s, 10m, 1h30m)",
            ),
            (
                FILE.replace("maxUnavailable: 25%", "maxUnavailable: 1.5"),
                "fleet.yaml:15: rollout.waves[1].maxUnavailable: 1.5 is not a count or a percentage (such as 1 or 10%)",
            ),
            (
                FILE.replace("  waves:", "  onFailur: Halt\n  waves:"),
                "fleet.yaml:7: rollout.onFailur: unknown field `onFailur`",
            ),
            (
                FILE.replace("path: clusters/eu/", "path: ../elsewhere"),
                "fleet.yaml:5: targets[0].path: \"../elsewhere\" is not a folder inside the repository (relative, no . or ..)",
            ),
            (
                FILE.replace("name: eu", "name: canary"),
                "fleet.yaml:11: rollout.waves[1].name: \"canary\" names two waves",
            ),
            (
                FILE.replace("    clusterNames: [store-1]\n", ""),
                "fleet.yaml:8: rollout.waves[0]: says which clusters with clusterNames or clusterSelector",
            ),
            (
                FILE.replace("kind: Fleet", "kind: Fleets"),
                "fleet.yaml:2: kind: \"Fleets\" is not Fleet",
            ),
            (
                FILE.replace("  waves:", "  onFailure: Retry\n  waves:"),
                "fleet.yaml:7: rollout.onFailure: unknown variant `Retry`",
            ),
        ];
        for (text, expected) in cases {
            let error = parse(&text, "fleet.yaml").expect_err(expected);
            assert_eq!(error.to_string(), expected);
        }
    }

    #[test]
    fn durations_and_labels() {
        assert_eq!(duration_seconds("0"), Ok(0));
        assert_eq!(duration_seconds("45s"), Ok(45));
        assert_eq!(duration_seconds("2h5m1s"), Ok(7501));
        assert!(duration_seconds("10").is_err());
        assert!(duration_seconds("").is_err());
        assert!(duration_seconds("99999999999999999999h").is_err());
        assert_eq!(
            parse_labels("region=eu,ring=canary").expect("parses").len(),
            2
        );
        assert!(parse_labels("region").is_err());
        let labels = parse_labels("ring=canary,region=eu").expect("parses");
        assert_eq!(labels_text(&labels), "region=eu,ring=canary");
        assert_eq!(parse_labels(&labels_text(&labels)), Ok(labels));
        assert!(parse_labels("bad key=x").is_err());
    }
}
