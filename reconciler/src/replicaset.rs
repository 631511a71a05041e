//! The ReplicaSet decision: create or delete pods until the set has `replicas` of them, and
//! report how many are ready and available.
//!
//! Which pods go first when scaling down follows Kubernetes (`ActivePodsWithRanks`): pods not yet
//! on a node, then pending before unknown before running, not ready before ready, ready for a
//! shorter time first, more restarts first, newer first. Deleting the least useful pods first is
//! what keeps a scale-down from taking serving capacity.

use std::cmp::Ordering;

use crate::decision::{Decision, Seeded};

/// A pod's lifecycle phase, as Kubernetes names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PodPhase {
    /// Accepted, not all containers running yet.
    Pending,
    /// The node stopped reporting.
    Unknown,
    /// Bound and running.
    Running,
    /// All containers exited successfully (will not restart).
    Succeeded,
    /// All containers exited, at least one failed (will not restart).
    Failed,
}

/// A pod as the workload controllers see it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodView {
    /// The pod's name.
    pub name: String,
    /// Its uid: deletions are conditioned on it.
    pub uid: String,
    /// The node it is bound to, if any.
    pub node: Option<String>,
    /// Its phase.
    pub phase: PodPhase,
    /// Whether its Ready condition is true.
    pub ready: bool,
    /// When it last became ready (seconds).
    pub ready_since: Option<i64>,
    /// Container restarts.
    pub restarts: u32,
    /// When it was created (seconds).
    pub created: i64,
    /// Whether it is already being deleted.
    pub terminating: bool,
}

impl PodView {
    /// Counts toward the set's replicas: neither finished nor on its way out.
    pub fn is_active(&self) -> bool {
        !self.terminating && !matches!(self.phase, PodPhase::Succeeded | PodPhase::Failed)
    }

    /// Ready for at least `min_ready_seconds` at `now`.
    pub fn is_available(&self, min_ready_seconds: i64, now: i64) -> bool {
        self.ready
            && self
                .ready_since
                .is_some_and(|since| since + min_ready_seconds <= now)
    }
}

/// Kubernetes' order for choosing which pod to delete first (first = least useful).
pub fn deletion_order(a: &PodView, b: &PodView) -> Ordering {
    let phase_rank = |p: &PodView| match p.phase {
        PodPhase::Pending => 0,
        PodPhase::Unknown => 1,
        _ => 2,
    };
    a.node
        .is_some()
        .cmp(&b.node.is_some())
        .then(phase_rank(a).cmp(&phase_rank(b)))
        .then(a.ready.cmp(&b.ready))
        // Ready more recently first (a later timestamp sorts first).
        .then(b.ready_since.cmp(&a.ready_since))
        .then(b.restarts.cmp(&a.restarts))
        .then(b.created.cmp(&a.created))
        .then(a.name.cmp(&b.name))
}

/// The counts a ReplicaSet reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReplicaSetStatus {
    /// Active pods.
    pub replicas: u32,
    /// Ready pods.
    pub ready: u32,
    /// Pods ready for at least minReadySeconds.
    pub available: u32,
    /// The generation this status describes.
    pub observed_generation: i64,
}

/// What the ReplicaSet decision needs to know.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ReplicaSetView {
    /// The set's name (new pods are named after it).
    pub name: String,
    /// Desired replicas.
    pub replicas: u32,
    /// How long a pod must be ready to count as available.
    pub min_ready_seconds: i64,
    /// The set's generation.
    pub generation: i64,
    /// The status as last written.
    pub status: ReplicaSetStatus,
    /// The pods it owns (by owner reference).
    pub pods: Vec<PodView>,
}

/// One step the ReplicaSet controller takes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ReplicaSetAction {
    /// Create a pod from the set's template under this name.
    CreatePod {
        /// The new pod's name.
        name: String,
    },
    /// Delete a pod, if it is still this incarnation.
    DeletePod {
        /// The pod.
        name: String,
        /// Its uid (the precondition).
        uid: String,
    },
    /// Write the set's status.
    UpdateStatus(ReplicaSetStatus),
}

/// Decides what the ReplicaSet controller does now. `seed` names new pods; `now` is seconds.
pub fn decide_replica_set(
    view: &ReplicaSetView,
    now: i64,
    seed: u64,
) -> Decision<ReplicaSetAction> {
    let mut active: Vec<&PodView> = view.pods.iter().filter(|p| p.is_active()).collect();
    let mut decision = Decision::idle();
    let count = active.len() as u32;
    if count < view.replicas {
        let mut names = Seeded::new(seed);
        let taken: Vec<&str> = view.pods.iter().map(|p| p.name.as_str()).collect();
        let mut created = 0;
        while created < view.replicas - count {
            let name = format!("{}-{}", view.name, names.name_suffix());
            if taken.contains(&name.as_str()) {
                continue;
            }
            decision.actions.push(ReplicaSetAction::CreatePod { name });
            created += 1;
        }
    } else if count > view.replicas {
        active.sort_by(|a, b| deletion_order(a, b));
        for pod in active.iter().take((count - view.replicas) as usize) {
            decision.actions.push(ReplicaSetAction::DeletePod {
                name: pod.name.clone(),
                uid: pod.uid.clone(),
            });
        }
    }
    let status = ReplicaSetStatus {
        replicas: count,
        ready: active.iter().filter(|p| p.ready).count() as u32,
        available: active
            .iter()
            .filter(|p| p.is_available(view.min_ready_seconds, now))
            .count() as u32,
        observed_generation: view.generation,
    };
    if status != view.status {
        decision
            .actions
            .push(ReplicaSetAction::UpdateStatus(status));
    }
    // A ready pod becomes available when minReadySeconds have passed: look again then, since no
    // event will announce it.
    decision.requeue_after = active
        .iter()
        .filter(|p| p.ready && !p.is_available(view.min_ready_seconds, now))
        .filter_map(|p| {
            p.ready_since
                .map(|since| since + view.min_ready_seconds - now)
        })
        .min()
        .map(|wait| wait.max(1));
    decision
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pod(
        name: &str,
        node: Option<&str>,
        phase: PodPhase,
        ready_since: Option<i64>,
        created: i64,
    ) -> PodView {
        PodView {
            name: name.into(),
            uid: format!("uid-{name}"),
            node: node.map(Into::into),
            phase,
            ready: ready_since.is_some(),
            ready_since,
            restarts: 0,
            created,
            terminating: false,
        }
    }

    fn view(replicas: u32, pods: Vec<PodView>) -> ReplicaSetView {
        ReplicaSetView {
            name: "web-7d4b9".into(),
            replicas,
            min_ready_seconds: 0,
            generation: 1,
            status: ReplicaSetStatus::default(),
            pods,
        }
    }

    fn deleted(decision: &Decision<ReplicaSetAction>) -> Vec<&str> {
        decision
            .actions
            .iter()
            .filter_map(|a| match a {
                ReplicaSetAction::DeletePod { name, .. } => Some(name.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn creates_the_missing_pods_with_distinct_names() {
        let decision = decide_replica_set(
            &view(
                3,
                vec![pod(
                    "web-7d4b9-aaaaa",
                    Some("n1"),
                    PodPhase::Running,
                    Some(0),
                    0,
                )],
            ),
            10,
            42,
        );
        let names: Vec<&str> = decision
            .actions
            .iter()
            .filter_map(|a| match a {
                ReplicaSetAction::CreatePod { name } => Some(name.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(names.len(), 2);
        assert_ne!(names[0], names[1]);
        assert!(
            names
                .iter()
                .all(|n| n.starts_with("web-7d4b9-") && n.len() == "web-7d4b9-".len() + 5)
        );
        // The same seed names the same pods: the model checker can replay a decision.
        assert_eq!(
            decision,
            decide_replica_set(
                &view(
                    3,
                    vec![pod(
                        "web-7d4b9-aaaaa",
                        Some("n1"),
                        PodPhase::Running,
                        Some(0),
                        0
                    )]
                ),
                10,
                42
            )
        );
    }

    #[test]
    fn deletes_the_least_useful_pods_first() {
        let pods = vec![
            pod("ready-old", Some("n1"), PodPhase::Running, Some(5), 1),
            pod("ready-new", Some("n1"), PodPhase::Running, Some(50), 2),
            pod("not-ready", Some("n2"), PodPhase::Running, None, 3),
            pod("pending", Some("n2"), PodPhase::Pending, None, 4),
            pod("unscheduled", None, PodPhase::Pending, None, 5),
        ];
        let decision = decide_replica_set(&view(1, pods), 100, 0);
        assert_eq!(
            deleted(&decision),
            vec!["unscheduled", "pending", "not-ready", "ready-new"]
        );
    }

    #[test]
    fn finished_and_terminating_pods_do_not_count() {
        let mut gone = pod("gone", Some("n1"), PodPhase::Running, Some(0), 0);
        gone.terminating = true;
        let pods = vec![gone, pod("done", Some("n1"), PodPhase::Succeeded, None, 0)];
        let decision = decide_replica_set(&view(1, pods), 10, 1);
        assert!(matches!(
            decision.actions[0],
            ReplicaSetAction::CreatePod { .. }
        ));
    }

    #[test]
    fn reports_availability_after_min_ready_seconds_and_asks_to_be_woken() {
        let mut v = view(
            1,
            vec![pod("a", Some("n1"), PodPhase::Running, Some(100), 0)],
        );
        v.min_ready_seconds = 30;
        let decision = decide_replica_set(&v, 110, 0);
        assert_eq!(
            decision.actions,
            vec![ReplicaSetAction::UpdateStatus(ReplicaSetStatus {
                replicas: 1,
                ready: 1,
                available: 0,
                observed_generation: 1
            })]
        );
        assert_eq!(decision.requeue_after, Some(20));
        v.status = ReplicaSetStatus {
            replicas: 1,
            ready: 1,
            available: 0,
            observed_generation: 1,
        };
        let later = decide_replica_set(&v, 130, 0);
        assert_eq!(
            later.actions,
            vec![ReplicaSetAction::UpdateStatus(ReplicaSetStatus {
                replicas: 1,
                ready: 1,
                available: 1,
                observed_generation: 1
            })]
        );
        v.status = ReplicaSetStatus {
            replicas: 1,
            ready: 1,
            available: 1,
            observed_generation: 1,
        };
        assert!(
            decide_replica_set(&v, 131, 0).is_idle(),
            "converged means no action"
        );
    }

    fn any_pod() -> impl Strategy<Value = PodView> {
        (
            "[a-z]{3}",
            proptest::option::of("n[1-3]"),
            prop_oneof![
                Just(PodPhase::Pending),
                Just(PodPhase::Running),
                Just(PodPhase::Unknown),
                Just(PodPhase::Succeeded),
                Just(PodPhase::Failed)
            ],
            proptest::option::of(0i64..100),
            0u32..5,
            0i64..100,
            any::<bool>(),
        )
            .prop_map(
                |(name, node, phase, ready_since, restarts, created, terminating)| PodView {
                    uid: format!("uid-{name}"),
                    name,
                    node,
                    phase,
                    ready: ready_since.is_some(),
                    ready_since,
                    restarts,
                    created,
                    terminating,
                },
            )
    }

    proptest! {
        /// One decision brings the active count exactly to `replicas`, never deletes a pod that
        /// is not active, and never deletes a pod that ranks after one it keeps.
        #[test]
        fn one_step_reaches_the_desired_count(replicas in 0u32..6, pods in proptest::collection::vec(any_pod(), 0..8), seed in any::<u64>()) {
            let mut pods = pods;
            pods.sort_by(|a, b| a.name.cmp(&b.name));
            pods.dedup_by(|a, b| a.name == b.name);
            let v = view(replicas, pods.clone());
            let decision = decide_replica_set(&v, 100, seed);
            let active = pods.iter().filter(|p| p.is_active()).count() as i64;
            let mut created = 0i64;
            let mut removed = Vec::new();
            for action in &decision.actions {
                match action {
                    ReplicaSetAction::CreatePod { name } => {
                        prop_assert!(!pods.iter().any(|p| &p.name == name));
                        created += 1;
                    }
                    ReplicaSetAction::DeletePod { name, .. } => {
                        let pod = pods.iter().find(|p| &p.name == name).expect("deletes an existing pod");
                        prop_assert!(pod.is_active());
                        removed.push(pod);
                    }
                    ReplicaSetAction::UpdateStatus(_) => {}
                }
            }
            prop_assert_eq!(active + created - removed.len() as i64, i64::from(replicas));
            // Every deleted pod ranks before every kept one: the least useful go first.
            for kept in pods.iter().filter(|p| p.is_active() && !removed.iter().any(|r| r.name == p.name)) {
                for gone in &removed {
                    prop_assert_ne!(deletion_order(gone, kept), Ordering::Greater, "{} deleted before {}", gone.name, kept.name);
                }
            }
        }
    }
}
