//! The StatefulSet decision: pods `NAME-0 … NAME-(n-1)`, each with its own claims, started in
//! order (OrderedReady: each Running and Ready before the next; scaled down from the highest)
//! or all at once (Parallel); updated from the highest ordinal down to `partition`, one pod at
//! a time, or only when deleted (OnDelete).
//!
//! A pod's identity is its ordinal: a replaced `web-1` is `web-1` again, with the same
//! hostname and the same claims, so it finds its data. Claims are never deleted with a pod;
//! on scale-down only when `persistentVolumeClaimRetentionPolicy.whenScaled` is Delete.

use std::collections::BTreeSet;

use crate::decision::Decision;

/// A pod of the set.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OrdinalPod {
    /// Its ordinal.
    pub ordinal: u32,
    /// Its name.
    pub name: String,
    /// Its uid.
    pub uid: String,
    /// Made from the update revision.
    pub current: bool,
    /// Running and Ready.
    pub ready: bool,
    /// Ready for minReadySeconds.
    pub available: bool,
    /// Finished (Succeeded or Failed): it is replaced.
    pub finished: bool,
    /// Being deleted.
    pub terminating: bool,
}

/// The counts a StatefulSet reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct StatefulSetStatus {
    /// Pods that exist.
    pub replicas: u32,
    /// Of those, ready.
    pub ready: u32,
    /// Of those, available.
    pub available: u32,
    /// Of those, from the update revision.
    pub updated: u32,
    /// The revision every pod had before the update (equal to `update_revision` once done).
    pub current_revision: String,
    /// The template's revision now.
    pub update_revision: String,
    /// Pods from the current revision.
    pub current: u32,
    /// The generation this status describes.
    pub observed_generation: i64,
}

/// What the StatefulSet decision needs to know.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StatefulSetView {
    /// The set's name.
    pub name: String,
    /// Desired pods.
    pub replicas: u32,
    /// `podManagementPolicy: Parallel`.
    pub parallel: bool,
    /// `updateStrategy.type: OnDelete`.
    pub on_delete: bool,
    /// `rollingUpdate.partition`: ordinals below it keep the old template.
    pub partition: u32,
    /// The names of its volumeClaimTemplates.
    pub claim_templates: Vec<String>,
    /// The claims that exist, by name.
    pub claims: BTreeSet<String>,
    /// `whenScaled: Delete`: claims of removed ordinals go.
    pub delete_claims_when_scaled: bool,
    /// The template's revision.
    pub revision: String,
    /// The set's generation.
    pub generation: i64,
    /// The status as last written.
    pub status: StatefulSetStatus,
    /// Its pods.
    pub pods: Vec<OrdinalPod>,
}

/// One step the StatefulSet controller takes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum StatefulSetAction {
    /// Create claim `name` from template `template` for `ordinal`.
    CreateClaim {
        /// The claim's name (`TEMPLATE-SET-ORDINAL`).
        name: String,
        /// The template's name.
        template: String,
        /// The ordinal it belongs to.
        ordinal: u32,
    },
    /// Create the pod for `ordinal`.
    CreatePod {
        /// The ordinal.
        ordinal: u32,
    },
    /// Delete a pod (scale-down, replacement, or update).
    DeletePod {
        /// Its name.
        name: String,
        /// Its uid.
        uid: String,
    },
    /// Delete a claim of a removed ordinal.
    DeleteClaim {
        /// Its name.
        name: String,
    },
    /// Write the status.
    UpdateStatus(StatefulSetStatus),
}

/// The name of the pod with `ordinal`.
pub fn pod_name(set: &str, ordinal: u32) -> String {
    format!("{set}-{ordinal}")
}

/// The name of claim template `template`'s claim for `ordinal`.
pub fn claim_name(template: &str, set: &str, ordinal: u32) -> String {
    format!("{template}-{set}-{ordinal}")
}

/// The ordinal in a pod's name, if it is one of this set's.
pub fn ordinal_of(set: &str, pod: &str) -> Option<u32> {
    pod.strip_prefix(set)?.strip_prefix('-')?.parse().ok()
}

/// Decides what the StatefulSet controller does now.
pub fn decide_stateful_set(view: &StatefulSetView) -> Decision<StatefulSetAction> {
    let mut decision = Decision::idle();
    let live: Vec<&OrdinalPod> = view.pods.iter().filter(|p| !p.terminating).collect();
    let any_terminating = view.pods.iter().any(|p| p.terminating);
    let at = |ordinal: u32| live.iter().find(|p| p.ordinal == ordinal).copied();
    let delete = |pod: &OrdinalPod| StatefulSetAction::DeletePod {
        name: pod.name.clone(),
        uid: pod.uid.clone(),
    };

    // Finished pods are replaced (deleted now, created again on a later pass).
    for pod in live.iter().filter(|p| p.finished) {
        decision.actions.push(delete(pod));
    }
    let healthy = |pod: &OrdinalPod| pod.ready && !pod.finished;

    // Scale up (claims first, then pods), in order unless Parallel.
    let mut blocked = false;
    for ordinal in 0..view.replicas {
        if blocked {
            break;
        }
        for template in &view.claim_templates {
            let name = claim_name(template, &view.name, ordinal);
            if !view.claims.contains(&name) {
                decision.actions.push(StatefulSetAction::CreateClaim {
                    name,
                    template: template.clone(),
                    ordinal,
                });
            }
        }
        match at(ordinal) {
            None => {
                let replacing = view.pods.iter().any(|p| p.ordinal == ordinal);
                if !replacing {
                    decision
                        .actions
                        .push(StatefulSetAction::CreatePod { ordinal });
                }
                blocked = !view.parallel;
            }
            Some(pod) if !healthy(pod) => blocked = !view.parallel,
            Some(_) => {}
        }
    }

    // Scale down: the highest ordinal first; one at a time unless Parallel, and only when every
    // remaining pod is healthy (OrderedReady).
    let mut condemned: Vec<&OrdinalPod> = live
        .iter()
        .filter(|p| p.ordinal >= view.replicas)
        .copied()
        .collect();
    condemned.sort_by_key(|p| std::cmp::Reverse(p.ordinal));
    let all_healthy = (0..view.replicas).all(|o| at(o).is_some_and(healthy));
    if view.parallel {
        decision.actions.extend(condemned.iter().map(|p| delete(p)));
    } else if let Some(highest) = condemned.first()
        && all_healthy
        && !any_terminating
    {
        decision.actions.push(delete(highest));
    }
    if view.delete_claims_when_scaled {
        for name in &view.claims {
            let removed = view.claim_templates.iter().any(|template| {
                name.strip_prefix(&format!("{template}-"))
                    .and_then(|rest| ordinal_of(&view.name, rest))
                    .is_some_and(|o| {
                        o >= view.replicas && !view.pods.iter().any(|p| p.ordinal == o)
                    })
            });
            if removed {
                decision
                    .actions
                    .push(StatefulSetAction::DeleteClaim { name: name.clone() });
            }
        }
    }

    // Rolling update: from the highest ordinal down to the partition, one pod at a time, once
    // the set is whole and healthy.
    if !view.on_delete && condemned.is_empty() && all_healthy && !any_terminating {
        let stale = (view.partition..view.replicas)
            .rev()
            .filter_map(at)
            .find(|p| !p.current);
        if let Some(pod) = stale {
            decision.actions.push(delete(pod));
        }
    }

    let updated = live.iter().filter(|p| p.current).count() as u32;
    let replicas = live.len() as u32;
    let done = updated == replicas && replicas == view.replicas;
    let current_revision = if done || view.status.current_revision.is_empty() {
        view.revision.clone()
    } else {
        view.status.current_revision.clone()
    };
    let status = StatefulSetStatus {
        replicas,
        ready: live.iter().filter(|p| p.ready).count() as u32,
        available: live.iter().filter(|p| p.available).count() as u32,
        updated,
        current: if current_revision == view.revision {
            updated
        } else {
            replicas - updated
        },
        current_revision,
        update_revision: view.revision.clone(),
        observed_generation: view.generation,
    };
    if status != view.status {
        decision
            .actions
            .push(StatefulSetAction::UpdateStatus(status));
    }
    decision
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pod(ordinal: u32, ready: bool) -> OrdinalPod {
        OrdinalPod {
            ordinal,
            name: pod_name("web", ordinal),
            uid: format!("uid-{ordinal}"),
            current: true,
            ready,
            available: ready,
            finished: false,
            terminating: false,
        }
    }

    fn view(replicas: u32, pods: Vec<OrdinalPod>) -> StatefulSetView {
        StatefulSetView {
            name: "web".into(),
            replicas,
            parallel: false,
            on_delete: false,
            partition: 0,
            claim_templates: vec!["data".into()],
            claims: BTreeSet::new(),
            delete_claims_when_scaled: false,
            revision: "r2".into(),
            generation: 1,
            status: StatefulSetStatus::default(),
            pods,
        }
    }

    fn created(decision: &Decision<StatefulSetAction>) -> Vec<u32> {
        decision
            .actions
            .iter()
            .filter_map(|a| match a {
                StatefulSetAction::CreatePod { ordinal } => Some(*ordinal),
                _ => None,
            })
            .collect()
    }

    fn deleted(decision: &Decision<StatefulSetAction>) -> Vec<String> {
        decision
            .actions
            .iter()
            .filter_map(|a| match a {
                StatefulSetAction::DeletePod { name, .. } => Some(name.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn ordered_ready_starts_one_ordinal_at_a_time_with_its_claim_first() {
        let first = decide_stateful_set(&view(3, vec![]));
        assert_eq!(created(&first), [0]);
        assert!(first.actions.contains(&StatefulSetAction::CreateClaim {
            name: "data-web-0".into(),
            template: "data".into(),
            ordinal: 0
        }));
        // web-0 not ready yet: nothing more.
        assert!(created(&decide_stateful_set(&view(3, vec![pod(0, false)]))).is_empty());
        assert_eq!(
            created(&decide_stateful_set(&view(3, vec![pod(0, true)]))),
            [1]
        );
        let mut parallel = view(3, vec![]);
        parallel.parallel = true;
        assert_eq!(created(&decide_stateful_set(&parallel)), [0, 1, 2]);
    }

    #[test]
    fn scale_down_removes_the_highest_first_and_keeps_claims() {
        let mut v = view(1, vec![pod(0, true), pod(1, true), pod(2, true)]);
        v.claims = ["data-web-0", "data-web-1", "data-web-2"]
            .map(String::from)
            .into();
        let decision = decide_stateful_set(&v);
        assert_eq!(deleted(&decision), ["web-2"]);
        assert!(
            !decision
                .actions
                .iter()
                .any(|a| matches!(a, StatefulSetAction::DeleteClaim { .. }))
        );
        // whenScaled: Delete removes the claims of ordinals whose pods are gone.
        v.pods.truncate(2);
        v.delete_claims_when_scaled = true;
        let decision = decide_stateful_set(&v);
        assert!(decision.actions.contains(&StatefulSetAction::DeleteClaim {
            name: "data-web-2".into()
        }));
        assert!(!decision.actions.contains(&StatefulSetAction::DeleteClaim {
            name: "data-web-1".into()
        }));
    }

    #[test]
    fn updates_go_from_the_highest_ordinal_down_to_the_partition() {
        let old = |o| OrdinalPod {
            current: false,
            ..pod(o, true)
        };
        let mut v = view(3, vec![old(0), old(1), old(2)]);
        assert_eq!(deleted(&decide_stateful_set(&v)), ["web-2"]);
        v.pods[2] = pod(2, false);
        assert!(
            deleted(&decide_stateful_set(&v)).is_empty(),
            "wait for web-2 to be ready"
        );
        v.pods[2] = pod(2, true);
        assert_eq!(deleted(&decide_stateful_set(&v)), ["web-1"]);
        v.partition = 2;
        assert!(
            deleted(&decide_stateful_set(&v)).is_empty(),
            "below the partition stays"
        );
        v.partition = 0;
        v.on_delete = true;
        assert!(
            deleted(&decide_stateful_set(&v)).is_empty(),
            "OnDelete waits for a delete"
        );
    }

    proptest! {
        /// Under OrderedReady, whatever the pods' states, the decision never creates ordinal k+1
        /// while ordinal k is missing or not ready, and never creates one that exists.
        #[test]
        fn ordered_ready_never_skips_an_ordinal(
            states in proptest::collection::vec(proptest::option::of(any::<bool>()), 0..6),
            replicas in 0u32..6,
        ) {
            let pods: Vec<OrdinalPod> = states
                .iter()
                .enumerate()
                .filter_map(|(i, s)| s.map(|ready| pod(i as u32, ready)))
                .collect();
            let decision = decide_stateful_set(&view(replicas, pods.clone()));
            for ordinal in created(&decision) {
                prop_assert!(!pods.iter().any(|p| p.ordinal == ordinal));
                for below in 0..ordinal {
                    prop_assert!(pods.iter().any(|p| p.ordinal == below && p.ready), "{ordinal} before {below}");
                }
            }
        }
    }
}
