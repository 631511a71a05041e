//! The node-loss model: a ReplicaSet's pods on a few nodes whose kubelets renew leases, the
//! node lifecycle controller, the scheduler, and the faults that make nodes look gone: a node
//! lost (and perhaps back), a lease renewal lost or delayed on the wire (so it lands after a
//! later one), and the node controller crashing between its read and its act.
//!
//! Every controller step calls the real decisions (`decide_node`, `decide_replica_set`,
//! `schedule`). The node controller reads in one step and acts in a later one, and its writes
//! are refused as the store refuses them (a node write carries the resourceVersion it read; a
//! pod write carries the pod's uid). Kubelets follow the protocol of `node/`'s heartbeat: a
//! lease renewal carries the resourceVersion of the lease it renews, and a kubelet that finds
//! its node marked reports it Ready again and reports its pods afresh.
//!
//! Time is counted in lease periods and kept as saturating ages (how long since a renewal was
//! seen, since Ready went away), so the state space is finite without cutting paths at a depth:
//! past the grace period and the eviction timeout, more silence changes no decision.

use std::fmt;

use crate::converge::Converging;

use shipshape_reconciler::decision::Decision;
use shipshape_reconciler::nodes::{NodeAction, NodeHealth, PodOnNode, decide_node};
use shipshape_reconciler::precondition::Precondition;
use shipshape_reconciler::replicaset::{
    ReplicaSetAction, ReplicaSetStatus, ReplicaSetView, decide_replica_set,
};
use shipshape_reconciler::scheduler::NodeView;

use crate::views::{node_view, placement, pod_view, replica_set_view};
use stateright::{Model, Property};

/// The lease grace period, in lease periods: a node silent for longer is marked.
const GRACE: i64 = 0;
/// How long a marked node keeps its pods, in lease periods.
const EVICTION_TIMEOUT: i64 = 1;
/// Ages stop counting here: every decision is the same past it.
const AGE_CAP: u8 = 1;
/// The clock the decisions are given; ages are subtracted from it.
const NOW: i64 = 100;
/// The one owner of every pod here.
const OWNER: &str = "ReplicaSet/web";

/// How far a fault-free run may go from any reachable state before it must have converged.
pub const CONVERGENCE_STEPS: usize = 200;

/// The node lifecycle decision under test: node, its pods, now, grace, eviction timeout.
pub type DecideNode = fn(&NodeHealth, &[PodOnNode], i64, i64, i64) -> Decision<NodeAction>;

/// The sizes and fault budgets a run explores.
#[derive(Clone)]
pub struct NodeLossModel {
    /// Desired replicas.
    pub replicas: u32,
    /// Nodes in the cluster.
    pub nodes: usize,
    /// How many nodes may be lost.
    pub losses: u8,
    /// Whether a lost node may come back.
    pub returns: bool,
    /// Message and controller faults: a renewal lost, a renewal delayed, the node controller
    /// crashing before it acts.
    pub faults: u8,
    /// The node lifecycle decision (the real one, or a deliberately wrong one).
    pub decide: DecideNode,
    /// States whose fault-free run is known to converge.
    converging: Converging,
}

impl fmt::Debug for NodeLossModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "NodeLossModel({} replicas, {} nodes)",
            self.replicas, self.nodes
        )
    }
}

/// A node as the store and its kubelet have it.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct SimNode {
    /// Its kubelet runs and can reach the API.
    pub up: bool,
    /// This period's renewal was lost or delayed.
    pub missed: bool,
    /// Periods since the controller saw the lease change.
    pub lease_age: u8,
    /// Age of the `renewTime` written in the lease.
    pub renew_age: u8,
    /// Its Ready condition is True.
    pub ready: bool,
    /// Periods since Ready stopped being True.
    pub unready_age: u8,
    /// It carries the unreachable taint.
    pub tainted: bool,
    /// Ghost: it was lost or a renewal of it went astray at some point.
    pub ever_silent: bool,
}

/// A pod of the ReplicaSet.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct LossPod {
    /// Its name.
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// The node it is bound to.
    pub node: Option<usize>,
    /// Its containers run (its kubelet started them).
    pub running: bool,
    /// Its Ready condition is True in the store.
    pub ready: bool,
    /// Being deleted.
    pub terminating: bool,
}

/// A lease renewal on the wire.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Renewal {
    /// From which node.
    pub node: usize,
    /// How old the renewTime it carries is.
    pub age: u8,
    /// A later renewal landed since it was sent: its resourceVersion is out of date.
    pub stale: bool,
}

/// What the node controller read and has not acted on yet.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct NodeRead {
    /// Which node.
    pub node: usize,
    /// Its health then.
    pub health: NodeHealth,
    /// Its pods then.
    pub pods: Vec<PodOnNode>,
    /// The node object changed since (its resourceVersion moved).
    pub node_changed: bool,
}

/// The cluster.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct LossState {
    /// The nodes.
    pub nodes: Vec<SimNode>,
    /// The pods.
    pub pods: Vec<LossPod>,
    /// The ReplicaSet's status as its controller last wrote it.
    pub status: ReplicaSetStatus,
    /// The node controller's read in hand.
    pub pending: Option<NodeRead>,
    /// Delayed renewals.
    pub in_flight: Vec<Renewal>,
    /// Node losses left.
    pub losses_left: u8,
    /// Other faults left.
    pub faults_left: u8,
    /// The next uid.
    pub next_uid: u32,
    /// Ghost: a pod was evicted from a node that never went silent.
    pub evicted_reporting: bool,
    /// Ghost: a pod was evicted before its node had been marked for the eviction timeout.
    pub evicted_early: bool,
    /// Ghost: the scheduler bound a pod to a node marked unreachable.
    pub bound_to_unreachable: bool,
    /// Ghost: a lease's renewTime moved back.
    pub lease_went_back: bool,
}

/// One step.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum Step {
    /// A lease period passes: kubelets that are up renew, silences grow.
    Tick,
    /// A delayed renewal arrives (the store refuses it if a later one landed).
    Deliver(usize),
    /// The node controller reads this node.
    ReadNode(usize),
    /// The node controller acts on what it read.
    ActNode,
    /// The ReplicaSet controller syncs.
    ReplicaSet,
    /// The scheduler binds this pod.
    Schedule(u32),
    /// The kubelet starts, reports again or removes this pod.
    Kubelet(u32),
    /// The kubelet finds its node marked and reports it Ready, renewing its lease.
    Heartbeat(usize),
    /// Fault: the node is lost (its kubelet stops; its pods' status stays as last written).
    LoseNode(usize),
    /// Fault: a lost node comes back.
    ReturnNode(usize),
    /// Fault: this period's renewal from the node is lost.
    LoseRenewal(usize),
    /// Fault: this period's renewal from the node is held up on the wire.
    DelayRenewal(usize),
    /// Fault: the node controller crashes between its read and its act.
    CrashController,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Tick => write!(f, "a lease period passes"),
            Step::Deliver(i) => write!(f, "delayed renewal #{i} arrives"),
            Step::ReadNode(n) => write!(f, "the node controller reads node-{n}"),
            Step::ActNode => write!(f, "the node controller acts on what it read"),
            Step::ReplicaSet => write!(f, "the ReplicaSet controller syncs"),
            Step::Schedule(uid) => write!(f, "the scheduler binds pod #{uid}"),
            Step::Kubelet(uid) => write!(f, "a kubelet starts, reports or removes pod #{uid}"),
            Step::Heartbeat(n) => write!(f, "node-{n}'s kubelet reports its node Ready"),
            Step::LoseNode(n) => write!(f, "fault: node-{n} is lost"),
            Step::ReturnNode(n) => write!(f, "fault: node-{n} comes back"),
            Step::LoseRenewal(n) => write!(f, "fault: node-{n}'s lease renewal is lost"),
            Step::DelayRenewal(n) => write!(f, "fault: node-{n}'s lease renewal is delayed"),
            Step::CrashController => {
                write!(f, "fault: the node controller crashes before acting")
            }
        }
    }
}

/// Whether the store takes a write decided on an object that has `moved` since. The model keeps
/// "moved since it was read" as one bit, not as resourceVersions (counting them would make the
/// state space infinite), and asks the store's own check with the version read as 0 and the
/// object's as 1 once it moved.
fn store_admits(moved: bool) -> bool {
    Precondition::ResourceVersion(0).holds(u64::from(moved), "")
}

/// The pod a write by name and uid reaches, if the store's uid precondition lets it through.
fn pod_with_uid<'a>(pods: &'a mut [LossPod], name: &str, uid: String) -> Option<&'a mut LossPod> {
    let precondition = Precondition::Uid(uid);
    pods.iter_mut()
        .find(|p| p.name == name && precondition.holds(0, &p.uid.to_string()))
}

impl NodeLossModel {
    /// The model with the real decisions.
    pub fn new(replicas: u32, nodes: usize, losses: u8, faults: u8) -> Self {
        Self {
            replicas,
            nodes,
            losses,
            returns: true,
            faults,
            decide: decide_node,
            converging: Default::default(),
        }
    }

    /// Each node can hold every replica, so one survivor can take a lost node's pods.
    fn pods_per_node(&self) -> u32 {
        self.replicas
    }

    fn health(node: &SimNode) -> NodeHealth {
        NodeHealth {
            ready: node.ready,
            ready_changed: NOW - i64::from(if node.ready { 0 } else { node.unready_age }),
            lease_renewed: Some(NOW - i64::from(node.lease_age)),
            tainted: node.tainted,
        }
    }

    fn pods_on(state: &LossState, node: usize) -> Vec<PodOnNode> {
        state
            .pods
            .iter()
            .filter(|p| p.node == Some(node))
            .map(|p| PodOnNode {
                name: p.name.clone(),
                uid: p.uid.to_string(),
                terminating: p.terminating,
                tolerates_forever: false,
                ready: p.ready,
            })
            .collect()
    }

    fn node_decision(&self, state: &LossState, node: usize) -> Decision<NodeAction> {
        (self.decide)(
            &Self::health(&state.nodes[node]),
            &Self::pods_on(state, node),
            NOW,
            GRACE,
            EVICTION_TIMEOUT,
        )
    }

    fn replica_set_view(&self, state: &LossState) -> ReplicaSetView {
        replica_set_view(
            "web",
            self.replicas,
            state.status,
            state
                .pods
                .iter()
                .map(|p| pod_view(&p.name, p.uid, p.node, p.running, p.ready, p.terminating))
                .collect(),
        )
    }

    fn node_views(&self, state: &LossState) -> Vec<NodeView> {
        state
            .nodes
            .iter()
            .enumerate()
            .map(|(n, node)| {
                let owners = state
                    .pods
                    .iter()
                    .filter(|p| p.node == Some(n))
                    .map(|_| OWNER);
                node_view(n, self.pods_per_node(), owners, node.ready, node.tainted)
            })
            .collect()
    }

    fn placement(&self, state: &LossState) -> Option<usize> {
        placement(OWNER, &self.node_views(state))
    }

    /// A lease period later: kubelets that are up and whose renewal got through are fresh
    /// (and any renewal of theirs still on the wire is out of date); everything else ages.
    fn ticked(state: &LossState) -> LossState {
        let mut next = state.clone();
        for (n, node) in next.nodes.iter_mut().enumerate() {
            if node.up && !node.missed {
                node.lease_age = 0;
                node.renew_age = 0;
                for renewal in next.in_flight.iter_mut().filter(|r| r.node == n) {
                    renewal.stale = true;
                }
            } else {
                node.lease_age = (node.lease_age + 1).min(AGE_CAP);
                node.renew_age = (node.renew_age + 1).min(AGE_CAP);
            }
            if !node.ready {
                node.unready_age = (node.unready_age + 1).min(AGE_CAP);
            }
            node.missed = false;
        }
        for renewal in &mut next.in_flight {
            renewal.age = (renewal.age + 1).min(AGE_CAP);
        }
        next
    }

    /// What the kubelet of the pod's node would do with it now, if anything.
    fn kubelet_has_work(state: &LossState, pod: &LossPod) -> bool {
        let Some(node) = pod.node else {
            return false;
        };
        let node = &state.nodes[node];
        // A pod marked not ready is reported again once the node is Ready again, so the
        // kubelet and the node controller do not take turns rewriting it.
        node.up && (pod.terminating || !pod.running || (!pod.ready && node.ready))
    }

    /// The steps of a cluster without faults, in a fixed order (the first is what a
    /// fault-free run takes).
    fn progress(&self, state: &LossState, steps: &mut Vec<Step>) {
        for (i, _) in state.in_flight.iter().enumerate() {
            steps.push(Step::Deliver(i));
        }
        if state.pending.is_some() {
            steps.push(Step::ActNode);
        } else {
            for n in 0..state.nodes.len() {
                if !self.node_decision(state, n).actions.is_empty() {
                    steps.push(Step::ReadNode(n));
                }
            }
        }
        if !decide_replica_set(&self.replica_set_view(state), 0, 0)
            .actions
            .is_empty()
        {
            steps.push(Step::ReplicaSet);
        }
        for pod in &state.pods {
            if pod.node.is_none() && !pod.terminating && self.placement(state).is_some() {
                steps.push(Step::Schedule(pod.uid));
            }
            if Self::kubelet_has_work(state, pod) {
                steps.push(Step::Kubelet(pod.uid));
            }
        }
        for (n, node) in state.nodes.iter().enumerate() {
            if node.up && !node.ready {
                steps.push(Step::Heartbeat(n));
            }
        }
        if Self::ticked(state) != *state {
            steps.push(Step::Tick);
        }
    }

    fn act_node(&self, state: &mut LossState, read: NodeRead) {
        let decision = (self.decide)(&read.health, &read.pods, NOW, GRACE, EVICTION_TIMEOUT);
        let n = read.node;
        let mut node_changed = read.node_changed;
        for action in decision.actions {
            match action {
                // Node writes carry the resourceVersion read: refused if the node moved.
                NodeAction::MarkUnreachable if store_admits(node_changed) => {
                    let node = &mut state.nodes[n];
                    if node.ready {
                        node.unready_age = 0;
                    }
                    node.ready = false;
                    node.tainted = true;
                    node_changed = true;
                }
                NodeAction::ClearUnreachable if store_admits(node_changed) => {
                    state.nodes[n].tainted = false;
                    node_changed = true;
                }
                NodeAction::MarkUnreachable | NodeAction::ClearUnreachable => {}
                // Pod writes carry its uid: refused if it is gone.
                NodeAction::MarkPodNotReady { name, uid } => {
                    if let Some(pod) = pod_with_uid(&mut state.pods, &name, uid) {
                        pod.ready = false;
                    }
                }
                NodeAction::Evict { name, uid } => {
                    if let Some(pod) = pod_with_uid(&mut state.pods, &name, uid) {
                        pod.terminating = true;
                        if !state.nodes[n].ever_silent {
                            state.evicted_reporting = true;
                        }
                        if read.health.ready || NOW - read.health.ready_changed < EVICTION_TIMEOUT {
                            state.evicted_early = true;
                        }
                    }
                }
            }
        }
    }

    fn act_replica_set(&self, state: &mut LossState) {
        let decision = decide_replica_set(&self.replica_set_view(state), 0, 0);
        for action in decision.actions {
            match action {
                ReplicaSetAction::CreatePod { name } => {
                    state.next_uid += 1;
                    state.pods.push(LossPod {
                        name,
                        uid: state.next_uid,
                        node: None,
                        running: false,
                        ready: false,
                        terminating: false,
                    });
                }
                ReplicaSetAction::DeletePod { name, uid } => {
                    if let Some(pod) = pod_with_uid(&mut state.pods, &name, uid) {
                        pod.terminating = true;
                    }
                }
                ReplicaSetAction::UpdateStatus(status) => state.status = status,
            }
        }
    }

    /// Invalidates the node controller's read of `node` (the node object was written).
    fn node_written(state: &mut LossState, node: usize) {
        if let Some(read) = state.pending.as_mut().filter(|r| r.node == node) {
            read.node_changed = true;
        }
    }

    /// Where a fault-free run must end: every replica runs ready on a node that reports, no
    /// pod on a lost node still counts as ready, every reporting node is Ready and untainted,
    /// every lost node is marked, and the controllers have nothing left to do.
    pub fn converged(&self, state: &LossState) -> bool {
        let serving = state
            .pods
            .iter()
            .filter(|p| {
                !p.terminating && p.running && p.ready && p.node.is_some_and(|n| state.nodes[n].up)
            })
            .count();
        let live = state.pods.iter().filter(|p| !p.terminating).count();
        let lost_pods_out = state.pods.iter().all(|p| {
            p.node
                .is_none_or(|n| state.nodes[n].up || p.terminating || !p.ready)
        });
        let nodes_settled = state.nodes.iter().all(|n| {
            if n.up {
                n.ready && !n.tainted
            } else {
                !n.ready && n.tainted
            }
        });
        serving == self.replicas as usize
            && live == self.replicas as usize
            && lost_pods_out
            && nodes_settled
            && state.pending.is_none()
            && state.in_flight.is_empty()
    }

    /// Runs the cluster without further faults from `state`, taking the first enabled step
    /// each time; true if it converges within `steps`.
    pub fn converges_within(&self, state: &LossState, steps: usize) -> bool {
        self.converging.within(
            state,
            steps,
            |state| {
                let mut next_steps = Vec::new();
                self.progress(state, &mut next_steps);
                let step = next_steps.into_iter().next()?;
                self.next_state(state, step)
            },
            |state| self.converged(state),
        )
    }
}

impl Model for NodeLossModel {
    type State = LossState;
    type Action = Step;

    fn init_states(&self) -> Vec<LossState> {
        let node = SimNode {
            up: true,
            missed: false,
            lease_age: 0,
            renew_age: 0,
            ready: true,
            unready_age: 0,
            tainted: false,
            ever_silent: false,
        };
        let mut state = LossState {
            nodes: vec![node; self.nodes],
            pods: Vec::new(),
            status: ReplicaSetStatus::default(),
            pending: None,
            in_flight: Vec::new(),
            losses_left: self.losses,
            faults_left: self.faults,
            next_uid: 0,
            evicted_reporting: false,
            evicted_early: false,
            bound_to_unreachable: false,
            lease_went_back: false,
        };
        // Start settled: the replicas run, as a previous sync left them.
        for _ in 0..CONVERGENCE_STEPS {
            let mut steps = Vec::new();
            self.progress(&state, &mut steps);
            let Some(step) = steps.into_iter().next() else {
                break;
            };
            match self.next_state(&state, step) {
                Some(next) => state = next,
                None => break,
            }
        }
        vec![state]
    }

    fn actions(&self, state: &LossState, steps: &mut Vec<Step>) {
        self.progress(state, steps);
        for (n, node) in state.nodes.iter().enumerate() {
            if node.up && state.losses_left > 0 {
                steps.push(Step::LoseNode(n));
            }
            if !node.up && self.returns {
                steps.push(Step::ReturnNode(n));
            }
            if node.up && !node.missed && state.faults_left > 0 {
                steps.push(Step::LoseRenewal(n));
                steps.push(Step::DelayRenewal(n));
            }
        }
        if state.pending.is_some() && state.faults_left > 0 {
            steps.push(Step::CrashController);
        }
    }

    fn next_state(&self, state: &LossState, step: Step) -> Option<LossState> {
        let mut next = state.clone();
        match step {
            Step::Tick => next = Self::ticked(state),
            Step::Deliver(i) => {
                let renewal = next.in_flight.remove(i);
                // The store refuses a renewal whose resourceVersion a later one moved on.
                if store_admits(renewal.stale) {
                    let node = &mut next.nodes[renewal.node];
                    if renewal.age > node.renew_age {
                        next.lease_went_back = true;
                    }
                    node.renew_age = renewal.age;
                    // The controller counts a renewal when it sees it.
                    node.lease_age = 0;
                    for other in next.in_flight.iter_mut().filter(|r| r.node == renewal.node) {
                        other.stale = true;
                    }
                }
            }
            Step::ReadNode(n) => {
                next.pending = Some(NodeRead {
                    node: n,
                    health: Self::health(&state.nodes[n]),
                    pods: Self::pods_on(state, n),
                    node_changed: false,
                });
            }
            Step::ActNode => {
                let read = next.pending.take()?;
                self.act_node(&mut next, read);
            }
            Step::ReplicaSet => self.act_replica_set(&mut next),
            Step::Schedule(uid) => {
                let node = self.placement(state)?;
                if state.nodes[node].tainted || !state.nodes[node].ready {
                    next.bound_to_unreachable = true;
                }
                next.pods.iter_mut().find(|p| p.uid == uid)?.node = Some(node);
            }
            Step::Kubelet(uid) => {
                let pod = next.pods.iter_mut().find(|p| p.uid == uid)?;
                if pod.terminating {
                    next.pods.retain(|p| p.uid != uid);
                } else {
                    // Start it, or report it again after the node controller marked it.
                    pod.running = true;
                    pod.ready = true;
                }
            }
            Step::Heartbeat(n) => {
                // One batch: Ready again, and the lease renewed.
                let node = &mut next.nodes[n];
                node.ready = true;
                node.unready_age = 0;
                node.lease_age = 0;
                node.renew_age = 0;
                for renewal in next.in_flight.iter_mut().filter(|r| r.node == n) {
                    renewal.stale = true;
                }
                Self::node_written(&mut next, n);
            }
            Step::LoseNode(n) => {
                let node = &mut next.nodes[n];
                node.up = false;
                node.ever_silent = true;
                next.losses_left -= 1;
            }
            Step::ReturnNode(n) => next.nodes[n].up = true,
            Step::LoseRenewal(n) => {
                next.nodes[n].missed = true;
                next.nodes[n].ever_silent = true;
                next.faults_left -= 1;
            }
            Step::DelayRenewal(n) => {
                next.nodes[n].missed = true;
                next.nodes[n].ever_silent = true;
                next.in_flight.push(Renewal {
                    node: n,
                    age: 0,
                    stale: false,
                });
                next.faults_left -= 1;
            }
            Step::CrashController => {
                next.pending = None;
                next.faults_left -= 1;
            }
        }
        Some(next)
    }

    fn format_action(&self, step: &Step) -> String {
        step.to_string()
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always(
                "a node that kept reporting never has its pods evicted",
                |_: &NodeLossModel, state: &LossState| !state.evicted_reporting,
            ),
            Property::always(
                "pods are evicted only after their node was marked for the eviction timeout",
                |_: &NodeLossModel, state: &LossState| !state.evicted_early,
            ),
            Property::always(
                "nothing new is bound to a node marked unreachable",
                |_: &NodeLossModel, state: &LossState| !state.bound_to_unreachable,
            ),
            Property::always(
                "never more than replicas pods outside termination",
                |model: &NodeLossModel, state: &LossState| {
                    state.pods.iter().filter(|p| !p.terminating).count() <= model.replicas as usize
                },
            ),
            Property::always(
                "a node's allocatable is never overcommitted",
                |model: &NodeLossModel, state: &LossState| {
                    (0..model.nodes).all(|n| {
                        state.pods.iter().filter(|p| p.node == Some(n)).count() as u32
                            <= model.pods_per_node()
                    })
                },
            ),
            Property::always(
                "a lease's renewTime never moves back",
                |_: &NodeLossModel, state: &LossState| !state.lease_went_back,
            ),
            Property::always(
                "from every state a fault-free run replaces lost pods and settles (no livelock)",
                |model: &NodeLossModel, state: &LossState| {
                    model.converges_within(state, CONVERGENCE_STEPS)
                },
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::check;

    /// Known-wrong decisions: evicting as soon as a node is marked; never clearing the taint
    /// of a node that came back.
    #[test]
    fn the_checker_catches_hasty_and_stubborn_node_controllers() {
        fn hasty(
            node: &NodeHealth,
            pods: &[PodOnNode],
            now: i64,
            grace: i64,
            _timeout: i64,
        ) -> Decision<NodeAction> {
            decide_node(node, pods, now, grace, 0)
        }
        fn stubborn(
            node: &NodeHealth,
            pods: &[PodOnNode],
            now: i64,
            grace: i64,
            timeout: i64,
        ) -> Decision<NodeAction> {
            let mut decision = decide_node(node, pods, now, grace, timeout);
            decision
                .actions
                .retain(|a| *a != NodeAction::ClearUnreachable);
            decision
        }
        let mut model = NodeLossModel::new(2, 2, 1, 0);
        model.decide = hasty;
        let verdict = check("hasty", model);
        assert!(
            verdict.violated("pods are evicted only after"),
            "{:?}",
            verdict.violations
        );
        let mut model = NodeLossModel::new(2, 2, 1, 0);
        model.decide = stubborn;
        let verdict = check("stubborn", model);
        assert!(
            verdict.violated("from every state a fault-free run"),
            "{:?}",
            verdict.violations
        );
    }
}
