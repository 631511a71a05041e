//! Models of the Job and StatefulSet controllers. As in the rollout model, each controller step
//! calls the real decision (`decide_job`, `decide_stateful_set`): it reads a view in one step and
//! acts on it in a later one, so the world may move in between, and its writes are refused as
//! the store refuses them (a stale resourceVersion, a name that exists, a uid that is gone).

use std::collections::BTreeSet;
use std::fmt;

use shipshape_reconciler::decision::Decision;
use shipshape_reconciler::job::{JobAction, JobPod, JobRestart, JobStatus, JobView};
use shipshape_reconciler::precondition::Precondition;
use shipshape_reconciler::statefulset::{
    OrdinalPod, StatefulSetAction, StatefulSetStatus, StatefulSetView, claim_name, pod_name,
};
use stateright::{Model, Property};

use crate::converge::{Converging, first_enabled};

/// How far a fault-free run may go from any reachable state before it must have settled.
pub const CONVERGENCE_STEPS: usize = 200;

/// Far enough past every finish that any back-off has passed.
const LATER: i64 = 1_000_000;

/// A Job with `completions` successes wanted, `parallelism` at once.
#[derive(Clone)]
pub struct JobModel {
    /// Successes wanted.
    pub completions: u32,
    /// Pods at once.
    pub parallelism: u32,
    /// Failures tolerated.
    pub backoff_limit: u32,
    /// Faults the world may inject (a counted pod deleted, a controller crash).
    pub faults: u8,
    /// The decision under test.
    pub decide: fn(&JobView, i64, u64) -> Decision<JobAction>,
    /// States whose fault-free run is known to converge.
    converging: Converging,
}

impl fmt::Debug for JobModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JobModel({}/{})", self.completions, self.parallelism)
    }
}

/// A pod of the modelled Job.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct JobModelPod {
    id: u8,
    outcome: Option<bool>,
    counted: bool,
}

/// The modelled world.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct JobState {
    pods: Vec<JobModelPod>,
    status: JobStatus,
    /// The Job's resourceVersion (its status writes bump it).
    rv: u32,
    /// What the controller read, and at which resourceVersion.
    snapshot: Option<(JobView, u32)>,
    next_id: u8,
    /// Every pod that ever succeeded (a ghost: not visible to the controller).
    successes: u8,
    faults: u8,
}

/// What can happen.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum JobStep {
    /// The controller reads.
    Read,
    /// The controller acts on what it read.
    Act,
    /// A running pod succeeds.
    Succeed(u8),
    /// A running pod fails.
    Fail(u8),
    /// Fault: someone deletes a counted, finished pod.
    DeleteCounted(u8),
    /// Fault: the controller crashes between read and act.
    Crash,
}

impl fmt::Display for JobStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobStep::Read => write!(f, "the Job controller reads its view"),
            JobStep::Act => write!(f, "the Job controller acts on what it read"),
            JobStep::Succeed(id) => write!(f, "pod #{id} succeeds"),
            JobStep::Fail(id) => write!(f, "pod #{id} fails"),
            JobStep::DeleteCounted(id) => write!(f, "fault: counted pod #{id} is deleted"),
            JobStep::Crash => write!(f, "fault: the Job controller crashes before acting"),
        }
    }
}

impl JobModel {
    /// The model with the real decision.
    pub fn new(completions: u32, parallelism: u32, backoff_limit: u32, faults: u8) -> Self {
        Self {
            completions,
            parallelism,
            backoff_limit,
            faults,
            decide: shipshape_reconciler::job::decide_job,
            converging: Converging::default(),
        }
    }

    /// The steps of a fault-free run, in order: the controller first, then pods succeeding.
    fn progress(&self, state: &JobState) -> Vec<JobStep> {
        let mut steps = Vec::new();
        if state.snapshot.is_some() {
            steps.push(JobStep::Act);
        } else if !(self.decide)(&self.view(state), LATER, u64::from(state.rv))
            .actions
            .is_empty()
        {
            steps.push(JobStep::Read);
        }
        steps.extend(
            state
                .pods
                .iter()
                .filter(|p| p.outcome.is_none())
                .map(|p| JobStep::Succeed(p.id)),
        );
        steps
    }

    /// The Job has ended and nothing of it runs any more.
    pub fn settled(state: &JobState) -> bool {
        state.status.ended.is_some() && state.pods.iter().all(|p| p.outcome.is_some())
    }

    fn view(&self, state: &JobState) -> JobView {
        JobView {
            name: "job".into(),
            completions: Some(self.completions),
            parallelism: self.parallelism,
            backoff_limit: self.backoff_limit,
            active_deadline_seconds: None,
            ttl_seconds_after_finished: None,
            suspend: false,
            restart: JobRestart::Never,
            status: state.status.clone(),
            pods: state
                .pods
                .iter()
                .map(|p| JobPod {
                    name: format!("job-{}", p.id),
                    uid: p.id.to_string(),
                    active: p.outcome.is_none(),
                    ready: p.outcome.is_none(),
                    outcome: p.outcome,
                    finished_at: p.outcome.map(|_| 0),
                    restarts: 0,
                    counted: p.counted,
                    created: i64::from(p.id),
                })
                .collect(),
        }
    }

    fn act(&self, state: &mut JobState) {
        let Some((view, rv)) = state.snapshot.take() else {
            return;
        };
        let decision = (self.decide)(&view, LATER, u64::from(rv));
        // Counting and the status that counts are one transaction, refused whole if the Job
        // moved on or a counted pod is gone; pod creations and deletions are apart from it.
        let counted_ok = Precondition::ResourceVersion(u64::from(rv))
            .holds(u64::from(state.rv), "job")
            && decision.actions.iter().all(|a| match a {
                JobAction::CountPods(pods) => pods.iter().all(|(name, uid)| {
                    let precondition = Precondition::Uid(uid.clone());
                    state.pods.iter().any(|p| {
                        format!("job-{}", p.id) == *name && precondition.holds(0, &p.id.to_string())
                    })
                }),
                _ => true,
            });
        for action in decision.actions {
            match action {
                JobAction::CountPods(pods) if counted_ok => {
                    for (_, uid) in pods {
                        if let Some(p) = state.pods.iter_mut().find(|p| p.id.to_string() == uid) {
                            p.counted = true;
                        }
                    }
                }
                JobAction::UpdateStatus(status) if counted_ok => {
                    state.status = status;
                    state.rv += 1;
                }
                JobAction::CountPods(_) | JobAction::UpdateStatus(_) => {}
                JobAction::CreatePod { .. } => {
                    state.pods.push(JobModelPod {
                        id: state.next_id,
                        outcome: None,
                        counted: false,
                    });
                    state.next_id += 1;
                }
                JobAction::DeletePod { name, uid } => {
                    let precondition = Precondition::Uid(uid);
                    state.pods.retain(|p| {
                        !(format!("job-{}", p.id) == name
                            && precondition.holds(0, &p.id.to_string()))
                    });
                }
                JobAction::DeleteJob => {}
            }
        }
    }
}

impl Model for JobModel {
    type State = JobState;
    type Action = JobStep;

    fn init_states(&self) -> Vec<JobState> {
        vec![JobState {
            pods: Vec::new(),
            status: JobStatus::default(),
            rv: 1,
            snapshot: None,
            next_id: 0,
            successes: 0,
            faults: 0,
        }]
    }

    fn actions(&self, state: &JobState, actions: &mut Vec<JobStep>) {
        if state.snapshot.is_some() {
            actions.push(JobStep::Act);
            if state.faults < self.faults {
                actions.push(JobStep::Crash);
            }
        } else if !(self.decide)(&self.view(state), LATER, u64::from(state.rv))
            .actions
            .is_empty()
        {
            actions.push(JobStep::Read);
        }
        for pod in &state.pods {
            match pod.outcome {
                None => {
                    actions.push(JobStep::Succeed(pod.id));
                    actions.push(JobStep::Fail(pod.id));
                }
                Some(_) if pod.counted && state.faults < self.faults => {
                    actions.push(JobStep::DeleteCounted(pod.id));
                }
                Some(_) => {}
            }
        }
    }

    fn next_state(&self, state: &JobState, action: JobStep) -> Option<JobState> {
        let mut next = state.clone();
        match action {
            JobStep::Read => next.snapshot = Some((self.view(state), state.rv)),
            JobStep::Act => self.act(&mut next),
            JobStep::Succeed(id) | JobStep::Fail(id) => {
                let pod = next.pods.iter_mut().find(|p| p.id == id)?;
                let success = matches!(action, JobStep::Succeed(_));
                pod.outcome = Some(success);
                if success {
                    next.successes += 1;
                }
            }
            JobStep::DeleteCounted(id) => {
                next.pods.retain(|p| p.id != id);
                next.faults += 1;
            }
            JobStep::Crash => {
                next.snapshot = None;
                next.faults += 1;
            }
        }
        Some(next)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always(
                "a Job never records more successes than its completions",
                |model: &JobModel, state: &JobState| state.status.succeeded <= model.completions,
            ),
            Property::always(
                "no more pods ever succeed than the completions asked for",
                |model: &JobModel, state: &JobState| {
                    u32::from(state.successes) <= model.completions
                },
            ),
            Property::always(
                "never more than parallelism pods running",
                |model: &JobModel, state: &JobState| {
                    state.pods.iter().filter(|p| p.outcome.is_none()).count() as u32
                        <= model.parallelism
                },
            ),
            Property::always(
                "from every state a fault-free run ends the Job (no livelock)",
                |model: &JobModel, state: &JobState| {
                    model.converging.within(
                        state,
                        CONVERGENCE_STEPS,
                        |state| first_enabled(model, state, model.progress(state)),
                        JobModel::settled,
                    )
                },
            ),
            Property::eventually(
                "eventually the Job completes or fails",
                |_: &JobModel, state: &JobState| state.status.ended.is_some(),
            ),
        ]
    }
}

/// A StatefulSet of `replicas` under OrderedReady, with one template change and one scale.
#[derive(Clone)]
pub struct StatefulSetModel {
    /// Replicas at first.
    pub replicas: u32,
    /// Replicas after the commit.
    pub replicas_after: u32,
    /// Faults the world may inject (a pod crash, a pod deleted by hand, a controller crash).
    pub faults: u8,
    /// The decision under test.
    pub decide: fn(&StatefulSetView) -> Decision<StatefulSetAction>,
    /// States whose fault-free run is known to converge.
    converging: Converging,
}

impl fmt::Debug for StatefulSetModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "StatefulSetModel({} → {})",
            self.replicas, self.replicas_after
        )
    }
}

/// A pod of the modelled set.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SetPod {
    ordinal: u32,
    uid: u8,
    revision: u8,
    ready: bool,
    terminating: bool,
}

/// The modelled world.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SetState {
    pods: Vec<SetPod>,
    claims: BTreeSet<String>,
    replicas: u32,
    revision: u8,
    committed: bool,
    snapshot: Option<StatefulSetView>,
    status: StatefulSetStatus,
    next_uid: u8,
    faults: u8,
    /// Ghost: a decision created ordinal k+1 while k was not ready in what it read.
    out_of_order: bool,
}

/// What can happen.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SetStep {
    /// The controller reads.
    Read,
    /// The controller acts on what it read.
    Act,
    /// A kubelet: a new pod becomes ready, a terminating one is gone.
    Kubelet(u8),
    /// Git: a new template and the new replica count.
    Commit,
    /// Fault: a ready pod stops being ready.
    Crash(u8),
    /// Fault: someone deletes a pod.
    Delete(u8),
    /// Fault: the controller crashes between read and act.
    CrashController,
}

impl fmt::Display for SetStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetStep::Read => write!(f, "the StatefulSet controller reads its view"),
            SetStep::Act => write!(f, "the StatefulSet controller acts on what it read"),
            SetStep::Kubelet(uid) => write!(f, "a kubelet starts or removes pod #{uid}"),
            SetStep::Commit => write!(f, "Git commits a new template and replica count"),
            SetStep::Crash(uid) => write!(f, "fault: pod #{uid} stops being ready"),
            SetStep::Delete(uid) => write!(f, "fault: pod #{uid} is deleted by hand"),
            SetStep::CrashController => {
                write!(f, "fault: the StatefulSet controller crashes before acting")
            }
        }
    }
}

impl StatefulSetModel {
    /// The model with the real decision.
    pub fn new(replicas: u32, replicas_after: u32, faults: u8) -> Self {
        Self {
            replicas,
            replicas_after,
            faults,
            decide: shipshape_reconciler::statefulset::decide_stateful_set,
            converging: Converging::default(),
        }
    }

    /// The steps of a fault-free run, in order: the controller first, then kubelets. Git's
    /// commit is left out: the run must settle on whatever template Git declares.
    fn progress(&self, state: &SetState) -> Vec<SetStep> {
        let mut steps = Vec::new();
        if state.snapshot.is_some() {
            steps.push(SetStep::Act);
        } else if !(self.decide)(&self.view(state)).actions.is_empty() {
            steps.push(SetStep::Read);
        }
        steps.extend(
            state
                .pods
                .iter()
                .filter(|p| p.terminating || !p.ready)
                .map(|p| SetStep::Kubelet(p.uid)),
        );
        steps
    }

    /// Every wanted member runs the template Git declares now, ready; nothing else is left.
    pub fn settled(state: &SetState) -> bool {
        state.pods.len() as u32 == state.replicas
            && state.pods.iter().all(|p| {
                p.ready
                    && !p.terminating
                    && p.revision == state.revision
                    && p.ordinal < state.replicas
            })
    }

    fn view(&self, state: &SetState) -> StatefulSetView {
        StatefulSetView {
            name: "web".into(),
            replicas: state.replicas,
            parallel: false,
            on_delete: false,
            partition: 0,
            claim_templates: vec!["data".into()],
            claims: state.claims.clone(),
            delete_claims_when_scaled: false,
            revision: format!("r{}", state.revision),
            generation: 1,
            status: state.status.clone(),
            pods: state
                .pods
                .iter()
                .map(|p| OrdinalPod {
                    ordinal: p.ordinal,
                    name: pod_name("web", p.ordinal),
                    uid: p.uid.to_string(),
                    current: p.revision == state.revision,
                    ready: p.ready,
                    available: p.ready,
                    finished: false,
                    terminating: p.terminating,
                })
                .collect(),
        }
    }

    fn act(&self, state: &mut SetState) {
        let Some(view) = state.snapshot.take() else {
            return;
        };
        let decision = (self.decide)(&view);
        for action in decision.actions {
            match action {
                StatefulSetAction::CreateClaim { name, .. } => {
                    state.claims.insert(name);
                }
                StatefulSetAction::CreatePod { ordinal } => {
                    let before_ready = (0..ordinal).all(|o| {
                        view.pods
                            .iter()
                            .any(|p| p.ordinal == o && p.ready && !p.terminating)
                    });
                    if !before_ready {
                        state.out_of_order = true;
                    }
                    // The store refuses a name that exists (a terminating pod still holds it).
                    if state.pods.iter().any(|p| p.ordinal == ordinal) {
                        continue;
                    }
                    state.pods.push(SetPod {
                        ordinal,
                        uid: state.next_uid,
                        revision: state.revision,
                        ready: false,
                        terminating: false,
                    });
                    state.next_uid += 1;
                }
                StatefulSetAction::DeletePod { name, uid } => {
                    let precondition = Precondition::Uid(uid);
                    if let Some(p) = state.pods.iter_mut().find(|p| {
                        pod_name("web", p.ordinal) == name
                            && precondition.holds(0, &p.uid.to_string())
                    }) {
                        p.terminating = true;
                    }
                }
                StatefulSetAction::DeleteClaim { name } => {
                    state.claims.remove(&name);
                }
                StatefulSetAction::UpdateStatus(status) => state.status = status,
            }
        }
    }

    /// Every wanted member runs the newest template, ready; nothing else is left.
    pub fn converged(&self, state: &SetState) -> bool {
        state.committed && Self::settled(state)
    }
}

impl Model for StatefulSetModel {
    type State = SetState;
    type Action = SetStep;

    fn init_states(&self) -> Vec<SetState> {
        vec![SetState {
            pods: Vec::new(),
            claims: BTreeSet::new(),
            replicas: self.replicas,
            revision: 0,
            committed: false,
            snapshot: None,
            status: StatefulSetStatus::default(),
            next_uid: 0,
            faults: 0,
            out_of_order: false,
        }]
    }

    fn actions(&self, state: &SetState, actions: &mut Vec<SetStep>) {
        if state.snapshot.is_some() {
            actions.push(SetStep::Act);
            if state.faults < self.faults {
                actions.push(SetStep::CrashController);
            }
        } else {
            let idle = (self.decide)(&self.view(state)).actions.is_empty();
            if !idle {
                actions.push(SetStep::Read);
            }
        }
        if !state.committed {
            actions.push(SetStep::Commit);
        }
        for pod in &state.pods {
            if pod.terminating || !pod.ready {
                actions.push(SetStep::Kubelet(pod.uid));
            }
            if state.faults < self.faults && !pod.terminating {
                if pod.ready {
                    actions.push(SetStep::Crash(pod.uid));
                }
                actions.push(SetStep::Delete(pod.uid));
            }
        }
    }

    fn next_state(&self, state: &SetState, action: SetStep) -> Option<SetState> {
        let mut next = state.clone();
        match action {
            SetStep::Read => next.snapshot = Some(self.view(state)),
            SetStep::Act => self.act(&mut next),
            SetStep::Kubelet(uid) => {
                let index = next.pods.iter().position(|p| p.uid == uid)?;
                if next.pods[index].terminating {
                    next.pods.remove(index);
                } else {
                    // A pod's volume is its claim: without it, it cannot start.
                    let claim = claim_name("data", "web", next.pods[index].ordinal);
                    if !next.claims.contains(&claim) {
                        return None;
                    }
                    next.pods[index].ready = true;
                }
            }
            SetStep::Commit => {
                next.committed = true;
                next.revision += 1;
                next.replicas = self.replicas_after;
            }
            SetStep::Crash(uid) => {
                next.pods.iter_mut().find(|p| p.uid == uid)?.ready = false;
                next.faults += 1;
            }
            SetStep::Delete(uid) => {
                next.pods.iter_mut().find(|p| p.uid == uid)?.terminating = true;
                next.faults += 1;
            }
            SetStep::CrashController => {
                next.snapshot = None;
                next.faults += 1;
            }
        }
        Some(next)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always(
                "never two pods with one ordinal",
                |_: &StatefulSetModel, state: &SetState| {
                    let ordinals: BTreeSet<u32> = state.pods.iter().map(|p| p.ordinal).collect();
                    ordinals.len() == state.pods.len()
                },
            ),
            Property::always(
                "OrderedReady never starts ordinal k+1 before k is Ready",
                |_: &StatefulSetModel, state: &SetState| !state.out_of_order,
            ),
            Property::always(
                "a running member always has its own claim",
                |_: &StatefulSetModel, state: &SetState| {
                    state
                        .pods
                        .iter()
                        .filter(|p| p.ready)
                        .all(|p| state.claims.contains(&claim_name("data", "web", p.ordinal)))
                },
            ),
            Property::always(
                "from every state a fault-free run settles every member (no livelock)",
                |model: &StatefulSetModel, state: &SetState| {
                    model.converging.within(
                        state,
                        CONVERGENCE_STEPS,
                        |state| first_enabled(model, state, model.progress(state)),
                        StatefulSetModel::settled,
                    )
                },
            ),
            Property::eventually(
                "eventually every member runs the newest template",
                |model: &StatefulSetModel, state: &SetState| model.converged(state),
            ),
        ]
    }
}

/// Claims competing for volumes: two claims that both fit one static volume, and local-path
/// provisioning once a claim's pod is placed. Two controller instances decide at once (an old
/// one whose write is still in flight when its successor reads), so a decision on a stale view
/// reaches the store; writes carry the preconditions the volume controller gives them.
#[derive(Clone)]
pub struct VolumeModel {
    /// How many claims.
    pub claims: u8,
    /// The decision under test.
    pub decide: fn(
        &[shipshape_reconciler::volumes::ClaimView],
        &[shipshape_reconciler::volumes::VolumeView],
    ) -> Decision<shipshape_reconciler::volumes::VolumeAction>,
    /// States whose fault-free run is known to converge.
    converging: Converging,
}

impl fmt::Debug for VolumeModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VolumeModel({} claims)", self.claims)
    }
}

/// A modelled volume.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ModelVolume {
    name: String,
    claim: Option<u8>,
    rv: u32,
}

/// The modelled world.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct VolumeState {
    /// Which claims Git has created so far (they arrive in any order).
    created: Vec<bool>,
    /// Each claim's volume and the node its pod was placed on.
    claims: Vec<(Option<String>, Option<u8>)>,
    volumes: Vec<ModelVolume>,
    /// Two controllers' reads: (claims, volumes with their resourceVersions).
    snapshots: [Option<VolumeSnapshot>; 2],
}

/// What one controller read.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct VolumeSnapshot {
    created: Vec<bool>,
    claims: Vec<(Option<String>, Option<u8>)>,
    volumes: Vec<ModelVolume>,
}

/// What can happen.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum VolumeStep {
    /// Controller `n` reads.
    Read(usize),
    /// Controller `n` acts on what it read.
    Act(usize),
    /// The pod of claim `c` is placed on node `n`.
    Place(u8, u8),
    /// Git creates claim `c`.
    Create(u8),
}

impl fmt::Display for VolumeStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VolumeStep::Read(n) => write!(f, "volume controller {n} reads"),
            VolumeStep::Act(n) => write!(f, "volume controller {n} acts on what it read"),
            VolumeStep::Place(c, n) => write!(f, "the pod of claim {c} is placed on node-{n}"),
            VolumeStep::Create(c) => write!(f, "Git creates claim {c}"),
        }
    }
}

impl VolumeModel {
    /// The model with the real decision.
    pub fn new(claims: u8) -> Self {
        Self {
            claims,
            decide: shipshape_reconciler::volumes::decide_volumes,
            converging: Converging::default(),
        }
    }

    /// The steps of a fault-free run, in order: each controller acts on what it read, then
    /// reads. Git's claims and the scheduler's placements are left out: the run must settle on
    /// whatever claims and placements there are.
    fn progress() -> Vec<VolumeStep> {
        vec![
            VolumeStep::Act(0),
            VolumeStep::Act(1),
            VolumeStep::Read(0),
            VolumeStep::Read(1),
        ]
    }

    /// Every claim that exists and whose pod is placed is bound, and no decision is in hand.
    pub fn settled(state: &VolumeState) -> bool {
        state
            .claims
            .iter()
            .zip(&state.created)
            .all(|((volume, node), created)| !created || volume.is_some() || node.is_none())
            && state.snapshots.iter().all(Option::is_none)
    }

    fn views(
        snapshot: &VolumeSnapshot,
    ) -> (
        Vec<shipshape_reconciler::volumes::ClaimView>,
        Vec<shipshape_reconciler::volumes::VolumeView>,
    ) {
        use shipshape_reconciler::volumes::{ClaimView, LOCAL_PATH, VolumeView};
        let claims = snapshot
            .claims
            .iter()
            .enumerate()
            .filter(|(i, _)| snapshot.created[*i])
            .map(|(i, (volume, node))| ClaimView {
                namespace: "db".into(),
                name: format!("c{i}"),
                uid: format!("u{i}"),
                class: None,
                request: 1,
                access_modes: vec!["ReadWriteOnce".into()],
                volume: volume.clone(),
                phase: if volume.is_some() { "Bound" } else { "Pending" }.into(),
                consumer_node: node.map(|n| format!("node-{n}")),
            })
            .collect();
        let volumes = snapshot
            .volumes
            .iter()
            .map(|v| VolumeView {
                name: v.name.clone(),
                class: LOCAL_PATH.into(),
                capacity: 1,
                access_modes: vec!["ReadWriteOnce".into()],
                claim: v
                    .claim
                    .map(|c| ("db".into(), format!("c{c}"), format!("u{c}"))),
                reclaim_delete: false,
                phase: if v.claim.is_some() {
                    "Bound"
                } else {
                    "Available"
                }
                .into(),
                provisioned: false,
            })
            .collect();
        (claims, volumes)
    }

    fn act(&self, state: &mut VolumeState, snapshot: &VolumeSnapshot) {
        use shipshape_reconciler::volumes::VolumeAction;
        let (claims, volumes) = Self::views(snapshot);
        for action in (self.decide)(&claims, &volumes).actions {
            match action {
                VolumeAction::Provision {
                    name, claim_uid, ..
                } => {
                    // Created with its claimRef; refused if the name exists.
                    if state.volumes.iter().any(|v| v.name == name) {
                        continue;
                    }
                    let claim = claim_uid.trim_start_matches('u').parse().ok();
                    state.volumes.push(ModelVolume { name, claim, rv: 1 });
                }
                VolumeAction::Bind {
                    claim_uid, volume, ..
                } => {
                    let claim: usize = claim_uid.trim_start_matches('u').parse().unwrap_or(0);
                    let seen = snapshot.volumes.iter().find(|v| v.name == volume);
                    let Some(index) = state.volumes.iter().position(|v| v.name == volume) else {
                        continue;
                    };
                    // One transaction: the volume's claimRef (only if it was seen free, and
                    // only at the version seen), then the claim's volumeName.
                    if let Some(seen) = seen
                        && seen.claim.is_none()
                    {
                        let precondition = Precondition::ResourceVersion(u64::from(seen.rv));
                        if !precondition.holds(u64::from(state.volumes[index].rv), &volume) {
                            continue;
                        }
                        state.volumes[index].claim = Some(claim as u8);
                        state.volumes[index].rv += 1;
                    }
                    if let Some(entry) = state.claims.get_mut(claim) {
                        entry.0 = Some(volume);
                    }
                }
                _ => {}
            }
        }
    }
}

impl Model for VolumeModel {
    type State = VolumeState;
    type Action = VolumeStep;

    fn init_states(&self) -> Vec<VolumeState> {
        vec![VolumeState {
            created: vec![false; usize::from(self.claims)],
            claims: vec![(None, None); usize::from(self.claims)],
            volumes: vec![ModelVolume {
                name: "static".into(),
                claim: None,
                rv: 1,
            }],
            snapshots: [None, None],
        }]
    }

    fn actions(&self, state: &VolumeState, actions: &mut Vec<VolumeStep>) {
        for n in 0..2 {
            if state.snapshots[n].is_some() {
                actions.push(VolumeStep::Act(n));
            } else {
                actions.push(VolumeStep::Read(n));
            }
        }
        for (c, created) in state.created.iter().enumerate() {
            if !created {
                actions.push(VolumeStep::Create(c as u8));
            }
        }
        for (c, (volume, node)) in state.claims.iter().enumerate() {
            if state.created[c] && volume.is_none() && node.is_none() {
                for n in 0..2 {
                    actions.push(VolumeStep::Place(c as u8, n));
                }
            }
        }
    }

    fn next_state(&self, state: &VolumeState, action: VolumeStep) -> Option<VolumeState> {
        let mut next = state.clone();
        match action {
            VolumeStep::Read(n) => {
                let snapshot = VolumeSnapshot {
                    created: state.created.clone(),
                    claims: state.claims.clone(),
                    volumes: state.volumes.clone(),
                };
                // Nothing to decide: no step (keeps the space finite).
                let (claims, volumes) = Self::views(&snapshot);
                if (self.decide)(&claims, &volumes).actions.iter().all(|a| {
                    !matches!(
                        a,
                        shipshape_reconciler::volumes::VolumeAction::Provision { .. }
                            | shipshape_reconciler::volumes::VolumeAction::Bind { .. }
                    )
                }) {
                    return None;
                }
                next.snapshots[n] = Some(snapshot);
            }
            VolumeStep::Act(n) => {
                let snapshot = next.snapshots[n].take()?;
                self.act(&mut next, &snapshot);
            }
            VolumeStep::Place(c, n) => next.claims[usize::from(c)].1 = Some(n),
            VolumeStep::Create(c) => next.created[usize::from(c)] = true,
        }
        Some(next)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always(
                "a volume is never bound to two claims",
                |_: &VolumeModel, state: &VolumeState| {
                    state.volumes.iter().all(|v| {
                        state
                            .claims
                            .iter()
                            .filter(|(volume, _)| volume.as_deref() == Some(v.name.as_str()))
                            .count()
                            <= 1
                    })
                },
            ),
            Property::always(
                "a bound claim's volume names it back",
                |_: &VolumeModel, state: &VolumeState| {
                    state.claims.iter().enumerate().all(|(c, (volume, _))| {
                        volume.as_ref().is_none_or(|name| {
                            state
                                .volumes
                                .iter()
                                .any(|v| v.name == *name && v.claim == Some(c as u8))
                        })
                    })
                },
            ),
            Property::always(
                "from every state a fault-free run binds every placed claim (no livelock)",
                |model: &VolumeModel, state: &VolumeState| {
                    model.converging.within(
                        state,
                        CONVERGENCE_STEPS,
                        |state| first_enabled(model, state, VolumeModel::progress()),
                        VolumeModel::settled,
                    )
                },
            ),
            Property::eventually(
                "eventually every claim whose pod is placed is bound",
                |_: &VolumeModel, state: &VolumeState| {
                    state.created.iter().all(|c| *c)
                        && state
                            .claims
                            .iter()
                            .all(|(volume, node)| volume.is_some() || node.is_none())
                        && state.snapshots.iter().all(Option::is_none)
                },
            ),
        ]
    }
}
