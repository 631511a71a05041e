//! Running the models: the bounded configurations CI checks, and a readable report.

use std::time::{Duration, Instant};

use shipshape_reconciler::deployment::{IntOrPercent, RolloutStrategy};
use stateright::{Checker, Expectation, Model};

use crate::rollout::RolloutModel;

/// A property's test of one state.
type Condition<M> = fn(&M, &<M as Model>::State) -> bool;

/// What every model checked here is: explorable by stateright, with readable actions.
pub trait Checkable: Model + Clone + Send + Sync + 'static
where
    Self::State: Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
    Self::Action: Clone + std::fmt::Display + std::fmt::Debug + PartialEq,
{
}

impl<M> Checkable for M
where
    M: Model + Clone + Send + Sync + 'static,
    M::State: Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
    M::Action: Clone + std::fmt::Display + std::fmt::Debug + PartialEq,
{
}

/// One model run's result.
#[derive(Debug)]
pub struct Verdict {
    /// What was checked.
    pub name: String,
    /// Distinct states explored.
    pub states: usize,
    /// How long it took.
    pub elapsed: Duration,
    /// Each violated property with its shortest counterexample, as readable steps.
    pub violations: Vec<(String, Vec<String>)>,
}

impl Verdict {
    /// True when every property held.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// Whether a property whose name starts with `prefix` was violated (tests that show the
    /// checker catches a known-wrong decision).
    pub fn violated(&self, prefix: &str) -> bool {
        self.violations.iter().any(|(p, _)| p.starts_with(prefix))
    }
}

/// Checks `model` exhaustively (breadth first, so counterexamples are shortest).
pub fn check<M>(name: &str, model: M) -> Verdict
where
    M: Checkable,
    M::State: Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
    M::Action: Clone + std::fmt::Display + std::fmt::Debug + PartialEq,
{
    check_bounded(name, model, None)
}

/// As [`check`], stopping after `states` states if given (for a test that only needs to show
/// that a violation is found, never for the verdict on the real controllers).
pub fn check_bounded<M>(name: &str, model: M, states: Option<usize>) -> Verdict
where
    M: Checkable,
    M::State: Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
    M::Action: Clone + std::fmt::Display + std::fmt::Debug + PartialEq,
{
    let started = Instant::now();
    let properties: Vec<(&'static str, Expectation, Condition<M>)> = model
        .properties()
        .into_iter()
        .map(|p| (p.name, p.expectation, p.condition))
        .collect();
    let builder = model.clone().checker();
    let builder = match states {
        Some(limit) => builder.target_state_count(limit),
        None => builder,
    };
    let checker = builder.spawn_bfs().join();
    let mut violations = Vec::new();
    for (property, expectation, condition) in properties {
        // A `sometimes` property is satisfied by its discovery; the others are violated by one.
        if matches!(expectation, Expectation::Sometimes) {
            continue;
        }
        if let Some(path) = checker.discovery(property) {
            let steps = readable_trace(&model, path.into_vec(), expectation, condition);
            violations.push((property.to_string(), steps));
        }
    }
    Verdict {
        name: name.to_string(),
        states: checker.unique_state_count(),
        elapsed: started.elapsed(),
        violations,
    }
}

/// The counterexample as numbered steps. For an `always` property: the shortest path from the
/// initial state to any state that breaks it (a breadth-first search bounded by the length of
/// the one stateright found, which is a valid trace but not always the shortest). For an
/// `eventually` property: stateright's path to the terminal state that never met it.
fn readable_trace<M>(
    model: &M,
    path: Vec<(M::State, Option<M::Action>)>,
    expectation: Expectation,
    condition: Condition<M>,
) -> Vec<String>
where
    M: Checkable,
    M::State: Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
    M::Action: Clone + std::fmt::Display + std::fmt::Debug + PartialEq,
{
    let found: Vec<M::Action> = path
        .iter()
        .filter_map(|(_, action)| action.clone())
        .collect();
    let actions = match expectation {
        Expectation::Always => shortest_violation(model, condition, found.len()).unwrap_or(found),
        _ => found,
    };
    actions
        .iter()
        .enumerate()
        .map(|(i, action)| format!("{:>3}. {action}", i + 1))
        .collect()
}

fn shortest_violation<M>(
    model: &M,
    condition: Condition<M>,
    max_depth: usize,
) -> Option<Vec<M::Action>>
where
    M: Checkable,
    M::State: Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
    M::Action: Clone + std::fmt::Display + std::fmt::Debug + PartialEq,
{
    let mut seen = std::collections::HashSet::new();
    let mut queue: std::collections::VecDeque<(M::State, Vec<M::Action>)> = model
        .init_states()
        .into_iter()
        .map(|s| (s, Vec::new()))
        .collect();
    while let Some((state, trace)) = queue.pop_front() {
        if !condition(model, &state) {
            return Some(trace);
        }
        if trace.len() >= max_depth || !seen.insert(state.clone()) {
            continue;
        }
        let mut actions = Vec::new();
        model.actions(&state, &mut actions);
        for action in actions {
            if let Some(next) = model.next_state(&state, action.clone()) {
                let mut longer = trace.clone();
                longer.push(action);
                queue.push_back((next, longer));
            }
        }
    }
    None
}

/// The configurations `shipshape verify` and CI check: rollouts over 2 nodes with surge only and
/// with unavailability only (the two ends of every budget), and Recreate; one template change;
/// one fault (a pod crash or a controller crash between its read and its act). Four replicas
/// with 25%/25% is out of reach of exhaustive search in memory here (over 24 GiB).
pub fn standard_models() -> Vec<(String, RolloutModel)> {
    let surge = RolloutStrategy::RollingUpdate {
        max_surge: IntOrPercent::Count(1),
        max_unavailable: IntOrPercent::Count(0),
    };
    let unavailable = RolloutStrategy::RollingUpdate {
        max_surge: IntOrPercent::Count(0),
        max_unavailable: IntOrPercent::Count(1),
    };
    vec![
        (
            "rollout, 3 replicas on 2 nodes, maxSurge 1 maxUnavailable 0".into(),
            RolloutModel::new(3, 2, surge),
        ),
        (
            "rollout, 3 replicas on 2 nodes, maxSurge 0 maxUnavailable 1".into(),
            RolloutModel::new(3, 2, unavailable),
        ),
        (
            "recreate, 2 replicas on 2 nodes".into(),
            RolloutModel::new(2, 2, RolloutStrategy::Recreate),
        ),
    ]
}

/// A model run waiting to happen: given its name, it checks and gives the verdict.
pub type Run = Box<dyn FnOnce(&str) -> Verdict + Send>;

/// The Job, volume, node-loss, StatefulSet, read-your-writes and fleet configurations: a Job of 3
/// completions, 2 at a time, backoffLimit 1; two claims racing for one volume; 3 replicas on 3
/// nodes with a node lost (and perhaps back) and one message or controller fault; a
/// StatefulSet of 3 members, scaled to 2 with a new template; a ReplicaSet's 2 pods created and
/// bound by controllers whose writes and answers travel late and out of order; a fleet rolling
/// commits out in three waves.
pub fn workload_models() -> Vec<(String, Run)> {
    use crate::workloads::{JobModel, StatefulSetModel};
    vec![
        (
            "job, 3 completions 2 at a time, backoffLimit 1, two faults".into(),
            Box::new(|name: &str| {
                check(name, JobModel::new(3, 2, 1, 2))
            }),
        ),
        (
            "volumes, 2 claims for 1 static volume, local-path, 2 controllers deciding at once"
                .into(),
            Box::new(|name: &str| {
                check(name, crate::workloads::VolumeModel::new(2))
            }),
        ),
        (
            "node loss, 3 replicas on 3 nodes, a node lost and back, a renewal lost or delayed or a controller crash"
                .into(),
            Box::new(|name: &str| {
                check(
                    name,
                    crate::nodeloss::NodeLossModel::new(3, 3, 1, 1),
                )
            }),
        ),
        (
            "statefulset, 3 members then 2 on a new template, OrderedReady, two faults".into(),
            Box::new(|name: &str| {
                check(name, StatefulSetModel::new(3, 2, 2))
            }),
        ),
        (
            "read your writes, 2 replicas on 2 one-pod nodes, writes and answers reordered, a write failed or a pod deleted"
                .into(),
            Box::new(|name: &str| {
                check(name, crate::readwrites::ReadYourWritesModel::new(2, 2, 1))
            }),
        ),
        (
            "fleet, waves of 1, 2 and 1 clusters (maxUnavailable 1), 2 commits good or bad, a cluster crash or a lost status write"
                .into(),
            Box::new(|name: &str| {
                check(name, crate::fleet::FleetModel::new(vec![1, 2, 1], 1, 2, 1))
            }),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use shipshape_reconciler::decision::Decision;
    use shipshape_reconciler::deployment::{DeploymentAction, DeploymentView, decide_deployment};

    #[test]
    fn the_workload_models_hold() {
        for (name, run) in workload_models() {
            let verdict = run(&name);
            assert!(verdict.passed(), "{name}: {:#?}", verdict.violations);
            assert!(
                verdict.states > 10,
                "{name} explored only {} states",
                verdict.states
            );
        }
    }

    /// Known-wrong decisions: a StatefulSet controller that starts every ordinal at once, and a
    /// Job controller that forgets which pods it counted.
    #[test]
    fn the_checker_catches_wrong_workload_controllers() {
        use crate::workloads::{JobModel, StatefulSetModel};
        use shipshape_reconciler::job::{JobAction, JobView, decide_job};
        use shipshape_reconciler::statefulset::{
            StatefulSetAction, StatefulSetView, decide_stateful_set,
        };
        fn hasty(view: &StatefulSetView) -> Decision<StatefulSetAction> {
            let mut parallel = view.clone();
            parallel.parallel = true;
            decide_stateful_set(&parallel)
        }
        fn forgetful(view: &JobView, now: i64, seed: u64) -> Decision<JobAction> {
            let mut view = view.clone();
            for pod in &mut view.pods {
                pod.counted = false;
            }
            decide_job(&view, now, seed)
        }
        let mut set = StatefulSetModel::new(3, 2, 0);
        set.decide = hasty;
        let set = check_bounded("hasty", set, Some(50_000));
        assert!(set.violated("OrderedReady never"), "{:?}", set.violations);
        let mut job = JobModel::new(2, 1, 1, 0);
        job.decide = forgetful;
        let job = check_bounded("forgetful", job, Some(50_000));
        assert!(
            job.violated("a Job never records more"),
            "{:?}",
            job.violations
        );
    }

    /// Known-wrong volume decisions: one that reads no claimRef (every volume looks free), and
    /// one that never provisions a local-path volume for a placed claim.
    #[test]
    fn the_checker_catches_wrong_volume_controllers() {
        use crate::workloads::VolumeModel;
        use shipshape_reconciler::volumes::{ClaimView, VolumeAction, VolumeView, decide_volumes};
        fn blind(claims: &[ClaimView], volumes: &[VolumeView]) -> Decision<VolumeAction> {
            let free: Vec<VolumeView> = volumes
                .iter()
                .cloned()
                .map(|mut v| {
                    v.claim = None;
                    v.phase = "Available".into();
                    v
                })
                .collect();
            decide_volumes(claims, &free)
        }
        fn lazy(claims: &[ClaimView], volumes: &[VolumeView]) -> Decision<VolumeAction> {
            let mut decision = decide_volumes(claims, volumes);
            decision
                .actions
                .retain(|a| !matches!(a, VolumeAction::Provision { .. }));
            decision
        }
        let mut model = VolumeModel::new(2);
        model.decide = blind;
        let verdict = check("blind", model);
        assert!(
            verdict.violated("a volume is never bound to two claims"),
            "{:?}",
            verdict.violations
        );
        let mut model = VolumeModel::new(2);
        model.decide = lazy;
        let verdict = check("lazy", model);
        assert!(
            verdict.violated("from every state a fault-free run binds every placed claim"),
            "{:?}",
            verdict.violations
        );
    }

    /// Known-wrong decisions that livelock rather than break a safety property: a Job
    /// controller that never starts a pod, a StatefulSet controller that never deletes one.
    #[test]
    fn the_checker_catches_workload_controllers_that_never_finish() {
        use crate::workloads::{JobModel, StatefulSetModel};
        use shipshape_reconciler::job::{JobAction, JobView, decide_job};
        use shipshape_reconciler::statefulset::{
            StatefulSetAction, StatefulSetView, decide_stateful_set,
        };
        fn idle_job(view: &JobView, now: i64, seed: u64) -> Decision<JobAction> {
            let mut decision = decide_job(view, now, seed);
            decision
                .actions
                .retain(|a| !matches!(a, JobAction::CreatePod { .. }));
            decision
        }
        fn clinging(view: &StatefulSetView) -> Decision<StatefulSetAction> {
            let mut decision = decide_stateful_set(view);
            decision
                .actions
                .retain(|a| !matches!(a, StatefulSetAction::DeletePod { .. }));
            decision
        }
        let mut job = JobModel::new(2, 1, 1, 0);
        job.decide = idle_job;
        let verdict = check_bounded("idle", job, Some(50_000));
        assert!(
            verdict.violated("from every state a fault-free run ends the Job"),
            "{:?}",
            verdict.violations
        );
        let mut set = StatefulSetModel::new(3, 2, 0);
        set.decide = clinging;
        let verdict = check_bounded("clinging", set, Some(50_000));
        assert!(
            verdict.violated("from every state a fault-free run settles"),
            "{:?}",
            verdict.violations
        );
    }

    #[test]
    fn the_standard_models_hold() {
        for (name, model) in standard_models() {
            let verdict = check(&name, model);
            assert!(verdict.passed(), "{name}: {:#?}", verdict.violations);
            assert!(
                verdict.states > 10,
                "{name} explored only {} states",
                verdict.states
            );
        }
    }

    /// A known-wrong controller: scales every old ReplicaSet to zero at once, before the new
    /// one has any available pod.
    fn impatient(view: &DeploymentView, now: i64) -> Decision<DeploymentAction> {
        let mut decision = decide_deployment(view, now);
        for rs in view
            .replica_sets
            .iter()
            .filter(|rs| rs.template_hash != view.template_hash && rs.replicas > 0)
        {
            decision.actions.insert(
                0,
                DeploymentAction::ScaleReplicaSet {
                    name: rs.name.clone(),
                    resource_version: rs.resource_version,
                    replicas: 0,
                    revision: rs.revision,
                },
            );
        }
        decision
    }

    #[test]
    fn the_checker_catches_a_controller_that_scales_down_too_early() {
        let mut model = standard_models().remove(0).1;
        model.decide = impatient;
        let verdict = check_bounded("impatient", model, Some(100_000));
        let violated: Vec<&str> = verdict.violations.iter().map(|(p, _)| p.as_str()).collect();
        assert!(
            violated.contains(
                &"never fewer than replicas - maxUnavailable available pods without pod faults"
            ),
            "{violated:?}"
        );
        let (_, trace) = verdict
            .violations
            .iter()
            .find(|(p, _)| p.starts_with("never fewer"))
            .expect("the availability violation");
        assert_eq!(
            trace,
            &vec![
                "  1. Git commits a new pod template".to_string(),
                "  2. the Deployment controller reads its view".to_string(),
                "  3. the Deployment controller acts on what it read".to_string(),
                "  4. the ReplicaSet controller syncs web-v0".to_string(),
            ]
        );
    }
}
