//! The DaemonSet decision: one pod on every node that matches the set's nodeSelector and
//! tolerates its taints; none elsewhere; and a rolling update that replaces old pods node by
//! node without more than `maxUnavailable` nodes lacking an available pod.
//!
//! As Kubernetes does it, each pod is tied to its node by required node affinity on
//! `metadata.name` and then placed by the scheduler (which also checks resources), and a
//! DaemonSet's pods tolerate the node states a daemon must survive (not-ready, unreachable,
//! pressure, unschedulable).

use std::collections::BTreeMap;

use crate::decision::{Decision, Seeded};
use crate::scheduler::{Taint, Toleration};

/// The tolerations Kubernetes adds to every DaemonSet pod.
pub fn default_tolerations() -> Vec<Toleration> {
    let exists = |key: &str, effect: &str| Toleration {
        key: key.to_string(),
        operator: "Exists".to_string(),
        value: String::new(),
        effect: effect.to_string(),
    };
    vec![
        exists("node.kubernetes.io/not-ready", "NoExecute"),
        exists("node.kubernetes.io/unreachable", "NoExecute"),
        exists("node.kubernetes.io/disk-pressure", "NoSchedule"),
        exists("node.kubernetes.io/memory-pressure", "NoSchedule"),
        exists("node.kubernetes.io/pid-pressure", "NoSchedule"),
        exists("node.kubernetes.io/unschedulable", "NoSchedule"),
        exists("node.kubernetes.io/not-ready", "NoSchedule"),
    ]
}

/// A node as the DaemonSet decision sees it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DaemonNode {
    /// Its name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its taints.
    pub taints: Vec<Taint>,
}

/// A pod of the DaemonSet.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DaemonPod {
    /// Its name.
    pub name: String,
    /// Its uid.
    pub uid: String,
    /// The node it is for.
    pub node: String,
    /// Made from the current template.
    pub current: bool,
    /// Ready for at least minReadySeconds.
    pub available: bool,
    /// Ready now.
    pub ready: bool,
    /// Failed (it is replaced).
    pub failed: bool,
    /// Being deleted.
    pub terminating: bool,
    /// When it was created (seconds): the oldest of duplicates stays.
    pub created: i64,
}

/// The counts a DaemonSet reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct DaemonSetStatus {
    /// Nodes that should run the daemon.
    pub desired: u32,
    /// Of those, nodes that have a pod.
    pub current: u32,
    /// Nodes running a pod that should not.
    pub misscheduled: u32,
    /// Nodes with a ready pod.
    pub ready: u32,
    /// Nodes with a pod from the current template.
    pub updated: u32,
    /// Nodes with an available pod.
    pub available: u32,
    /// The generation this status describes.
    pub observed_generation: i64,
}

/// What the DaemonSet decision needs to know.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DaemonSetView {
    /// The set's name (pods are named after it).
    pub name: String,
    /// Every node.
    pub nodes: Vec<DaemonNode>,
    /// The template's nodeSelector.
    pub node_selector: BTreeMap<String, String>,
    /// The template's tolerations (the defaults are added).
    pub tolerations: Vec<Toleration>,
    /// `updateStrategy.type: OnDelete`: old pods are replaced only when deleted.
    pub on_delete: bool,
    /// `rollingUpdate.maxUnavailable`, resolved against the desired count.
    pub max_unavailable: u32,
    /// The set's generation.
    pub generation: i64,
    /// The status as last written.
    pub status: DaemonSetStatus,
    /// Its pods.
    pub pods: Vec<DaemonPod>,
}

/// One step the DaemonSet controller takes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DaemonSetAction {
    /// Create a pod for `node`.
    CreatePod {
        /// The new pod's name.
        name: String,
        /// The node it is for.
        node: String,
    },
    /// Delete a pod.
    DeletePod {
        /// Its name.
        name: String,
        /// Its uid.
        uid: String,
    },
    /// Write the status.
    UpdateStatus(DaemonSetStatus),
}

/// `maxUnavailable` as a number of nodes: a percentage of `desired`, rounded up as the
/// DaemonSet controller does, at least 1.
pub fn resolve_max_unavailable(value: Option<&str>, number: Option<i64>, desired: u32) -> u32 {
    let resolved = match (value, number) {
        (Some(text), _) if text.ends_with('%') => {
            let percent: u64 = text.trim_end_matches('%').parse().unwrap_or(0);
            (u64::from(desired) * percent).div_ceil(100)
        }
        (Some(text), _) => text.parse().unwrap_or(1),
        (None, Some(n)) => u64::try_from(n).unwrap_or(1),
        (None, None) => 1,
    };
    u32::try_from(resolved).unwrap_or(u32::MAX).max(1)
}

impl DaemonSetView {
    /// Whether `node` should run the daemon.
    pub fn wants(&self, node: &DaemonNode) -> bool {
        let selected = self
            .node_selector
            .iter()
            .all(|(k, v)| node.labels.get(k) == Some(v));
        let defaults = default_tolerations();
        let tolerated = node
            .taints
            .iter()
            .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
            .all(|taint| {
                self.tolerations
                    .iter()
                    .chain(defaults.iter())
                    .any(|t| t.tolerates(taint))
            });
        selected && tolerated
    }
}

/// Decides what the DaemonSet controller does now; `seed` names new pods.
pub fn decide_daemon_set(view: &DaemonSetView, seed: u64) -> Decision<DaemonSetAction> {
    let mut decision = Decision::idle();
    let mut names = Seeded::new(seed);
    let taken: Vec<&str> = view.pods.iter().map(|p| p.name.as_str()).collect();
    let new_name = |names: &mut Seeded| loop {
        let name = format!("{}-{}", view.name, names.name_suffix());
        if !taken.contains(&name.as_str()) {
            return name;
        }
    };
    let mut by_node: BTreeMap<&str, Vec<&DaemonPod>> = BTreeMap::new();
    for pod in view.pods.iter().filter(|p| !p.terminating) {
        by_node.entry(pod.node.as_str()).or_default().push(pod);
    }
    let wanted: Vec<&DaemonNode> = view.nodes.iter().filter(|n| view.wants(n)).collect();
    let mut status = DaemonSetStatus {
        desired: wanted.len() as u32,
        observed_generation: view.generation,
        ..DaemonSetStatus::default()
    };
    let delete = |pod: &DaemonPod| DaemonSetAction::DeletePod {
        name: pod.name.clone(),
        uid: pod.uid.clone(),
    };

    // Pods on nodes that should not run the daemon (or no longer exist) go.
    for (node, pods) in &by_node {
        if !wanted.iter().any(|n| n.name == *node) {
            status.misscheduled += 1;
            decision.actions.extend(pods.iter().map(|p| delete(p)));
        }
    }
    // Each wanted node: exactly one live pod.
    let mut old_on: Vec<&DaemonPod> = Vec::new();
    let mut unavailable = 0u32;
    for node in &wanted {
        let mut pods: Vec<&DaemonPod> =
            by_node.get(node.name.as_str()).cloned().unwrap_or_default();
        for failed in pods.iter().filter(|p| p.failed) {
            decision.actions.push(delete(failed));
        }
        pods.retain(|p| !p.failed);
        // Of duplicates, keep the current, available, oldest one.
        pods.sort_by(|a, b| {
            b.current
                .cmp(&a.current)
                .then(b.available.cmp(&a.available))
                .then(a.created.cmp(&b.created))
                .then(a.name.cmp(&b.name))
        });
        for extra in pods.iter().skip(1) {
            decision.actions.push(delete(extra));
        }
        match pods.first() {
            None => {
                unavailable += 1;
                decision.actions.push(DaemonSetAction::CreatePod {
                    name: new_name(&mut names),
                    node: node.name.clone(),
                });
            }
            Some(pod) => {
                status.current += 1;
                status.ready += u32::from(pod.ready);
                status.available += u32::from(pod.available);
                status.updated += u32::from(pod.current);
                if !pod.available {
                    unavailable += 1;
                }
                if !pod.current {
                    old_on.push(pod);
                }
            }
        }
    }
    // Rolling update: replace old pods, the unavailable ones first (they cost nothing), then
    // as many available ones as the budget allows.
    if !view.on_delete {
        old_on.sort_by(|a, b| a.available.cmp(&b.available).then(a.name.cmp(&b.name)));
        let mut budget = view.max_unavailable.saturating_sub(unavailable);
        for pod in old_on {
            if !pod.available {
                decision.actions.push(delete(pod));
            } else if budget > 0 {
                budget -= 1;
                decision.actions.push(delete(pod));
            }
        }
    }
    if status != view.status {
        decision.actions.push(DaemonSetAction::UpdateStatus(status));
    }
    decision
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, labels: &[(&str, &str)], taints: &[(&str, &str)]) -> DaemonNode {
        DaemonNode {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            taints: taints
                .iter()
                .map(|(key, effect)| Taint {
                    key: key.to_string(),
                    value: String::new(),
                    effect: effect.to_string(),
                })
                .collect(),
        }
    }

    fn pod(name: &str, node: &str, current: bool, available: bool) -> DaemonPod {
        DaemonPod {
            name: name.into(),
            uid: format!("uid-{name}"),
            node: node.into(),
            current,
            available,
            ready: available,
            failed: false,
            terminating: false,
            created: 0,
        }
    }

    fn view(nodes: Vec<DaemonNode>, pods: Vec<DaemonPod>) -> DaemonSetView {
        DaemonSetView {
            name: "agent".into(),
            nodes,
            node_selector: BTreeMap::new(),
            tolerations: vec![],
            on_delete: false,
            max_unavailable: 1,
            generation: 1,
            status: DaemonSetStatus::default(),
            pods,
        }
    }

    fn creates(decision: &Decision<DaemonSetAction>) -> Vec<String> {
        decision
            .actions
            .iter()
            .filter_map(|a| match a {
                DaemonSetAction::CreatePod { node, .. } => Some(node.clone()),
                _ => None,
            })
            .collect()
    }

    fn deletes(decision: &Decision<DaemonSetAction>) -> Vec<String> {
        decision
            .actions
            .iter()
            .filter_map(|a| match a {
                DaemonSetAction::DeletePod { name, .. } => Some(name.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn one_pod_per_matching_tolerated_node() {
        let mut v = view(
            vec![
                node("n1", &[("disk", "ssd")], &[]),
                node("n2", &[("disk", "hdd")], &[]),
                node("n3", &[("disk", "ssd")], &[("dedicated", "NoSchedule")]),
                node(
                    "n4",
                    &[("disk", "ssd")],
                    &[("node.kubernetes.io/unreachable", "NoExecute")],
                ),
            ],
            vec![pod("agent-old", "n2", true, true)],
        );
        v.node_selector = [("disk".to_string(), "ssd".to_string())].into();
        let decision = decide_daemon_set(&v, 1);
        // n3's taint is not tolerated; n4's unreachable taint is (a daemon stays).
        assert_eq!(creates(&decision), ["n1", "n4"]);
        assert_eq!(deletes(&decision), ["agent-old"], "n2 no longer matches");
        v.tolerations = vec![Toleration {
            key: "dedicated".into(),
            operator: "Exists".into(),
            value: String::new(),
            effect: String::new(),
        }];
        assert_eq!(creates(&decide_daemon_set(&v, 1)), ["n1", "n3", "n4"]);
    }

    #[test]
    fn duplicates_and_failed_pods_are_cleaned_up() {
        let mut failed = pod("agent-f", "n1", true, false);
        failed.failed = true;
        let mut newer = pod("agent-b", "n2", true, true);
        newer.created = 5;
        let v = view(
            vec![node("n1", &[], &[]), node("n2", &[], &[])],
            vec![failed, pod("agent-a", "n2", true, true), newer],
        );
        let decision = decide_daemon_set(&v, 1);
        assert_eq!(creates(&decision), ["n1"]);
        assert_eq!(deletes(&decision), ["agent-f", "agent-b"]);
    }

    #[test]
    fn a_rolling_update_keeps_within_max_unavailable() {
        let nodes = vec![
            node("n1", &[], &[]),
            node("n2", &[], &[]),
            node("n3", &[], &[]),
        ];
        let old = vec![
            pod("a1", "n1", false, true),
            pod("a2", "n2", false, true),
            pod("a3", "n3", false, true),
        ];
        let decision = decide_daemon_set(&view(nodes.clone(), old.clone()), 1);
        assert_eq!(deletes(&decision).len(), 1, "one node at a time");
        // While n1's replacement is not yet available, nothing else goes.
        let mid = vec![pod("b1", "n1", true, false), old[1].clone(), old[2].clone()];
        assert!(deletes(&decide_daemon_set(&view(nodes.clone(), mid), 1)).is_empty());
        // OnDelete: old pods stay.
        let mut on_delete = view(nodes, old);
        on_delete.on_delete = true;
        assert!(deletes(&decide_daemon_set(&on_delete, 1)).is_empty());
        assert_eq!(resolve_max_unavailable(Some("25%"), None, 10), 3);
        assert_eq!(resolve_max_unavailable(None, Some(0), 10), 1);
    }
}
