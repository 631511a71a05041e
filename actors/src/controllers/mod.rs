//! The controllers and the scheduler: each projects stored objects into the small views of
//! its decision in `shipshape_reconciler`, and turns the decided actions into store writes.
//! [`crate::controller::ControllerActor`] runs each of them.
//!
//! - [`replicaset`]: pods for each ReplicaSet.
//! - [`deployment`]: ReplicaSets for each Deployment; rollouts; status.
//! - [`scheduler`]: a node for each pod.
//! - [`endpoints`]: Endpoints and EndpointSlices for each Service.
//! - [`services`]: ClusterIPs and NodePorts for each Service.
//! - [`cronjob`]: Jobs for each CronJob when its schedule comes due.
//! - [`daemonset`]: a pod for each DaemonSet on every node that should run it.
//! - [`job`]: pods for each Job until enough succeed; exactly-once counting.
//! - [`statefulset`]: ordinal pods with stable names and their own claims.
//! - [`volumes`]: claims bound to volumes; local-path provisioning.
//! - [`gc`]: owner-reference and namespace cascades.
//! - [`nodes`]: node lifecycle: unreachable nodes marked, their pods evicted.

pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod endpoints;
pub mod gc;
pub mod job;
pub mod nodes;
pub mod replicaset;
pub mod scheduler;
pub mod services;
pub mod statefulset;
pub mod volumes;

use serde_json::Value;
use shipshape_api::pointer::At;

/// The status of container `name` in `pod` (regular or init), if the kubelet reported one.
pub fn container_status<'a>(pod: &'a Value, name: &str) -> Option<&'a Value> {
    ["containerStatuses", "initContainerStatuses"]
        .iter()
        .filter_map(|field| pod["status"][field].as_array())
        .flatten()
        .find(|s| s["name"] == name)
}

/// Whether container `name` in `pod` is running.
pub fn container_running(pod: &Value, name: &str) -> bool {
    container_status(pod, name).is_some_and(|s| s["state"]["running"].is_object())
}

/// The label a ReplicaSet and its pods carry with the pod-template hash (Kubernetes' name).
pub const TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

/// The annotation holding a ReplicaSet's revision (Kubernetes' name).
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";

/// The annotation tying an object to the commit that asked for it (copied from owner to owned).
pub use crate::gitsync::COMMIT_ANNOTATION;

/// The annotations an owned object inherits from its owner: the commit and the application
/// that asked for it, so `kubectl get pods -o wide` names both for a Deployment's pods.
pub fn provenance(owner: &Value) -> impl Iterator<Item = (&'static str, &Value)> {
    let annotations = owner.at("/metadata/annotations");
    [COMMIT_ANNOTATION, crate::gitsync::APPLICATION_ANNOTATION]
        .into_iter()
        .filter_map(move |key| Some((key, annotations?.get(key)?)))
}

/// Seconds since the epoch of an RFC 3339 time, as decisions take time.
pub fn seconds(time: Option<&Value>) -> Option<i64> {
    time.and_then(Value::as_str)
        .and_then(|text| text.parse::<jiff::Timestamp>().ok())
        .map(|t| t.as_second())
}

/// An RFC 3339 time from seconds, as objects carry it.
pub fn rfc3339(seconds: i64) -> String {
    jiff::Timestamp::from_second(seconds)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_string()
}

/// The text at a JSON pointer.
pub fn text<'a>(object: &'a Value, pointer: &str) -> Option<&'a str> {
    object.at(pointer).and_then(Value::as_str)
}

/// The number at a JSON pointer.
pub fn number(object: &Value, pointer: &str) -> Option<i64> {
    object.at(pointer).and_then(Value::as_i64)
}

/// The uid of an object's controlling owner of `kind` (the ownerReference with
/// `controller: true`).
pub fn controller_uid<'a>(object: &'a Value, kind: &str) -> Option<&'a str> {
    object
        .at("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|owner| {
            owner.get("controller").and_then(Value::as_bool) == Some(true)
                && owner.get("kind").and_then(Value::as_str) == Some(kind)
        })
        .and_then(|owner| owner.get("uid").and_then(Value::as_str))
}

/// The objects a controller reconciles (Deployments, ReplicaSets), by key and by uid: what it
/// owns names it by uid in an owner reference.
#[derive(Default)]
pub struct Owners {
    objects: std::collections::HashMap<String, Value>,
    by_uid: std::collections::HashMap<String, String>,
}

impl Owners {
    /// Takes in a change to one of them; marks it dirty unless it was deleted.
    pub fn observe(
        &mut self,
        event: &crate::store::WatchEvent,
        dirty: &mut crate::controller::Dirty,
    ) {
        let uid = text(&event.object, "/metadata/uid")
            .unwrap_or_default()
            .to_string();
        if event.kind == crate::store::EventType::Deleted {
            self.objects.remove(&event.key);
            self.by_uid.remove(&uid);
        } else {
            self.objects.insert(event.key.clone(), event.object.clone());
            self.by_uid.insert(uid, event.key.clone());
            dirty.mark(event.key.clone(), || crate::controller::because(event));
        }
    }

    /// One of them, by key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.objects.get(key)
    }

    /// Every key.
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.objects.keys()
    }

    /// The key of the one with this uid.
    pub fn key_of(&self, uid: &str) -> Option<&String> {
        self.by_uid.get(uid)
    }
}

/// The pod `owner`'s template describes, named `name`, owned by `owner` (and carrying the commit
/// that asked for it), with `labels` added to the template's.
pub fn pod_from_template(owner: &Value, name: &str, labels: &[(&str, &str)]) -> Value {
    PodTemplate::new(owner, labels).pod(name)
}

/// The pods one owner's template describes, built once: a controller creating many pods in
/// one reconcile then pays one copy per pod, not one template expansion.
pub struct PodTemplate(Value);

impl PodTemplate {
    /// `owner`'s template, owned by `owner`, carrying its commit and `labels`, in phase
    /// Pending with its QoS class (as the API server sets it on creation).
    pub fn new(owner: &Value, labels: &[(&str, &str)]) -> Self {
        use serde_json::Map;
        let template = &owner["spec"]["template"];
        let mut metadata = match template.get("metadata") {
            Some(Value::Object(map)) => map.clone(),
            _ => Map::new(),
        };
        metadata.insert("namespace".into(), owner["metadata"]["namespace"].clone());
        metadata.insert(
            "generateName".into(),
            format!(
                "{}-",
                owner["metadata"]["name"].as_str().unwrap_or_default()
            )
            .into(),
        );
        metadata.insert(
            "ownerReferences".into(),
            Value::Array(vec![owner_reference(owner)]),
        );
        let inherited: Vec<_> = provenance(owner).collect();
        if !inherited.is_empty()
            && let Some(annotations) = metadata
                .entry("annotations")
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
        {
            for (key, value) in inherited {
                annotations.insert(key.into(), value.clone());
            }
        }
        if !labels.is_empty()
            && let Some(map_labels) = metadata
                .entry("labels")
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
        {
            for (key, value) in labels {
                map_labels.insert((*key).into(), (*value).into());
            }
        }
        let spec = match template.get("spec") {
            Some(spec @ Value::Object(_)) => spec.clone(),
            _ => Value::Object(Map::new()),
        };
        let mut status = Map::new();
        status.insert("phase".into(), "Pending".into());
        status.insert(
            "qosClass".into(),
            shipshape_api::qos::qos_class(&spec).into(),
        );
        let mut pod = Map::new();
        pod.insert("apiVersion".into(), "v1".into());
        pod.insert("kind".into(), "Pod".into());
        pod.insert("metadata".into(), Value::Object(metadata));
        pod.insert("spec".into(), spec);
        pod.insert("status".into(), Value::Object(status));
        Self(Value::Object(pod))
    }

    /// One pod of the template, named `name`.
    pub fn pod(&self, name: &str) -> Value {
        let mut pod = self.0.clone();
        if let Some(metadata) = pod.get_mut("metadata").and_then(Value::as_object_mut) {
            metadata.insert("name".into(), name.into());
        }
        pod
    }
}

/// Objects (pods, ReplicaSets) cached by the uid of their controlling owner of one kind, as a
/// workload controller needs them: find an owner's objects, and know which owner a change
/// concerns. Objects without such an owner are not kept.
pub struct Owned<T> {
    owner_kind: &'static str,
    objects: foldhash::HashMap<String, (String, T)>,
    by_owner: foldhash::HashMap<String, std::collections::BTreeSet<String>>,
}

impl<T> Owned<T> {
    /// An empty cache of objects controlled by owners of `owner_kind` (`ReplicaSet`, `Job`).
    pub fn new(owner_kind: &'static str) -> Self {
        Self {
            owner_kind,
            objects: foldhash::HashMap::default(),
            by_owner: foldhash::HashMap::default(),
        }
    }

    fn forget(&mut self, key: &str) -> Option<String> {
        let (owner, _) = self.objects.remove(key)?;
        if let Some(keys) = self.by_owner.get_mut(&owner) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_owner.remove(&owner);
            }
        }
        Some(owner)
    }

    /// Takes in a change to an object (projected with `view`) and returns the uid of the owner
    /// it concerns: its owner now, or the one it had when it was deleted.
    pub fn observe(
        &mut self,
        event: &crate::store::WatchEvent,
        view: impl FnOnce(&Value) -> T,
    ) -> Option<String> {
        if event.kind == crate::store::EventType::Deleted {
            return self.forget(&event.key);
        }
        let owner = controller_uid(&event.object, self.owner_kind);
        // The common change (a pod bound, started, ready) keeps its owner: replace the view
        // in place rather than unfiling and refiling the key.
        if let (Some((kept, cached)), Some(owner)) = (self.objects.get_mut(&event.key), owner)
            && kept == owner
        {
            *cached = view(&event.object);
            return Some(owner.to_string());
        }
        self.forget(&event.key);
        let owner = owner?.to_string();
        self.by_owner
            .entry(owner.clone())
            .or_default()
            .insert(event.key.clone());
        self.objects
            .insert(event.key.clone(), (owner.clone(), view(&event.object)));
        Some(owner)
    }

    /// The objects owned by `uid`.
    pub fn of(&self, uid: &str) -> impl Iterator<Item = &T> {
        self.by_owner
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|key| self.objects.get(key).map(|(_, object)| object))
    }

    /// One object, by storage key.
    pub fn get(&self, key: &str) -> Option<&T> {
        self.objects.get(key).map(|(_, object)| object)
    }
}

/// A count in an object's status (`readyReplicas`), 0 when absent.
pub fn status_count(object: &Value, field: &str) -> u32 {
    number(object, &format!("/status/{field}"))
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0)
}

/// The revision of a workload's pod template (what its pods' `controller-revision-hash`
/// label carries).
pub fn template_revision(owner: &Value) -> String {
    let template = serde_json::to_string(&owner["spec"]["template"]).unwrap_or_default();
    format!("{:010x}", seed(&[&template]) & 0xff_ffff_ffff)
}

/// An ownerReference to `owner`, marking it as the controller.
pub fn owner_reference(owner: &Value) -> Value {
    serde_json::json!({
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// An object's status condition of this type (`Ready`, `Progressing`, `PodScheduled`).
pub fn condition<'a>(object: &'a Value, kind: &str) -> Option<&'a Value> {
    object
        .at("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
}

/// Whether an object's condition of this type is `True`.
pub fn condition_is_true(object: &Value, kind: &str) -> bool {
    condition(object, kind)
        .and_then(|c| c.get("status"))
        .and_then(Value::as_str)
        == Some("True")
}

/// A `{string: string}` map (labels, a selector), empty if absent.
pub fn string_map(value: Option<&Value>) -> std::collections::BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .map(|map| {
            map.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// The `ports` entries of a pod's containers and sidecars (init containers with
/// `restartPolicy: Always`, which run as long as the pod), sidecars first: the ports a pod
/// keeps open, as Kubernetes reads them for host ports (`GetHostPorts`).
pub fn long_running_ports(pod: &Value) -> Vec<&Value> {
    let list = |path: &str| {
        pod.at(path)
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
    };
    let sidecars = list("/spec/initContainers")
        .iter()
        .filter(|c| c.get("restartPolicy").and_then(Value::as_str) == Some("Always"));
    sidecars
        .chain(list("/spec/containers"))
        .filter_map(|c| c.get("ports").and_then(Value::as_array))
        .flatten()
        .collect()
}

/// A port number field (`hostPort`, `containerPort`) of one `ports` entry; 0, absent or out of
/// range reads as unset.
pub fn port_number(port: &Value, field: &str) -> Option<u16> {
    port.get(field)
        .and_then(Value::as_u64)
        .and_then(|n| u16::try_from(n).ok())
        .filter(|n| *n != 0)
}

/// A list of strings (values, namespaces), empty if absent; non-strings are skipped.
pub fn string_list<C: FromIterator<String>>(value: Option<&Value>) -> C {
    value
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

/// Enough of a pod to write an Event about it (what `kubectl describe pod` matches on).
pub fn pod_reference(namespace: &str, name: &str, uid: &str) -> Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": uid},
    })
}

/// A pod as the workload decisions see it: the projection the models use too.
pub use shipshape_reconciler::projection::pod_view;

/// A seed for a decision's names from what the decision is about: the same state gives the
/// same names (so a replayed decision is the same decision), a new state new ones.
pub fn seed(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.bytes().chain(std::iter::once(0)) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use shipshape_reconciler::replicaset::{PodPhase, PodView};

    #[test]
    fn pods_inherit_the_commit_and_application_of_their_owner() {
        let owner = json!({
            "metadata": {"name": "web", "namespace": "demo", "uid": "u1",
                         "annotations": {"shipshape.dev/commit": "abc123",
                                         "shipshape.dev/application": "web",
                                         "shipshape.dev/source": "apps/web/deploy.yaml"}},
            "spec": {"template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "web", "image": "busybox"}]}}},
        });
        let pod = pod_from_template(&owner, "web-1", &[]);
        let annotations = &pod["metadata"]["annotations"];
        assert_eq!(annotations["shipshape.dev/commit"], "abc123");
        assert_eq!(annotations["shipshape.dev/application"], "web");
        // The file belongs to the owner alone: the pod is not declared there.
        assert!(annotations.get("shipshape.dev/source").is_none());
    }

    /// The projection itself is tested in `shipshape_reconciler::projection`; here, the owner
    /// and time readers the controllers add to it.
    #[test]
    fn finds_a_pods_controller_and_reads_times() {
        let pod = json!({
            "metadata": {"name": "web-abcde", "uid": "u1",
                         "ownerReferences": [{"kind": "ReplicaSet", "uid": "rs1", "controller": true}]},
        });
        assert_eq!(controller_uid(&pod, "ReplicaSet"), Some("rs1"));
        assert_eq!(controller_uid(&pod, "Job"), None);
        assert_eq!(
            seconds(Some(&json!(rfc3339(1_800_000_000)))),
            Some(1_800_000_000)
        );
    }

    #[test]
    fn owned_objects_follow_their_owner_through_changes() {
        use crate::store::{EventType, WatchEvent};
        let event = |kind, rv: u64, owner: Option<&str>, phase: &str| WatchEvent {
            resource_version: rv,
            kind,
            key: "Pod/demo/web-a".into(),
            object: json!({
                "metadata": {"name": "web-a", "uid": "p1", "ownerReferences": owner
                    .map(|uid| vec![json!({"kind": "ReplicaSet", "uid": uid, "controller": true})])
                    .unwrap_or_default()},
                "status": {"phase": phase},
            }),
        };
        let mut owned = Owned::new("ReplicaSet");
        let phases = |owned: &Owned<PodView>, uid: &str| -> Vec<PodPhase> {
            owned.of(uid).map(|p| p.phase).collect()
        };
        let added = event(EventType::Added, 1, Some("rs1"), "Pending");
        assert_eq!(owned.observe(&added, pod_view).as_deref(), Some("rs1"));
        let running = event(EventType::Modified, 2, Some("rs1"), "Running");
        assert_eq!(owned.observe(&running, pod_view).as_deref(), Some("rs1"));
        assert_eq!(
            phases(&owned, "rs1"),
            [PodPhase::Running],
            "updated in place"
        );
        let adopted = event(EventType::Modified, 3, Some("rs2"), "Running");
        assert_eq!(owned.observe(&adopted, pod_view).as_deref(), Some("rs2"));
        assert!(phases(&owned, "rs1").is_empty(), "moved, not copied");
        assert_eq!(phases(&owned, "rs2"), [PodPhase::Running]);
        let orphaned = event(EventType::Modified, 4, None, "Running");
        assert_eq!(owned.observe(&orphaned, pod_view), None);
        assert!(
            owned.get("Pod/demo/web-a").is_none(),
            "an orphan is not kept"
        );
        owned.observe(
            &event(EventType::Modified, 5, Some("rs2"), "Running"),
            pod_view,
        );
        let deleted = event(EventType::Deleted, 6, Some("rs2"), "Running");
        assert_eq!(owned.observe(&deleted, pod_view).as_deref(), Some("rs2"));
        assert!(phases(&owned, "rs2").is_empty());
    }
}
