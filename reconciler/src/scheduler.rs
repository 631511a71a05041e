//! The scheduler's decision: which node a pod goes to, or why none can take it.
//!
//! Filter, then score, as Kubernetes' scheduler does. Filters: the node is ready and
//! schedulable, the pod's nodeSelector and required node affinity match the node, the pod
//! tolerates the node's NoSchedule/NoExecute taints, its requests fit in allocatable minus what
//! is already bound, and its required pod affinity and anti-affinity (and the anti-affinity of
//! pods already placed) hold in the node's topology domain. A pod that binds host ports
//! (hostNetwork) does not go where a placed pod already binds a conflicting one (NodePorts).
//! Topology spread constraints with DoNotSchedule are a filter too, measured across all nodes
//! as Kubernetes' PodTopologySpread does.
//! Score: a pod with preferred node or pod affinity, ScheduleAnyway spread constraints, or
//! placed pods whose preferences concern it is scored as kube-scheduler scores (each plugin
//! normalised to 0-100, summed with the default weights). Every other pod takes a fast path:
//! fewer pods of the same owner (spreading replicas), then least allocated, then the name,
//! so the choice is deterministic. A pod that fits nowhere gets
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

/// The address Kubernetes reads an empty `hostIP` as: every address of the node.
pub const BIND_ALL_HOST_IP: &str = "0.0.0.0";

/// A port a pod binds on its node's network, Kubernetes' defaults applied (`hostIP`
/// 0.0.0.0, `protocol` TCP). Ordered by protocol and port first, so a node's ports on one
/// (protocol, port) are found by one range look-up whatever their addresses.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostPort {
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    /// The port number.
    pub port: u16,
    /// The address it binds ([`BIND_ALL_HOST_IP`] for every one).
    pub ip: String,
}

impl HostPort {
    /// A port as a pod spec gives it, with Kubernetes' defaults for what is left empty.
    pub fn new(ip: &str, protocol: &str, port: u16) -> Self {
        Self {
            protocol: if protocol.is_empty() { "TCP" } else { protocol }.to_string(),
            port,
            ip: if ip.is_empty() { BIND_ALL_HOST_IP } else { ip }.to_string(),
        }
    }
}

/// The host ports the pods placed on a node bind, each counted per pod (a pod bound by hand
/// may duplicate one, and removing it must not free the other's). Kept up to date as pods
/// come and go, as a node's cpu and memory usage are, so no pod scan is needed to check.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct UsedPorts {
    ports: BTreeMap<HostPort, u32>,
}

impl UsedPorts {
    /// Counts `ports` as bound by one more pod.
    pub fn add(&mut self, ports: &[HostPort]) {
        for port in ports {
            let count = self.ports.entry(port.clone()).or_insert(0);
            *count = count.saturating_add(1);
        }
    }

    /// Counts `ports` as bound by one pod fewer (never below zero).
    pub fn remove(&mut self, ports: &[HostPort]) {
        for port in ports {
            if let Some(count) = self.ports.get_mut(port) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    self.ports.remove(port);
                }
            }
        }
    }

    /// Whether no port is bound.
    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }

    /// Whether binding `wanted` would clash with a port already bound, as Kubernetes'
    /// `HostPortInfo.CheckConflict` decides: same protocol and port, and the same address or
    /// either of them 0.0.0.0.
    pub fn conflicts(&self, wanted: &HostPort) -> bool {
        if wanted.port == 0 {
            return false;
        }
        let from = HostPort {
            protocol: wanted.protocol.clone(),
            port: wanted.port,
            ip: String::new(),
        };
        self.ports
            .range(from..)
            .take_while(|(p, _)| p.protocol == wanted.protocol && p.port == wanted.port)
            .any(|(p, _)| {
                wanted.ip == BIND_ALL_HOST_IP || p.ip == BIND_ALL_HOST_IP || p.ip == wanted.ip
            })
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
    /// The host ports its pods bind.
    pub used_ports: UsedPorts,
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
    /// Its preferred node affinity: each term a node matches adds its weight to the node.
    pub preferred_node_affinity: Vec<WeightedNodeTerm>,
    /// What preferred pod (anti-)affinity adds per topology domain, its own terms and those
    /// of placed pods that select it ([`pod_preference_weights`]).
    pub preferred_pods: Vec<DomainWeights>,
    /// Its topologySpreadConstraints, with the pods they count ([`count_spread_pods`]).
    pub spread: Vec<SpreadConstraint>,
    /// The host ports it binds (empty for most pods, which then skip the NodePorts filter).
    pub host_ports: Vec<HostPort>,
}

impl PodRequest {
    /// Whether choosing among feasible nodes needs kube-scheduler's scoring plugins: the pod
    /// has preferences, soft spread constraints, or placed pods prefer (or avoid) it. Other
    /// pods take the one-pass fast path (fewer siblings, then least allocated).
    pub fn needs_scoring(&self) -> bool {
        !self.preferred_node_affinity.is_empty()
            || !self.preferred_pods.is_empty()
            || self
                .spread
                .iter()
                .any(|c| c.when_unsatisfiable == WhenUnsatisfiable::ScheduleAnyway)
    }
}

/// A preferred node affinity term (`preferredDuringSchedulingIgnoredDuringExecution`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct WeightedNodeTerm {
    /// 1 to 100 (validation refuses others).
    pub weight: i64,
    /// The preference (an empty term matches no node).
    pub term: NodeSelectorTerm,
}

/// A preferred pod affinity or anti-affinity term.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WeightedPodTerm {
    /// 1 to 100 (validation refuses others).
    pub weight: i64,
    /// Which pods, where.
    pub term: PodAffinityTerm,
}

/// What preferred pod (anti-)affinity adds to a node in each domain of one topology key: the
/// node scores the weight of the value it carries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct DomainWeights {
    /// The node label that names the domain.
    pub topology_key: String,
    /// Summed weight (negative for anti-affinity) per label value.
    pub weights: BTreeMap<String, i64>,
}

/// What a topology spread constraint does when no node keeps the skew within `max_skew`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WhenUnsatisfiable {
    /// A filter: a node whose domain would exceed the skew is unfit.
    #[default]
    DoNotSchedule,
    /// A score: nodes in less crowded domains are preferred.
    ScheduleAnyway,
}

/// One of a pod's `topologySpreadConstraints`, with the pods it counts, as Kubernetes'
/// PodTopologySpread plugin reads it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SpreadConstraint {
    /// How much more matching pods one domain may hold than the emptiest (at least 1).
    pub max_skew: u32,
    /// The node label that names the domain.
    pub topology_key: String,
    /// Filter or score.
    pub when_unsatisfiable: WhenUnsatisfiable,
    /// With fewer eligible domains than this, the global minimum counts as 0 (1 by default).
    pub min_domains: u32,
    /// `nodeAffinityPolicy: Honor` (the default): only nodes matching the pod's nodeSelector
    /// and required node affinity count.
    pub honour_node_affinity: bool,
    /// `nodeTaintsPolicy: Honor` (default Ignore): only nodes whose taints the pod tolerates
    /// count.
    pub honour_taints: bool,
    /// `labelSelector` (none selects nothing).
    pub selector: Selector,
    /// `matchLabelKeys` resolved against the pod's labels: selected pods carry these too.
    pub match_labels: BTreeMap<String, String>,
    /// Selected pods (in the pod's namespace, not terminating) per node name.
    pub matching: BTreeMap<String, u32>,
    /// Whether the pod itself is selected (it adds one to the domain it goes to).
    pub self_match: bool,
}

impl SpreadConstraint {
    /// Whether the constraint counts a pod with `labels` (of the pod's namespace).
    pub fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        self.selector.matches(labels)
            && self
                .match_labels
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v))
    }
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
    /// `node(s) didn't have free ports for the requested pod ports`.
    Ports,
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
    /// `node(s) didn't match pod topology spread constraints (missing required label)`.
    SpreadLabel,
    /// `node(s) didn't match pod topology spread constraints`.
    Spread,
}

impl Unfit {
    fn words(self) -> &'static str {
        match self {
            Unfit::NotReady => "node(s) were not ready",
            Unfit::Unschedulable => "node(s) were unschedulable",
            Unfit::Selector => "node(s) didn't match Pod's node affinity/selector",
            Unfit::Taint => "node(s) had untolerated taint",
            Unfit::Ports => "node(s) didn't have free ports for the requested pod ports",
            Unfit::Cpu => "Insufficient cpu",
            Unfit::Memory => "Insufficient memory",
            Unfit::TooManyPods => "Too many pods",
            Unfit::Affinity => "node(s) didn't match pod affinity rules",
            Unfit::AntiAffinity => "node(s) didn't match pod anti-affinity rules",
            Unfit::ExistingAntiAffinity => {
                "node(s) didn't satisfy existing pods anti-affinity rules"
            }
            Unfit::SpreadLabel => {
                "node(s) didn't match pod topology spread constraints (missing required label)"
            }
            Unfit::Spread => "node(s) didn't match pod topology spread constraints",
        }
    }
}

/// A node's state as the taint Kubernetes' node lifecycle controller would put on it
/// (DaemonSet pods tolerate these).
fn state_taint(key: &str) -> Taint {
    Taint {
        key: key.to_string(),
        value: String::new(),
        effect: "NoSchedule".to_string(),
    }
}

/// Whether the pod's nodeSelector and required node affinity match `node`.
fn node_matches(pod: &PodRequest, node: &NodeView) -> bool {
    pod.node_selector
        .iter()
        .all(|(k, v)| node.labels.get(k) == Some(v))
        && (pod.node_affinity.is_empty() || pod.node_affinity.iter().any(|t| t.matches(node)))
}

/// Whether the pod tolerates every NoSchedule/NoExecute taint of `node`, its state included.
fn taints_tolerated(pod: &PodRequest, node: &NodeView) -> bool {
    let tolerated = |taint: &Taint| pod.tolerations.iter().any(|t| t.tolerates(taint));
    (node.ready || tolerated(&state_taint("node.kubernetes.io/not-ready")))
        && (!node.unschedulable || tolerated(&state_taint("node.kubernetes.io/unschedulable")))
        && node
            .taints
            .iter()
            .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
            .all(tolerated)
}

/// Whether `node`'s pods count toward `constraint`'s domains (its inclusion policies), given
/// that it carries every key in `keys`.
fn counts_for(
    pod: &PodRequest,
    constraint: &SpreadConstraint,
    keys: &[&str],
    node: &NodeView,
) -> bool {
    keys.iter().all(|k| node.labels.contains_key(*k))
        && (!constraint.honour_node_affinity || node_matches(pod, node))
        && (!constraint.honour_taints || taints_tolerated(pod, node))
}

/// Matching pods per domain of one constraint among the nodes that count, and how many
/// domains there are.
fn domain_counts<'a>(
    pod: &PodRequest,
    constraint: &SpreadConstraint,
    keys: &[&str],
    nodes: &'a [NodeView],
) -> BTreeMap<&'a str, u64> {
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    for node in nodes {
        if !counts_for(pod, constraint, keys, node) {
            continue;
        }
        let Some(value) = node.labels.get(&constraint.topology_key) else {
            continue;
        };
        let here = constraint.matching.get(&node.name).copied().unwrap_or(0);
        let count = counts.entry(value.as_str()).or_insert(0);
        *count = count.saturating_add(u64::from(here));
    }
    counts
}

/// The DoNotSchedule constraints of a pod, counted once per pod over every node (as
/// Kubernetes' PreFilter does): per constraint, matching pods per domain and the global
/// minimum the skew is measured from.
#[derive(Default)]
struct HardSpread<'a> {
    constraints: Vec<(&'a SpreadConstraint, BTreeMap<&'a str, u64>, u64)>,
}

impl<'a> HardSpread<'a> {
    fn new(pod: &'a PodRequest, nodes: &'a [NodeView]) -> Self {
        let hard: Vec<&SpreadConstraint> = pod
            .spread
            .iter()
            .filter(|c| c.when_unsatisfiable == WhenUnsatisfiable::DoNotSchedule)
            .collect();
        // A node counts only if it carries every hard constraint's key.
        let keys: Vec<&str> = hard.iter().map(|c| c.topology_key.as_str()).collect();
        let constraints = hard
            .into_iter()
            .map(|c| {
                let counts = domain_counts(pod, c, &keys, nodes);
                let minimum = if counts.len() < c.min_domains.max(1) as usize {
                    0
                } else {
                    // No domain at all: nothing to be skewed against.
                    counts.values().copied().min().unwrap_or(u64::MAX)
                };
                (c, counts, minimum)
            })
            .collect();
        Self { constraints }
    }

    /// Why `node` would break a constraint: it lacks the key, or its domain would hold more
    /// than `max_skew` above the minimum.
    fn unfit(&self, node: &NodeView) -> Option<Unfit> {
        for (constraint, counts, minimum) in &self.constraints {
            let Some(value) = node.labels.get(&constraint.topology_key) else {
                return Some(Unfit::SpreadLabel);
            };
            let here = counts
                .get(value.as_str())
                .copied()
                .unwrap_or(0)
                .saturating_add(u64::from(constraint.self_match));
            if here.saturating_sub(*minimum) > u64::from(constraint.max_skew) {
                return Some(Unfit::Spread);
            }
        }
        None
    }
}

/// The first filter a node fails, or `None` if it can take the pod. Spread constraints are
/// measured across all nodes, so [`schedule_from`] checks them; this is every other filter.
pub fn unfit(pod: &PodRequest, node: &NodeView) -> Option<Unfit> {
    unfit_among(pod, node, &HardSpread::default())
}

fn unfit_among(pod: &PodRequest, node: &NodeView, spread: &HardSpread<'_>) -> Option<Unfit> {
    let state = state_taint;
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
    if !node_matches(pod, node) {
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
    // Kubernetes' NodePorts runs after TaintToleration and NodeAffinity, before
    // NodeResourcesFit. A pod without host ports skips it: the loop is over its own ports.
    if pod.host_ports.iter().any(|p| node.used_ports.conflicts(p)) {
        return Some(Unfit::Ports);
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
    // Kubernetes runs PodTopologySpread before InterPodAffinity.
    if let Some(reason) = spread.unfit(node) {
        return Some(reason);
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
    /// The name of the node it is bound to.
    pub node: &'a str,
    /// Whether it is being deleted (spread constraints do not count it).
    pub terminating: bool,
    /// Its own required affinity terms (they attract, with weight 1, pods they select).
    pub affinity: &'a [PodAffinityTerm],
    /// Its own preferred affinity terms.
    pub preferred_affinity: &'a [WeightedPodTerm],
    /// Its own preferred anti-affinity terms.
    pub preferred_anti_affinity: &'a [WeightedPodTerm],
}

/// Kubernetes' `hardPodAffinityWeight`: how much a placed pod's required affinity term that
/// selects the incoming pod adds to the nodes of its domain.
const HARD_POD_AFFINITY_WEIGHT: i64 = 1;

/// The preferred pod (anti-)affinity part of a [`PodRequest`], as Kubernetes'
/// InterPodAffinity score sums it: for each placed pod, the weight of each of the pod's
/// preferred terms that selects it (negative for anti-affinity) goes to that pod's domain;
/// and so does the weight of each of the placed pod's own preferred terms (and, with weight 1,
/// its required affinity terms) that select the incoming pod. Empty when nothing applies.
pub fn pod_preference_weights<'a>(
    namespace: &str,
    labels: &BTreeMap<String, String>,
    preferred_affinity: &[WeightedPodTerm],
    preferred_anti_affinity: &[WeightedPodTerm],
    placed: impl Iterator<Item = PlacedPod<'a>>,
) -> Vec<DomainWeights> {
    let mut weights: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    let mut add = |term: &PodAffinityTerm, node_labels: &BTreeMap<String, String>, w: i64| {
        if let Some(value) = node_labels.get(&term.topology_key) {
            let sum = weights
                .entry(term.topology_key.clone())
                .or_default()
                .entry(value.clone())
                .or_insert(0);
            *sum = sum.saturating_add(w);
        }
    };
    for other in placed {
        for (terms, sign) in [(preferred_affinity, 1), (preferred_anti_affinity, -1)] {
            for weighted in terms {
                if weighted.term.selects(other.namespace, other.labels) {
                    add(
                        &weighted.term,
                        other.node_labels,
                        weighted.weight.saturating_mul(sign),
                    );
                }
            }
        }
        for (terms, sign) in [
            (other.preferred_affinity, 1),
            (other.preferred_anti_affinity, -1),
        ] {
            for weighted in terms {
                if weighted.term.selects(namespace, labels) {
                    add(
                        &weighted.term,
                        other.node_labels,
                        weighted.weight.saturating_mul(sign),
                    );
                }
            }
        }
        for term in other.affinity {
            if term.selects(namespace, labels) {
                add(term, other.node_labels, HARD_POD_AFFINITY_WEIGHT);
            }
        }
    }
    weights
        .into_iter()
        .map(|(topology_key, weights)| DomainWeights {
            topology_key,
            weights,
        })
        .collect()
}

/// Fills in what each of `constraints` counts, for a pod in `namespace` with `labels`: the
/// placed pods of that namespace it selects, per node (terminating pods do not count, as in
/// Kubernetes), and whether it selects the pod itself.
pub fn count_spread_pods<'a>(
    namespace: &str,
    labels: &BTreeMap<String, String>,
    constraints: &mut [SpreadConstraint],
    placed: impl Iterator<Item = PlacedPod<'a>>,
) {
    for constraint in constraints.iter_mut() {
        constraint.self_match = constraint.selects(labels);
        constraint.matching.clear();
    }
    for other in placed {
        if other.terminating || other.namespace != namespace {
            continue;
        }
        for constraint in constraints.iter_mut() {
            if constraint.selects(other.labels) {
                let count = constraint
                    .matching
                    .entry(other.node.to_string())
                    .or_insert(0);
                *count = count.saturating_add(1);
            }
        }
    }
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
    let spread = HardSpread::new(pod, nodes);
    let scoring = pod.needs_scoring();
    let mut candidates: Vec<&NodeView> = Vec::new();
    let count = nodes.len();
    let mut next = start;
    for offset in 0..count {
        if feasible >= enough.max(1) {
            break;
        }
        let index = (start + offset) % count;
        next = (index + 1) % count;
        let node = &nodes[index];
        if let Some(reason) = unfit_among(pod, node, &spread) {
            *reasons.entry(reason).or_default() += 1;
            continue;
        }
        feasible += 1;
        if scoring {
            candidates.push(node);
            continue;
        }
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
    let chosen = if scoring {
        best_scored(pod, nodes, &candidates)
    } else {
        best.map(|(_, _, name)| name)
    };
    let verdict = match chosen {
        Some(name) => Ok(name.to_string()),
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

/// kube-scheduler's highest score of one plugin.
const MAX_NODE_SCORE: i64 = 100;

/// kube-scheduler's default plugin weights (NodeResourcesFit 1; NodeAffinity, InterPodAffinity
/// and PodTopologySpread 2).
const WEIGHT_RESOURCES: i64 = 1;
const WEIGHT_NODE_AFFINITY: i64 = 2;
const WEIGHT_POD_AFFINITY: i64 = 2;
const WEIGHT_SPREAD: i64 = 2;

/// NodeResourcesFit's LeastAllocated score: the share of cpu and memory left free once the pod
/// is placed, in percent, averaged.
fn least_allocated(pod: &PodRequest, node: &NodeView) -> i64 {
    let free = |total: u64, used: u64| -> i64 {
        let left = u128::from(total.saturating_sub(used)) * 100;
        i64::try_from(left.checked_div(u128::from(total)).unwrap_or(0)).unwrap_or(0)
    };
    (free(
        node.cpu_milli,
        node.used_cpu_milli.saturating_add(pod.cpu_milli),
    ) + free(node.memory, node.used_memory.saturating_add(pod.memory)))
        / 2
}

/// Kubernetes' default normalisation: scaled so the highest is 100 (all 0 if none is
/// positive).
fn normalise_to_max(scores: &mut [i64]) {
    let max = scores.iter().copied().max().unwrap_or(0);
    if max <= 0 {
        scores.iter_mut().for_each(|s| *s = 0);
        return;
    }
    for score in scores {
        *score = score.saturating_mul(MAX_NODE_SCORE) / max;
    }
}

/// InterPodAffinity's normalisation: the lowest (most repelled) 0, the highest 100; all 0
/// when every node scores the same.
fn normalise_min_max(scores: &mut [i64]) {
    let min = scores.iter().copied().min().unwrap_or(0);
    let max = scores.iter().copied().max().unwrap_or(0);
    let range = i128::from(max) - i128::from(min);
    for score in scores {
        *score = if range > 0 {
            i64::try_from(
                (i128::from(*score) - i128::from(min)) * i128::from(MAX_NODE_SCORE) / range,
            )
            .unwrap_or(0)
        } else {
            0
        };
    }
}

/// PodTopologySpread's score of each candidate, as Kubernetes computes it for
/// ScheduleAnyway constraints: per constraint, the matching pods in the candidate's domain
/// weighted by the log of the number of domains, plus `maxSkew - 1`; then reversed so the
/// least crowded candidate scores 100. A candidate lacking a constraint's key scores 0. A pod
/// with no constraints of its own is spread among its owner's pods per node, as Kubernetes'
/// default constraint (hostname, maxSkew 3) does.
fn spread_scores(pod: &PodRequest, nodes: &[NodeView], candidates: &[&NodeView]) -> Vec<i64> {
    let domains = |count: usize| (count.saturating_add(2) as f64).ln();
    let mut raw: Vec<Option<f64>> = if pod.spread.is_empty() {
        if pod.owner.name().is_empty() {
            return vec![0; candidates.len()];
        }
        let weight = domains(candidates.len());
        candidates
            .iter()
            .map(|node| Some(f64::from(node.pods_by_owner.get(&pod.owner)) * weight + 2.0))
            .collect()
    } else {
        let soft: Vec<&SpreadConstraint> = pod
            .spread
            .iter()
            .filter(|c| c.when_unsatisfiable == WhenUnsatisfiable::ScheduleAnyway)
            .collect();
        if soft.is_empty() {
            return vec![0; candidates.len()];
        }
        let keys: Vec<&str> = soft.iter().map(|c| c.topology_key.as_str()).collect();
        let scored: Vec<bool> = candidates
            .iter()
            .map(|node| keys.iter().all(|k| node.labels.contains_key(*k)))
            .collect();
        let per_constraint: Vec<(BTreeMap<&str, u64>, f64)> = soft
            .iter()
            .map(|c| {
                let size = candidates
                    .iter()
                    .zip(&scored)
                    .filter(|(_, scored)| **scored)
                    .filter_map(|(node, _)| node.labels.get(&c.topology_key))
                    .collect::<BTreeSet<_>>()
                    .len();
                (domain_counts(pod, c, &keys, nodes), domains(size))
            })
            .collect();
        candidates
            .iter()
            .zip(&scored)
            .map(|(node, scored)| {
                scored.then(|| {
                    soft.iter()
                        .zip(&per_constraint)
                        .map(|(c, (counts, weight))| {
                            let here = node
                                .labels
                                .get(&c.topology_key)
                                .and_then(|v| counts.get(v.as_str()))
                                .copied()
                                .unwrap_or(0);
                            here as f64 * weight + f64::from(c.max_skew.saturating_sub(1))
                        })
                        .sum()
                })
            })
            .collect()
    };
    let rounded: Vec<Option<i64>> = raw
        .iter_mut()
        .map(|r| r.map(|r| r.round() as i64))
        .collect();
    let min = rounded.iter().flatten().copied().min().unwrap_or(0);
    let max = rounded.iter().flatten().copied().max().unwrap_or(0);
    rounded
        .into_iter()
        .map(|score| match score {
            None => 0,
            Some(_) if max == 0 => MAX_NODE_SCORE,
            Some(s) => {
                MAX_NODE_SCORE.saturating_mul(max.saturating_add(min).saturating_sub(s)) / max
            }
        })
        .collect()
}

/// The best of the feasible `candidates` by kube-scheduler's weighted sum of normalised
/// plugin scores (least allocated, preferred node affinity, preferred pod affinity, topology
/// spread); ties go to fewer siblings, then the name.
fn best_scored<'a>(
    pod: &PodRequest,
    nodes: &[NodeView],
    candidates: &[&'a NodeView],
) -> Option<&'a str> {
    let mut node_affinity: Vec<i64> = candidates
        .iter()
        .map(|node| {
            pod.preferred_node_affinity
                .iter()
                .filter(|t| t.term.matches(node))
                .fold(0i64, |sum, t| sum.saturating_add(t.weight))
        })
        .collect();
    normalise_to_max(&mut node_affinity);
    let mut pod_affinity: Vec<i64> = candidates
        .iter()
        .map(|node| {
            pod.preferred_pods
                .iter()
                .filter_map(|d| {
                    node.labels
                        .get(&d.topology_key)
                        .and_then(|v| d.weights.get(v))
                })
                .fold(0i64, |sum, w| sum.saturating_add(*w))
        })
        .collect();
    normalise_min_max(&mut pod_affinity);
    let spread = spread_scores(pod, nodes, candidates);
    candidates
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let total = WEIGHT_RESOURCES * least_allocated(pod, node)
                + WEIGHT_NODE_AFFINITY * node_affinity[i]
                + WEIGHT_POD_AFFINITY * pod_affinity[i]
                + WEIGHT_SPREAD * spread[i];
            (
                std::cmp::Reverse(total),
                node.pods_by_owner.get(&pod.owner),
                node.name.as_str(),
            )
        })
        .min()
        .map(|(_, _, name)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

    /// A placed pod with nothing set, for `..placed_defaults()`.
    fn placed_defaults() -> PlacedPod<'static> {
        PlacedPod {
            namespace: "",
            labels: &NO_LABELS,
            node_labels: &NO_LABELS,
            anti_affinity: &[],
            node: "",
            terminating: false,
            affinity: &[],
            preferred_affinity: &[],
            preferred_anti_affinity: &[],
        }
    }

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
            used_ports: UsedPorts::default(),
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

    #[test]
    fn host_ports_conflict_on_protocol_and_port_when_addresses_overlap() {
        let bound = |name: &str, ports: &[HostPort]| {
            let mut n = node(name, 4000, 0);
            n.used_ports.add(ports);
            n
        };
        let tcp = |ip: &str, port: u16| HostPort::new(ip, "", port);
        let everywhere = bound("everywhere", &[tcp("", 8080)]);
        let one_address = bound("one-address", &[tcp("10.0.0.1", 8080)]);
        let udp = bound("udp", &[HostPort::new("", "UDP", 8080)]);
        let other_port = bound("other-port", &[tcp("0.0.0.0", 9090)]);
        let wanting = |ports: Vec<HostPort>| PodRequest {
            host_ports: ports,
            ..pod(100)
        };
        let fits = |request: &PodRequest| -> Vec<&str> {
            [&everywhere, &one_address, &udp, &other_port]
                .into_iter()
                .filter(|n| unfit(request, n).is_none())
                .map(|n| n.name.as_str())
                .collect()
        };
        assert_eq!(
            tcp("", 8080),
            HostPort::new("0.0.0.0", "TCP", 8080),
            "hostIP defaults to 0.0.0.0, protocol to TCP"
        );
        assert_eq!(
            fits(&wanting(vec![tcp("", 8080)])),
            ["udp", "other-port"],
            "0.0.0.0 clashes with every address on the same protocol and port"
        );
        assert_eq!(
            fits(&wanting(vec![tcp("10.0.0.2", 8080)])),
            ["one-address", "udp", "other-port"],
            "two distinct addresses do not clash; 0.0.0.0 bound already does"
        );
        assert_eq!(
            fits(&wanting(vec![tcp("10.0.0.1", 8080)])),
            ["udp", "other-port"]
        );
        assert_eq!(
            fits(&wanting(vec![HostPort::new("10.0.0.1", "UDP", 9090)])),
            ["everywhere", "one-address", "udp", "other-port"]
        );
        assert_eq!(
            fits(&wanting(vec![tcp("", 7070), tcp("", 9090)])),
            ["everywhere", "one-address", "udp"],
            "any one of the pod's ports clashing is enough"
        );
        assert_eq!(
            unfit(&wanting(vec![tcp("", 8080)]), &everywhere),
            Some(Unfit::Ports)
        );
        assert_eq!(
            unfit(&pod(100), &everywhere),
            None,
            "no host ports, no clash"
        );
        assert_eq!(
            schedule(&wanting(vec![tcp("", 8080)]), &[everywhere.clone(), one_address]),
            Err("0/2 nodes are available: 2 node(s) didn't have free ports for the requested pod ports.".into())
        );
        // Counted per pod: one of two pods holding the port leaving does not free it.
        let mut twice = everywhere;
        twice.used_ports.add(&[tcp("", 8080)]);
        twice.used_ports.remove(&[tcp("", 8080)]);
        assert!(twice.used_ports.conflicts(&tcp("", 8080)));
        twice.used_ports.remove(&[tcp("", 8080)]);
        assert!(twice.used_ports.is_empty());
        assert_eq!(unfit(&wanting(vec![tcp("", 8080)]), &twice), None);
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
                ..placed_defaults()
            },
            PlacedPod {
                namespace: "demo",
                labels: &web,
                node_labels: &nodes[2].labels,
                anti_affinity: &apart,
                ..placed_defaults()
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
                ..placed_defaults()
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
            ..placed_defaults()
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

    fn web() -> BTreeMap<String, String> {
        [("app".to_string(), "web".to_string())].into()
    }

    fn spread(key: &str, max_skew: u32, when: WhenUnsatisfiable) -> SpreadConstraint {
        SpreadConstraint {
            max_skew,
            topology_key: key.into(),
            when_unsatisfiable: when,
            min_domains: 1,
            honour_node_affinity: true,
            honour_taints: false,
            selector: Selector::from_labels(&web()),
            ..SpreadConstraint::default()
        }
    }

    /// A web pod carrying `constraints`, counted against web pods on `placed` (node names).
    fn spread_pod(constraints: &[SpreadConstraint], placed: &[&str]) -> PodRequest {
        let labels = web();
        let pods: Vec<PlacedPod<'_>> = placed
            .iter()
            .map(|node| PlacedPod {
                namespace: "demo",
                labels: &labels,
                node,
                ..placed_defaults()
            })
            .collect();
        let mut constraints = constraints.to_vec();
        count_spread_pods("demo", &labels, &mut constraints, pods.into_iter());
        PodRequest {
            spread: constraints,
            ..pod(100)
        }
    }

    fn zones() -> Vec<NodeView> {
        vec![
            labelled("a1", &[("topology.kubernetes.io/zone", "a")]),
            labelled("a2", &[("topology.kubernetes.io/zone", "a")]),
            labelled("b1", &[("topology.kubernetes.io/zone", "b")]),
        ]
    }

    const ZONE: &str = "topology.kubernetes.io/zone";

    #[test]
    fn do_not_schedule_keeps_zones_within_max_skew() {
        let nodes = zones();
        let hard = [spread(ZONE, 1, WhenUnsatisfiable::DoNotSchedule)];
        // Zone b's node is the fullest, but with one web pod in a and none in b only b keeps
        // the skew at 1.
        let mut busy = nodes.clone();
        busy[2].used_cpu_milli = 3000;
        assert_eq!(
            schedule(&spread_pod(&hard, &["a1"]), &busy),
            Ok("b1".into())
        );
        assert_eq!(
            schedule(&pod(100), &busy),
            Ok("a1".into()),
            "without the constraint: the emptier node"
        );
        assert_eq!(
            schedule(&spread_pod(&hard, &["a1", "a2", "b1"]), &busy),
            Ok("b1".into()),
            "a holds 2, b 1: only b keeps the skew at 1"
        );
        // b is full: no node keeps the skew, in Kubernetes' words.
        busy[2].used_pods = busy[2].max_pods;
        assert_eq!(
            schedule(&spread_pod(&hard, &["a1", "a2", "b1"]), &busy),
            Err("0/3 nodes are available: 2 node(s) didn't match pod topology spread constraints, 1 Too many pods.".into())
        );
        // A node without the zone label cannot take a pod with a zone constraint.
        let bare = [labelled("x", &[])];
        assert_eq!(
            schedule(&spread_pod(&hard, &[]), &bare),
            Err("0/1 nodes are available: 1 node(s) didn't match pod topology spread constraints (missing required label).".into())
        );
        // A pod its own constraint does not select adds nothing to the domain it joins.
        busy[2].used_pods = 0;
        let mut unselected = spread_pod(&hard, &["a1"]);
        unselected.spread[0].self_match = false;
        assert_eq!(schedule(&unselected, &busy), Ok("a1".into()));
    }

    #[test]
    fn min_domains_counts_missing_domains_as_empty() {
        let nodes = zones();
        let mut hard = spread(ZONE, 1, WhenUnsatisfiable::DoNotSchedule);
        // Two domains exist; with minDomains 3 the global minimum is 0, so a domain may hold
        // at most maxSkew pods.
        hard.min_domains = 3;
        assert_eq!(
            schedule(&spread_pod(std::slice::from_ref(&hard), &["a1"]), &nodes),
            Ok("b1".into())
        );
        assert_eq!(
            schedule(&spread_pod(&[hard], &["a1", "b1"]), &nodes),
            Err(
                "0/3 nodes are available: 3 node(s) didn't match pod topology spread constraints."
                    .into()
            )
        );
    }

    #[test]
    fn inclusion_policies_decide_which_nodes_count() {
        // Zone c's only node is tainted: Ignore (the default) counts its empty zone, so the
        // minimum is 0 and a second pod in a is refused; Honor leaves c out.
        let mut nodes = zones();
        let mut tainted = labelled("c1", &[(ZONE, "c")]);
        tainted.taints.push(Taint {
            key: "dedicated".into(),
            value: "gpu".into(),
            effect: "NoSchedule".into(),
        });
        nodes.push(tainted);
        nodes.remove(2);
        let ignore = spread(ZONE, 1, WhenUnsatisfiable::DoNotSchedule);
        assert_eq!(
            schedule(&spread_pod(std::slice::from_ref(&ignore), &["a1"]), &nodes),
            Err("0/3 nodes are available: 2 node(s) didn't match pod topology spread constraints, 1 node(s) had untolerated taint.".into())
        );
        let honour = SpreadConstraint {
            honour_taints: true,
            ..ignore.clone()
        };
        assert!(schedule(&spread_pod(&[honour], &["a1"]), &nodes).is_ok());
        // nodeAffinityPolicy Honor (the default): nodes the pod's selector excludes do not
        // count; Ignore counts them.
        let mut nodes = zones();
        nodes[2].labels.insert("disk".into(), "hdd".into());
        nodes[0].labels.insert("disk".into(), "ssd".into());
        nodes[1].labels.insert("disk".into(), "ssd".into());
        let mut honoured = spread_pod(std::slice::from_ref(&ignore), &["a1"]);
        honoured.node_selector.insert("disk".into(), "ssd".into());
        assert!(
            schedule(&honoured, &nodes).is_ok(),
            "zone b does not count: a is the only domain"
        );
        let mut ignored = spread_pod(
            &[SpreadConstraint {
                honour_node_affinity: false,
                ..ignore
            }],
            &["a1"],
        );
        ignored.node_selector.insert("disk".into(), "ssd".into());
        assert!(schedule(&ignored, &nodes).is_err(), "empty zone b counts");
    }

    #[test]
    fn schedule_anyway_prefers_the_emptier_domain_over_free_resources() {
        let mut nodes = zones();
        nodes[2].used_cpu_milli = 3000;
        let soft = [spread(ZONE, 1, WhenUnsatisfiable::ScheduleAnyway)];
        assert_eq!(
            schedule(&spread_pod(&soft, &["a1", "a2"]), &nodes),
            Ok("b1".into()),
            "zone b is empty, though b1 is the fullest node"
        );
        // Only a score: with b full, a is still taken.
        nodes[2].used_pods = nodes[2].max_pods;
        assert!(matches!(
            schedule(&spread_pod(&soft, &["a1", "a2"]), &nodes).as_deref(),
            Ok("a1") | Ok("a2")
        ));
    }

    #[test]
    fn preferred_node_affinity_steers_by_weight() {
        let nodes = [
            labelled("fast", &[("disk", "ssd")]),
            labelled("slow", &[("disk", "hdd")]),
        ];
        let mut busy = nodes.clone();
        busy[0].used_cpu_milli = 2000;
        let prefers = |weights: &[(&str, i64)]| PodRequest {
            preferred_node_affinity: weights
                .iter()
                .map(|(disk, weight)| WeightedNodeTerm {
                    weight: *weight,
                    term: NodeSelectorTerm {
                        expressions: vec![requirement("disk", NodeOperator::In, &[disk])],
                        fields: Vec::new(),
                    },
                })
                .collect(),
            ..pod(100)
        };
        assert_eq!(schedule(&pod(100), &busy), Ok("slow".into()), "emptier");
        assert_eq!(
            schedule(&prefers(&[("ssd", 1)]), &busy),
            Ok("fast".into()),
            "any preference outweighs half a node's cpu"
        );
        assert_eq!(
            schedule(&prefers(&[("ssd", 10), ("hdd", 30)]), &busy),
            Ok("slow".into()),
            "the heavier preference wins"
        );
        // A preference never overrides a filter.
        busy[0].used_cpu_milli = 4000;
        assert_eq!(
            schedule(&prefers(&[("ssd", 100)]), &busy),
            Ok("slow".into())
        );
    }

    #[test]
    fn preferred_pod_affinity_and_anti_affinity_score_domains() {
        let nodes = zones();
        let labels = web();
        let cache: BTreeMap<String, String> = [("app".to_string(), "cache".to_string())].into();
        let near_cache = [WeightedPodTerm {
            weight: 50,
            term: PodAffinityTerm {
                selector: Selector::from_labels(&cache),
                namespaces: ["demo".to_string()].into(),
                topology_key: ZONE.into(),
            },
        }];
        let placed = [PlacedPod {
            namespace: "demo",
            labels: &cache,
            node_labels: &nodes[2].labels,
            node: "b1",
            ..placed_defaults()
        }];
        let weights =
            pod_preference_weights("demo", &labels, &near_cache, &[], placed.iter().copied());
        let mut busy = nodes.clone();
        busy[2].used_cpu_milli = 3000;
        let request = PodRequest {
            preferred_pods: weights,
            ..pod(100)
        };
        assert_eq!(
            schedule(&request, &busy),
            Ok("b1".into()),
            "next to the cache"
        );
        // The same term as anti-affinity sends it away from zone b.
        let weights =
            pod_preference_weights("demo", &labels, &[], &near_cache, placed.iter().copied());
        let request = PodRequest {
            preferred_pods: weights,
            ..pod(100)
        };
        let mut roomy = nodes.clone();
        roomy[0].used_cpu_milli = 3000;
        roomy[1].used_cpu_milli = 3000;
        assert!(matches!(
            schedule(&request, &roomy).as_deref(),
            Ok("a1") | Ok("a2")
        ));
        // Symmetry: a placed pod's preferred affinity for web pods draws a plain web pod.
        let wants_web = [WeightedPodTerm {
            weight: 10,
            term: PodAffinityTerm {
                selector: Selector::from_labels(&labels),
                namespaces: ["demo".to_string()].into(),
                topology_key: HOSTNAME_KEY.into(),
            },
        }];
        let placed = [PlacedPod {
            namespace: "demo",
            labels: &cache,
            node_labels: &nodes[2].labels,
            node: "b1",
            preferred_affinity: &wants_web,
            ..placed_defaults()
        }];
        let weights = pod_preference_weights("demo", &labels, &[], &[], placed.iter().copied());
        assert_eq!(
            schedule(
                &PodRequest {
                    preferred_pods: weights,
                    ..pod(100)
                },
                &busy
            ),
            Ok("b1".into())
        );
    }

    const HOSTNAME_KEY: &str = "kubernetes.io/hostname";

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Placing matching pods one by one, DoNotSchedule never lets the most crowded
            /// eligible domain exceed the emptiest by more than maxSkew.
            #[test]
            fn do_not_schedule_never_exceeds_max_skew(
                zones_of in proptest::collection::vec(0u8..4, 1..8),
                capacity in proptest::collection::vec(1u32..6, 8),
                max_skew in 1u32..3,
                pods in 1usize..30,
            ) {
                let nodes: Vec<NodeView> = zones_of
                    .iter()
                    .enumerate()
                    .map(|(i, zone)| {
                        let mut n = labelled(&format!("n{i}"), &[(ZONE, &format!("z{zone}"))]);
                        n.max_pods = capacity[i];
                        n
                    })
                    .collect();
                let constraint = spread(ZONE, max_skew, WhenUnsatisfiable::DoNotSchedule);
                let mut placed: Vec<String> = Vec::new();
                let mut nodes = nodes;
                for _ in 0..pods {
                    let names: Vec<&str> = placed.iter().map(String::as_str).collect();
                    let request = spread_pod(std::slice::from_ref(&constraint), &names);
                    if let Ok(name) = schedule(&request, &nodes) {
                        if let Some(node) = nodes.iter_mut().find(|n| n.name == name) {
                            node.used_pods += 1;
                        }
                        placed.push(name);
                    }
                    let mut per_zone: BTreeMap<&str, u32> = BTreeMap::new();
                    for node in &nodes {
                        per_zone.entry(node.labels[ZONE].as_str()).or_insert(0);
                    }
                    for name in &placed {
                        let node = nodes.iter().find(|n| &n.name == name).map(|n| n.labels[ZONE].as_str());
                        if let Some(zone) = node {
                            *per_zone.entry(zone).or_insert(0) += 1;
                        }
                    }
                    let max = per_zone.values().max().copied().unwrap_or(0);
                    let min = per_zone.values().min().copied().unwrap_or(0);
                    prop_assert!(max - min <= max_skew, "{per_zone:?}");
                }
            }
        }
    }
}
