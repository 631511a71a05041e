//! The garbage collector: deletes objects whose owners are all gone, and what a deleted
//! Namespace held, deciding with [`shipshape_reconciler::gc::garbage`].

use shipshape_api::pointer::At;
use std::collections::{BTreeSet, HashMap, HashSet};

use serde_json::{Value, json};
use shipshape_api::Kind;
use shipshape_reconciler::gc::{Collectable, Garbage, garbage};

use super::text;
use crate::Write;
use crate::controller::{Controller, Dirty, Reconciled, because};
use crate::gitsync::MANAGED_BY_LABEL;
use crate::store::{AuditEntry, Batch, EventType, Precondition, WatchEvent, parse_storage_key};

struct Cached {
    uid: String,
    collectable: Collectable,
    /// A pod on a node stops gracefully rather than vanishing.
    bound_pod: bool,
}

/// The garbage collector's cache: every object's uid and owners.
#[derive(Default)]
pub struct GarbageCollector {
    objects: HashMap<String, Cached>,
    live_uids: HashSet<String>,
    owned_by: HashMap<String, BTreeSet<String>>,
    namespaces: HashSet<String>,
    in_namespace: HashMap<String, BTreeSet<String>>,
}

impl GarbageCollector {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    fn forget(&mut self, key: &str) {
        let Some(old) = self.objects.remove(key) else {
            return;
        };
        self.live_uids.remove(&old.uid);
        for owner in &old.collectable.owners {
            if let Some(keys) = self.owned_by.get_mut(owner) {
                keys.remove(key);
                if keys.is_empty() {
                    self.owned_by.remove(owner);
                }
            }
        }
        if let Some(keys) = self.in_namespace.get_mut(&old.collectable.namespace) {
            keys.remove(key);
        }
    }
}

impl Controller for GarbageCollector {
    fn name(&self) -> &'static str {
        "garbage-collector"
    }

    fn kinds(&self) -> Vec<Kind> {
        Kind::ALL.to_vec()
    }

    fn reset(&mut self) {
        *self = Self::default();
    }

    fn observe(&mut self, event: &WatchEvent, dirty: &mut Dirty) {
        let Some(key) = parse_storage_key(&event.key) else {
            return;
        };
        let uid = text(&event.object, "/metadata/uid")
            .unwrap_or_default()
            .to_string();
        self.forget(&event.key);
        if key.kind == Kind::Namespace {
            if event.kind == EventType::Deleted {
                self.namespaces.remove(&key.name);
                for owned in self.in_namespace.get(&key.name).into_iter().flatten() {
                    dirty.mark(owned.clone(), || because(event));
                }
            } else {
                self.namespaces.insert(key.name.clone());
            }
        }
        if event.kind == EventType::Deleted {
            for owned in self.owned_by.get(&uid).into_iter().flatten() {
                dirty.mark(owned.clone(), || because(event));
            }
            return;
        }
        let owners: Vec<String> = event
            .object
            .at("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|o| o.get("uid").and_then(Value::as_str).map(str::to_string))
            .collect();
        let from_git = text(
            &event.object,
            &format!("/metadata/labels/{}", MANAGED_BY_LABEL.replace('/', "~1")),
        ) == Some("shipshape");
        for owner in &owners {
            self.owned_by
                .entry(owner.clone())
                .or_default()
                .insert(event.key.clone());
        }
        self.in_namespace
            .entry(key.namespace.clone())
            .or_default()
            .insert(event.key.clone());
        self.live_uids.insert(uid.clone());
        let cached = Cached {
            uid,
            collectable: Collectable {
                namespace: key.namespace.clone(),
                owners,
                from_git,
            },
            bound_pod: key.kind == Kind::Pod
                && text(&event.object, "/spec/nodeName").is_some_and(|n| !n.is_empty()),
        };
        let terminating = event.object.at("/metadata/deletionTimestamp").is_some();
        if !terminating && garbage(&cached.collectable, &self.live_uids, &self.namespaces).is_some()
        {
            dirty.mark(event.key.clone(), || because(event));
        }
        self.objects.insert(event.key.clone(), cached);
    }

    fn listed(&mut self, dirty: &mut Dirty) {
        // Orphans left by a stop between an owner's deletion and its dependents'.
        for (key, cached) in &self.objects {
            if garbage(&cached.collectable, &self.live_uids, &self.namespaces).is_some() {
                dirty.mark(key.clone(), || "orphaned".into());
            }
        }
    }

    fn reconcile(&mut self, key: &str, _now: jiff::Timestamp) -> Reconciled {
        let (Some(cached), Some(object_key)) = (self.objects.get(key), parse_storage_key(key))
        else {
            return Reconciled::default();
        };
        let Some(reason) = garbage(&cached.collectable, &self.live_uids, &self.namespaces) else {
            return Reconciled::default();
        };
        let write = Write::delete(
            object_key,
            Precondition::Uid(cached.uid.clone()),
            cached.bound_pod,
            30,
        );
        let why = match reason {
            Garbage::OwnersGone => "its owners are gone",
            Garbage::NamespaceGone => "its namespace is gone",
        };
        Reconciled {
            batches: vec![Batch {
                writes: vec![write],
                audit: Some(AuditEntry {
                    actor: "controller/garbage-collector".into(),
                    action: "delete".into(),
                    subject: key.to_string(),
                    details: json!({ "reason": why }),
                }),
            }],
            requeue_after: None,
        }
    }
}
