//! Garbage collection: what must go because what it belonged to is gone.
//!
//! Two rules, as Kubernetes applies them: an object whose owner references all point at
//! objects that no longer exist is deleted (deleting a Deployment removes its ReplicaSets, and
//! through them their pods); and an object in a Namespace that was deleted is deleted with it.
//! Objects Git declares are exempt from the namespace rule: their application prunes them, and
//! deleting them here would fight the next sync.

use std::collections::HashSet;

/// An object as the garbage collector sees it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Collectable {
    /// Its namespace (empty for cluster-scoped objects).
    pub namespace: String,
    /// The uids of its owners.
    pub owners: Vec<String>,
    /// Whether Git manages it.
    pub from_git: bool,
}

/// Why an object is garbage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Garbage {
    /// Every owner is gone.
    OwnersGone,
    /// Its Namespace is gone.
    NamespaceGone,
}

/// Namespaces that exist without a Namespace object (Kubernetes creates them itself).
pub const BUILT_IN_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Whether an object in `namespace` needs a Namespace object to exist: not when it is
/// cluster-scoped (no namespace) or in a namespace Kubernetes makes itself. The collector, the
/// store's refusal and the sync's check all ask this one question.
pub fn needs_namespace_object(namespace: &str) -> bool {
    !namespace.is_empty() && !BUILT_IN_NAMESPACES.contains(&namespace)
}

/// Whether `object` is garbage, given the uids of every live object and the live namespaces.
pub fn garbage(
    object: &Collectable,
    live_uids: &HashSet<String>,
    live_namespaces: &HashSet<String>,
) -> Option<Garbage> {
    if !object.owners.is_empty() && object.owners.iter().all(|uid| !live_uids.contains(uid)) {
        return Some(Garbage::OwnersGone);
    }
    let namespace_gone =
        needs_namespace_object(&object.namespace) && !live_namespaces.contains(&object.namespace);
    (namespace_gone && !object.from_git).then_some(Garbage::NamespaceGone)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> HashSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn collects_orphans_and_the_contents_of_deleted_namespaces() {
        let pod = Collectable {
            namespace: "demo".into(),
            owners: vec!["rs-1".into()],
            from_git: false,
        };
        let live = set(&["rs-1"]);
        let namespaces = set(&["demo"]);
        assert_eq!(garbage(&pod, &live, &namespaces), None);
        assert_eq!(
            garbage(&pod, &set(&[]), &namespaces),
            Some(Garbage::OwnersGone)
        );
        let two_owners = Collectable {
            owners: vec!["rs-1".into(), "other".into()],
            ..pod.clone()
        };
        assert_eq!(
            garbage(&two_owners, &set(&["other"]), &namespaces),
            None,
            "one owner left keeps it"
        );
        assert_eq!(
            garbage(&pod, &live, &set(&[])),
            Some(Garbage::NamespaceGone)
        );
        let declared = Collectable {
            owners: Vec::new(),
            from_git: true,
            ..pod.clone()
        };
        assert_eq!(
            garbage(&declared, &live, &set(&[])),
            None,
            "Git prunes its own"
        );
        let in_default = Collectable {
            namespace: "default".into(),
            owners: Vec::new(),
            from_git: false,
        };
        assert_eq!(garbage(&in_default, &live, &set(&[])), None);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// One step never collects what still belongs somewhere: an object with a live
            /// owner, or one in a live (or built-in) namespace whose owners are live or absent,
            /// is never garbage; Git's objects are never taken for their namespace.
            #[test]
            fn only_what_lost_its_owners_or_namespace_is_collected(
                owners in proptest::collection::vec("[a-d]", 0..3),
                live in proptest::collection::hash_set("[a-d]", 0..4),
                namespace in prop_oneof![Just(String::new()), Just("default".to_string()), "[x-z]"],
                namespaces in proptest::collection::hash_set("[x-z]", 0..3),
                from_git in any::<bool>(),
            ) {
                let object = Collectable { namespace: namespace.clone(), owners: owners.clone(), from_git };
                let verdict = garbage(&object, &live, &namespaces);
                let some_owner_lives = owners.iter().any(|o| live.contains(o));
                let namespace_lives = namespace.is_empty()
                    || BUILT_IN_NAMESPACES.contains(&namespace.as_str())
                    || namespaces.contains(&namespace);
                match verdict {
                    Some(Garbage::OwnersGone) => prop_assert!(!owners.is_empty() && !some_owner_lives),
                    Some(Garbage::NamespaceGone) => prop_assert!(!namespace_lives && !from_git && (owners.is_empty() || some_owner_lives)),
                    None => prop_assert!((owners.is_empty() || some_owner_lives) && (namespace_lives || from_git)),
                }
            }
        }
    }
}
