//! The scheduler's decision: which node a pod goes to, or why none can take it.
//!
//! Filter, then score, as Kubernetes' scheduler does. Filters: the node is ready and
//! schedulable, the pod's nodeSelector matches the node's labels, the pod tolerates the node's
//! NoSchedule/NoExecute taints, and its requests fit in allocatable minus what is already bound.
//! Score: least allocated (the emptier node wins), then fewer pods of the same owner (spreading
//! replicas), then the name, so the choice is deterministic. A pod that fits nowhere gets
//! Kubernetes' message, `0/3 nodes are available: 2 Insufficient cpu, 1 node(s) were
//! unschedulable.`

use std::collections::BTreeMap;

/// A taint on a node.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Taint {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
    /// NoSchedule, PreferNoSchedule or NoExecute.
    pub effect: String,
}

/// A pod's toleration.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Toleration {
    /// The key (empty with Exists: every taint).
    pub key: String,
    /// Equal (the default) or Exists.
    pub operator: String,
    /// The value for Equal.
    pub value: String,
    /// The effect tolerated (empty: all).
    pub effect: String,
}

impl Toleration {
    /// Whether this toleration covers `taint`.
    pub fn tolerates(&self, taint: &Taint) -> bool {
        let effect = self.effect.is_empty() || self.effect == taint.effect;
        let key = self.key.is_empty() || self.key == taint.key;
        let value = self.operator == "Exists" || self.value == taint.value;
        effect && key && value
    }
}

/// A node as the scheduler sees it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NodeView {
    /// Its name.
    pub name: String,
    /// Whether it is Ready.
    pub ready: bool,
    /// Whether it is cordoned (`spec.unschedulable`).
    pub unschedulable: bool,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its taints.
    pub taints: Vec<Taint>,
    /// Allocatable cpu in millicores.
    pub cpu_milli: u64,
    /// Allocatable memory in bytes.
    pub memory: u64,
    /// Requests of the pods already bound to it: cpu millicores.
    pub used_cpu_milli: u64,
    /// Requests of the pods already bound to it: memory bytes.
    pub used_memory: u64,
    /// How many pods it may hold (Kubernetes' `pods` allocatable, 110 by default).
    pub max_pods: u32,
    /// Pods bound to it.
    pub used_pods: u32,
    /// Pods bound to it, by owner (for spreading).
    pub pods_by_owner: BTreeMap<String, u32>,
}

/// A pod waiting for a node.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PodRequest {
    /// The owner (for spreading replicas), e.g. `ReplicaSet/web-7d4b9`.
    pub owner: String,
    /// Requested cpu in millicores.
    pub cpu_milli: u64,
    /// Requested memory in bytes.
    pub memory: u64,
    /// The pod's nodeSelector.
    pub node_selector: BTreeMap<String, String>,
    /// The pod's tolerations.
    pub tolerations: Vec<Toleration>,
    /// The one node its required node affinity allows (`matchFields` on `metadata.name`, as
    /// DaemonSet pods carry it), if any.
    pub pinned: Option<String>,
}

/// Why a node was filtered out, in Kubernetes' words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Unfit {
    /// `node(s) were not ready`.
    NotReady,
    /// `node(s) were unschedulable`.
    Unschedulable,
    /// `node(s) didn't match Pod's node affinity/selector`.
    Selector,
    /// `node(s) had untolerated taint`.
    Taint,
    /// `Insufficient cpu`.
    Cpu,
    /// `Insufficient memory`.
    Memory,
    /// `Too many pods`.
    TooManyPods,
}

impl Unfit {
    fn words(self) -> &'static str {
        match self {
            Unfit::NotReady => "node(s) were not ready",
            Unfit::Unschedulable => "node(s) were unschedulable",
            Unfit::Selector => "node(s) didn't match Pod's node affinity/selector",
            Unfit::Taint => "node(s) had untolerated taint",
            Unfit::Cpu => "Insufficient cpu",
            Unfit::Memory => "Insufficient memory",
            Unfit::TooManyPods => "Too many pods",
        }
    }
}

/// The first filter a node fails, or `None` if it can take the pod.
pub fn unfit(pod: &PodRequest, node: &NodeView) -> Option<Unfit> {
    // A node's state is a taint to whoever tolerates it (DaemonSet pods tolerate these).
    let state = |key: &str| Taint {
        key: key.to_string(),
        value: String::new(),
        effect: "NoSchedule".to_string(),
    };
    let tolerated = |taint: &Taint| pod.tolerations.iter().any(|t| t.tolerates(taint));
    if pod
        .pinned
        .as_ref()
        .is_some_and(|pinned| *pinned != node.name)
    {
        return Some(Unfit::Selector);
    }
    if !node.ready && !tolerated(&state("node.kubernetes.io/not-ready")) {
        return Some(Unfit::NotReady);
    }
    if node.unschedulable && !tolerated(&state("node.kubernetes.io/unschedulable")) {
        return Some(Unfit::Unschedulable);
    }
    if pod
        .node_selector
        .iter()
        .any(|(k, v)| node.labels.get(k) != Some(v))
    {
        return Some(Unfit::Selector);
    }
    let blocking = node
        .taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute");
    if blocking
        .clone()
        .any(|taint| !pod.tolerations.iter().any(|t| t.tolerates(taint)))
    {
        return Some(Unfit::Taint);
    }
    if node.used_pods >= node.max_pods {
        return Some(Unfit::TooManyPods);
    }
    if node.used_cpu_milli + pod.cpu_milli > node.cpu_milli {
        return Some(Unfit::Cpu);
    }
    if node.used_memory + pod.memory > node.memory {
        return Some(Unfit::Memory);
    }
    None
}

/// How many feasible nodes are enough to choose among, as Kubernetes'
/// `percentageOfNodesToScore` adapts it: every node in small clusters; in large ones 50% less
/// one point per 125 nodes, at least 5% and at least 100 nodes. Scoring every one of 5,000
/// nodes for each pod costs throughput for a marginally better spread.
pub fn feasible_nodes_to_find(nodes: usize) -> usize {
    if nodes < 100 {
        return nodes;
    }
    let percent = 50usize.saturating_sub(nodes / 125).max(5);
    (nodes * percent / 100).max(100)
}

/// Chooses the node for `pod`, or says (in Kubernetes' words) why none fits: every node is
/// considered.
pub fn schedule(pod: &PodRequest, nodes: &[NodeView]) -> Result<String, String> {
    schedule_from(pod, nodes, 0, nodes.len()).0
}

/// Chooses a node among the first `enough` feasible ones found looking from `start` (wrapping
/// around), as Kubernetes does in large clusters; also returns where the search stopped, so
/// the next pod starts there and every node gets its turn. If none fits, every node has been
/// looked at and the message counts them all.
pub fn schedule_from(
    pod: &PodRequest,
    nodes: &[NodeView],
    start: usize,
    enough: usize,
) -> (Result<String, String>, usize) {
    let mut reasons: BTreeMap<Unfit, usize> = BTreeMap::new();
    let mut best: Option<(u64, u32, &str)> = None;
    let mut feasible = 0;
    let count = nodes.len();
    let mut next = start;
    for offset in 0..count {
        if feasible >= enough.max(1) {
            break;
        }
        let index = (start + offset) % count;
        next = (index + 1) % count;
        let node = &nodes[index];
        if let Some(reason) = unfit(pod, node) {
            *reasons.entry(reason).or_default() += 1;
            continue;
        }
        feasible += 1;
        // Least allocated: the larger share left free (in thousandths, cpu and memory averaged).
        let free = |total: u64, used: u64| {
            ((total - used.min(total)) * 1000)
                .checked_div(total)
                .unwrap_or(0)
        };
        let score = free(node.cpu_milli, node.used_cpu_milli + pod.cpu_milli)
            + free(node.memory, node.used_memory + pod.memory);
        let siblings = node.pods_by_owner.get(&pod.owner).copied().unwrap_or(0);
        let better = match best {
            None => true,
            Some((best_score, best_siblings, best_name)) => {
                (siblings, std::cmp::Reverse(score), node.name.as_str())
                    < (best_siblings, std::cmp::Reverse(best_score), best_name)
            }
        };
        if better {
            best = Some((score, siblings, &node.name));
        }
    }
    let verdict = match best {
        Some((_, _, name)) => Ok(name.to_string()),
        None => {
            let mut parts: Vec<(usize, &str)> =
                reasons.iter().map(|(r, n)| (*n, r.words())).collect();
            parts.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
            let detail: Vec<String> = parts
                .iter()
                .map(|(n, words)| format!("{n} {words}"))
                .collect();
            Err(format!(
                "0/{} nodes are available: {}.",
                nodes.len(),
                if detail.is_empty() {
                    "no nodes".to_string()
                } else {
                    detail.join(", ")
                }
            ))
        }
    };
    (verdict, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cpu: u64, used: u64) -> NodeView {
        NodeView {
            name: name.into(),
            ready: true,
            unschedulable: false,
            labels: BTreeMap::new(),
            taints: Vec::new(),
            cpu_milli: cpu,
            memory: 1 << 30,
            used_cpu_milli: used,
            used_memory: 0,
            max_pods: 110,
            used_pods: 0,
            pods_by_owner: BTreeMap::new(),
        }
    }

    fn pod(cpu: u64) -> PodRequest {
        PodRequest {
            owner: "ReplicaSet/web".into(),
            cpu_milli: cpu,
            memory: 1 << 20,
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            pinned: None,
        }
    }

    #[test]
    fn picks_the_least_allocated_node_and_spreads_replicas() {
        let nodes = [
            node("a", 1000, 800),
            node("b", 1000, 100),
            node("c", 1000, 100),
        ];
        assert_eq!(schedule(&pod(100), &nodes), Ok("b".into()));
        let mut spread = nodes.clone();
        spread[1].pods_by_owner.insert("ReplicaSet/web".into(), 1);
        assert_eq!(
            schedule(&pod(100), &spread),
            Ok("c".into()),
            "a sibling on b: prefer c"
        );
    }

    #[test]
    fn explains_why_nothing_fits_in_kubernetes_words() {
        let mut cordoned = node("c", 4000, 0);
        cordoned.unschedulable = true;
        let mut tainted = node("d", 4000, 0);
        tainted.taints.push(Taint {
            key: "dedicated".into(),
            value: "db".into(),
            effect: "NoSchedule".into(),
        });
        let nodes = [
            node("a", 1000, 900),
            node("b", 1000, 950),
            cordoned,
            tainted.clone(),
        ];
        assert_eq!(
            schedule(&pod(200), &nodes),
            Err("0/4 nodes are available: 2 Insufficient cpu, 1 node(s) had untolerated taint, 1 node(s) were unschedulable.".into())
        );
        let mut tolerant = pod(200);
        tolerant.tolerations.push(Toleration {
            key: "dedicated".into(),
            operator: "Equal".into(),
            value: "db".into(),
            effect: "NoSchedule".into(),
        });
        assert_eq!(schedule(&tolerant, &nodes), Ok("d".into()));
    }

    #[test]
    fn large_clusters_stop_after_enough_feasible_nodes_and_rotate() {
        assert_eq!(feasible_nodes_to_find(3), 3);
        assert_eq!(feasible_nodes_to_find(5000), 500);
        assert_eq!(feasible_nodes_to_find(100), 100);
        let nodes: Vec<NodeView> = (0..10).map(|i| node(&format!("n{i}"), 1000, 0)).collect();
        let (first, next) = schedule_from(&pod(100), &nodes, 0, 3);
        assert_eq!(first, Ok("n0".into()));
        assert_eq!(next, 3, "three nodes looked at");
        let (second, next) = schedule_from(&pod(100), &nodes, next, 3);
        assert_eq!(second, Ok("n3".into()));
        assert_eq!(next, 6);
        let mut full = nodes.clone();
        for node in &mut full {
            node.used_pods = node.max_pods;
        }
        let (none, _) = schedule_from(&pod(100), &full, 4, 3);
        assert_eq!(
            none,
            Err("0/10 nodes are available: 10 Too many pods.".into()),
            "no fit: every node was looked at"
        );
    }

    #[test]
    fn honours_node_selectors() {
        let mut ssd = node("ssd", 1000, 0);
        ssd.labels.insert("disk".into(), "ssd".into());
        let mut wants = pod(100);
        wants.node_selector.insert("disk".into(), "ssd".into());
        assert_eq!(
            schedule(&wants, &[node("hdd", 4000, 0), ssd]),
            Ok("ssd".into())
        );
        assert_eq!(
            schedule(&wants, &[node("hdd", 4000, 0)]),
            Err(
                "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."
                    .into()
            )
        );
    }
}
