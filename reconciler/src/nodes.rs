//! Node lifecycle: a node that stops renewing its lease is marked NotReady (its Ready
//! condition Unknown, and the `node.kubernetes.io/unreachable:NoExecute` taint so nothing new
//! lands there); its pods are then marked not ready, so Services stop sending them traffic at
//! once rather than after the eviction timeout; once it has been gone for the eviction timeout
//! its pods are evicted so their controllers replace them elsewhere. A node that comes back
//! loses the taint, and its kubelet reports its pods again.
//!
//! Kubernetes spreads this over the node lifecycle controller and the taint manager, with
//! `node-monitor-grace-period` (40 s) and the default `tolerationSeconds` of 300 s; both are
//! arguments here, so tests shorten them.

/// The taint a node that stopped reporting carries (Kubernetes' name).
pub const UNREACHABLE_TAINT: &str = "node.kubernetes.io/unreachable";

/// A node's health as the lifecycle decision sees it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NodeHealth {
    /// Whether its Ready condition is True.
    pub ready: bool,
    /// When the Ready condition last changed (seconds).
    pub ready_changed: i64,
    /// When its lease was last renewed (seconds), if it has one.
    pub lease_renewed: Option<i64>,
    /// Whether it carries the unreachable taint.
    pub tainted: bool,
}

/// A pod on the node.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PodOnNode {
    /// The pod's name (with its namespace).
    pub name: String,
    /// Its uid (the eviction's precondition).
    pub uid: String,
    /// Already being deleted.
    pub terminating: bool,
    /// Tolerates the unreachable taint forever (a toleration without tolerationSeconds).
    pub tolerates_forever: bool,
    /// Its Ready condition is True (as its kubelet last reported).
    pub ready: bool,
}

/// One step of the node lifecycle controller.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum NodeAction {
    /// Set Ready to Unknown and add the unreachable taint.
    MarkUnreachable,
    /// The node reports again: remove the taint.
    ClearUnreachable,
    /// Set a pod's Ready condition to False: its kubelet cannot say, so no Service should
    /// count on it (Kubernetes' `MarkPodsNotReady`).
    MarkPodNotReady {
        /// The pod.
        name: String,
        /// Its uid.
        uid: String,
    },
    /// Delete a pod so its controller replaces it elsewhere.
    Evict {
        /// The pod.
        name: String,
        /// Its uid.
        uid: String,
    },
}

/// Decides what happens to one node at `now`, with the lease `grace` and `eviction_timeout`
/// in seconds.
pub fn decide_node(
    node: &NodeHealth,
    pods: &[PodOnNode],
    now: i64,
    grace: i64,
    eviction_timeout: i64,
) -> crate::decision::Decision<NodeAction> {
    let mut decision = crate::decision::Decision::idle();
    let silent_since = node.lease_renewed.unwrap_or(node.ready_changed);
    let lapsed = now - silent_since > grace;
    if node.ready {
        if lapsed {
            decision.actions.push(NodeAction::MarkUnreachable);
            decision.requeue_after = Some(eviction_timeout.max(1));
        } else {
            if node.tainted {
                decision.actions.push(NodeAction::ClearUnreachable);
            }
            // Look again when the lease would lapse, since a silent node sends no event.
            decision.requeue_after = Some((silent_since + grace + 1 - now).max(1));
        }
        return decision;
    }
    if !lapsed {
        // The kubelet renews but reports NotReady itself: not ours to handle.
        if node.tainted {
            decision.actions.push(NodeAction::ClearUnreachable);
        }
        decision.requeue_after = Some((silent_since + grace + 1 - now).max(1));
        return decision;
    }
    if !node.tainted {
        decision.actions.push(NodeAction::MarkUnreachable);
    }
    let gone_for = now - node.ready_changed;
    let evicting = gone_for >= eviction_timeout;
    for pod in pods.iter().filter(|p| !p.terminating) {
        if evicting && !pod.tolerates_forever {
            decision.actions.push(NodeAction::Evict {
                name: pod.name.clone(),
                uid: pod.uid.clone(),
            });
        } else if pod.ready && node.tainted {
            // Only once the node is marked, so the mark comes first and the pods follow.
            decision.actions.push(NodeAction::MarkPodNotReady {
                name: pod.name.clone(),
                uid: pod.uid.clone(),
            });
        }
    }
    if !evicting {
        decision.requeue_after = Some((eviction_timeout - gone_for).max(1));
    }
    decision
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str) -> PodOnNode {
        PodOnNode {
            name: name.into(),
            uid: format!("uid-{name}"),
            terminating: false,
            tolerates_forever: false,
            ready: false,
        }
    }

    #[test]
    fn a_silent_node_is_marked_then_emptied_after_the_timeout() {
        let healthy = NodeHealth {
            ready: true,
            ready_changed: 0,
            lease_renewed: Some(100),
            tainted: false,
        };
        let quiet = decide_node(&healthy, &[pod("a")], 120, 40, 300);
        assert!(quiet.actions.is_empty());
        assert_eq!(
            quiet.requeue_after,
            Some(21),
            "looks again when the lease would lapse"
        );

        let lapsed = decide_node(&healthy, &[pod("a")], 141, 40, 300);
        assert_eq!(lapsed.actions, vec![NodeAction::MarkUnreachable]);

        let marked = NodeHealth {
            ready: false,
            ready_changed: 141,
            tainted: true,
            ..healthy.clone()
        };
        let waiting = decide_node(&marked, &[pod("a")], 200, 40, 300);
        assert!(waiting.actions.is_empty(), "pods stay until the timeout");
        assert_eq!(waiting.requeue_after, Some(241));

        let serving = PodOnNode {
            ready: true,
            ..pod("b")
        };
        let unmarked = NodeHealth {
            tainted: false,
            ..marked.clone()
        };
        assert_eq!(
            decide_node(&unmarked, std::slice::from_ref(&serving), 200, 40, 300).actions,
            vec![NodeAction::MarkUnreachable],
            "the node is marked before its pods"
        );
        assert_eq!(
            decide_node(&marked, &[serving], 200, 40, 300).actions,
            vec![NodeAction::MarkPodNotReady {
                name: "b".into(),
                uid: "uid-b".into()
            }],
            "a pod on a silent node stops counting as ready before it is evicted"
        );

        let mut tolerant = pod("agent");
        tolerant.tolerates_forever = true;
        let mut leaving = pod("old");
        leaving.terminating = true;
        let evicting = decide_node(&marked, &[pod("a"), tolerant, leaving], 441, 40, 300);
        assert_eq!(
            evicting.actions,
            vec![NodeAction::Evict {
                name: "a".into(),
                uid: "uid-a".into()
            }]
        );
    }

    #[test]
    fn a_node_that_reports_again_loses_the_taint() {
        let back = NodeHealth {
            ready: true,
            ready_changed: 500,
            lease_renewed: Some(500),
            tainted: true,
        };
        let decision = decide_node(&back, &[], 505, 40, 300);
        assert_eq!(decision.actions, vec![NodeAction::ClearUnreachable]);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn node() -> impl Strategy<Value = NodeHealth> {
            (
                any::<bool>(),
                0i64..1000,
                proptest::option::of(0i64..1000),
                any::<bool>(),
            )
                .prop_map(|(ready, ready_changed, lease_renewed, tainted)| {
                    NodeHealth {
                        ready,
                        ready_changed,
                        lease_renewed,
                        tainted,
                    }
                })
        }

        fn pods() -> impl Strategy<Value = Vec<PodOnNode>> {
            proptest::collection::vec((any::<bool>(), any::<bool>(), any::<bool>()), 0..4).prop_map(
                |flags| {
                    flags
                        .into_iter()
                        .enumerate()
                        .map(|(i, (terminating, tolerates_forever, ready))| PodOnNode {
                            name: format!("p{i}"),
                            uid: format!("u{i}"),
                            terminating,
                            tolerates_forever,
                            ready,
                        })
                        .collect()
                },
            )
        }

        proptest! {
            /// One step is safe: a pod is evicted only from a node that is already marked not
            /// ready, silent past the grace period and gone for the whole eviction timeout, and
            /// never when it is terminating or tolerates the taint forever; a pod is marked not
            /// ready only if it is, on a marked silent node, and not also evicted; a node is never
            /// marked and cleared at once, and cleared only while it reports; a requeue is
            /// always in the future.
            #[test]
            fn evictions_wait_for_the_timeout_and_spare_what_must_stay(
                node in node(),
                pods in pods(),
                now in 0i64..2000,
                grace in 1i64..100,
                timeout in 1i64..600,
            ) {
                let decision = decide_node(&node, &pods, now, grace, timeout);
                let silent_since = node.lease_renewed.unwrap_or(node.ready_changed);
                let evicted: Vec<&str> = decision.actions.iter().filter_map(|a| match a {
                    NodeAction::Evict { name, .. } => Some(name.as_str()),
                    _ => None,
                }).collect();
                if !evicted.is_empty() {
                    prop_assert!(!node.ready);
                    prop_assert!(now - silent_since > grace);
                    prop_assert!(now - node.ready_changed >= timeout);
                }
                for name in &evicted {
                    let pod = pods.iter().find(|p| p.name == *name).expect("evicts its own pods");
                    prop_assert!(!pod.terminating && !pod.tolerates_forever);
                }
                for action in &decision.actions {
                    if let NodeAction::MarkPodNotReady { name, .. } = action {
                        let pod = pods.iter().find(|p| p.name == *name).expect("marks its own pods");
                        prop_assert!(pod.ready && !pod.terminating);
                        prop_assert!(!node.ready && node.tainted && now - silent_since > grace);
                        prop_assert!(!evicted.contains(&name.as_str()), "evicted or marked, not both");
                    }
                }
                let marks = decision.actions.contains(&NodeAction::MarkUnreachable);
                let clears = decision.actions.contains(&NodeAction::ClearUnreachable);
                prop_assert!(!(marks && clears));
                if clears {
                    prop_assert!(node.tainted && now - silent_since <= grace);
                }
                if let Some(after) = decision.requeue_after {
                    prop_assert!(after >= 1);
                }
            }
        }
    }
}
