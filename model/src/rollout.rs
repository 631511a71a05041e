//! The rollout model: a Deployment with its ReplicaSets, pods, the scheduler and kubelets on a
//! few nodes, rolling a template change, under faults.
//!
//! Every controller step calls the real decision in `shipshape_reconciler`: the Deployment
//! controller reads a view in one step and acts on it in a later one (so other actors may have
//! moved in between: a stale read), and its writes carry the resourceVersions they were decided
//! on, refused here exactly as the store refuses them. Faults are actions with a budget: a pod
//! crash (it stops being ready), and a controller crash between its read and its act. A
//! converged cluster has no enabled action, so stateright's `eventually` is judged on real
//! terminal states; the `always` convergence property rules out livelock.

use std::fmt;

use shipshape_reconciler::deployment::{
    DeploymentAction, DeploymentStatus, DeploymentView, Progress, ReplicaSetSummary,
    RolloutStrategy, budgets, decide_deployment,
};
use shipshape_reconciler::precondition::Precondition;
use shipshape_reconciler::replicaset::{
    ReplicaSetAction, ReplicaSetStatus, ReplicaSetView, decide_replica_set,
};
use shipshape_reconciler::scheduler::NodeView;
use stateright::{Model, Property};

use crate::views::{node_view, placement, pod_view, replica_set_view};

/// The sizes and budgets a run explores.
#[derive(Clone, Debug)]
pub struct RolloutModel {
    /// Desired replicas.
    pub replicas: u32,
    /// Nodes in the cluster.
    pub nodes: usize,
    /// Pods each node can hold (its cpu allocatable).
    pub pods_per_node: u32,
    /// The rollout strategy.
    pub strategy: RolloutStrategy,
    /// How many template changes Git makes.
    pub template_changes: u8,
    /// How many faults may happen.
    pub faults: u8,
    /// The Deployment decision under test (the real one, or a deliberately wrong one).
    pub decide:
        fn(&DeploymentView, i64) -> shipshape_reconciler::decision::Decision<DeploymentAction>,
    /// States whose fault-free run is known to converge.
    converging: crate::converge::Converging,
}

/// A pod in the model.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Pod {
    /// Its name (chosen by the ReplicaSet decision).
    pub name: String,
    /// The ReplicaSet that owns it.
    pub owner: String,
    /// Its uid.
    pub uid: u32,
    /// The node it is bound to.
    pub node: Option<usize>,
    /// Ready (the kubelet started it and it passes readiness).
    pub ready: bool,
    /// Being deleted.
    pub terminating: bool,
}

/// A ReplicaSet in the model.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Rs {
    /// `web-vN`.
    pub name: String,
    /// The template it runs.
    pub hash: String,
    /// Its revision.
    pub revision: u64,
    /// When it was created (older sets scale down first).
    pub created: u32,
    /// Its resourceVersion (every write bumps it).
    pub rv: u64,
    /// Desired replicas.
    pub replicas: u32,
    /// Its status as last written by its controller.
    pub status: ReplicaSetStatus,
}

/// The cluster's state.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct State {
    /// The template Git declares (`vN`).
    pub template: u8,
    /// Template changes Git may still make.
    pub template_changes_left: u8,
    /// The ReplicaSets.
    pub replica_sets: Vec<Rs>,
    /// The pods.
    pub pods: Vec<Pod>,
    /// The Deployment's status.
    pub status: Option<DeploymentStatus>,
    /// A view the Deployment controller read and has not acted on yet.
    pub pending: Option<DeploymentView>,
    /// Faults that may still happen.
    pub faults_left: u8,
    /// Whether a pod has crashed (the availability property holds only without pod faults).
    pub pod_faulted: bool,
    /// The next uid and resourceVersion.
    pub next_id: u32,
}

/// One step of one actor.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum Action {
    /// The Deployment controller reads its view.
    ReadDeployment,
    /// The Deployment controller acts on the view it read.
    ActDeployment,
    /// The controller of this ReplicaSet reads and acts.
    ReplicaSet(String),
    /// The scheduler binds this pod.
    Schedule(u32),
    /// A kubelet starts this pod, or finishes removing it.
    Kubelet(u32),
    /// Git commits a new template.
    CommitTemplate,
    /// Fault: this pod's container crashes (not ready until the kubelet restarts it).
    CrashPod(u32),
    /// Fault: the Deployment controller crashes between its read and its act.
    CrashController,
}

fn hash(version: u8) -> String {
    format!("v{version}")
}

impl RolloutModel {
    /// The model as `shipshape verify` runs it by default.
    pub fn new(replicas: u32, nodes: usize, strategy: RolloutStrategy) -> Self {
        Self {
            replicas,
            nodes,
            pods_per_node: replicas.div_ceil(nodes as u32) + 1,
            strategy,
            template_changes: 1,
            faults: 1,
            decide: decide_deployment,
            converging: Default::default(),
        }
    }

    fn deployment_view(&self, state: &State) -> DeploymentView {
        DeploymentView {
            name: "web".into(),
            generation: i64::from(state.template) + 1,
            replicas: self.replicas,
            template_hash: hash(state.template),
            strategy: self.strategy,
            revision_history_limit: 10,
            progress_deadline_seconds: None,
            paused: false,
            replica_sets: state
                .replica_sets
                .iter()
                .map(|rs| ReplicaSetSummary {
                    name: rs.name.clone(),
                    template_hash: rs.hash.clone(),
                    revision: rs.revision,
                    resource_version: rs.rv,
                    created: i64::from(rs.created),
                    replicas: rs.replicas,
                    active: rs.status.replicas,
                    ready: rs.status.ready,
                    available: rs.status.available,
                })
                .collect(),
            status: state.status,
        }
    }

    fn replica_set_view(&self, state: &State, rs: &Rs) -> ReplicaSetView {
        replica_set_view(
            &rs.name,
            rs.replicas,
            rs.status,
            state
                .pods
                .iter()
                .filter(|p| p.owner == rs.name)
                .map(|p| pod_view(&p.name, p.uid, p.node, p.ready, p.ready, p.terminating))
                .collect(),
        )
    }

    fn node_views(&self, state: &State) -> Vec<NodeView> {
        (0..self.nodes)
            .map(|n| {
                let owners: Vec<String> = state
                    .pods
                    .iter()
                    .filter(|p| p.node == Some(n))
                    .map(|p| format!("ReplicaSet/{}", p.owner))
                    .collect();
                node_view(
                    n,
                    self.pods_per_node,
                    owners.iter().map(String::as_str),
                    true,
                    false,
                )
            })
            .collect()
    }

    fn placement(&self, state: &State, pod: &Pod) -> Option<usize> {
        placement(
            &format!("ReplicaSet/{}", pod.owner),
            &self.node_views(state),
        )
    }

    fn replica_set_decision(
        &self,
        state: &State,
        rs: &Rs,
    ) -> shipshape_reconciler::decision::Decision<ReplicaSetAction> {
        decide_replica_set(&self.replica_set_view(state, rs), 0, 0)
    }

    /// The actions of a fault-free cluster (controllers, scheduler, kubelets), in a fixed order.
    fn progress_actions(&self, state: &State, actions: &mut Vec<Action>) {
        if state.pending.is_some() {
            actions.push(Action::ActDeployment);
        } else if !(self.decide)(&self.deployment_view(state), 0).is_idle() {
            actions.push(Action::ReadDeployment);
        }
        for rs in &state.replica_sets {
            if !self.replica_set_decision(state, rs).is_idle() {
                actions.push(Action::ReplicaSet(rs.name.clone()));
            }
        }
        for pod in &state.pods {
            if pod.node.is_none() && !pod.terminating && self.placement(state, pod).is_some() {
                actions.push(Action::Schedule(pod.uid));
            }
            if pod.terminating || (pod.node.is_some() && !pod.ready) {
                actions.push(Action::Kubelet(pod.uid));
            }
        }
    }

    fn apply_deployment(&self, state: &mut State, view: &DeploymentView) {
        for action in (self.decide)(view, 0).actions {
            match action {
                DeploymentAction::CreateReplicaSet {
                    name,
                    template_hash,
                    replicas,
                    revision,
                } => {
                    if state.replica_sets.iter().all(|rs| rs.name != name) {
                        state.next_id += 1;
                        state.replica_sets.push(Rs {
                            name,
                            hash: template_hash,
                            revision,
                            created: state.next_id,
                            rv: u64::from(state.next_id),
                            replicas,
                            status: ReplicaSetStatus::default(),
                        });
                    }
                }
                DeploymentAction::ScaleReplicaSet {
                    name,
                    resource_version,
                    replicas,
                    revision,
                } => {
                    state.next_id += 1;
                    let rv = u64::from(state.next_id);
                    // Refused, by the store's own check, when the ReplicaSet moved since the read.
                    let precondition = Precondition::ResourceVersion(resource_version);
                    if let Some(rs) = state
                        .replica_sets
                        .iter_mut()
                        .find(|rs| rs.name == name && precondition.holds(rs.rv, &rs.name))
                    {
                        rs.replicas = replicas;
                        rs.revision = revision;
                        rs.rv = rv;
                    }
                }
                DeploymentAction::DeleteReplicaSet {
                    name,
                    resource_version,
                } => {
                    let precondition = Precondition::ResourceVersion(resource_version);
                    state
                        .replica_sets
                        .retain(|rs| !(rs.name == name && precondition.holds(rs.rv, &rs.name)));
                }
                DeploymentAction::UpdateStatus(status) => state.status = Some(status),
            }
        }
    }

    fn apply_replica_set(&self, state: &mut State, name: &str) {
        let Some(rs) = state
            .replica_sets
            .iter()
            .find(|rs| rs.name == name)
            .cloned()
        else {
            return;
        };
        for action in self.replica_set_decision(state, &rs).actions {
            match action {
                ReplicaSetAction::CreatePod { name: pod_name } => {
                    state.next_id += 1;
                    state.pods.push(Pod {
                        name: pod_name,
                        owner: rs.name.clone(),
                        uid: state.next_id,
                        node: None,
                        ready: false,
                        terminating: false,
                    });
                }
                ReplicaSetAction::DeletePod { name, uid } => {
                    // The pod's name is its key; the uid precondition refuses a newer namesake.
                    let precondition = Precondition::Uid(uid);
                    if let Some(pod) = state
                        .pods
                        .iter_mut()
                        .find(|p| p.name == name && precondition.holds(0, &p.uid.to_string()))
                    {
                        pod.terminating = true;
                    }
                }
                ReplicaSetAction::UpdateStatus(status) => {
                    state.next_id += 1;
                    let rv = u64::from(state.next_id);
                    if let Some(live) = state.replica_sets.iter_mut().find(|r| r.name == rs.name) {
                        live.status = status;
                        live.rv = rv;
                    }
                }
            }
        }
    }

    /// The cluster is where Git wants it: every desired replica runs the newest template and is
    /// ready, nothing else runs, and the Deployment reports the rollout complete.
    pub fn converged(&self, state: &State) -> bool {
        let newest = hash(state.template);
        let live: Vec<&Pod> = state.pods.iter().filter(|p| !p.terminating).collect();
        let owners_newest = live.iter().all(|p| {
            state
                .replica_sets
                .iter()
                .any(|rs| rs.name == p.owner && rs.hash == newest)
        });
        owners_newest
            && live.len() == self.replicas as usize
            && live.iter().all(|p| p.ready)
            && state.pods.iter().all(|p| !p.terminating)
            && state
                .status
                .is_some_and(|s| s.progress == Progress::Complete)
            && state.pending.is_none()
    }

    /// Runs the fault-free cluster (no commits, no faults) from `state` for at most `steps`
    /// steps, always taking the first enabled action; true if it converges.
    pub fn converges_within(&self, state: &State, steps: usize) -> bool {
        self.converging.within(
            state,
            steps,
            |state| {
                let mut actions = Vec::new();
                self.progress_actions(state, &mut actions);
                let action = actions.into_iter().next()?;
                self.next_state(state, action)
            },
            |state| self.converged(state),
        )
    }

    /// Pods that count toward the surge: not terminating.
    pub fn running_pods(state: &State) -> usize {
        state.pods.iter().filter(|p| !p.terminating).count()
    }

    /// Pods that serve: ready and not terminating.
    pub fn available_pods(state: &State) -> usize {
        state
            .pods
            .iter()
            .filter(|p| p.ready && !p.terminating)
            .count()
    }
}

/// How many steps a fault-free run may take to converge from any reachable state.
pub const CONVERGENCE_STEPS: usize = 200;

impl Model for RolloutModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        // A settled Deployment on template v0, as a previous rollout left it.
        let mut state = State {
            template: 0,
            template_changes_left: self.template_changes,
            replica_sets: Vec::new(),
            pods: Vec::new(),
            status: None,
            pending: None,
            faults_left: self.faults,
            pod_faulted: false,
            next_id: 0,
        };
        for _ in 0..CONVERGENCE_STEPS {
            let mut actions = Vec::new();
            self.progress_actions(&state, &mut actions);
            let Some(action) = actions.into_iter().next() else {
                break;
            };
            match self.next_state(&state, action) {
                Some(next) => state = next,
                None => break,
            }
        }
        vec![state]
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        self.progress_actions(state, actions);
        if state.template_changes_left > 0 {
            actions.push(Action::CommitTemplate);
        }
        if state.faults_left > 0 {
            for pod in state.pods.iter().filter(|p| p.ready && !p.terminating) {
                actions.push(Action::CrashPod(pod.uid));
            }
            if state.pending.is_some() {
                actions.push(Action::CrashController);
            }
        }
    }

    fn next_state(&self, state: &State, action: Action) -> Option<State> {
        let mut next = state.clone();
        match action {
            Action::ReadDeployment => next.pending = Some(self.deployment_view(state)),
            Action::ActDeployment => {
                let view = next.pending.take()?;
                self.apply_deployment(&mut next, &view);
            }
            Action::ReplicaSet(name) => self.apply_replica_set(&mut next, &name),
            Action::Schedule(uid) => {
                let pod = state.pods.iter().find(|p| p.uid == uid)?;
                let node = self.placement(state, pod)?;
                next.pods.iter_mut().find(|p| p.uid == uid)?.node = Some(node);
            }
            Action::Kubelet(uid) => {
                let pod = next.pods.iter_mut().find(|p| p.uid == uid)?;
                if pod.terminating {
                    next.pods.retain(|p| p.uid != uid);
                } else {
                    pod.ready = true;
                }
            }
            Action::CommitTemplate => {
                next.template += 1;
                next.template_changes_left -= 1;
            }
            Action::CrashPod(uid) => {
                next.pods.iter_mut().find(|p| p.uid == uid)?.ready = false;
                next.faults_left -= 1;
                next.pod_faulted = true;
            }
            Action::CrashController => {
                next.pending = None;
                next.faults_left -= 1;
            }
        }
        Some(next)
    }

    fn format_action(&self, action: &Action) -> String {
        action.to_string()
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always(
                "never more than replicas + maxSurge pods",
                |model: &RolloutModel, state: &State| {
                    let (surge, _) = budgets(model.strategy, model.replicas);
                    RolloutModel::running_pods(state) <= (model.replicas + surge) as usize
                },
            ),
            Property::always(
                "never fewer than replicas - maxUnavailable available pods without pod faults",
                |model: &RolloutModel, state: &State| {
                    let (_, unavailable) = budgets(model.strategy, model.replicas);
                    state.pod_faulted
                        || RolloutModel::available_pods(state) + unavailable as usize
                            >= model.replicas as usize
                },
            ),
            Property::always(
                "a node's allocatable is never overcommitted",
                |model: &RolloutModel, state: &State| {
                    (0..model.nodes).all(|n| {
                        state.pods.iter().filter(|p| p.node == Some(n)).count() as u32
                            <= model.pods_per_node
                    })
                },
            ),
            Property::always(
                "from every state a fault-free run converges (no livelock)",
                |model: &RolloutModel, state: &State| {
                    model.converges_within(state, CONVERGENCE_STEPS)
                },
            ),
            Property::eventually(
                "eventually every desired replica runs the newest template",
                |model: &RolloutModel, state: &State| model.converged(state),
            ),
        ]
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::ReadDeployment => write!(f, "the Deployment controller reads its view"),
            Action::ActDeployment => write!(f, "the Deployment controller acts on what it read"),
            Action::ReplicaSet(name) => write!(f, "the ReplicaSet controller syncs {name}"),
            Action::Schedule(uid) => write!(f, "the scheduler binds pod #{uid}"),
            Action::Kubelet(uid) => write!(f, "a kubelet starts or removes pod #{uid}"),
            Action::CommitTemplate => write!(f, "Git commits a new pod template"),
            Action::CrashPod(uid) => write!(f, "fault: pod #{uid} crashes"),
            Action::CrashController => {
                write!(f, "fault: the Deployment controller crashes before acting")
            }
        }
    }
}
