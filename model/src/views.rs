//! What the models show the real decisions: a model pod as a ReplicaSet's `PodView`, a model
//! node as the scheduler's `NodeView`, and the scheduler's choice back as a node number. Every
//! model with pods and nodes builds these the same way.

use shipshape_reconciler::replicaset::{PodPhase, PodView};
use shipshape_reconciler::scheduler::{NodeView, OwnerCounts, PodRequest, Taint, schedule};

/// Each pod requests this much cpu; nodes are sized in multiples of it.
pub const POD_CPU_MILLI: u64 = 100;

/// A model pod as the ReplicaSet decision sees it (node `n` is named `node-n`).
pub fn pod_view(
    name: &str,
    uid: u32,
    node: Option<usize>,
    running: bool,
    ready: bool,
    terminating: bool,
) -> PodView {
    PodView {
        name: name.to_string(),
        uid: uid.to_string(),
        node: node.map(|n| format!("node-{n}")),
        phase: if running {
            PodPhase::Running
        } else {
            PodPhase::Pending
        },
        ready,
        ready_since: ready.then_some(0),
        restarts: 0,
        created: i64::from(uid),
        terminating,
    }
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
