//! The scheduler's decision: which node a pod goes to, or why none can take it.
//!
//! Filter, then score, as Kubernetes' scheduler does. Filters: the node is ready and
//! schedulable, the pod's nodeSelector and required node affinity match the node, the pod
//! tolerates the node's NoSchedule/NoExecute taints, its requests fit in allocatable minus what
//! is already bound, and its required pod affinity and anti-affinity (and the anti-affinity of
//! pods already placed) hold in the node's topology domain.
//! Score: least allocated (the emptier node wins), then fewer pods of the same owner (spreading
//! replicas), then the name, so the choice is deterministic. A pod that fits nowhere gets
//! Kubernetes' message, `0/3 nodes are available: 2 Insufficient cpu, 1 node(s) were
//! unschedulable.`

use std::collections::{BTreeMap, BTreeSet};

use shipshape_api::selector::Selector;

/// A pod's owner as the scheduler counts it for spreading (`ReplicaSet/web-7d4b9`). Keys
/// compare by a hash of the name first, so finding an owner among a node's costs integer
/// compares: the scheduler does this for every candidate node of every pod.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OwnerKey {
    hash: u64,
    name: String,
}

impl OwnerKey {
    /// The key of the owner named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        use std::hash::{Hash, Hasher};
        let name = name.into();
        // SipHash with fixed keys: the same on every run, so choices stay deterministic.
        let mut hasher = std::hash::DefaultHasher::new();
        name.hash(&mut hasher);
        Self {
            hash: hasher.finish(),
            name,
        }
    }

    /// The owner's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl From<&str> for OwnerKey {
    fn from(name: &str) -> Self {
        Self::new(name)
    }
}

impl From<String> for OwnerKey {
    fn from(name: String) -> Self {
        Self::new(name)
    }
}

/// How many pods of each owner a node runs, with a 256-bit filter of the owners present: most
/// nodes run none of a given owner's pods, and the filter says so without touching the map
/// (the map lookup, repeated over hundreds of candidate nodes per pod, was most of the
/// scheduler's time at 5,000 nodes).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct OwnerCounts {
    filter: [u64; 4],
    counts: BTreeMap<OwnerKey, u32>,
}

impl OwnerCounts {
    fn bit(owner: &OwnerKey) -> (usize, u64) {
        let bit = (owner.hash >> 32) as usize % 256;
        (bit / 64, 1 << (bit % 64))
    }

    /// Pods of `owner` here.
    pub fn get(&self, owner: &OwnerKey) -> u32 {
        let (word, mask) = Self::bit(owner);
        if self.filter[word] & mask == 0 {
            return 0;
        }
        self.counts.get(owner).copied().unwrap_or(0)
    }

    /// Counts `n` more pods of `owner`.
    pub fn add(&mut self, owner: &OwnerKey, n: u32) {
        if n == 0 {
            return;
        }
        let (word, mask) = Self::bit(owner);
        self.filter[word] |= mask;
        let count = self.counts.entry(owner.clone()).or_insert(0);
        *count = count.saturating_add(n);
    }

    /// Counts `n` fewer pods of `owner` (never below zero).
    pub fn remove(&mut self, owner: &OwnerKey, n: u32) {
        let Some(count) = self.counts.get_mut(owner) else {
            return;
        };
        *count = count.saturating_sub(n);
        if *count == 0 {
            self.counts.remove(owner);
            self.filter = [0; 4];
            for owner in self.counts.keys() {
                let (word, mask) = Self::bit(owner);
                self.filter[word] |= mask;
            }
        }
    }
}

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
    pub pods_by_owner: OwnerCounts,
}

/// How a node selector requirement compares a node label (`Gt`/`Lt` compare integers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NodeOperator {
    /// The label's value is one of the values.
    In,
    /// The label is absent or its value is none of the values.
    NotIn,
    /// The label exists.
    Exists,
    /// The label is absent.
    DoesNotExist,
    /// The label's value is an integer greater than the one value.
    Gt,
    /// The label's value is an integer less than the one value.
    Lt,
}

impl NodeOperator {
    /// Parses Kubernetes' operator name.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "In" => Self::In,
            "NotIn" => Self::NotIn,
            "Exists" => Self::Exists,
            "DoesNotExist" => Self::DoesNotExist,
            "Gt" => Self::Gt,
            "Lt" => Self::Lt,
            _ => return None,
        })
    }
}

/// One requirement of a nodeSelectorTerm, on a label (`matchExpressions`) or on the node's
/// name (`matchFields` with key `metadata.name`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeRequirement {
    /// The label key, or `metadata.name` for a field.
    pub key: String,
    /// The comparison.
    pub operator: NodeOperator,
    /// The values.
    pub values: Vec<String>,
}

impl NodeRequirement {
    fn holds(&self, value: Option<&str>) -> bool {
        let number = |v: &str| v.parse::<i64>().ok();
        let bound = self.values.first().and_then(|v| number(v));
        match self.operator {
            NodeOperator::In => value.is_some_and(|v| self.values.iter().any(|x| x == v)),
            NodeOperator::NotIn => value.is_none_or(|v| self.values.iter().all(|x| x != v)),
            NodeOperator::Exists => value.is_some(),
            NodeOperator::DoesNotExist => value.is_none(),
            NodeOperator::Gt => {
                matches!((value.and_then(number), bound), (Some(v), Some(b)) if v > b)
            }
            NodeOperator::Lt => {
                matches!((value.and_then(number), bound), (Some(v), Some(b)) if v < b)
            }
        }
    }
}

/// A nodeSelectorTerm of required node affinity: every requirement must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeSelectorTerm {
    /// Requirements on node labels.
    pub expressions: Vec<NodeRequirement>,
    /// Requirements on node fields (only `metadata.name` exists).
    pub fields: Vec<NodeRequirement>,
}

impl NodeSelectorTerm {
    /// Whether `node` satisfies the term. A term with no requirement matches no node, as in
    /// Kubernetes.
    pub fn matches(&self, node: &NodeView) -> bool {
        if self.expressions.is_empty() && self.fields.is_empty() {
            return false;
        }
        self.expressions
            .iter()
            .all(|r| r.holds(node.labels.get(&r.key).map(String::as_str)))
            && self
                .fields
                .iter()
                .all(|r| r.holds((r.key == "metadata.name").then_some(node.name.as_str())))
    }
}

/// A required pod affinity or anti-affinity term: pods its selector picks, in its namespaces,
/// attract (affinity) or repel (anti-affinity) within one topology domain (the nodes sharing
/// the value of `topology_key`, one node for `kubernetes.io/hostname`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PodAffinityTerm {
    /// Which pods.
    pub selector: Selector,
    /// In which namespaces (empty: every namespace, as `namespaceSelector: {}` says; a term
    /// that names none is read as the namespace of the pod that carries it).
    pub namespaces: BTreeSet<String>,
    /// The node label that names the domain.
    pub topology_key: String,
}

impl PodAffinityTerm {
    /// Whether the term picks a pod with `labels` in `namespace`.
    pub fn selects(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        (self.namespaces.is_empty() || self.namespaces.contains(namespace))
            && self.selector.matches(labels)
    }
}

/// Where a term's pods are: the topology domains (values of `topology_key`) holding at least
/// one pod it selects. The caller finds them in its pod cache; the filter needs no pods.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Domains {
    /// The node label that names the domain.
    pub topology_key: String,
    /// Its values where a selected pod runs.
    pub values: BTreeSet<String>,
}

impl Domains {
    fn contains(&self, node: &NodeView) -> bool {
        node.labels
            .get(&self.topology_key)
            .is_some_and(|v| self.values.contains(v))
    }
}

/// A pod waiting for a node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PodRequest {
    /// The owner (for spreading replicas), e.g. `ReplicaSet/web-7d4b9`.
    pub owner: OwnerKey,
    /// Requested cpu in millicores.
    pub cpu_milli: u64,
    /// Requested memory in bytes.
    pub memory: u64,
    /// The pod's nodeSelector.
    pub node_selector: BTreeMap<String, String>,
    /// The pod's tolerations.
    pub tolerations: Vec<Toleration>,
    /// The one node it must go to (where its local volume's data is), if any.
    pub pinned: Option<String>,
    /// Its required node affinity: the node must match one term (none: no constraint).
    pub node_affinity: Vec<NodeSelectorTerm>,
    /// Its required pod affinity: the node's domain must hold a selected pod, per term.
    pub affinity: Vec<Domains>,
    /// Its required pod anti-affinity: the node's domain must hold no selected pod, per term.
    pub anti_affinity: Vec<Domains>,
    /// Domains where pods already placed forbid it by their own anti-affinity.
    pub repelled_by: Vec<Domains>,
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
    /// `node(s) didn't match pod affinity rules`.
    Affinity,
    /// `node(s) didn't match pod anti-affinity rules`.
    AntiAffinity,
    /// `node(s) didn't satisfy existing pods anti-affinity rules`.
    ExistingAntiAffinity,
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
            Unfit::Affinity => "node(s) didn't match pod affinity rules",
            Unfit::AntiAffinity => "node(s) didn't match pod anti-affinity rules",
            Unfit::ExistingAntiAffinity => {
                "node(s) didn't satisfy existing pods anti-affinity rules"
            }
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
        || (!pod.node_affinity.is_empty() && !pod.node_affinity.iter().any(|t| t.matches(node)))
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
    // Saturating: a request past any node's size (`100Ei`) fits nowhere, and never wraps.
    if node.used_cpu_milli.saturating_add(pod.cpu_milli) > node.cpu_milli {
        return Some(Unfit::Cpu);
    }
    if node.used_memory.saturating_add(pod.memory) > node.memory {
        return Some(Unfit::Memory);
    }
    if pod.affinity.iter().any(|d| !d.contains(node)) {
        return Some(Unfit::Affinity);
    }
    if pod.anti_affinity.iter().any(|d| d.contains(node)) {
        return Some(Unfit::AntiAffinity);
    }
    if pod.repelled_by.iter().any(|d| d.contains(node)) {
        return Some(Unfit::ExistingAntiAffinity);
    }
    None
}

/// A pod already placed, as [`pod_affinity_domains`] sees it.
#[derive(Clone, Copy, Debug)]
pub struct PlacedPod<'a> {
    /// Its namespace.
    pub namespace: &'a str,
    /// Its labels.
    pub labels: &'a BTreeMap<String, String>,
    /// The labels of the node it is bound to.
    pub node_labels: &'a BTreeMap<String, String>,
    /// Its own required anti-affinity terms.
    pub anti_affinity: &'a [PodAffinityTerm],
}

/// The pod (anti-)affinity part of a [`PodRequest`] for a pod in `namespace` with `labels`:
/// for each of its terms, the domains holding a pod the term selects; and the domains where an
/// existing pod's anti-affinity selects it. A required affinity term that selects nothing yet,
/// but selects the pod itself, is dropped, as Kubernetes lets the first pod of a group in.
pub fn pod_affinity_domains<'a>(
    namespace: &str,
    labels: &BTreeMap<String, String>,
    affinity: &[PodAffinityTerm],
    anti_affinity: &[PodAffinityTerm],
    placed: impl Iterator<Item = PlacedPod<'a>> + Clone,
) -> (Vec<Domains>, Vec<Domains>, Vec<Domains>) {
    let domains = |term: &PodAffinityTerm| Domains {
        topology_key: term.topology_key.clone(),
        values: placed
            .clone()
            .filter(|p| term.selects(p.namespace, p.labels))
            .filter_map(|p| p.node_labels.get(&term.topology_key).cloned())
            .collect(),
    };
    let attract = affinity
        .iter()
        .map(|term| (term, domains(term)))
        .filter(|(term, found)| !(found.values.is_empty() && term.selects(namespace, labels)))
        .map(|(_, found)| found)
        .collect();
    let repel = anti_affinity.iter().map(domains).collect();
    let mut repelled_by: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for other in placed {
        for term in other.anti_affinity {
            if term.selects(namespace, labels)
                && let Some(value) = other.node_labels.get(&term.topology_key)
            {
                repelled_by
                    .entry(term.topology_key.clone())
                    .or_default()
                    .insert(value.clone());
            }
        }
    }
    let repelled_by = repelled_by
        .into_iter()
        .map(|(topology_key, values)| Domains {
            topology_key,
            values,
        })
        .collect();
    (attract, repel, repelled_by)
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
            u64::try_from(
                (u128::from(total - used.min(total)) * 1000)
                    .checked_div(u128::from(total))
                    .unwrap_or(0),
            )
            .unwrap_or(0)
        };
        let score = free(
            node.cpu_milli,
            node.used_cpu_milli.saturating_add(pod.cpu_milli),
        ) + free(node.memory, node.used_memory.saturating_add(pod.memory));
        let siblings = node.pods_by_owner.get(&pod.owner);
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
            pods_by_owner: OwnerCounts::default(),
        }
    }

    fn pod(cpu: u64) -> PodRequest {
        PodRequest {
            owner: "ReplicaSet/web".into(),
            cpu_milli: cpu,
            memory: 1 << 20,
            ..PodRequest::default()
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
        spread[1].pods_by_owner.add(&"ReplicaSet/web".into(), 1);
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

    fn labelled(name: &str, labels: &[(&str, &str)]) -> NodeView {
        let mut n = node(name, 4000, 0);
        n.labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        n.labels
            .insert("kubernetes.io/hostname".into(), name.to_string());
        n
    }

    fn requirement(key: &str, operator: NodeOperator, values: &[&str]) -> NodeRequirement {
        NodeRequirement {
            key: key.into(),
            operator,
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    #[test]
    fn required_node_affinity_needs_one_term_to_match() {
        let nodes = [
            labelled("small", &[("cores", "2"), ("zone", "a")]),
            labelled("big", &[("cores", "16"), ("zone", "b")]),
            labelled("odd", &[("zone", "c")]),
        ];
        let mut wants = pod(100);
        wants.node_affinity = vec![NodeSelectorTerm {
            expressions: vec![
                requirement("cores", NodeOperator::Gt, &["4"]),
                requirement("zone", NodeOperator::NotIn, &["a"]),
            ],
            fields: Vec::new(),
        }];
        assert_eq!(schedule(&wants, &nodes), Ok("big".into()));
        wants.node_affinity.push(NodeSelectorTerm {
            expressions: vec![requirement("cores", NodeOperator::DoesNotExist, &[])],
            fields: Vec::new(),
        });
        wants.node_affinity[0].expressions[0].operator = NodeOperator::Lt;
        wants.node_affinity[0].expressions[0].values = vec!["1".into()];
        assert_eq!(schedule(&wants, &nodes), Ok("odd".into()), "terms are ORed");
        let by_name = PodRequest {
            node_affinity: vec![NodeSelectorTerm {
                expressions: Vec::new(),
                fields: vec![requirement("metadata.name", NodeOperator::In, &["small"])],
            }],
            ..pod(100)
        };
        assert_eq!(schedule(&by_name, &nodes), Ok("small".into()));
        let empty = PodRequest {
            node_affinity: vec![NodeSelectorTerm::default()],
            ..pod(100)
        };
        assert_eq!(
            schedule(&empty, &nodes),
            Err(
                "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector."
                    .into()
            ),
            "an empty term matches nothing"
        );
    }

    fn term(app: &str, topology_key: &str) -> PodAffinityTerm {
        PodAffinityTerm {
            selector: Selector::from_labels(&[("app".to_string(), app.to_string())].into()),
            namespaces: ["demo".to_string()].into(),
            topology_key: topology_key.into(),
        }
    }

    #[test]
    fn anti_affinity_on_hostname_keeps_replicas_apart_both_ways() {
        let nodes = [
            labelled("a", &[("zone", "x")]),
            labelled("b", &[("zone", "x")]),
            labelled("c", &[("zone", "y")]),
        ];
        let web: BTreeMap<String, String> = [("app".to_string(), "web".to_string())].into();
        let db: BTreeMap<String, String> = [("app".to_string(), "db".to_string())].into();
        let apart = [term("web", "kubernetes.io/hostname")];
        // web already on a and c; a new web replica with anti-affinity must go to b.
        let placed = [
            PlacedPod {
                namespace: "demo",
                labels: &web,
                node_labels: &nodes[0].labels,
                anti_affinity: &apart,
            },
            PlacedPod {
                namespace: "demo",
                labels: &web,
                node_labels: &nodes[2].labels,
                anti_affinity: &apart,
            },
        ];
        let (attract, repel, repelled_by) =
            pod_affinity_domains("demo", &web, &[], &apart, placed.iter().copied());
        let replica = PodRequest {
            affinity: attract,
            anti_affinity: repel,
            repelled_by,
            ..pod(100)
        };
        assert_eq!(schedule(&replica, &nodes), Ok("b".into()));
        // A pod without rules of its own is still kept off by theirs if they select it.
        let (_, _, repelled_by) =
            pod_affinity_domains("demo", &web, &[], &[], placed.iter().copied());
        let plain = PodRequest {
            repelled_by,
            ..pod(100)
        };
        assert_eq!(schedule(&plain, &nodes), Ok("b".into()));
        // ...but not in another namespace, nor a pod they do not select.
        let (_, _, none) = pod_affinity_domains("other", &web, &[], &[], placed.iter().copied());
        assert!(none.is_empty());
        let (_, _, none) = pod_affinity_domains("demo", &db, &[], &[], placed.iter().copied());
        assert!(none.is_empty());
        // With every node taken, Kubernetes' words.
        let full = [
            placed[0],
            placed[1],
            PlacedPod {
                namespace: "demo",
                labels: &web,
                node_labels: &nodes[1].labels,
                anti_affinity: &apart,
            },
        ];
        let (attract, repel, repelled_by) =
            pod_affinity_domains("demo", &web, &[], &apart, full.iter().copied());
        assert_eq!(
            schedule(
                &PodRequest {
                    affinity: attract,
                    anti_affinity: repel,
                    repelled_by,
                    ..pod(100)
                },
                &nodes
            ),
            Err("0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules.".into())
        );
    }

    #[test]
    fn affinity_follows_the_selected_pods_domain_and_lets_the_first_in() {
        let nodes = [
            labelled("a", &[("zone", "x")]),
            labelled("b", &[("zone", "y")]),
            labelled("c", &[("zone", "y")]),
        ];
        let db: BTreeMap<String, String> = [("app".to_string(), "db".to_string())].into();
        let web: BTreeMap<String, String> = [("app".to_string(), "web".to_string())].into();
        let near_db = [term("db", "zone")];
        let placed = [PlacedPod {
            namespace: "demo",
            labels: &db,
            node_labels: &nodes[1].labels,
            anti_affinity: &[],
        }];
        let (attract, repel, repelled_by) =
            pod_affinity_domains("demo", &web, &near_db, &[], placed.iter().copied());
        let request = PodRequest {
            affinity: attract,
            anti_affinity: repel,
            repelled_by,
            ..pod(100)
        };
        assert_eq!(
            schedule(&request, &nodes[..1]),
            Err("0/1 nodes are available: 1 node(s) didn't match pod affinity rules.".into())
        );
        assert!(
            matches!(schedule(&request, &nodes).as_deref(), Ok("b") | Ok("c")),
            "zone y"
        );
        // No db anywhere: a web pod waits, but the first db pod of a self-affine group goes in.
        let (attract, _, _) = pod_affinity_domains("demo", &web, &near_db, &[], std::iter::empty());
        assert_eq!(
            attract.len(),
            1,
            "nothing selected yet: the web pod must wait"
        );
        let (attract, _, _) = pod_affinity_domains("demo", &db, &near_db, &[], std::iter::empty());
        assert!(
            attract.is_empty(),
            "the first pod of its own group is let in"
        );
    }

    #[test]
    fn owner_counts_answer_like_a_map_through_their_filter() {
        let mut counts = OwnerCounts::default();
        let owners: Vec<OwnerKey> = (0..300)
            .map(|i| format!("ReplicaSet/app-{i}").into())
            .collect();
        for (i, owner) in owners.iter().enumerate() {
            counts.add(owner, (i % 3) as u32);
        }
        for (i, owner) in owners.iter().enumerate() {
            assert_eq!(counts.get(owner), (i % 3) as u32);
        }
        for owner in &owners {
            counts.remove(owner, 1);
        }
        for (i, owner) in owners.iter().enumerate() {
            assert_eq!(counts.get(owner), (i % 3).saturating_sub(1) as u32);
        }
        for owner in &owners {
            counts.remove(owner, 5);
        }
        assert_eq!(
            counts,
            OwnerCounts::default(),
            "empty again, filter cleared"
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
