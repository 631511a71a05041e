//! The Deployment decision: Kubernetes' rounding, each strategy's steps, rollback, history,
//! progress; and a property that drives whole rollouts through a simple pod layer and checks the
//! surge and availability budgets at every step.

use proptest::prelude::*;

use super::*;

fn rs(name: &str, hash: &str, revision: u64, replicas: u32, available: u32) -> ReplicaSetSummary {
    ReplicaSetSummary {
        name: name.into(),
        template_hash: hash.into(),
        revision,
        resource_version: revision * 10,
        created: revision as i64,
        replicas,
        active: replicas,
        ready: available,
        available,
    }
}

fn rolling(surge: IntOrPercent, unavailable: IntOrPercent) -> RolloutStrategy {
    RolloutStrategy::RollingUpdate {
        max_surge: surge,
        max_unavailable: unavailable,
    }
}

fn view(
    replicas: u32,
    hash: &str,
    strategy: RolloutStrategy,
    sets: Vec<ReplicaSetSummary>,
) -> DeploymentView {
    DeploymentView {
        name: "web".into(),
        generation: 2,
        replicas,
        template_hash: hash.into(),
        strategy,
        revision_history_limit: 10,
        progress_deadline_seconds: Some(600),
        paused: false,
        replica_sets: sets,
        status: None,
    }
}

fn scale_actions(decision: &Decision<DeploymentAction>) -> Vec<(String, u32)> {
    decision
        .actions
        .iter()
        .filter_map(|a| match a {
            DeploymentAction::ScaleReplicaSet { name, replicas, .. } => {
                Some((name.clone(), *replicas))
            }
            DeploymentAction::CreateReplicaSet { name, replicas, .. } => {
                Some((format!("+{name}"), *replicas))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_paused_deployment_scales_but_does_not_roll() {
    let default = rolling(IntOrPercent::Percent(25), IntOrPercent::Percent(25));
    // A new template while paused: no new ReplicaSet; a new replica count reaches the old one.
    let mut paused = view(4, "new", default, vec![rs("web-old", "old", 1, 3, 3)]);
    paused.paused = true;
    let decision = decide_deployment(&paused, 100);
    assert_eq!(scale_actions(&decision), [("web-old".to_string(), 4)]);
    let status = decision.actions.iter().find_map(|a| match a {
        DeploymentAction::UpdateStatus(s) => Some(*s),
        _ => None,
    });
    let status = status.expect("a status");
    assert_eq!(status.progress, Progress::Paused);
    assert_eq!(decision.requeue_after, None, "no deadline while paused");
    // Paused for longer than the deadline: still paused, never DeadlineExceeded.
    paused.replica_sets = vec![rs("web-old", "old", 1, 4, 4)];
    paused.status = Some(status);
    let later = decide_deployment(&paused, 100 + 10_000);
    assert!(scale_actions(&later).is_empty());
    assert!(
        later.actions.iter().all(
            |a| !matches!(a, DeploymentAction::UpdateStatus(s) if s.progress != Progress::Paused)
        ),
        "{:?}",
        later.actions
    );
    // Resumed: the rollout starts and the deadline counts from then.
    paused.paused = false;
    let resumed = decide_deployment(&paused, 100 + 10_001);
    assert_eq!(scale_actions(&resumed), [("+web-new".to_string(), 1)]);
}

#[test]
fn a_deployment_paused_mid_rollout_spreads_a_new_size_over_its_replica_sets() {
    let default = rolling(IntOrPercent::Percent(25), IntOrPercent::Percent(25));
    // Kubernetes' documented example: 10 replicas (maxSurge 3) paused with 8 old and 5 new,
    // scaled to 15: 5 more within 15 + 3, 3 to the old set and 2 to the new.
    let surge = rolling(IntOrPercent::Count(3), IntOrPercent::Count(2));
    let mut paused = view(
        15,
        "new",
        surge,
        vec![rs("web-old", "old", 1, 8, 8), rs("web-new", "new", 2, 5, 5)],
    );
    paused.paused = true;
    let mut scaled = scale_actions(&decide_deployment(&paused, 100));
    scaled.sort();
    assert_eq!(
        scaled,
        [("web-new".to_string(), 7), ("web-old".to_string(), 11)]
    );
    // Scaled down the same way: to 6 (9 allowed), 4 fewer in all.
    paused.replicas = 6;
    let mut scaled = scale_actions(&decide_deployment(&paused, 100));
    scaled.sort();
    assert_eq!(
        scaled,
        [("web-new".to_string(), 3), ("web-old".to_string(), 6)]
    );
    paused.strategy = default;
    // A saturated newest set takes the old ones to zero, paused or not.
    paused.replicas = 4;
    paused.replica_sets = vec![rs("web-old", "old", 1, 2, 2), rs("web-new", "new", 2, 4, 4)];
    assert_eq!(
        scale_actions(&decide_deployment(&paused, 100)),
        [("web-old".to_string(), 0)]
    );
}

#[test]
fn rounds_budgets_as_kubernetes_does() {
    let default = rolling(IntOrPercent::Percent(25), IntOrPercent::Percent(25));
    assert_eq!(budgets(default, 10), (3, 2));
    assert_eq!(budgets(default, 1), (1, 0));
    assert_eq!(
        budgets(
            rolling(IntOrPercent::Count(0), IntOrPercent::Percent(10)),
            3
        ),
        (0, 1)
    );
    assert_eq!(budgets(RolloutStrategy::Recreate, 4), (0, 4));
}

#[test]
fn a_first_rollout_creates_the_replica_set_at_full_size() {
    let decision = decide_deployment(
        &view(
            3,
            "abc",
            rolling(IntOrPercent::Count(1), IntOrPercent::Count(0)),
            vec![],
        ),
        0,
    );
    assert_eq!(scale_actions(&decision), vec![("+web-abc".to_string(), 3)]);
    assert!(matches!(
        decision.actions.last(),
        Some(DeploymentAction::UpdateStatus(_))
    ));
}

#[test]
fn a_template_change_surges_then_scales_old_down_within_budget() {
    let strategy = rolling(IntOrPercent::Count(1), IntOrPercent::Count(0));
    // Surge: one new pod above the three old ones.
    let step = decide_deployment(
        &view(3, "new", strategy, vec![rs("web-old", "old", 1, 3, 3)]),
        10,
    );
    assert_eq!(scale_actions(&step), vec![("+web-new".to_string(), 1)]);
    // The new pod is not available yet: nothing old may go (maxUnavailable 0).
    let waiting = decide_deployment(
        &view(
            3,
            "new",
            strategy,
            vec![rs("web-old", "old", 1, 3, 3), rs("web-new", "new", 2, 1, 0)],
        ),
        20,
    );
    assert_eq!(scale_actions(&waiting), vec![]);
    // Once it is available, one old pod goes.
    let next = decide_deployment(
        &view(
            3,
            "new",
            strategy,
            vec![rs("web-old", "old", 1, 3, 3), rs("web-new", "new", 2, 1, 1)],
        ),
        30,
    );
    assert_eq!(scale_actions(&next), vec![("web-old".to_string(), 2)]);
}

#[test]
fn unavailable_old_pods_are_removed_first() {
    let strategy = rolling(IntOrPercent::Count(0), IntOrPercent::Count(1));
    // Old set has 3 desired, only 1 available. maxScaledDown = 3 - (3 - 1) - 0 = 1, and it is
    // spent on a broken pod, not the one serving (which keeps availability where it is).
    let decision = decide_deployment(
        &view(
            3,
            "new",
            strategy,
            vec![rs("web-old", "old", 1, 3, 1), rs("web-new", "new", 2, 0, 0)],
        ),
        5,
    );
    assert_eq!(scale_actions(&decision), vec![("web-old".to_string(), 2)]);
}

#[test]
fn recreate_stops_everything_old_before_starting_new() {
    let mut old = rs("web-old", "old", 1, 2, 2);
    let first = decide_deployment(
        &view(2, "new", RolloutStrategy::Recreate, vec![old.clone()]),
        0,
    );
    assert_eq!(scale_actions(&first), vec![("web-old".to_string(), 0)]);
    old.replicas = 0;
    old.available = 0;
    old.ready = 0;
    old.active = 1; // a pod still terminating
    let waiting = decide_deployment(
        &view(2, "new", RolloutStrategy::Recreate, vec![old.clone()]),
        1,
    );
    assert_eq!(scale_actions(&waiting), vec![]);
    old.active = 0;
    let start = decide_deployment(&view(2, "new", RolloutStrategy::Recreate, vec![old]), 2);
    assert_eq!(scale_actions(&start), vec![("+web-new".to_string(), 2)]);
}

#[test]
fn a_revert_reuses_the_old_replica_set_and_makes_it_newest() {
    let strategy = rolling(IntOrPercent::Count(1), IntOrPercent::Count(0));
    let decision = decide_deployment(
        &view(
            2,
            "v1",
            strategy,
            vec![rs("web-v1", "v1", 1, 0, 0), rs("web-v2", "v2", 2, 2, 2)],
        ),
        0,
    );
    assert!(
        decision
            .actions
            .contains(&DeploymentAction::ScaleReplicaSet {
                name: "web-v1".into(),
                resource_version: 10,
                replicas: 1,
                revision: 3,
            }),
        "{:?}",
        decision.actions
    );
    assert!(
        !decision
            .actions
            .iter()
            .any(|a| matches!(a, DeploymentAction::CreateReplicaSet { .. }))
    );
}

#[test]
fn keeps_only_the_newest_empty_replica_sets() {
    let mut v = view(
        1,
        "v6",
        rolling(IntOrPercent::Count(1), IntOrPercent::Count(0)),
        (1..=5)
            .map(|i| rs(&format!("web-v{i}"), &format!("v{i}"), i, 0, 0))
            .chain([rs("web-v6", "v6", 6, 1, 1)])
            .collect(),
    );
    v.revision_history_limit = 2;
    let decision = decide_deployment(&v, 0);
    let deleted: Vec<&str> = decision
        .actions
        .iter()
        .filter_map(|a| match a {
            DeploymentAction::DeleteReplicaSet { name, .. } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(deleted, vec!["web-v1", "web-v2", "web-v3"]);
}

#[test]
fn reports_a_stuck_rollout_after_its_deadline() {
    let strategy = rolling(IntOrPercent::Count(1), IntOrPercent::Count(0));
    let sets = vec![rs("web-old", "old", 1, 3, 3), rs("web-new", "new", 2, 1, 0)];
    let mut v = view(3, "new", strategy, sets);
    v.progress_deadline_seconds = Some(60);
    let first = decide_deployment(&v, 100);
    let Some(DeploymentAction::UpdateStatus(status)) = first.actions.last().cloned() else {
        panic!("a status");
    };
    assert_eq!(status.progress, Progress::Progressing);
    v.status = Some(status);
    let within = decide_deployment(&v, 150);
    assert!(within.is_idle(), "{:?}", within.actions);
    let after = decide_deployment(&v, 161);
    let Some(DeploymentAction::UpdateStatus(stuck)) = after.actions.last().cloned() else {
        panic!("a status");
    };
    assert_eq!(stuck.progress, Progress::DeadlineExceeded);
}

#[test]
fn template_hashes_are_stable_and_safe_for_names() {
    let a = template_hash(br#"{"spec":{"containers":[{"image":"busybox:1.35"}]}}"#);
    assert_eq!(
        a,
        template_hash(br#"{"spec":{"containers":[{"image":"busybox:1.35"}]}}"#)
    );
    assert_ne!(
        a,
        template_hash(br#"{"spec":{"containers":[{"image":"busybox:1.36"}]}}"#)
    );
    assert!(
        a.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)),
        "{a}"
    );
}

/// A pod layer for the property: each step, a ReplicaSet below its desired size starts one pod
/// (not yet available), pods started earlier become available, and a ReplicaSet above its size
/// stops the surplus at once, unavailable pods first.
fn pods_react(sets: &mut [ReplicaSetSummary]) {
    for rs in sets.iter_mut() {
        // Every pod started in an earlier step is available now.
        rs.available = rs.active;
        if rs.active > rs.replicas {
            rs.active = rs.replicas;
            rs.available = rs.active;
        } else if rs.active < rs.replicas {
            rs.active += 1;
        }
        rs.ready = rs.available;
        rs.resource_version += 1;
    }
}

fn apply(view: &mut DeploymentView, actions: &[DeploymentAction]) {
    for action in actions {
        match action {
            DeploymentAction::CreateReplicaSet {
                name,
                template_hash,
                replicas,
                revision,
            } => {
                view.replica_sets.push(ReplicaSetSummary {
                    name: name.clone(),
                    template_hash: template_hash.clone(),
                    revision: *revision,
                    resource_version: 1,
                    created: 1000 + *revision as i64,
                    replicas: *replicas,
                    active: 0,
                    ready: 0,
                    available: 0,
                });
            }
            DeploymentAction::ScaleReplicaSet {
                name,
                replicas,
                revision,
                ..
            } => {
                if let Some(rs) = view.replica_sets.iter_mut().find(|rs| &rs.name == name) {
                    rs.replicas = *replicas;
                    rs.revision = *revision;
                }
            }
            DeploymentAction::DeleteReplicaSet { name, .. } => {
                view.replica_sets.retain(|rs| &rs.name != name)
            }
            DeploymentAction::UpdateStatus(status) => view.status = Some(*status),
        }
    }
}

fn any_budget() -> impl proptest::strategy::Strategy<Value = IntOrPercent> {
    prop_oneof![
        (0u32..3).prop_map(IntOrPercent::Count),
        (0u32..=100).prop_map(IntOrPercent::Percent)
    ]
}

proptest! {
    /// From a settled Deployment, a template change rolls out to completion, and at every step
    /// there are never more than replicas + maxSurge desired pods nor fewer than
    /// replicas - maxUnavailable available ones.
    #[test]
    fn rollouts_respect_their_budgets_and_complete(replicas in 1u32..7, surge in any_budget(), unavailable in any_budget()) {
        let strategy = rolling(surge, unavailable);
        let (max_surge, max_unavailable) = budgets(strategy, replicas);
        let mut v = view(replicas, "new", strategy, vec![rs("web-old", "old", 1, replicas, replicas)]);
        for step in 0..200 {
            let decision = decide_deployment(&v, step);
            apply(&mut v, &decision.actions);
            let desired: u32 = v.replica_sets.iter().map(|rs| rs.replicas).sum();
            prop_assert!(desired <= replicas + max_surge, "step {step}: {desired} desired pods > {replicas} + {max_surge}");
            pods_react(&mut v.replica_sets);
            let running: u32 = v.replica_sets.iter().map(|rs| rs.active).sum();
            prop_assert!(running <= replicas + max_surge, "step {step}: {running} pods > {replicas} + {max_surge}");
            let available: u32 = v.replica_sets.iter().map(|rs| rs.available).sum();
            prop_assert!(available + max_unavailable >= replicas, "step {step}: only {available} available");
            if v.status.is_some_and(|s| s.progress == Progress::Complete) {
                let new = v.replica_sets.iter().find(|rs| rs.template_hash == "new").expect("new set");
                prop_assert_eq!(new.active, replicas);
                return Ok(());
            }
        }
        prop_assert!(false, "the rollout did not complete in 200 steps: {:?}", v.replica_sets);
    }
}
