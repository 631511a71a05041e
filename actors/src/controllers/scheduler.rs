//! The scheduler: binds each pending pod to a node chosen by
//! [`shipshape_reconciler::scheduler::schedule_from`], or marks it unschedulable with
//! Kubernetes' reason and tries again when nodes or pods change.
//!
//! A binding is assumed in the cache as soon as it is decided (as Kubernetes' scheduler
//! cache does), so the next pod in the same pass sees the node's new usage; a binding the
//! store refuses is forgotten again. The binding itself carries the pod's resourceVersion, so a
//! pod can never be bound twice.

use shipshape_api::pointer::At;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use foldhash::{HashMap, HashSet};

use serde_json::{Value, json};
use shipshape_api::Kind;
use shipshape_api::quantity::Quantity;
use shipshape_api::selector::Selector;
use shipshape_reconciler::scheduler::{
    HostPort, NodeOperator, NodeRequirement, NodeSelectorTerm, NodeView, OwnerCounts, PlacedPod,
    PodAffinityTerm, PodRequest, SpreadConstraint, Taint, Toleration, UsedPorts, WeightedNodeTerm,
    WeightedPodTerm, WhenUnsatisfiable, count_spread_pods, feasible_nodes_to_find,
    pod_affinity_domains, pod_preference_weights, schedule_from,
};

use super::{
    condition, condition_is_true, pod_reference, rfc3339, seconds, string_list, string_map, text,
};
use crate::Write;
use crate::controller::{Controller, Dirty, Reconciled, because};
use crate::events::event;
use crate::store::{AuditEntry, Batch, EventType, Precondition, WatchEvent, parse_storage_key};

const COMPONENT: &str = "default-scheduler";

/// How long an unschedulable pod waits before trying again when nothing else wakes it.
const UNSCHEDULABLE_RETRY: Duration = Duration::from_secs(30);

struct CachedPod {
    object_rv: u64,
    node: Option<String>,
    /// Counts toward its node's usage (not finished).
    active: bool,
    request: PodRequest,
    created: i64,
    /// The message of its PodScheduled=False condition, if any.
    unschedulable: Option<String>,
    /// Its uid, for Events about it.
    uid: String,
    /// The claims its volumes use (their volumes may tie it to a node).
    claims: Vec<String>,
    /// Its namespace.
    namespace: String,
    /// Its labels (shared between the pods that have the same, as replicas do).
    labels: Arc<BTreeMap<String, String>>,
    /// Its pod (anti-)affinity terms and topology spread constraints.
    terms: Option<Arc<PodTerms>>,
    /// Being deleted (spread constraints do not count it).
    terminating: bool,
}

/// What ties a pod's placement to other pods: its pod affinity and anti-affinity terms and
/// its topology spread constraints. Most pods have none, and skip every scan of other pods.
#[derive(Debug, Default, PartialEq)]
pub struct PodTerms {
    /// `podAffinity.requiredDuringSchedulingIgnoredDuringExecution`.
    pub affinity: Vec<PodAffinityTerm>,
    /// `podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution`.
    pub anti_affinity: Vec<PodAffinityTerm>,
    /// `podAffinity.preferredDuringSchedulingIgnoredDuringExecution`.
    pub preferred_affinity: Vec<WeightedPodTerm>,
    /// `podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution`.
    pub preferred_anti_affinity: Vec<WeightedPodTerm>,
    /// `topologySpreadConstraints`, with nothing counted yet.
    pub spread: Vec<SpreadConstraint>,
}

impl PodTerms {
    /// Whether a placed pod with these terms changes other pods' scores (Kubernetes'
    /// InterPodAffinity scores existing pods' preferred terms and, with weight 1, their
    /// required affinity).
    fn scores_others(&self) -> bool {
        !self.affinity.is_empty()
            || !self.preferred_affinity.is_empty()
            || !self.preferred_anti_affinity.is_empty()
    }

    /// Whether a pending pod with these terms may become schedulable when another pod is
    /// placed (its affinity finds company, or a spread domain's minimum rises).
    fn waits_for_company(&self) -> bool {
        !self.affinity.is_empty()
            || self
                .spread
                .iter()
                .any(|c| c.when_unsatisfiable == WhenUnsatisfiable::DoNotSchedule)
    }
}

/// The scheduler's cache: nodes with their usage, and pods.
#[derive(Default)]
pub struct Scheduler {
    /// (namespace, claim) → the volume it is bound to.
    claims: HashMap<(String, String), String>,
    /// Volume → the node its data is on (local volumes).
    volume_nodes: HashMap<String, String>,
    nodes: Vec<NodeView>,
    node_index: HashMap<String, usize>,
    pods: HashMap<String, CachedPod>,
    pending: BTreeSet<String>,
    cursor: usize,
    /// Pods with anti-affinity terms (they may keep others off their nodes).
    repelling: BTreeSet<String>,
    /// Pending pods with affinity terms or hard spread constraints (a pod placed anywhere may
    /// be what they wait for).
    attracted: BTreeSet<String>,
    /// Pods whose affinity terms score other pods' nodes ([`PodTerms::scores_others`]).
    scoring: BTreeSet<String>,
    /// One copy of each distinct label set.
    label_sets: HashSet<Arc<BTreeMap<String, String>>>,
}

impl Scheduler {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    fn add_usage(&mut self, pod: &CachedPod, sign: i64) {
        let (Some(node), true) = (&pod.node, pod.active) else {
            return;
        };
        let Some(view) = self.node_index.get(node).map(|i| &mut self.nodes[*i]) else {
            return;
        };
        let apply = |value: u64, delta: u64| {
            if sign > 0 {
                value.saturating_add(delta)
            } else {
                value.saturating_sub(delta)
            }
        };
        view.used_cpu_milli = apply(view.used_cpu_milli, pod.request.cpu_milli);
        view.used_memory = apply(view.used_memory, pod.request.memory);
        view.used_pods = u32::try_from(apply(u64::from(view.used_pods), 1)).unwrap_or(u32::MAX);
        if sign > 0 {
            view.pods_by_owner.add(&pod.request.owner, 1);
            view.used_ports.add(&pod.request.host_ports);
        } else {
            view.pods_by_owner.remove(&pod.request.owner, 1);
            view.used_ports.remove(&pod.request.host_ports);
        }
    }

    fn set_pod(&mut self, key: &str, pod: Option<CachedPod>) {
        if let Some(old) = self.pods.remove(key) {
            self.add_usage(&old, -1);
            if Arc::strong_count(&old.labels) == 2 {
                // The last pod with these labels: drop the shared copy too.
                self.label_sets.remove(&old.labels);
            }
        }
        self.pending.remove(key);
        self.repelling.remove(key);
        self.attracted.remove(key);
        self.scoring.remove(key);
        if let Some(pod) = pod {
            if pod
                .terms
                .as_ref()
                .is_some_and(|t| !t.anti_affinity.is_empty())
            {
                self.repelling.insert(key.to_string());
            }
            if pod.terms.as_ref().is_some_and(|t| t.scores_others()) {
                self.scoring.insert(key.to_string());
            }
            if pod.node.is_none() && pod.terms.as_ref().is_some_and(|t| t.waits_for_company()) {
                self.attracted.insert(key.to_string());
            }
            self.add_usage(&pod, 1);
            if pod.node.is_none() && pod.active {
                self.pending.insert(key.to_string());
            }
            self.pods.insert(key.to_string(), pod);
        }
    }

    /// The shared copy of `labels`.
    fn intern(&mut self, labels: BTreeMap<String, String>) -> Arc<BTreeMap<String, String>> {
        if let Some(shared) = self.label_sets.get(&labels) {
            return shared.clone();
        }
        let shared = Arc::new(labels);
        self.label_sets.insert(shared.clone());
        shared
    }

    /// Takes a change to a pod already cached that moves nothing the scheduler decides on
    /// (a status report, the echo of its own binding): only its resourceVersion and
    /// unschedulable message are kept, without reading the rest again. Most pod events are
    /// such; re-reading every one was a good part of the scheduler's time at scale. False
    /// when the pod must be read in full.
    fn refresh(&mut self, key: &str, resource_version: u64, pod: &Value) -> bool {
        let Some(cached) = self.pods.get_mut(key) else {
            return false;
        };
        let node = text(pod, "/spec/nodeName").filter(|n| !n.is_empty());
        let same_labels = match pod.at("/metadata/labels").and_then(Value::as_object) {
            Some(labels) => {
                labels.len() == cached.labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| v.as_str() == cached.labels.get(k).map(String::as_str))
            }
            None => cached.labels.is_empty(),
        };
        let unchanged = cached.active
            && node.is_some()
            && cached.node.as_deref() == node
            && text(pod, "/metadata/uid") == Some(cached.uid.as_str())
            && pod.at("/metadata/deletionTimestamp").is_none()
            && same_labels;
        if unchanged {
            cached.object_rv = resource_version;
            cached.unschedulable = unschedulable_message(pod);
        }
        unchanged
    }

    /// A bound, active pod other than `key`, with its node's labels.
    fn placed<'a>(&'a self, key: &str, other: &str, pod: &'a CachedPod) -> Option<PlacedPod<'a>> {
        if other == key || !pod.active {
            return None;
        }
        let node = pod.node.as_ref()?;
        let index = self.node_index.get(node)?;
        let terms = pod.terms.as_deref();
        Some(PlacedPod {
            namespace: pod.namespace.as_str(),
            labels: pod.labels.as_ref(),
            node_labels: &self.nodes[*index].labels,
            anti_affinity: terms.map_or(&[][..], |t| t.anti_affinity.as_slice()),
            node: node.as_str(),
            terminating: pod.terminating,
            affinity: terms.map_or(&[][..], |t| t.affinity.as_slice()),
            preferred_affinity: terms.map_or(&[][..], |t| t.preferred_affinity.as_slice()),
            preferred_anti_affinity: terms
                .map_or(&[][..], |t| t.preferred_anti_affinity.as_slice()),
        })
    }

    /// Fills in the parts of `request` that depend on the pods placed so far: required and
    /// preferred pod (anti-)affinity and topology spread. A pod with none of these looks only
    /// at the pods whose own terms may concern it (usually none), never at every pod.
    fn place_among_pods(&self, key: &str, pod: &CachedPod, request: &mut PodRequest) {
        let empty = PodTerms::default();
        let own = pod.terms.as_deref().unwrap_or(&empty);
        let candidates: Vec<PlacedPod<'_>> = if pod.terms.is_none() {
            if self.repelling.is_empty() && self.scoring.is_empty() {
                return;
            }
            // Only pods with terms of their own can keep this one off or draw it.
            self.repelling
                .union(&self.scoring)
                .filter_map(|k| self.placed(key, k, self.pods.get(k)?))
                .collect()
        } else {
            self.pods
                .iter()
                .filter_map(|(k, p)| self.placed(key, k, p))
                .collect()
        };
        let (attract, repel, repelled_by) = pod_affinity_domains(
            &pod.namespace,
            &pod.labels,
            &own.affinity,
            &own.anti_affinity,
            candidates.iter().copied(),
        );
        request.affinity = attract;
        request.anti_affinity = repel;
        request.repelled_by = repelled_by;
        request.preferred_pods = pod_preference_weights(
            &pod.namespace,
            &pod.labels,
            &own.preferred_affinity,
            &own.preferred_anti_affinity,
            candidates.iter().copied(),
        );
        if !own.spread.is_empty() {
            request.spread = own.spread.clone();
            count_spread_pods(
                &pod.namespace,
                &pod.labels,
                &mut request.spread,
                candidates.iter().copied(),
            );
        }
    }

    /// A pod was placed: pending pods whose affinity waits for company may go now.
    fn wake_attracted(&self, dirty: &mut Dirty, event: &WatchEvent) {
        for waiting in &self.attracted {
            dirty.mark(waiting.clone(), || because(event));
        }
    }

    fn mark_pending(&self, dirty: &mut Dirty, reason: &str) {
        for key in &self.pending {
            dirty.mark(key.clone(), || reason.to_string());
        }
    }

    fn set_node(&mut self, name: &str, node: Option<NodeView>) {
        match (self.node_index.get(name).copied(), node) {
            (Some(index), Some(mut view)) => {
                let old = &self.nodes[index];
                view.used_cpu_milli = old.used_cpu_milli;
                view.used_memory = old.used_memory;
                view.used_pods = old.used_pods;
                view.pods_by_owner = std::mem::take(&mut self.nodes[index].pods_by_owner);
                view.used_ports = std::mem::take(&mut self.nodes[index].used_ports);
                self.nodes[index] = view;
            }
            (None, Some(mut view)) => {
                // Pods already bound to it (listed before the node) count from now on.
                for pod in self.pods.values() {
                    if pod.node.as_deref() == Some(name) && pod.active {
                        view.used_cpu_milli =
                            view.used_cpu_milli.saturating_add(pod.request.cpu_milli);
                        view.used_memory = view.used_memory.saturating_add(pod.request.memory);
                        view.used_pods += 1;
                        view.pods_by_owner.add(&pod.request.owner, 1);
                        view.used_ports.add(&pod.request.host_ports);
                    }
                }
                self.node_index.insert(name.to_string(), self.nodes.len());
                self.nodes.push(view);
            }
            (Some(index), None) => {
                self.nodes.swap_remove(index);
                self.node_index.remove(name);
                if let Some(moved) = self.nodes.get(index) {
                    self.node_index.insert(moved.name.clone(), index);
                }
            }
            (None, None) => {}
        }
    }
}

fn quantity(value: Option<&Value>) -> Option<Quantity> {
    Quantity::from_json(value?).ok()
}

fn milli(value: Option<&Value>) -> u64 {
    quantity(value).map_or(0, |q| saturate(q.milli()))
}

/// A quantity (memory, storage) in whole units, 0 when absent or unreadable.
pub fn units(value: Option<&Value>) -> u64 {
    quantity(value).map_or(0, |q| saturate(q.units()))
}

/// A request as a node's capacity is counted: a negative one (refused by validation) is
/// nothing, and one past u64 is everything, so `100Ei` fits on no node rather than on all.
fn saturate(amount: i128) -> u64 {
    if amount < 0 {
        0
    } else {
        u64::try_from(amount).unwrap_or(u64::MAX)
    }
}

/// A pod's request of one resource, as Kubernetes counts it: init containers run one at a
/// time before the others, so the pod needs the larger of the biggest init container and the
/// sum of its containers; sidecars (init containers with `restartPolicy: Always`) keep running,
/// so they add to everything started after them. Saturating, never wrapping.
pub fn effective_request(
    containers: impl Iterator<Item = u64>,
    init_containers: impl Iterator<Item = (u64, bool)>,
) -> u64 {
    let mut sidecars = 0u64;
    let mut init_peak = 0u64;
    for (request, sidecar) in init_containers {
        if sidecar {
            sidecars = sidecars.saturating_add(request);
            init_peak = init_peak.max(sidecars);
        } else {
            init_peak = init_peak.max(sidecars.saturating_add(request));
        }
    }
    containers
        .fold(sidecars, u64::saturating_add)
        .max(init_peak)
}

/// What a pod asks of a node.
pub fn pod_request(pod: &Value) -> PodRequest {
    let containers = pod
        .at("/spec/containers")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let init_containers = pod
        .at("/spec/initContainers")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let sum = |resource: &str, read: fn(Option<&Value>) -> u64| -> u64 {
        let request = |c: &Value| read(c.at(&format!("/resources/requests/{resource}")));
        effective_request(
            containers.iter().map(request),
            init_containers.iter().map(|c| {
                let sidecar = c.get("restartPolicy").and_then(Value::as_str) == Some("Always");
                (request(c), sidecar)
            }),
        )
    };
    let owner = pod
        .at("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .and_then(|owners| {
            owners
                .iter()
                .find(|o| o.get("controller").and_then(Value::as_bool) == Some(true))
        })
        .map(|o| {
            format!(
                "{}/{}",
                o.get("kind").and_then(Value::as_str).unwrap_or_default(),
                o.get("name").and_then(Value::as_str).unwrap_or_default()
            )
        })
        .unwrap_or_default();
    let tolerations = tolerations(pod.at("/spec/tolerations"));
    PodRequest {
        owner: owner.into(),
        cpu_milli: sum("cpu", milli),
        memory: sum("memory", units),
        node_selector: string_map(pod.at("/spec/nodeSelector")),
        tolerations,
        pinned: None,
        node_affinity: node_affinity(pod),
        preferred_node_affinity: preferred_node_affinity(pod),
        host_ports: host_ports(pod),
        ..PodRequest::default()
    }
}

/// The host ports a pod binds on its node, as Kubernetes' NodePorts filter reads them
/// (`GetHostPorts`): the ports of its containers and sidecars (init containers with
/// `restartPolicy: Always`, which run as long as the pod) that name a hostPort. On the host's
/// network every container port is one: Kubernetes defaults hostPort to containerPort there.
pub fn host_ports(pod: &Value) -> Vec<HostPort> {
    let host_network = pod.at("/spec/hostNetwork").and_then(Value::as_bool) == Some(true);
    let number = super::port_number;
    super::long_running_ports(pod)
        .into_iter()
        .filter_map(|port| {
            let host_port = number(port, "hostPort").or_else(|| {
                host_network
                    .then(|| number(port, "containerPort"))
                    .flatten()
            })?;
            Some(HostPort::new(
                text(port, "/hostIP").unwrap_or_default(),
                text(port, "/protocol").unwrap_or_default(),
                host_port,
            ))
        })
        .collect()
}

/// One nodeSelectorTerm (required or preferred) as the scheduler matches it.
fn node_selector_term(term: &Value) -> NodeSelectorTerm {
    let requirements = |list: Option<&Value>| -> Vec<NodeRequirement> {
        list.and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|r| NodeRequirement {
                key: text(r, "/key").unwrap_or_default().to_string(),
                // Validation refuses other operators; one that slips through matches nothing.
                operator: NodeOperator::parse(text(r, "/operator").unwrap_or_default())
                    .unwrap_or(NodeOperator::In),
                values: string_list(r.get("values")),
            })
            .collect()
    };
    NodeSelectorTerm {
        expressions: requirements(term.get("matchExpressions")),
        fields: requirements(term.get("matchFields")),
    }
}

/// A pod's required node affinity terms (`nodeSelectorTerms`).
pub fn node_affinity(pod: &Value) -> Vec<NodeSelectorTerm> {
    pod.at(
        "/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms",
    )
    .and_then(Value::as_array)
    .into_iter()
    .flatten()
    .map(node_selector_term)
    .collect()
}

/// A weight as validation accepts it (1 to 100); anything else weighs nothing.
fn weight(term: &Value) -> i64 {
    term.get("weight")
        .and_then(Value::as_i64)
        .filter(|w| (1..=100).contains(w))
        .unwrap_or(0)
}

/// A pod's preferred node affinity terms, with their weights.
pub fn preferred_node_affinity(pod: &Value) -> Vec<WeightedNodeTerm> {
    pod.at("/spec/affinity/nodeAffinity/preferredDuringSchedulingIgnoredDuringExecution")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|term| WeightedNodeTerm {
            weight: weight(term),
            term: term
                .get("preference")
                .map(node_selector_term)
                .unwrap_or_default(),
        })
        .collect()
}

/// A label selector, or the one that selects nothing when it is absent or unreadable
/// (Kubernetes: a null labelSelector matches nothing).
fn label_selector(selector: Option<&Value>) -> Selector {
    selector
        .cloned()
        .and_then(|s| serde_json::from_value(s).ok())
        .and_then(|s| Selector::parse(&s, &shipshape_api::path::FieldPath::root()).ok())
        .unwrap_or_else(Selector::nothing)
}

/// One pod affinity term of a pod in `own_namespace`.
fn pod_affinity_term(term: &Value, own_namespace: &str) -> PodAffinityTerm {
    let mut namespaces: BTreeSet<String> = string_list(term.get("namespaces"));
    let every_namespace = term
        .get("namespaceSelector")
        .and_then(Value::as_object)
        .is_some_and(serde_json::Map::is_empty);
    if namespaces.is_empty() && !every_namespace {
        namespaces.insert(own_namespace.to_string());
    }
    PodAffinityTerm {
        selector: label_selector(term.get("labelSelector")),
        namespaces,
        topology_key: text(term, "/topologyKey").unwrap_or_default().to_string(),
    }
}

/// A pod's `topologySpreadConstraints` with Kubernetes' defaults (minDomains 1,
/// nodeAffinityPolicy Honor, nodeTaintsPolicy Ignore) and `matchLabelKeys` resolved against
/// its labels (a key the pod lacks is ignored).
pub fn spread_constraints(pod: &Value) -> Vec<SpreadConstraint> {
    let Some(constraints) = pod
        .at("/spec/topologySpreadConstraints")
        .and_then(Value::as_array)
    else {
        // Most pods: no labels read, nothing allocated.
        return Vec::new();
    };
    let labels = string_map(pod.at("/metadata/labels"));
    constraints
        .iter()
        .map(|c| {
            let number = |field: &str, default: u32| {
                c.get(field)
                    .and_then(Value::as_u64)
                    .and_then(|n| u32::try_from(n).ok())
                    .filter(|n| *n >= 1)
                    .unwrap_or(default)
            };
            let match_labels = c
                .get("matchLabelKeys")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .filter_map(|key| Some((key.to_string(), labels.get(key)?.clone())))
                .collect();
            SpreadConstraint {
                max_skew: number("maxSkew", 1),
                topology_key: text(c, "/topologyKey").unwrap_or_default().to_string(),
                when_unsatisfiable: if text(c, "/whenUnsatisfiable") == Some("ScheduleAnyway") {
                    WhenUnsatisfiable::ScheduleAnyway
                } else {
                    WhenUnsatisfiable::DoNotSchedule
                },
                min_domains: number("minDomains", 1),
                honour_node_affinity: text(c, "/nodeAffinityPolicy") != Some("Ignore"),
                honour_taints: text(c, "/nodeTaintsPolicy") == Some("Honor"),
                selector: label_selector(c.get("labelSelector")),
                match_labels,
                matching: BTreeMap::new(),
                self_match: false,
            }
        })
        .collect()
}

/// A pod's pod affinity and anti-affinity terms (required and preferred) and topology spread
/// constraints, if it has any.
pub fn pod_terms(pod: &Value) -> Option<PodTerms> {
    let own_namespace = text(pod, "/metadata/namespace").unwrap_or("default");
    let list = |path: &str| {
        pod.at(path)
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
    };
    let required = |path: &str| -> Vec<PodAffinityTerm> {
        list(path)
            .iter()
            .map(|term| pod_affinity_term(term, own_namespace))
            .collect()
    };
    let preferred = |path: &str| -> Vec<WeightedPodTerm> {
        list(path)
            .iter()
            .map(|term| WeightedPodTerm {
                weight: weight(term),
                term: pod_affinity_term(
                    term.get("podAffinityTerm").unwrap_or(&Value::Null),
                    own_namespace,
                ),
            })
            .collect()
    };
    let found = PodTerms {
        affinity: required(
            "/spec/affinity/podAffinity/requiredDuringSchedulingIgnoredDuringExecution",
        ),
        anti_affinity: required(
            "/spec/affinity/podAntiAffinity/requiredDuringSchedulingIgnoredDuringExecution",
        ),
        preferred_affinity: preferred(
            "/spec/affinity/podAffinity/preferredDuringSchedulingIgnoredDuringExecution",
        ),
        preferred_anti_affinity: preferred(
            "/spec/affinity/podAntiAffinity/preferredDuringSchedulingIgnoredDuringExecution",
        ),
        spread: spread_constraints(pod),
    };
    (found != PodTerms::default()).then_some(found)
}

/// A pod spec's `tolerations` list.
pub fn tolerations(list: Option<&Value>) -> Vec<Toleration> {
    list.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|t| Toleration {
            key: text(t, "/key").unwrap_or_default().to_string(),
            operator: text(t, "/operator").unwrap_or("Equal").to_string(),
            value: text(t, "/value").unwrap_or_default().to_string(),
            effect: text(t, "/effect").unwrap_or_default().to_string(),
        })
        .collect()
}

/// The node a pod's required node affinity names by `metadata.name` (how DaemonSet pods are
/// tied to their node), if it names exactly one.
pub fn pinned_node(pod: &Value) -> Option<String> {
    let terms = pod
        .at("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")?
        .as_array()?;
    let fields = terms.first()?.get("matchFields")?.as_array()?;
    let field = fields
        .iter()
        .find(|f| f["key"] == "metadata.name" && f["operator"] == "In")?;
    match field["values"].as_array()?.as_slice() {
        [one] => one.as_str().map(str::to_string),
        _ => None,
    }
}

/// A node as the scheduler sees it (usage filled in from the pods bound to it).
pub fn node_view(node: &Value) -> NodeView {
    let ready = condition_is_true(node, "Ready");
    let taints = node
        .at("/spec/taints")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .map(|t| Taint {
                    key: text(t, "/key").unwrap_or_default().to_string(),
                    value: text(t, "/value").unwrap_or_default().to_string(),
                    effect: text(t, "/effect").unwrap_or_default().to_string(),
                })
                .collect()
        })
        .unwrap_or_default();
    NodeView {
        name: text(node, "/metadata/name").unwrap_or_default().to_string(),
        ready,
        unschedulable: node
            .at("/spec/unschedulable")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        labels: string_map(node.at("/metadata/labels")),
        taints,
        cpu_milli: milli(node.at("/status/allocatable/cpu")),
        memory: units(node.at("/status/allocatable/memory")),
        used_cpu_milli: 0,
        used_memory: 0,
        max_pods: u32::try_from(units(node.at("/status/allocatable/pods"))).unwrap_or(110),
        used_pods: 0,
        pods_by_owner: OwnerCounts::default(),
        used_ports: UsedPorts::default(),
    }
}

/// The part of a NodeView that decides schedulability (usage aside).
fn same_shape(a: &NodeView, b: &NodeView) -> bool {
    (
        a.ready,
        a.unschedulable,
        &a.labels,
        &a.taints,
        a.cpu_milli,
        a.memory,
        a.max_pods,
    ) == (
        b.ready,
        b.unschedulable,
        &b.labels,
        &b.taints,
        b.cpu_milli,
        b.memory,
        b.max_pods,
    )
}

fn unschedulable_message(pod: &Value) -> Option<String> {
    condition(pod, "PodScheduled")
        .filter(|c| c.get("status").and_then(Value::as_str) == Some("False"))
        .and_then(|c| c.get("message").and_then(Value::as_str))
        .map(str::to_string)
}

impl Controller for Scheduler {
    fn name(&self) -> &'static str {
        "scheduler"
    }

    fn kinds(&self) -> Vec<Kind> {
        vec![
            Kind::Node,
            Kind::Pod,
            Kind::PersistentVolumeClaim,
            Kind::PersistentVolume,
        ]
    }

    fn reset(&mut self) {
        *self = Self::default();
    }

    fn observe(&mut self, event: &WatchEvent, dirty: &mut Dirty) {
        let Some(key) = parse_storage_key(&event.key) else {
            return;
        };
        match key.kind {
            Kind::PersistentVolumeClaim => {
                let id = (key.namespace.clone(), key.name.clone());
                let volume = (event.kind != EventType::Deleted)
                    .then(|| text(&event.object, "/spec/volumeName"))
                    .flatten()
                    .filter(|v| !v.is_empty())
                    .map(str::to_string);
                let changed = match volume {
                    Some(volume) => self.claims.insert(id, volume.clone()) != Some(volume),
                    None => self.claims.remove(&id).is_some(),
                };
                if changed {
                    self.mark_pending(dirty, &because(event));
                }
            }
            Kind::PersistentVolume => {
                let node = (event.kind != EventType::Deleted)
                    .then(|| super::volumes::volume_node(&event.object))
                    .flatten();
                let changed = match node {
                    Some(node) => {
                        self.volume_nodes.insert(key.name.clone(), node.clone()) != Some(node)
                    }
                    None => self.volume_nodes.remove(&key.name).is_some(),
                };
                if changed {
                    self.mark_pending(dirty, &because(event));
                }
            }
            Kind::Node => {
                if event.kind == EventType::Deleted {
                    self.set_node(&key.name, None);
                    return;
                }
                let view = node_view(&event.object);
                let changed = self
                    .node_index
                    .get(&key.name)
                    .is_none_or(|i| !same_shape(&self.nodes[*i], &view));
                self.set_node(&key.name, Some(view));
                if changed {
                    self.mark_pending(dirty, &because(event));
                }
            }
            Kind::Pod => {
                if event.kind == EventType::Deleted {
                    let freed = self.pods.get(&event.key).is_some_and(|p| p.node.is_some());
                    self.set_pod(&event.key, None);
                    if freed {
                        self.mark_pending(dirty, &because(event));
                    }
                    return;
                }
                let pod = &event.object;
                let finished = matches!(
                    text(pod, "/status/phase"),
                    Some("Succeeded") | Some("Failed")
                );
                if !finished && self.refresh(&event.key, event.resource_version, pod) {
                    // The first event of a binding this scheduler assumed lands here.
                    self.wake_attracted(dirty, event);
                    return;
                }
                let terminating = pod.at("/metadata/deletionTimestamp").is_some();
                let cached = CachedPod {
                    object_rv: event.resource_version,
                    node: text(pod, "/spec/nodeName")
                        .filter(|n| !n.is_empty())
                        .map(str::to_string),
                    active: !finished,
                    request: pod_request(pod),
                    created: seconds(pod.at("/metadata/creationTimestamp")).unwrap_or(0),
                    unschedulable: unschedulable_message(pod),
                    uid: text(pod, "/metadata/uid").unwrap_or_default().to_string(),
                    claims: super::volumes::pod_claims(pod),
                    namespace: key.namespace.clone(),
                    labels: self.intern(string_map(pod.at("/metadata/labels"))),
                    terms: pod_terms(pod).map(Arc::new),
                    terminating,
                };
                let freed = finished
                    && self
                        .pods
                        .get(&event.key)
                        .is_some_and(|p| p.active && p.node.is_some());
                let wants_node = cached.node.is_none() && cached.active && !terminating;
                let placed = cached.node.is_some();
                self.set_pod(&event.key, Some(cached));
                if placed {
                    self.wake_attracted(dirty, event);
                }
                if !wants_node {
                    self.pending.remove(&event.key);
                } else {
                    dirty.mark(event.key.clone(), || because(event));
                }
                if freed {
                    self.mark_pending(dirty, &because(event));
                }
            }
            _ => {}
        }
    }

    fn reconcile(&mut self, key: &str, now: jiff::Timestamp) -> Reconciled {
        if !self.pending.contains(key) {
            return Reconciled::default();
        }
        let Some(pod) = self.pods.get(key) else {
            return Reconciled::default();
        };
        let Some(pod_key) = parse_storage_key(key) else {
            return Reconciled::default();
        };
        let enough = feasible_nodes_to_find(self.nodes.len());
        let start = if self.nodes.is_empty() {
            0
        } else {
            self.cursor % self.nodes.len()
        };
        // A pod whose claim is bound to a local volume goes where the data is.
        let mut request = pod.request.clone();
        if request.pinned.is_none() {
            request.pinned = pod.claims.iter().find_map(|claim| {
                let volume = self
                    .claims
                    .get(&(pod_key.namespace.clone(), claim.clone()))?;
                self.volume_nodes.get(volume).cloned()
            });
        }
        self.place_among_pods(key, pod, &mut request);
        let (verdict, next) = schedule_from(&request, &self.nodes, start, enough);
        self.cursor = next;
        let precondition = Some(Precondition::ResourceVersion(pod.object_rv));
        match verdict {
            Ok(node) => {
                let waited = now.as_second() - pod.created;
                crate::metrics::METRICS
                    .scheduling_seconds
                    .observe(waited.max(0) as f64);
                crate::metrics::METRICS.pods_scheduled.inc();
                if let Some(mut assumed) = self.pods.remove(key) {
                    assumed.node = Some(node.clone());
                    self.add_usage(&assumed, 1);
                    self.pods.insert(key.to_string(), assumed);
                }
                self.pending.remove(key);
                self.attracted.remove(key);
                let time = rfc3339(now.as_second());
                Reconciled {
                    batches: vec![Batch {
                        writes: vec![Write::Patch {
                            key: pod_key,
                            precondition,
                            patch: json!({
                                "spec": {"nodeName": node},
                                "status": {"conditions": [{
                                    "type": "PodScheduled", "status": "True",
                                    "lastTransitionTime": time, "lastProbeTime": null,
                                }]},
                            }),
                        }],
                        audit: Some(AuditEntry {
                            actor: "scheduler".into(),
                            action: "bind".into(),
                            subject: key.to_string(),
                            details: json!({ "node": node }),
                        }),
                    }],
                    requeue_after: None,
                }
            }
            Err(message) => {
                if pod.unschedulable.as_deref() == Some(message.as_str()) {
                    // Already said; wait for a change (or the retry timer).
                    return Reconciled {
                        batches: Vec::new(),
                        requeue_after: Some(UNSCHEDULABLE_RETRY),
                    };
                }
                let time = rfc3339(now.as_second());
                let reference = pod_reference(&pod_key.namespace, &pod_key.name, &pod.uid);
                Reconciled {
                    batches: vec![Batch {
                        writes: vec![
                            Write::Patch {
                                key: pod_key,
                                precondition,
                                patch: json!({"status": {"conditions": [{
                                    "type": "PodScheduled", "status": "False",
                                    "reason": "Unschedulable", "message": message,
                                    "lastTransitionTime": time, "lastProbeTime": null,
                                }]}}),
                            },
                            event(
                                COMPONENT,
                                &reference,
                                "Warning",
                                "FailedScheduling",
                                message,
                                now,
                            ),
                        ],
                        audit: None,
                    }],
                    requeue_after: Some(UNSCHEDULABLE_RETRY),
                }
            }
        }
    }

    fn write_failed(&mut self, key: &str) {
        // The binding did not happen: forget the assumed node.
        if let Some(mut pod) = self.pods.remove(key) {
            if pod.node.is_some() {
                self.add_usage(&pod, -1);
                pod.node = None;
            }
            if pod.active {
                self.pending.insert(key.to_string());
                if pod.terms.as_ref().is_some_and(|t| t.waits_for_company()) {
                    self.attracted.insert(key.to_string());
                }
            }
            self.pods.insert(key.to_string(), pod);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_containers_and_huge_requests_count_as_kubernetes_counts_them() {
        let pod = |init: Value, containers: Value| {
            pod_request(&json!({"spec": {"initContainers": init, "containers": containers}}))
        };
        let cpu = |milli: &str| json!({"resources": {"requests": {"cpu": milli}}});
        // The biggest init container beats the sum of the containers.
        let request = pod(
            json!([cpu("2"), cpu("500m")]),
            json!([cpu("250m"), cpu("250m")]),
        );
        assert_eq!(request.cpu_milli, 2000);
        // ... and the sum beats a small init container.
        let request = pod(json!([cpu("100m")]), json!([cpu("250m"), cpu("250m")]));
        assert_eq!(request.cpu_milli, 500);
        // A sidecar keeps running beside the init containers after it and the containers.
        let mut sidecar = cpu("300m");
        sidecar["restartPolicy"] = json!("Always");
        let request = pod(json!([sidecar, cpu("1")]), json!([cpu("250m")]));
        assert_eq!(request.cpu_milli, 1300);
        // A request past u64 fits no node, rather than reading as nothing.
        let huge = json!({"resources": {"requests": {"memory": "100Ei"}}});
        let request = pod(json!([]), json!([huge.clone(), huge]));
        assert_eq!(request.memory, u64::MAX);
    }

    #[test]
    fn reads_requests_and_allocatable_as_kubernetes_quantities() {
        let pod = json!({
            "metadata": {"ownerReferences": [{"kind": "ReplicaSet", "name": "web-1", "controller": true}]},
            "spec": {"containers": [
                {"resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}},
                {"resources": {"requests": {"cpu": 1}}},
                {"resources": {"requests": {"cpu": 0.5}}},
            ], "nodeSelector": {"disk": "ssd"}},
        });
        let request = pod_request(&pod);
        assert_eq!(
            request.cpu_milli, 1750,
            "a bare 0.5 is half a cpu, as the kubelet reads it"
        );
        assert_eq!(request.memory, 64 << 20);
        assert_eq!(request.owner.name(), "ReplicaSet/web-1");
        assert_eq!(
            request.node_selector.get("disk").map(String::as_str),
            Some("ssd")
        );
        let node = json!({
            "metadata": {"name": "n1"},
            "status": {"allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True"}]},
        });
        let view = node_view(&node);
        assert!(view.ready);
        assert_eq!(
            (view.cpu_milli, view.memory, view.max_pods),
            (2000, 4 << 30, 110)
        );
    }

    fn event(key: &str, rv: u64, object: Value) -> WatchEvent {
        WatchEvent {
            resource_version: rv,
            kind: EventType::Modified,
            key: key.to_string(),
            object,
        }
    }

    fn bound_to(reconciled: &Reconciled) -> Result<String, String> {
        let write = &reconciled.batches[0].writes[0];
        let Write::Patch { patch, .. } = write else {
            return Err(format!("{write:?}"));
        };
        match patch.at("/spec/nodeName").and_then(Value::as_str) {
            Some(node) => Ok(node.to_string()),
            None => Err(patch["status"]["conditions"][0]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string()),
        }
    }

    #[test]
    fn replicas_with_hostname_anti_affinity_get_a_node_each() {
        let mut scheduler = Scheduler::new();
        let mut dirty = Dirty::default();
        for (i, name) in ["n1", "n2", "n3"].iter().enumerate() {
            scheduler.observe(
                &event(
                    &format!("Node//{name}"),
                    i as u64 + 1,
                    json!({
                        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
                        "status": {"allocatable": {"cpu": "4", "memory": "4Gi", "pods": "110"},
                                   "conditions": [{"type": "Ready", "status": "True"}]},
                    }),
                ),
                &mut dirty,
            );
        }
        let apart = json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}});
        let pod = |name: &str, affinity: &Value| {
            json!({
                "metadata": {"name": name, "namespace": "demo", "uid": name, "labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c"}], "affinity": affinity},
            })
        };
        let now = jiff::Timestamp::now();
        let mut placed = Vec::new();
        for (i, name) in ["web-0", "web-1", "web-2", "web-3"].iter().enumerate() {
            let key = format!("Pod/demo/{name}");
            scheduler.observe(&event(&key, 10 + i as u64, pod(name, &apart)), &mut dirty);
            placed.push(bound_to(&scheduler.reconcile(&key, now)));
        }
        let mut nodes: Vec<&str> = placed[..3]
            .iter()
            .map(|r| r.as_deref().expect("bound"))
            .collect();
        nodes.sort();
        assert_eq!(nodes, ["n1", "n2", "n3"], "one replica per node");
        assert_eq!(
            placed[3],
            Err("0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules.".into())
        );
        // A pod without rules of its own, but selected by theirs, is kept off as well.
        let key = "Pod/demo/plain";
        scheduler.observe(&event(key, 20, pod("plain", &Value::Null)), &mut dirty);
        assert_eq!(
            bound_to(&scheduler.reconcile(key, now)),
            Err("0/3 nodes are available: 3 node(s) didn't satisfy existing pods anti-affinity rules.".into())
        );
    }

    #[test]
    fn status_reports_keep_what_was_read_and_a_label_change_is_read_again() {
        let mut scheduler = Scheduler::new();
        let mut dirty = Dirty::default();
        scheduler.observe(
            &event(
                "Node//n1",
                1,
                json!({
                    "metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1"}},
                    "status": {"allocatable": {"cpu": "1", "memory": "1Gi", "pods": "110"},
                               "conditions": [{"type": "Ready", "status": "True"}]},
                }),
            ),
            &mut dirty,
        );
        let apart = json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}});
        let bound = |labels: Value, phase: &str| {
            json!({
                "metadata": {"name": "old", "namespace": "demo", "uid": "u-old", "labels": labels},
                "spec": {"nodeName": "n1", "containers": [{"name": "c",
                    "resources": {"requests": {"cpu": "600m"}}}]},
                "status": {"phase": phase},
            })
        };
        scheduler.observe(
            &event("Pod/demo/old", 2, bound(json!({"app": "web"}), "Pending")),
            &mut dirty,
        );
        scheduler.observe(
            &event("Pod/demo/old", 3, bound(json!({"app": "web"}), "Running")),
            &mut dirty,
        );
        let new = json!({
            "metadata": {"name": "new", "namespace": "demo", "uid": "u-new", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "300m"}}}],
                     "affinity": apart},
        });
        let now = jiff::Timestamp::now();
        scheduler.observe(&event("Pod/demo/new", 4, new.clone()), &mut dirty);
        assert_eq!(
            bound_to(&scheduler.reconcile("Pod/demo/new", now)),
            Err("0/1 nodes are available: 1 node(s) didn't match pod anti-affinity rules.".into()),
            "the status report kept the old pod's labels and its cpu"
        );
        scheduler.observe(
            &event("Pod/demo/old", 5, bound(json!({"app": "batch"}), "Running")),
            &mut dirty,
        );
        scheduler.observe(&event("Pod/demo/new", 6, new), &mut dirty);
        assert_eq!(
            bound_to(&scheduler.reconcile("Pod/demo/new", now)),
            Ok("n1".into()),
            "relabelled, the old pod no longer repels it"
        );
    }

    #[test]
    fn reads_node_affinity_terms_and_pod_terms_with_kubernetes_defaults() {
        let pod = json!({
            "metadata": {"namespace": "demo"},
            "spec": {"affinity": {
                "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["4"]}]},
                    {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]},
                ]}},
                "podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                    {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "zone",
                     "namespaceSelector": {}}]},
                "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                    {"topologyKey": "kubernetes.io/hostname"}]},
            }},
        });
        let terms = node_affinity(&pod);
        assert_eq!(terms.len(), 2);
        assert_eq!(terms[0].expressions[0].operator, NodeOperator::Gt);
        assert_eq!(terms[1].fields[0].values, vec!["n1".to_string()]);
        let found = pod_terms(&pod).expect("terms");
        let db: BTreeMap<String, String> = [("app".to_string(), "db".to_string())].into();
        assert!(
            found.affinity[0].selects("elsewhere", &db),
            "namespaceSelector {{}}: every namespace"
        );
        assert!(
            found.anti_affinity[0].namespaces.contains("demo"),
            "no namespaces: the pod's own"
        );
        assert!(
            !found.anti_affinity[0].selects("demo", &db),
            "no labelSelector selects nothing"
        );
        assert_eq!(pod_terms(&json!({"spec": {}})), None);
    }

    #[test]
    fn reads_spread_constraints_and_preferences_with_kubernetes_defaults() {
        let pod = json!({
            "metadata": {"namespace": "demo", "labels": {"app": "web", "pod-template-hash": "h1"}},
            "spec": {
                "topologySpreadConstraints": [
                    {"maxSkew": 2, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway",
                     "labelSelector": {"matchLabels": {"app": "web"}},
                     "matchLabelKeys": ["pod-template-hash", "absent"]},
                    {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                     "whenUnsatisfiable": "DoNotSchedule", "minDomains": 3,
                     "nodeAffinityPolicy": "Ignore", "nodeTaintsPolicy": "Honor"},
                ],
                "affinity": {
                    "nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                        {"weight": 20, "preference": {"matchExpressions": [
                            {"key": "disk", "operator": "In", "values": ["ssd"]}]}}]},
                    "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                        {"weight": 30, "podAffinityTerm": {
                            "labelSelector": {"matchLabels": {"app": "web"}},
                            "topologyKey": "kubernetes.io/hostname"}}]},
                },
            },
        });
        let terms = pod_terms(&pod).expect("terms");
        let [soft, hard] = terms.spread.as_slice() else {
            panic!("two constraints: {:?}", terms.spread);
        };
        assert_eq!(
            (
                soft.max_skew,
                soft.when_unsatisfiable,
                soft.min_domains,
                soft.honour_node_affinity,
                soft.honour_taints
            ),
            (2, WhenUnsatisfiable::ScheduleAnyway, 1, true, false),
            "minDomains 1, nodeAffinityPolicy Honor, nodeTaintsPolicy Ignore by default"
        );
        assert_eq!(
            soft.match_labels,
            [("pod-template-hash".to_string(), "h1".to_string())].into(),
            "a key the pod lacks is ignored"
        );
        let other_revision: BTreeMap<String, String> = [
            ("app".to_string(), "web".to_string()),
            ("pod-template-hash".to_string(), "h0".to_string()),
        ]
        .into();
        assert!(
            !soft.selects(&other_revision),
            "the old revision's pods do not count"
        );
        assert_eq!(
            (
                hard.when_unsatisfiable,
                hard.min_domains,
                hard.honour_node_affinity,
                hard.honour_taints
            ),
            (WhenUnsatisfiable::DoNotSchedule, 3, false, true)
        );
        assert!(
            !hard.selects(&other_revision),
            "no labelSelector counts no pod"
        );
        assert_eq!(terms.preferred_anti_affinity[0].weight, 30);
        let request = pod_request(&pod);
        assert_eq!(request.preferred_node_affinity[0].weight, 20);
        assert_eq!(
            request.preferred_node_affinity[0].term.expressions[0].values,
            vec!["ssd".to_string()]
        );
    }

    #[test]
    fn a_pod_held_back_by_its_spread_constraint_is_looked_at_again_when_another_is_placed() {
        let mut scheduler = Scheduler::new();
        add_node(&mut scheduler, 1, "a1", "8", json!({"zone": "a"}));
        add_node(&mut scheduler, 2, "b1", "8", json!({"zone": "b"}));
        let spread = json!({"nodeSelector": {"zone": "a"}, "topologySpreadConstraints": [{
            "maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
            "nodeAffinityPolicy": "Ignore",
            "labelSelector": {"matchLabels": {"app": "web"}}}]});
        assert_eq!(
            schedule_replica(&mut scheduler, 0, &spread),
            Ok("a1".into())
        );
        assert!(
            schedule_replica(&mut scheduler, 1, &spread).is_err(),
            "zone a would hold 2, zone b none"
        );
        // A web pod lands in zone b: the waiting pod is marked to be tried again, and fits.
        let mut dirty = Dirty::default();
        scheduler.observe(
            &event(
                "Pod/demo/other",
                50,
                json!({
                    "metadata": {"name": "other", "namespace": "demo", "uid": "other",
                                 "labels": {"app": "web"}},
                    "spec": {"nodeName": "b1", "containers": [{"name": "c"}]},
                }),
            ),
            &mut dirty,
        );
        assert!(
            format!("{dirty:?}").contains("Pod/demo/web-1"),
            "woken by the placement"
        );
        assert_eq!(
            bound_to(&scheduler.reconcile("Pod/demo/web-1", jiff::Timestamp::now())),
            Ok("a1".into())
        );
    }

    #[test]
    fn reads_host_ports_as_kubernetes_defaults_them() {
        let pod = |host_network: bool| {
            json!({"spec": {
                "hostNetwork": host_network,
                "initContainers": [
                    {"name": "setup", "ports": [{"containerPort": 1000, "hostPort": 1000}]},
                    {"name": "proxy", "restartPolicy": "Always",
                     "ports": [{"containerPort": 2000, "protocol": "UDP"}]},
                ],
                "containers": [{"name": "c", "ports": [
                    {"containerPort": 8080},
                    {"containerPort": 9090, "hostPort": 9090, "hostIP": "127.0.0.1"},
                ]}],
            }})
        };
        assert_eq!(
            host_ports(&pod(true)),
            [
                HostPort::new("0.0.0.0", "UDP", 2000),
                HostPort::new("0.0.0.0", "TCP", 8080),
                HostPort::new("127.0.0.1", "TCP", 9090),
            ],
            "on the host's network every port of the containers and sidecars is a host port; \
             an init container that finishes holds none"
        );
        assert_eq!(
            host_ports(&pod(false)),
            [HostPort::new("127.0.0.1", "TCP", 9090)],
            "off it, only a hostPort given"
        );
        assert!(
            pod_request(&json!({"spec": {"containers": [{"name": "c"}]}}))
                .host_ports
                .is_empty()
        );
    }

    #[test]
    fn host_network_pods_on_one_port_get_a_node_each_and_a_freed_port_lets_the_next_in() {
        let mut scheduler = Scheduler::new();
        // The big node is the least allocated for every pod, so only the ports part them.
        add_node(&mut scheduler, 1, "big", "8", json!({}));
        add_node(&mut scheduler, 2, "small", "2", json!({}));
        let pod = |name: &str| {
            json!({
                "metadata": {"name": name, "namespace": "demo", "uid": name,
                             "ownerReferences": [{"kind": "ReplicaSet", "name": name,
                                                  "controller": true}]},
                "spec": {"hostNetwork": true, "containers": [{"name": "c",
                    "resources": {"requests": {"cpu": "100m"}},
                    "ports": [{"containerPort": 8080}]}]},
            })
        };
        let now = jiff::Timestamp::now();
        let mut placed = Vec::new();
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            let key = format!("Pod/demo/{name}");
            scheduler.observe(
                &event(&key, 10 + i as u64, pod(name)),
                &mut Dirty::default(),
            );
            placed.push(bound_to(&scheduler.reconcile(&key, now)));
        }
        assert_eq!(
            placed,
            [
                Ok("big".to_string()),
                Ok("small".to_string()),
                Err("0/2 nodes are available: 2 node(s) didn't have free ports for the requested pod ports.".to_string()),
            ]
        );
        // The bindings come back from the store; the port stays taken.
        let mut dirty = Dirty::default();
        for (rv, (name, node)) in [(20, ("a", "big")), (21, ("b", "small"))] {
            let mut bound = pod(name);
            bound["spec"]["nodeName"] = json!(node);
            scheduler.observe(&event(&format!("Pod/demo/{name}"), rv, bound), &mut dirty);
        }
        // A node's status report keeps what its pods bind.
        add_node(&mut scheduler, 22, "big", "8", json!({"report": "2"}));
        assert!(
            bound_to(&scheduler.reconcile("Pod/demo/c", now)).is_err(),
            "still no free port"
        );
        // Pod a goes away: c is looked at again and takes the freed port.
        let mut dirty = Dirty::default();
        let mut gone = pod("a");
        gone["spec"]["nodeName"] = json!("big");
        scheduler.observe(
            &WatchEvent {
                resource_version: 30,
                kind: EventType::Deleted,
                key: "Pod/demo/a".into(),
                object: gone,
            },
            &mut dirty,
        );
        assert!(
            format!("{dirty:?}").contains("Pod/demo/c"),
            "woken by the deletion: {dirty:?}"
        );
        assert_eq!(
            bound_to(&scheduler.reconcile("Pod/demo/c", now)),
            Ok("big".into())
        );
    }

    #[test]
    fn ports_of_pods_listed_before_their_node_count_once_it_is_listed() {
        let mut scheduler = Scheduler::new();
        let pod = |name: &str, node: Option<&str>| {
            json!({
                "metadata": {"name": name, "namespace": "demo", "uid": name},
                "spec": {"hostNetwork": true, "nodeName": node,
                         "containers": [{"name": "c", "ports": [{"containerPort": 53,
                                                                 "protocol": "UDP"}]}]},
            })
        };
        scheduler.observe(
            &event("Pod/demo/dns-0", 1, pod("dns-0", Some("n1"))),
            &mut Dirty::default(),
        );
        add_node(&mut scheduler, 2, "n1", "4", json!({}));
        scheduler.observe(
            &event("Pod/demo/dns-1", 3, pod("dns-1", None)),
            &mut Dirty::default(),
        );
        assert_eq!(
            bound_to(&scheduler.reconcile("Pod/demo/dns-1", jiff::Timestamp::now())),
            Err("0/1 nodes are available: 1 node(s) didn't have free ports for the requested pod ports.".into())
        );
    }

    /// A simulated node with `cpu` cores and `labels` (besides its hostname).
    fn add_node(scheduler: &mut Scheduler, rv: u64, name: &str, cpu: &str, labels: Value) {
        let mut all = json!({"kubernetes.io/hostname": name});
        if let (Some(all), Some(extra)) = (all.as_object_mut(), labels.as_object()) {
            all.extend(extra.clone());
        }
        scheduler.observe(
            &event(
                &format!("Node//{name}"),
                rv,
                json!({
                    "metadata": {"name": name, "labels": all},
                    "status": {"allocatable": {"cpu": cpu, "memory": "4Gi", "pods": "110"},
                               "conditions": [{"type": "Ready", "status": "True"}]},
                }),
            ),
            &mut Dirty::default(),
        );
    }

    /// Creates replica `i` of ReplicaSet web (1 cpu each) with `spec` merged in, and returns
    /// where the scheduler binds it.
    fn schedule_replica(scheduler: &mut Scheduler, i: u64, spec: &Value) -> Result<String, String> {
        let name = format!("web-{i}");
        let mut pod = json!({
            "metadata": {"name": name, "namespace": "demo", "uid": name,
                         "labels": {"app": "web", "pod-template-hash": "7d4b9"},
                         "ownerReferences": [{"kind": "ReplicaSet", "name": "web-7d4b9",
                                              "controller": true}]},
            "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}]},
        });
        if let (Some(into), Some(extra)) = (pod["spec"].as_object_mut(), spec.as_object()) {
            into.extend(extra.clone());
        }
        let key = format!("Pod/demo/{name}");
        scheduler.observe(&event(&key, 100 + i, pod), &mut Dirty::default());
        bound_to(&scheduler.reconcile(&key, jiff::Timestamp::now()))
    }

    #[test]
    fn a_zone_spread_constraint_balances_replicas_across_zones() {
        let mut scheduler = Scheduler::new();
        let zone = |z: &str| json!({"topology.kubernetes.io/zone": z});
        add_node(&mut scheduler, 1, "a1", "8", zone("a"));
        add_node(&mut scheduler, 2, "a2", "8", zone("a"));
        add_node(&mut scheduler, 3, "b1", "8", zone("b"));
        let spread = json!({"topologySpreadConstraints": [{
            "maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"app": "web"}},
            "matchLabelKeys": ["pod-template-hash"],
        }]});
        let mut per_zone: BTreeMap<char, u32> = BTreeMap::new();
        for i in 0..6 {
            let node = schedule_replica(&mut scheduler, i, &spread);
            let zone = node.as_deref().ok().and_then(|n| n.chars().next());
            *per_zone.entry(zone.unwrap_or('?')).or_default() += 1;
        }
        assert_eq!(
            per_zone,
            [('a', 3), ('b', 3)].into(),
            "one node in zone b takes as many replicas as two in zone a"
        );
        // Zone b's node cordoned: it still counts (nodeTaintsPolicy Ignore), so zone a may run
        // one more replica, and then the skew would pass 1.
        scheduler.observe(
            &event(
                "Node//b1",
                4,
                json!({
                    "metadata": {"name": "b1", "labels": {"kubernetes.io/hostname": "b1",
                                 "topology.kubernetes.io/zone": "b"}},
                    "spec": {"unschedulable": true},
                    "status": {"allocatable": {"cpu": "8", "memory": "4Gi", "pods": "110"},
                               "conditions": [{"type": "Ready", "status": "True"}]},
                }),
            ),
            &mut Dirty::default(),
        );
        let seventh = schedule_replica(&mut scheduler, 6, &spread);
        assert!(
            matches!(seventh.as_deref(), Ok("a1") | Ok("a2")),
            "{seventh:?}"
        );
        assert_eq!(
            schedule_replica(&mut scheduler, 7, &spread),
            Err("0/3 nodes are available: 2 node(s) didn't match pod topology spread constraints, 1 node(s) were unschedulable.".into())
        );
    }

    #[test]
    fn preferred_node_affinity_steers_replicas_to_the_preferred_node_while_it_fits() {
        let mut scheduler = Scheduler::new();
        add_node(&mut scheduler, 1, "fast", "4", json!({"disk": "ssd"}));
        add_node(&mut scheduler, 2, "slow", "4", json!({"disk": "hdd"}));
        let prefers_ssd = json!({"affinity": {"nodeAffinity": {
        "preferredDuringSchedulingIgnoredDuringExecution": [{
            "weight": 50,
            "preference": {"matchExpressions": [
                {"key": "disk", "operator": "In", "values": ["ssd"]}]},
        }]}}});
        let placed: Vec<Result<String, String>> = (0..6)
            .map(|i| schedule_replica(&mut scheduler, i, &prefers_ssd))
            .collect();
        let on = |node: &str| placed.iter().filter(|p| p.as_deref() == Ok(node)).count();
        assert_eq!(
            (on("fast"), on("slow")),
            (4, 2),
            "the preferred node fills up (4 cpu) before the other is used: {placed:?}"
        );
        assert_eq!(placed[..4], vec![Ok("fast".to_string()); 4][..]);
    }
}
