//! What the models show the real decisions: a model pod as a ReplicaSet's `PodView`, a model
//! node as the scheduler's `NodeView`, and the scheduler's choice back as a node number. Every
//! model with pods and nodes builds these the same way.
//!
//! Pods and ReplicaSets reach the decisions the way they reach them in the controllers: the
//! model writes the stored object (the fields a kubelet, the store or a controller would set)
//! and projects it with `shipshape_reconciler::projection`, the function the controllers call.
//! The model's state stays the few facts that matter (bound, running, ready, terminating), not
//! the objects: objects with names, uids and timestamps would make states that differ only in
//! fields no decision reads, and the state space would grow for nothing.

use std::cell::RefCell;
use std::collections::HashMap;

use serde_json::{Value, json};
use shipshape_reconciler::projection;
use shipshape_reconciler::replicaset::{PodView, ReplicaSetStatus, ReplicaSetView};
use shipshape_reconciler::scheduler::{NodeView, OwnerCounts, PodRequest, Taint, schedule};

/// Each pod requests this much cpu; nodes are sized in multiples of it.
pub const POD_CPU_MILLI: u64 = 100;

fn rfc3339(seconds: i64) -> String {
    jiff::Timestamp::from_second(seconds)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_string()
}

/// A model pod as the store holds it (node `n` is named `node-n`): created at second `uid`,
/// Ready since second 0 when ready, `deletionTimestamp` set while terminating.
pub fn pod_object(
    name: &str,
    uid: u32,
    node: Option<usize>,
    running: bool,
    ready: bool,
    terminating: bool,
) -> Value {
    let mut metadata = json!({
        "name": name,
        "uid": uid.to_string(),
        "creationTimestamp": rfc3339(i64::from(uid)),
    });
    if terminating {
        metadata["deletionTimestamp"] = json!(rfc3339(i64::from(uid) + 30));
    }
    json!({
        "metadata": metadata,
        "spec": {"nodeName": node.map(|n| format!("node-{n}")).unwrap_or_default()},
        "status": {
            "phase": if running { "Running" } else { "Pending" },
            "conditions": [{
                "type": "Ready",
                "status": if ready { "True" } else { "False" },
                "lastTransitionTime": rfc3339(0),
            }],
        },
    })
}

/// A model pod as the ReplicaSet decision sees it: [`pod_object`] through the controllers'
/// projection. The projection is a pure function, so each distinct pod is projected once per
/// checker thread and remembered: building and reading JSON in every state made the checks
/// several times slower for the same answers.
pub fn pod_view(
    name: &str,
    uid: u32,
    node: Option<usize>,
    running: bool,
    ready: bool,
    terminating: bool,
) -> PodView {
    type Facts = (u32, Option<usize>, bool, bool, bool);
    thread_local! {
        static PROJECTED: RefCell<HashMap<Facts, PodView>> = RefCell::new(HashMap::new());
    }
    let facts = (uid, node, running, ready, terminating);
    PROJECTED.with(|projected| {
        let mut projected = projected.borrow_mut();
        match projected.get(&facts) {
            Some(view) if view.name == name => view.clone(),
            _ => {
                let object = pod_object(name, uid, node, running, ready, terminating);
                let view = projection::pod_view(&object);
                projected.insert(facts, view.clone());
                view
            }
        }
    })
}

/// A model ReplicaSet as its controller sees it: the stored object (its replicas and the
/// status its controller last wrote) through the controllers' projection, remembered per
/// distinct set as [`pod_view`] is.
pub fn replica_set_view(
    name: &str,
    replicas: u32,
    status: ReplicaSetStatus,
    pods: Vec<PodView>,
) -> ReplicaSetView {
    thread_local! {
        static PROJECTED: RefCell<HashMap<(u32, ReplicaSetStatus), ReplicaSetView>> =
            RefCell::new(HashMap::new());
    }
    let mut view = PROJECTED.with(|projected| {
        let mut projected = projected.borrow_mut();
        match projected.get(&(replicas, status)) {
            Some(view) if view.name == name => view.clone(),
            _ => {
                let set = json!({
                    "metadata": {"name": name, "generation": 1},
                    "spec": {"replicas": replicas},
                    "status": {
                        "replicas": status.replicas,
                        "readyReplicas": status.ready,
                        "availableReplicas": status.available,
                        "observedGeneration": status.observed_generation,
                    },
                });
                let view = projection::replica_set_view(&set, Vec::new());
                projected.insert((replicas, status), view.clone());
                view
            }
        }
    });
    view.pods = pods;
    view
}

/// Node `n` as the scheduler sees it: room for `pods_per_node` pods, the owners of the pods
/// bound to it, Ready or not, and carrying the unreachable taint or not.
pub fn node_view<'a>(
    n: usize,
    pods_per_node: u32,
    bound_owners: impl Iterator<Item = &'a str>,
    ready: bool,
    unreachable: bool,
) -> NodeView {
    let mut pods_by_owner = OwnerCounts::default();
    let mut bound = 0u32;
    for owner in bound_owners {
        pods_by_owner.add(&owner.into(), 1);
        bound += 1;
    }
    NodeView {
        name: format!("node-{n}"),
        ready,
        unschedulable: false,
        labels: Default::default(),
        taints: if unreachable {
            vec![Taint {
                key: shipshape_reconciler::nodes::UNREACHABLE_TAINT.into(),
                value: String::new(),
                effect: "NoExecute".into(),
            }]
        } else {
            Vec::new()
        },
        cpu_milli: u64::from(pods_per_node) * POD_CPU_MILLI,
        memory: 1 << 30,
        used_cpu_milli: u64::from(bound) * POD_CPU_MILLI,
        used_memory: 0,
        max_pods: 110,
        used_pods: bound,
        pods_by_owner,
        used_ports: Default::default(),
    }
}

/// The node the real scheduler picks for a pod of `owner`, as its number.
pub fn placement(owner: &str, nodes: &[NodeView]) -> Option<usize> {
    let request = PodRequest {
        owner: owner.into(),
        cpu_milli: POD_CPU_MILLI,
        memory: 0,
        ..PodRequest::default()
    };
    schedule(&request, nodes)
        .ok()
        .and_then(|name| name.strip_prefix("node-").and_then(|n| n.parse().ok()))
}
