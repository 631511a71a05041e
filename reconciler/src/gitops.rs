//! The GitOps planner: what syncing one application to a commit must do.
//!
//! Input: the objects Git declares for the application (already validated) and the live objects
//! the application manages. Output: a [`Plan`] of creates, updates and prunes in a safe order
//! (Namespaces and configuration before the workloads that need them; prunes in reverse), each
//! update and prune carrying the resourceVersion it was decided on; or a hold when the plan would
//! empty an application that had objects, which only an explicit `--allow-empty` lets through.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;
use shipshape_api::{Kind, ObjectKey};

use crate::immutable::{Forbidden, forbidden_update};

/// Annotation that protects a live object from pruning.
pub const PRUNE_ANNOTATION: &str = "shipshape.dev/prune";

/// An object as Git declares it.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    /// Its identity.
    pub key: ObjectKey,
    /// The manifest as Git has it (validated, namespace defaulted, not yet stamped).
    pub manifest: Value,
    /// The file that declares it, relative to the repository.
    pub source: String,
}

/// A live object that the application manages, as the planner needs to see it.
#[derive(Clone, Debug, PartialEq)]
pub struct Managed {
    /// Its identity.
    pub key: ObjectKey,
    /// The resourceVersion the plan is decided on.
    pub resource_version: u64,
    /// The manifest that was last applied from Git.
    pub applied: Value,
}

/// An object that exists but belongs to something else: another application, or nobody (made
/// by a controller or an API client).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Foreign {
    /// Its identity.
    pub key: ObjectKey,
    /// The application that manages it, if any.
    pub application: Option<String>,
}

/// One field a change touches, for the audit history.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FieldChange {
    /// The field, as a JSON pointer (`/spec/replicas`).
    pub path: String,
    /// Its value before (absent when added).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    /// Its value after (absent when removed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
}

/// One step of a plan.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Create an object Git declares and the cluster lacks.
    Create {
        /// What to create.
        desired: Desired,
    },
    /// Replace an object whose declaration changed.
    Update {
        /// The new declaration.
        desired: Desired,
        /// The resourceVersion this was decided on.
        resource_version: u64,
        /// What changed, field by field.
        changes: Vec<FieldChange>,
    },
    /// Delete an object Git no longer declares.
    Prune {
        /// What to delete.
        key: ObjectKey,
        /// The resourceVersion this was decided on.
        resource_version: u64,
    },
}

impl Action {
    /// The object the action is about.
    pub fn key(&self) -> &ObjectKey {
        match self {
            Action::Create { desired } | Action::Update { desired, .. } => &desired.key,
            Action::Prune { key, .. } => key,
        }
    }
}

/// Why a plan was not allowed to proceed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The commit declares no objects for an application that has some: deleting everything
    /// needs `shipshape sync --allow-empty`.
    WouldEmpty {
        /// How many objects would be pruned.
        objects: usize,
    },
    /// Git declares an object that already exists and is not this application's.
    Conflict {
        /// The object.
        key: ObjectKey,
        /// Who owns it (`None`: not managed by any application).
        owner: Option<String>,
        /// The file declaring it.
        source: String,
    },
    /// The commit changes fields the API server keeps once an object exists (every such
    /// object, each with its first such field).
    Immutable(Vec<ImmutableChange>),
}

/// One object whose update the API server would refuse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImmutableChange {
    /// The object.
    pub key: ObjectKey,
    /// The file declaring it.
    pub source: String,
    /// The field and why.
    pub forbidden: Forbidden,
}

/// What syncing an application must do.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// The actions, in the order to apply them.
    pub actions: Vec<Action>,
    /// Objects Git no longer declares that are kept because they are annotated
    /// `shipshape.dev/prune: disabled`.
    pub kept: Vec<ObjectKey>,
    /// Objects unchanged.
    pub unchanged: usize,
}

/// Plans syncing one application: `desired` from Git against `managed` from the cluster.
/// `foreign` lists existing objects not managed by this application that Git might collide with.
pub fn plan_application(
    desired: &[Desired],
    managed: &[Managed],
    foreign: &[Foreign],
    allow_empty: bool,
) -> Result<Plan, Refusal> {
    let foreign: BTreeMap<&ObjectKey, &Foreign> = foreign.iter().map(|f| (&f.key, f)).collect();
    let live: BTreeMap<&ObjectKey, &Managed> = managed.iter().map(|m| (&m.key, m)).collect();
    let wanted: BTreeSet<&ObjectKey> = desired.iter().map(|d| &d.key).collect();

    if desired.is_empty() && !managed.is_empty() && !allow_empty {
        return Err(Refusal::WouldEmpty {
            objects: managed.len(),
        });
    }

    let mut plan = Plan::default();
    let mut applies = Vec::new();
    let mut immutable = Vec::new();
    for want in desired {
        if let Some(other) = foreign.get(&want.key) {
            return Err(Refusal::Conflict {
                key: want.key.clone(),
                owner: other.application.clone(),
                source: want.source.clone(),
            });
        }
        match live.get(&want.key) {
            None => applies.push(Action::Create {
                desired: want.clone(),
            }),
            Some(current) if current.applied == want.manifest => plan.unchanged += 1,
            Some(current) => {
                if let Some(forbidden) =
                    forbidden_update(want.key.kind, &current.applied, &want.manifest)
                {
                    immutable.push(ImmutableChange {
                        key: want.key.clone(),
                        source: want.source.clone(),
                        forbidden,
                    });
                    continue;
                }
                let mut changes = field_changes(&current.applied, &want.manifest);
                if want.key.kind == Kind::Secret {
                    redact_secret_values(&mut changes);
                }
                applies.push(Action::Update {
                    desired: want.clone(),
                    resource_version: current.resource_version,
                    changes,
                });
            }
        }
    }
    if !immutable.is_empty() {
        return Err(Refusal::Immutable(immutable));
    }
    let mut prunes = Vec::new();
    for current in managed.iter().filter(|m| !wanted.contains(&m.key)) {
        if prune_disabled(&current.applied) {
            plan.kept.push(current.key.clone());
        } else {
            prunes.push(Action::Prune {
                key: current.key.clone(),
                resource_version: current.resource_version,
            });
        }
    }
    // Namespaces and configuration first, workloads last; prunes the other way round, so that
    // nothing is ever left referring to what was removed before it.
    applies.sort_by(|a, b| rank_order(a).cmp(&rank_order(b)));
    prunes.sort_by(|a, b| rank_order(b).cmp(&rank_order(a)));
    plan.actions = applies;
    plan.actions.extend(prunes);
    Ok(plan)
}

fn rank_order(action: &Action) -> (u8, &ObjectKey) {
    let key = action.key();
    (key.kind.info().apply_rank, key)
}

fn prune_disabled(manifest: &Value) -> bool {
    manifest
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(PRUNE_ANNOTATION))
        .and_then(Value::as_str)
        == Some("disabled")
}

/// A Secret's values never reach the audit history: which keys changed is recorded, what they
/// hold is not (Kubernetes' audit guidance logs Secrets at metadata level for the same reason).
fn redact_secret_values(changes: &mut [FieldChange]) {
    for change in changes {
        if change.path.starts_with("/data") || change.path.starts_with("/stringData") {
            let hidden = || Value::String("(redacted)".into());
            change.before = change.before.as_ref().map(|_| hidden());
            change.after = change.after.as_ref().map(|_| hidden());
        }
    }
}

/// The fields that differ between two manifests, with their values before and after.
pub fn field_changes(before: &Value, after: &Value) -> Vec<FieldChange> {
    json_patch::diff(before, after)
        .0
        .into_iter()
        .filter_map(|operation| {
            use json_patch::PatchOperation as Op;
            let path = match &operation {
                Op::Add(op) => op.path.to_string(),
                Op::Remove(op) => op.path.to_string(),
                Op::Replace(op) => op.path.to_string(),
                Op::Move(op) => op.path.to_string(),
                Op::Copy(op) => op.path.to_string(),
                Op::Test(_) => return None,
            };
            Some(FieldChange {
                before: before.pointer(&path).cloned(),
                after: after.pointer(&path).cloned(),
                path,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(kind: Kind, name: &str) -> ObjectKey {
        ObjectKey {
            kind,
            namespace: if kind.info().namespaced {
                "demo".into()
            } else {
                String::new()
            },
            name: name.into(),
        }
    }

    fn desired(kind: Kind, name: &str, manifest: Value) -> Desired {
        Desired {
            key: key(kind, name),
            manifest,
            source: format!("web/{name}.yaml"),
        }
    }

    fn managed(kind: Kind, name: &str, rv: u64, applied: Value) -> Managed {
        Managed {
            key: key(kind, name),
            resource_version: rv,
            applied,
        }
    }

    fn summary(plan: &Plan) -> Vec<String> {
        plan.actions
            .iter()
            .map(|a| match a {
                Action::Create { desired } => format!("create {}", desired.key),
                Action::Update {
                    desired,
                    resource_version,
                    ..
                } => {
                    format!("update {} at {resource_version}", desired.key)
                }
                Action::Prune {
                    key,
                    resource_version,
                } => format!("prune {key} at {resource_version}"),
            })
            .collect()
    }

    #[test]
    fn creates_updates_and_prunes_in_dependency_order() {
        let plan = plan_application(
            &[
                desired(Kind::Deployment, "web", json!({"spec": {"replicas": 3}})),
                desired(Kind::ConfigMap, "page", json!({"data": {"a": "1"}})),
                desired(Kind::Namespace, "demo", json!({})),
                desired(Kind::Service, "web", json!({"spec": {"ports": [80]}})),
            ],
            &[
                managed(Kind::Deployment, "web", 7, json!({"spec": {"replicas": 2}})),
                managed(Kind::Service, "web", 5, json!({"spec": {"ports": [80]}})),
                managed(Kind::ConfigMap, "old", 3, json!({})),
                managed(Kind::Deployment, "old", 4, json!({})),
            ],
            &[],
            false,
        )
        .expect("plans");
        assert_eq!(
            summary(&plan),
            vec![
                "create Namespace demo",
                "create ConfigMap demo/page",
                "update Deployment demo/web at 7",
                "prune Deployment demo/old at 4",
                "prune ConfigMap demo/old at 3",
            ]
        );
        assert_eq!(plan.unchanged, 1);
        let Action::Update { changes, .. } = &plan.actions[2] else {
            panic!("an update");
        };
        assert_eq!(
            changes,
            &vec![FieldChange {
                path: "/spec/replicas".into(),
                before: Some(json!(2)),
                after: Some(json!(3)),
            }]
        );
    }

    #[test]
    fn never_records_a_secrets_values() {
        let plan = plan_application(
            &[desired(
                Kind::Secret,
                "db",
                json!({"data": {"password": "bmV3"}, "metadata": {"labels": {"a": "2"}}}),
            )],
            &[managed(
                Kind::Secret,
                "db",
                4,
                json!({"data": {"password": "b2xk"}, "metadata": {"labels": {"a": "1"}}}),
            )],
            &[],
            false,
        )
        .expect("plans");
        let Action::Update { changes, .. } = &plan.actions[0] else {
            panic!("an update");
        };
        let text = serde_json::to_string(changes).expect("serialises");
        assert!(!text.contains("bmV3") && !text.contains("b2xk"), "{text}");
        assert!(
            text.contains("/data/password") && text.contains("(redacted)"),
            "{text}"
        );
        assert!(
            text.contains("\"after\":\"2\""),
            "labels are not secret: {text}"
        );
    }

    #[test]
    fn refuses_a_commit_that_changes_what_kubernetes_keeps() {
        let deployment = |app: &str, replicas: u32| json!({"spec": {"replicas": replicas, "selector": {"matchLabels": {"app": app}}}});
        let live = [
            managed(Kind::Deployment, "web", 3, deployment("web", 1)),
            managed(Kind::ConfigMap, "page", 4, json!({"data": {"a": "1"}})),
        ];
        let refusal = plan_application(
            &[
                desired(Kind::Deployment, "web", deployment("shop", 2)),
                desired(Kind::ConfigMap, "page", json!({"data": {"a": "2"}})),
            ],
            &live,
            &[],
            false,
        );
        let Err(Refusal::Immutable(changes)) = refusal else {
            panic!("refused: {refusal:?}");
        };
        let fields: Vec<String> = changes
            .iter()
            .map(|c| format!("{} {}", c.key, c.forbidden.field))
            .collect();
        assert_eq!(fields, ["Deployment demo/web spec.selector"]);
        // The same objects with only mutable fields changed plan as updates.
        let plan = plan_application(
            &[desired(Kind::Deployment, "web", deployment("web", 2))],
            &live[..1],
            &[],
            false,
        )
        .expect("plans");
        assert_eq!(summary(&plan), vec!["update Deployment demo/web at 3"]);
    }

    #[test]
    fn holds_an_application_that_would_be_emptied() {
        let live = [managed(Kind::ConfigMap, "page", 3, json!({}))];
        assert_eq!(
            plan_application(&[], &live, &[], false),
            Err(Refusal::WouldEmpty { objects: 1 })
        );
        let plan = plan_application(&[], &live, &[], true).expect("allowed");
        assert_eq!(summary(&plan), vec!["prune ConfigMap demo/page at 3"]);
    }

    #[test]
    fn never_prunes_a_protected_object() {
        let protected = json!({"metadata": {"annotations": {"shipshape.dev/prune": "disabled"}}});
        let plan = plan_application(
            &[desired(Kind::ConfigMap, "other", json!({}))],
            &[managed(Kind::ConfigMap, "keep", 3, protected)],
            &[],
            false,
        )
        .expect("plans");
        assert_eq!(summary(&plan), vec!["create ConfigMap demo/other"]);
        assert_eq!(plan.kept, vec![key(Kind::ConfigMap, "keep")]);
    }

    #[test]
    fn refuses_to_take_over_another_applications_object() {
        let refusal = plan_application(
            &[desired(Kind::ConfigMap, "page", json!({}))],
            &[],
            &[Foreign {
                key: key(Kind::ConfigMap, "page"),
                application: Some("shop".into()),
            }],
            false,
        );
        assert_eq!(
            refusal,
            Err(Refusal::Conflict {
                key: key(Kind::ConfigMap, "page"),
                owner: Some("shop".into()),
                source: "web/page.yaml".into(),
            })
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn objects() -> impl Strategy<Value = BTreeMap<String, u8>> {
            proptest::collection::btree_map("[a-e]", 0u8..3, 0..6)
        }

        proptest! {
            /// Applying a plan to the live state yields exactly the desired state, whatever
            /// the starting point (when emptying is allowed).
            #[test]
            fn a_plan_converges_live_to_desired(want in objects(), have in objects()) {
                let desired: Vec<Desired> = want
                    .iter()
                    .map(|(name, v)| desired(Kind::ConfigMap, name, json!({"v": v})))
                    .collect();
                let live: Vec<Managed> = have
                    .iter()
                    .enumerate()
                    .map(|(i, (name, v))| managed(Kind::ConfigMap, name, i as u64 + 1, json!({"v": v})))
                    .collect();
                let plan = plan_application(&desired, &live, &[], true).expect("no refusal");
                let mut state: BTreeMap<ObjectKey, Value> =
                    live.iter().map(|m| (m.key.clone(), m.applied.clone())).collect();
                let mut touched = BTreeSet::new();
                for action in &plan.actions {
                    prop_assert!(touched.insert(action.key().clone()), "one action per object");
                    match action {
                        Action::Create { desired } => {
                            prop_assert!(state.insert(desired.key.clone(), desired.manifest.clone()).is_none());
                        }
                        Action::Update { desired, .. } => {
                            prop_assert!(state.insert(desired.key.clone(), desired.manifest.clone()).is_some());
                        }
                        Action::Prune { key, .. } => {
                            prop_assert!(state.remove(key).is_some());
                        }
                    }
                }
                let expected: BTreeMap<ObjectKey, Value> =
                    desired.iter().map(|d| (d.key.clone(), d.manifest.clone())).collect();
                prop_assert_eq!(state, expected);
                prop_assert_eq!(plan.unchanged + plan.actions.len() - plan.actions.iter().filter(|a| matches!(a, Action::Prune { .. })).count(), desired.len());
            }
        }
    }
}
