//! The read-your-writes model: the ReplicaSet controller and the scheduler as the controller
//! actor runs them (`actors/src/controller.rs`), with writes sent without waiting, the store's
//! answers and the watch arriving late and in any order.
//!
//! Each controller decides on its cache, not on the store. Its writes travel to the store as
//! requests, the store answers each (applied, refused by its preconditions, or failed), and the
//! answer carries the events the write produced, which go into the cache as the actor feeds
//! them; the watch brings every object's newest version to each cache on its own time. Two
//! pieces of the actor are what this model is about:
//!
//! - hold-back: a key with writes unanswered is not decided again until the answers come (else
//!   the ReplicaSet controller, still seeing too few pods, creates them a second time);
//! - the scheduler's assumed bindings: a binding counts as placed in its cache as soon as it is
//!   sent (else the next pod is placed on the same full node), and is undone when the store does
//!   not take it (`write_failed`; else the pod stays unbound and its node looks full forever).
//!
//! Both decisions are the real ones (`decide_replica_set`, `schedule`), the pods they see are
//! projected by the controllers' projection, and the store refuses writes with its own
//! precondition check. Faults: the store fails a write (nothing applied, an error answered), and
//! someone deletes a pod by hand. Pods never start here (no kubelets): which pods exist and
//! where they are bound is what the two properties are about.

use std::fmt;

use shipshape_reconciler::decision::Decision;
use shipshape_reconciler::precondition::Precondition;
use shipshape_reconciler::readwrites::{Seen, WriteLedger};
use shipshape_reconciler::replicaset::{ReplicaSetAction, ReplicaSetStatus, decide_replica_set};
use shipshape_reconciler::scheduler::NodeView;
use stateright::{Model, Property};

use crate::converge::Converging;
use crate::views::{node_view, placement, pod_view, replica_set_view};

/// The one owner of every pod here.
const OWNER: &str = "ReplicaSet/web";

/// How far a fault-free run may go from any reachable state before it must have converged.
pub const CONVERGENCE_STEPS: usize = 200;

/// The sizes, the fault budget and the pieces of the controller actor under test.
#[derive(Clone)]
pub struct ReadYourWritesModel {
    /// Desired replicas.
    pub replicas: u32,
    /// Nodes, each with room for one pod (so a second pod on a node is an overcommit).
    pub nodes: usize,
    /// Faults: a write failed by the store, a pod deleted by hand.
    pub faults: u8,
    /// A key with writes unanswered is not decided again (the actor's hold-back).
    pub hold_back: bool,
    /// A binding the scheduler sent counts as placed in its cache.
    pub assume_bindings: bool,
    /// A binding the store did not take is forgotten again (`write_failed`).
    pub undo_failed_bindings: bool,
    /// States whose fault-free run is known to converge.
    converging: Converging,
}

impl fmt::Debug for ReadYourWritesModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ReadYourWritesModel({} replicas, {} nodes)",
            self.replicas, self.nodes
        )
    }
}

/// A pod as the store holds it, or as a cache last saw it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub struct StoredPod {
    /// Its name (chosen by the ReplicaSet decision).
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// Its resourceVersion.
    pub rv: u32,
    /// The node it is bound to (in the scheduler's cache: or assumed to be).
    pub node: Option<usize>,
}

/// Which controller sent a write.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Sender {
    /// The ReplicaSet controller.
    ReplicaSet,
    /// The scheduler.
    Scheduler,
}

/// A write on its way to the store.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum Request {
    /// The ReplicaSet controller's creations, one batch (all or nothing).
    Create(Vec<String>),
    /// The ReplicaSet controller's deletions, one batch, each with its uid precondition.
    Delete(Vec<(String, u32)>),
    /// A binding, on the pod's resourceVersion as the scheduler's cache had it.
    Bind {
        /// The pod.
        name: String,
        /// Its resourceVersion decided on.
        rv: u32,
        /// The node.
        node: usize,
    },
}

impl Request {
    fn sender(&self) -> Sender {
        match self {
            Request::Create(_) | Request::Delete(_) => Sender::ReplicaSet,
            Request::Bind { .. } => Sender::Scheduler,
        }
    }

    /// How many writes its batch holds.
    fn writes(&self) -> usize {
        match self {
            Request::Create(names) => names.len(),
            Request::Delete(pods) => pods.len(),
            Request::Bind { .. } => 1,
        }
    }

    /// The key its controller decided it for (the hold-back is per key).
    fn key(&self) -> &str {
        match self {
            Request::Create(_) | Request::Delete(_) => "web",
            Request::Bind { name, .. } => name,
        }
    }
}

/// A change a write made, as the answer carries it into the cache.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum Event {
    /// The pod as written.
    Written(StoredPod),
    /// The pod is gone, at this resourceVersion.
    Deleted(String, u32),
}

impl Event {
    /// The pod it is about, and its resourceVersion.
    fn at(&self) -> (&str, u32) {
        match self {
            Event::Written(pod) => (&pod.name, pod.rv),
            Event::Deleted(name, rv) => (name, *rv),
        }
    }
}

/// The store's answer on its way back.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Answer {
    /// To whom.
    pub to: Sender,
    /// For which key.
    pub key: String,
    /// How many writes the batch held.
    pub writes: usize,
    /// The events of the write, or `None`: refused or failed.
    pub events: Option<Vec<Event>>,
}

/// What a controller's cache holds: the pods as last seen, what it has taken in per pod (the
/// actor's own [`Seen`], tombstones included, so a late event cannot bring a pod back), and the
/// keys with writes unanswered (the actor's own [`WriteLedger`]).
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq)]
pub struct Cache {
    /// The pods, by name.
    pub pods: Vec<StoredPod>,
    /// The newest resourceVersion taken in per pod, and the deleted ones'.
    pub seen: Seen,
    /// Writes sent and not answered, per key.
    pub ledger: WriteLedger,
}

impl Cache {
    /// Whether the cache takes this event: it has nothing as new for the pod.
    fn takes(&self, event: &Event) -> bool {
        let (name, rv) = event.at();
        self.seen.is_new(name, u64::from(rv))
    }

    /// Takes in one event unless the cache already has it or newer (as the actor's `observe`).
    fn observe(&mut self, event: &Event) {
        let (name, rv) = event.at();
        let deleted = matches!(event, Event::Deleted(..));
        if !self.seen.admit(name, u64::from(rv), deleted) {
            return;
        }
        self.pods.retain(|p| p.name != name);
        if let Event::Written(pod) = event {
            self.pods.push(pod.clone());
            self.pods.sort();
        }
    }

    /// What the watch has yet to bring this cache: a pod whose newest version it lacks, or a
    /// pod it still holds that is gone.
    fn behind(&self, store: &[StoredPod]) -> Option<Event> {
        let written = store
            .iter()
            .map(|pod| Event::Written(pod.clone()))
            .find(|event| self.takes(event));
        written.or_else(|| {
            self.pods
                .iter()
                .find(|p| store.iter().all(|s| s.name != p.name))
                .map(|p| Event::Deleted(p.name.clone(), p.rv.saturating_add(1)))
        })
    }
}

/// The cluster.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct RywState {
    /// The pods in the store.
    pub store: Vec<StoredPod>,
    /// The store's next resourceVersion (also the next uid).
    pub next_rv: u32,
    /// The ReplicaSet controller's cache.
    pub replica_set: Cache,
    /// The scheduler's cache; a pod's node there may be an assumed one.
    pub scheduler: Cache,
    /// Writes on the wire to the store.
    pub requests: Vec<Request>,
    /// Answers on the wire back.
    pub answers: Vec<Answer>,
    /// Decisions the ReplicaSet controller made (its seed for new names).
    pub decisions: u8,
    /// Faults left.
    pub faults_left: u8,
}

/// One step.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum RywStep {
    /// The store takes write `i` off the wire and answers it.
    Store(usize),
    /// Answer `i` reaches its controller.
    Answer(usize),
    /// The watch brings the ReplicaSet controller one change.
    WatchReplicaSet,
    /// The watch brings the scheduler one change.
    WatchScheduler,
    /// The ReplicaSet controller decides on its cache.
    ReplicaSet,
    /// The scheduler binds this pod, on its cache.
    Schedule(String),
    /// Fault: the store fails write `i` (nothing applied; an error is answered).
    FailWrite(usize),
    /// Fault: someone deletes this pod.
    DeleteByHand(String),
}

impl fmt::Display for RywStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RywStep::Store(i) => write!(f, "the store applies write #{i}"),
            RywStep::Answer(i) => write!(f, "answer #{i} reaches its controller"),
            RywStep::WatchReplicaSet => {
                write!(f, "the watch brings the ReplicaSet controller a change")
            }
            RywStep::WatchScheduler => write!(f, "the watch brings the scheduler a change"),
            RywStep::ReplicaSet => write!(f, "the ReplicaSet controller decides on its cache"),
            RywStep::Schedule(name) => write!(f, "the scheduler binds {name}"),
            RywStep::FailWrite(i) => write!(f, "fault: the store fails write #{i}"),
            RywStep::DeleteByHand(name) => write!(f, "fault: {name} is deleted by hand"),
        }
    }
}

impl ReadYourWritesModel {
    /// The model of the actor as it is: hold-back, assumed bindings, undone on failure.
    pub fn new(replicas: u32, nodes: usize, faults: u8) -> Self {
        Self {
            replicas,
            nodes,
            faults,
            hold_back: true,
            assume_bindings: true,
            undo_failed_bindings: true,
            converging: Converging::default(),
        }
    }

    /// The ReplicaSet decision on the controller's cache. Status writes are left out: they
    /// change no pod, and the rollout model checks them. Each decision gets a fresh seed, as the
    /// actor seeds from the set's resourceVersion (which the previous decision's status write
    /// moves) and Kubernetes names pods at random: a name collision must not be what keeps a
    /// pod from being created twice.
    fn replica_set_decision(&self, state: &RywState) -> Decision<ReplicaSetAction> {
        let pods = state
            .replica_set
            .pods
            .iter()
            .map(|p| pod_view(&p.name, p.uid, p.node, false, false, false))
            .collect();
        let view = replica_set_view("web", self.replicas, ReplicaSetStatus::default(), pods);
        let mut decision = decide_replica_set(&view, 0, u64::from(state.decisions));
        decision
            .actions
            .retain(|a| !matches!(a, ReplicaSetAction::UpdateStatus(_)));
        decision
    }

    fn may_decide(&self, cache: &Cache, key: &str) -> bool {
        !self.hold_back || !cache.ledger.awaiting(key)
    }

    fn node_views(&self, cache: &Cache) -> Vec<NodeView> {
        (0..self.nodes)
            .map(|n| {
                let owners = cache
                    .pods
                    .iter()
                    .filter(|p| p.node == Some(n))
                    .map(|_| OWNER);
                node_view(n, 1, owners, true, false)
            })
            .collect()
    }

    /// The pods the scheduler would bind now, with the node it picks for each.
    fn schedulable(&self, state: &RywState) -> Vec<(String, usize)> {
        let cache = &state.scheduler;
        let Some(node) = placement(OWNER, &self.node_views(cache)) else {
            return Vec::new();
        };
        cache
            .pods
            .iter()
            .filter(|p| p.node.is_none() && self.may_decide(cache, &p.name))
            .map(|p| (p.name.clone(), node))
            .collect()
    }

    /// The store applies one write: its preconditions checked by the store's own function.
    fn apply(state: &mut RywState, request: &Request) -> Option<Vec<Event>> {
        match request {
            Request::Create(names) => {
                // One batch: refused whole if any name exists.
                if names
                    .iter()
                    .any(|name| state.store.iter().any(|p| p.name == *name))
                {
                    return None;
                }
                let mut events = Vec::new();
                for name in names {
                    let rv = state.next_rv;
                    state.next_rv = state.next_rv.saturating_add(1);
                    let pod = StoredPod {
                        name: name.clone(),
                        uid: rv,
                        rv,
                        node: None,
                    };
                    state.store.push(pod.clone());
                    events.push(Event::Written(pod));
                }
                state.store.sort();
                Some(events)
            }
            Request::Delete(pods) => {
                let admitted = pods.iter().all(|(name, uid)| {
                    let precondition = Precondition::Uid(uid.to_string());
                    state.store.iter().any(|p| {
                        p.name == *name && precondition.holds(u64::from(p.rv), &p.uid.to_string())
                    })
                });
                if !admitted {
                    return None;
                }
                let rv = state.next_rv;
                state.next_rv = state.next_rv.saturating_add(1);
                state
                    .store
                    .retain(|p| pods.iter().all(|(name, _)| p.name != *name));
                Some(
                    pods.iter()
                        .map(|(name, _)| Event::Deleted(name.clone(), rv))
                        .collect(),
                )
            }
            Request::Bind { name, rv, node } => {
                let precondition = Precondition::ResourceVersion(u64::from(*rv));
                let next_rv = state.next_rv;
                let pod = state.store.iter_mut().find(|p| p.name == *name)?;
                if !precondition.holds(u64::from(pod.rv), &pod.uid.to_string()) {
                    return None;
                }
                pod.node = Some(*node);
                pod.rv = next_rv;
                let event = Event::Written(pod.clone());
                state.next_rv = state.next_rv.saturating_add(1);
                Some(vec![event])
            }
        }
    }

    /// The steps of a fault-free cluster, in a fixed order (the first is what a fault-free run
    /// takes).
    fn progress(&self, state: &RywState, steps: &mut Vec<RywStep>) {
        for i in 0..state.requests.len() {
            steps.push(RywStep::Store(i));
        }
        for i in 0..state.answers.len() {
            steps.push(RywStep::Answer(i));
        }
        if state.replica_set.behind(&state.store).is_some() {
            steps.push(RywStep::WatchReplicaSet);
        }
        if state.scheduler.behind(&state.store).is_some() {
            steps.push(RywStep::WatchScheduler);
        }
        if self.may_decide(&state.replica_set, "web") && !self.replica_set_decision(state).is_idle()
        {
            steps.push(RywStep::ReplicaSet);
        }
        for (name, _) in self.schedulable(state) {
            steps.push(RywStep::Schedule(name));
        }
    }

    /// Where a fault-free run must end: the replicas exist, each bound, nothing on the wire,
    /// and both caches agree with the store.
    pub fn converged(&self, state: &RywState) -> bool {
        state.store.len() == self.replicas as usize
            && state.store.iter().all(|p| p.node.is_some())
            && state.requests.is_empty()
            && state.answers.is_empty()
            && state.replica_set.pods == state.store
            && state.scheduler.pods == state.store
    }

    /// Runs the cluster without further faults from `state`, taking the first enabled step
    /// each time; true if it converges within `steps`.
    pub fn converges_within(&self, state: &RywState, steps: usize) -> bool {
        self.converging.within(
            state,
            steps,
            |state| {
                let mut next = Vec::new();
                self.progress(state, &mut next);
                let step = next.into_iter().next()?;
                self.next_state(state, step)
            },
            |state| self.converged(state),
        )
    }

    fn answer(&self, state: &mut RywState, answer: Answer) {
        let cache = match answer.to {
            Sender::ReplicaSet => &mut state.replica_set,
            Sender::Scheduler => &mut state.scheduler,
        };
        match &answer.events {
            Some(events) => events.iter().for_each(|e| cache.observe(e)),
            None => {
                if answer.to == Sender::Scheduler && self.undo_failed_bindings {
                    // write_failed: the binding did not happen, forget the assumed node.
                    if let Some(pod) = cache.pods.iter_mut().find(|p| p.name == answer.key) {
                        pod.node = None;
                    }
                }
            }
        }
        // The model's controllers are always ready to decide again (level-triggered), so the
        // reason a held key was marked is not needed here.
        let _ = cache.ledger.answered(&answer.key, answer.writes);
    }
}

impl Model for ReadYourWritesModel {
    type State = RywState;
    type Action = RywStep;

    fn init_states(&self) -> Vec<RywState> {
        vec![RywState {
            store: Vec::new(),
            next_rv: 1,
            replica_set: Cache::default(),
            scheduler: Cache::default(),
            requests: Vec::new(),
            answers: Vec::new(),
            decisions: 0,
            faults_left: self.faults,
        }]
    }

    fn actions(&self, state: &RywState, steps: &mut Vec<RywStep>) {
        self.progress(state, steps);
        if state.faults_left > 0 {
            for i in 0..state.requests.len() {
                steps.push(RywStep::FailWrite(i));
            }
            for pod in &state.store {
                steps.push(RywStep::DeleteByHand(pod.name.clone()));
            }
        }
    }

    fn next_state(&self, state: &RywState, step: RywStep) -> Option<RywState> {
        let mut next = state.clone();
        match step {
            RywStep::Store(i) => {
                let request = next.requests.remove(i);
                let events = Self::apply(&mut next, &request);
                next.answers.push(Answer {
                    to: request.sender(),
                    key: request.key().to_string(),
                    writes: request.writes(),
                    events,
                });
            }
            RywStep::FailWrite(i) => {
                let request = next.requests.remove(i);
                next.answers.push(Answer {
                    to: request.sender(),
                    key: request.key().to_string(),
                    writes: request.writes(),
                    events: None,
                });
                next.faults_left -= 1;
            }
            RywStep::Answer(i) => {
                let answer = next.answers.remove(i);
                self.answer(&mut next, answer);
            }
            RywStep::WatchReplicaSet => {
                let event = state.replica_set.behind(&state.store)?;
                next.replica_set.observe(&event);
            }
            RywStep::WatchScheduler => {
                let event = state.scheduler.behind(&state.store)?;
                next.scheduler.observe(&event);
            }
            RywStep::ReplicaSet => {
                let decision = self.replica_set_decision(state);
                next.decisions = next.decisions.saturating_add(1);
                let mut creates = Vec::new();
                let mut deletes = Vec::new();
                for action in decision.actions {
                    match action {
                        ReplicaSetAction::CreatePod { name } => creates.push(name),
                        ReplicaSetAction::DeletePod { name, uid } => {
                            deletes.push((name, uid.parse().unwrap_or(0)));
                        }
                        ReplicaSetAction::UpdateStatus(_) => {}
                    }
                }
                for request in [
                    (!creates.is_empty()).then_some(Request::Create(creates)),
                    (!deletes.is_empty()).then_some(Request::Delete(deletes)),
                ]
                .into_iter()
                .flatten()
                {
                    next.replica_set.ledger.sent("web", request.writes());
                    next.requests.push(request);
                }
            }
            RywStep::Schedule(name) => {
                let node = self
                    .schedulable(state)
                    .into_iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, node)| node)?;
                let pod = next.scheduler.pods.iter_mut().find(|p| p.name == name)?;
                let rv = pod.rv;
                if self.assume_bindings {
                    pod.node = Some(node);
                }
                next.scheduler.ledger.sent(&name, 1);
                next.requests.push(Request::Bind { name, rv, node });
            }
            RywStep::DeleteByHand(name) => {
                next.store.retain(|p| p.name != name);
                next.next_rv = next.next_rv.saturating_add(1);
                next.faults_left -= 1;
            }
        }
        Some(next)
    }

    fn format_action(&self, step: &RywStep) -> String {
        step.to_string()
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always(
                "never more pods than replicas (no pod is created twice)",
                |model: &ReadYourWritesModel, state: &RywState| {
                    state.store.len() <= model.replicas as usize
                },
            ),
            Property::always(
                "a node's allocatable is never overcommitted",
                |model: &ReadYourWritesModel, state: &RywState| {
                    (0..model.nodes)
                        .all(|n| state.store.iter().filter(|p| p.node == Some(n)).count() <= 1)
                },
            ),
            Property::always(
                "from every state a fault-free run binds every replica and settles (no livelock)",
                |model: &ReadYourWritesModel, state: &RywState| {
                    model.converges_within(state, CONVERGENCE_STEPS)
                },
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::check_bounded;

    /// Known-wrong actors: one without the hold-back creates pods twice; one whose scheduler
    /// does not assume its bindings overcommits a node; one that keeps a binding the store
    /// failed never binds that pod.
    #[test]
    fn the_checker_catches_an_actor_without_hold_back_or_assumed_bindings() {
        let mut eager = ReadYourWritesModel::new(2, 2, 0);
        eager.hold_back = false;
        let verdict = check_bounded("eager", eager, Some(200_000));
        let trace = verdict
            .violations
            .iter()
            .find(|(p, _)| p.starts_with("never more pods than replicas"))
            .map(|(_, trace)| trace.clone());
        // Decided again before the answer to the first creations came back.
        assert_eq!(
            trace,
            Some(vec![
                "  1. the ReplicaSet controller decides on its cache".to_string(),
                "  2. the store applies write #0".to_string(),
                "  3. the ReplicaSet controller decides on its cache".to_string(),
                "  4. the store applies write #0".to_string(),
            ]),
            "{:?}",
            verdict.violations
        );
        let mut forgetful = ReadYourWritesModel::new(2, 2, 0);
        forgetful.assume_bindings = false;
        let verdict = check_bounded("unassuming", forgetful, Some(200_000));
        assert!(
            verdict.violated("a node's allocatable"),
            "{:?}",
            verdict.violations
        );
        let mut stubborn = ReadYourWritesModel::new(2, 2, 1);
        stubborn.undo_failed_bindings = false;
        let verdict = check_bounded("stubborn", stubborn, Some(200_000));
        assert!(
            verdict.violated("from every state a fault-free run"),
            "{:?}",
            verdict.violations
        );
    }
}
