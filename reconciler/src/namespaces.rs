//! Namespaces must exist before anything is put in them, as Kubernetes' NamespaceLifecycle
//! admission insists (`namespaces "x" not found`).
//!
//! Without this rule a workload committed into a namespace nothing declares churned forever:
//! its controller made pods, the garbage collector deleted them for their missing namespace,
//! and so on, an audit record each time. The store refuses such creates at the last moment;
//! these checks refuse the commit up front, naming the file, for `shipshape validate` and the
//! sync alike.

use std::collections::{BTreeMap, BTreeSet};

use shipshape_api::Kind;
use shipshape_api::load::{Manifest, ObjectRef, Problem};

use crate::gc::needs_namespace_object;

/// One problem for every object whose namespace is neither built in, nor in `existing`, nor
/// declared by an application that is not in `failed`. An application that fails for this
/// takes the Namespaces it declares with it (they will not be created), so the check repeats
/// until no further application fails. `validate` passes no failed applications: offline, a
/// declaration counts even in a file with other problems.
pub fn missing_namespaces<'a>(
    manifests: impl IntoIterator<Item = &'a Manifest>,
    existing: &BTreeSet<String>,
    failed: &BTreeSet<String>,
) -> Vec<Problem> {
    let manifests: Vec<&Manifest> = manifests.into_iter().collect();
    let mut failed = failed.clone();
    let mut problems = Vec::new();
    loop {
        let applied = || {
            manifests
                .iter()
                .copied()
                .filter(|m| !failed.contains(&m.application))
        };
        let declared: BTreeSet<String> = applied()
            .filter(|m| m.object.kind() == Kind::Namespace)
            .map(|m| m.object.key().name)
            .collect();
        let round: Vec<Problem> = applied()
            .filter_map(|m| {
                let key = m.object.key();
                let namespace = key.namespace.as_str();
                let exists = !needs_namespace_object(namespace)
                    || existing.contains(namespace)
                    || declared.contains(namespace);
                (!exists).then(|| Problem {
                    file: m.file.clone(),
                    line: m.line,
                    application: m.application.clone(),
                    object: Some(ObjectRef {
                        kind: key.kind.to_string(),
                        namespace: Some(key.namespace.clone()),
                        name: Some(key.name.clone()),
                    }),
                    field: Some("metadata.namespace".into()),
                    message: format!(
                        "namespaces \"{namespace}\" not found: declare the Namespace in Git (a Namespace object in this repository)"
                    ),
                })
            })
            .collect();
        if round.is_empty() {
            return problems;
        }
        failed.extend(round.iter().map(|p| p.application.clone()));
        problems.extend(round);
    }
}

/// Why pruning Namespace `namespace` from `application` must wait: another application still
/// has objects in it that this sync will not remove. `users` maps each other application with
/// live objects in the namespace to whether it stays there (it still declares objects in the
/// namespace, or it is failed or suspended and so keeps what it has). Deleting the Namespace
/// would strand those objects: Kubernetes would delete them with it, behind their
/// application's back.
pub fn prune_blocked_by(application: &str, users: &BTreeMap<String, bool>) -> Option<Vec<String>> {
    let staying: Vec<String> = users
        .iter()
        .filter(|(app, stays)| app.as_str() != application && **stays)
        .map(|(app, _)| app.clone())
        .collect();
    (!staying.is_empty()).then_some(staying)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shipshape_api::load::{SourceFile, load};

    fn files(entries: &[(&str, &str)]) -> Vec<Manifest> {
        let files: Vec<SourceFile> = entries
            .iter()
            .map(|(path, text)| SourceFile {
                relative: path.to_string(),
                display: path.to_string(),
                bytes: text.as_bytes().to_vec(),
            })
            .collect();
        let loaded = load(&files);
        assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
        loaded.manifests
    }

    const NAMESPACE: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n";
    const IN_SHOP: &str =
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: shop\n";
    const IN_DEFAULT: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n";

    #[test]
    fn an_object_in_a_namespace_nothing_declares_is_refused() {
        let manifests = files(&[
            ("web/config.yaml", IN_SHOP),
            ("api/config.yaml", IN_DEFAULT),
        ]);
        let problems = missing_namespaces(&manifests, &BTreeSet::new(), &BTreeSet::new());
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "web/config.yaml:1: ConfigMap shop/settings: metadata.namespace: namespaces \"shop\" not found: declare the Namespace in Git (a Namespace object in this repository)"
            ]
        );
    }

    #[test]
    fn a_namespace_declared_in_the_commit_or_already_there_is_enough() {
        let manifests = files(&[("namespaces.yaml", NAMESPACE), ("web/config.yaml", IN_SHOP)]);
        assert!(missing_namespaces(&manifests, &BTreeSet::new(), &BTreeSet::new()).is_empty());
        let alone = files(&[("web/config.yaml", IN_SHOP)]);
        let existing = BTreeSet::from(["shop".to_string()]);
        assert!(missing_namespaces(&alone, &existing, &BTreeSet::new()).is_empty());
    }

    #[test]
    fn a_failed_application_takes_its_namespaces_with_it() {
        // root declares shop but fails elsewhere; web's objects in shop cannot be placed, and
        // web in turn does not declare anything that others could use.
        let manifests = files(&[("namespaces.yaml", NAMESPACE), ("web/config.yaml", IN_SHOP)]);
        let failed = BTreeSet::from(["root".to_string()]);
        let problems = missing_namespaces(&manifests, &BTreeSet::new(), &failed);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].application, "web");
    }

    #[test]
    fn failures_cascade_through_declared_namespaces() {
        // team declares Namespace shop but puts its own ConfigMap in the undeclared "bar";
        // web relies on shop, which team will now not create.
        let team = format!(
            "{NAMESPACE}---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  namespace: bar\n"
        );
        let manifests = files(&[("team/all.yaml", &team), ("web/config.yaml", IN_SHOP)]);
        let problems = missing_namespaces(&manifests, &BTreeSet::new(), &BTreeSet::new());
        let apps: Vec<&str> = problems.iter().map(|p| p.application.as_str()).collect();
        assert_eq!(apps, ["team", "web"]);
    }

    #[test]
    fn a_namespace_is_pruned_only_when_nobody_stays_in_it() {
        let users = BTreeMap::from([("web".to_string(), false), ("root".to_string(), true)]);
        assert_eq!(prune_blocked_by("root", &users), None);
        let users = BTreeMap::from([("web".to_string(), true), ("api".to_string(), false)]);
        assert_eq!(
            prune_blocked_by("root", &users),
            Some(vec!["web".to_string()])
        );
    }
}
