//! The Endpoints controller: keeps each selecting Service's Endpoints and EndpointSlices equal
//! to its pods' addresses, deciding with [`shipshape_reconciler::endpoints::endpoints_for`].
//! Services without a selector are left alone (their Endpoints are the user's), and so are
//! Endpoints that Git declares.

use shipshape_api::pointer::At;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{Value, json};
use shipshape_api::{Kind, ObjectKey};
use shipshape_reconciler::endpoints::{
    Address, EndpointPod, ServicePort, Subset, TargetPort, endpoints_for,
};

use super::{condition_is_true, owner_reference, string_map, text};
use crate::Write;
use crate::controller::{Controller, Dirty, Reconciled, because};
use crate::gitsync::MANAGED_BY_LABEL;
use crate::store::{Batch, EventType, Precondition, WatchEvent, parse_storage_key};

/// The label marking Endpoints and EndpointSlices this controller owns (Kubernetes' name).
const MANAGED_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
const MANAGER: &str = "shipshape";
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

struct CachedService {
    selector: BTreeMap<String, String>,
    ports: Vec<ServicePort>,
    publish_not_ready: bool,
    object: Value,
}

struct CachedPod {
    labels: BTreeMap<String, String>,
    view: EndpointPod,
}

/// An Endpoints or EndpointSlice object as last seen.
struct Written {
    resource_version: u64,
    content: Value,
    ours: bool,
}

/// The Endpoints controller's cache.
#[derive(Default)]
pub struct EndpointsController {
    services: HashMap<String, CachedService>,
    services_by_namespace: HashMap<String, BTreeSet<String>>,
    pods: HashMap<String, CachedPod>,
    pods_by_namespace: HashMap<String, BTreeSet<String>>,
    endpoints: HashMap<String, Written>,
    /// EndpointSlices by the Service key they belong to, then by name.
    slices: HashMap<String, BTreeMap<String, Written>>,
}

impl EndpointsController {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    fn mark_services_selecting(
        &self,
        namespace: &str,
        labels: &[&BTreeMap<String, String>],
        dirty: &mut Dirty,
        event: &WatchEvent,
    ) {
        for key in self
            .services_by_namespace
            .get(namespace)
            .into_iter()
            .flatten()
        {
            if let Some(service) = self.services.get(key)
                && labels.iter().any(|l| selects(&service.selector, l))
            {
                dirty.mark(key.clone(), || because(event));
            }
        }
    }
}

fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn service_ports(service: &Value) -> Vec<ServicePort> {
    service
        .at("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|port| {
            let number = port.get("port").and_then(Value::as_i64).unwrap_or(0);
            let target = match port.get("targetPort") {
                Some(Value::String(name)) => match name.parse::<i32>() {
                    Ok(n) => TargetPort::Number(n),
                    Err(_) => TargetPort::Named(name.clone()),
                },
                Some(Value::Number(n)) => {
                    TargetPort::Number(n.as_i64().and_then(|n| i32::try_from(n).ok()).unwrap_or(0))
                }
                _ => TargetPort::Number(i32::try_from(number).unwrap_or(0)),
            };
            ServicePort {
                name: text(port, "/name").unwrap_or_default().to_string(),
                protocol: text(port, "/protocol").unwrap_or("TCP").to_string(),
                target,
            }
        })
        .collect()
}

fn endpoint_pod(pod: &Value) -> EndpointPod {
    let ready = condition_is_true(pod, "Ready");
    let named_ports = pod
        .at("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|c| {
            c.get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .filter_map(|p| {
            Some((
                p.get("name")?.as_str()?.to_string(),
                (
                    i32::try_from(p.get("containerPort")?.as_i64()?).ok()?,
                    text(p, "/protocol").unwrap_or("TCP").to_string(),
                ),
            ))
        })
        .collect();
    EndpointPod {
        name: text(pod, "/metadata/name").unwrap_or_default().to_string(),
        ip: text(pod, "/status/podIP")
            .filter(|ip| !ip.is_empty())
            .map(str::to_string),
        node: text(pod, "/spec/nodeName").map(str::to_string),
        ready,
        terminating: pod.at("/metadata/deletionTimestamp").is_some(),
        named_ports,
        hostname: text(pod, "/spec/hostname")
            .zip(text(pod, "/spec/subdomain"))
            .map(|(hostname, subdomain)| (hostname.to_string(), subdomain.to_string())),
    }
}

fn address_json(address: &Address, namespace: &str) -> Value {
    let mut value = json!({
        "ip": address.ip,
        "targetRef": {"kind": "Pod", "name": address.pod, "namespace": namespace},
    });
    if let Some(node) = &address.node {
        value["nodeName"] = json!(node);
    }
    if let Some(hostname) = &address.hostname {
        value["hostname"] = json!(hostname);
    }
    value
}

fn ports_json(subset: &Subset) -> Value {
    subset
        .ports
        .iter()
        .map(|(name, port, protocol)| {
            let mut value = json!({"port": port, "protocol": protocol});
            if !name.is_empty() {
                value["name"] = json!(name);
            }
            value
        })
        .collect()
}

/// The Endpoints' `subsets` (absent when empty, as Kubernetes writes it).
fn subsets_json(subsets: &[Subset], namespace: &str) -> Value {
    subsets
        .iter()
        .map(|subset| {
            let mut value = json!({"ports": ports_json(subset)});
            if !subset.ready.is_empty() {
                value["addresses"] = subset
                    .ready
                    .iter()
                    .map(|a| address_json(a, namespace))
                    .collect();
            }
            if !subset.not_ready.is_empty() {
                value["notReadyAddresses"] = subset
                    .not_ready
                    .iter()
                    .map(|a| address_json(a, namespace))
                    .collect();
            }
            value
        })
        .collect()
}

/// One EndpointSlice's content (endpoints and ports) for a subset.
fn slice_content(subset: &Subset, namespace: &str) -> Value {
    let endpoint = |address: &Address, ready: bool| {
        let mut value = json!({
            "addresses": [address.ip],
            "conditions": {"ready": ready, "serving": ready, "terminating": false},
            "targetRef": {"kind": "Pod", "name": address.pod, "namespace": namespace},
        });
        if let Some(node) = &address.node {
            value["nodeName"] = json!(node);
        }
        if let Some(hostname) = &address.hostname {
            value["hostname"] = json!(hostname);
        }
        value
    };
    let endpoints: Vec<Value> = subset
        .ready
        .iter()
        .map(|a| endpoint(a, true))
        .chain(subset.not_ready.iter().map(|a| endpoint(a, false)))
        .collect();
    json!({"endpoints": endpoints, "ports": ports_json(subset)})
}

fn slice_name(service: &str, subset: &Subset) -> String {
    let ports: Vec<String> = subset
        .ports
        .iter()
        .map(|(name, port, protocol)| format!("{name}:{port}/{protocol}"))
        .collect();
    let hash = super::seed(&[&ports.join(",")]);
    format!("{service}-{:08x}", hash as u32)
}

fn written(event: &WatchEvent, content: Value) -> Written {
    let labels = string_map(event.object.at("/metadata/labels"));
    Written {
        resource_version: event.resource_version,
        content,
        ours: labels.get(MANAGED_LABEL).map(String::as_str) == Some(MANAGER)
            && !labels.contains_key(MANAGED_BY_LABEL),
    }
}

/// An object to write, with the part compared against what is stored.
type Desired = (Value, Value);

/// The one write that makes a stored Endpoints or EndpointSlice what is desired, if any: create
/// what is missing, update what this controller owns and differs, delete what it owns and is no
/// longer wanted. Objects someone else wrote are never touched.
fn converge(existing: Option<&Written>, key: ObjectKey, desired: Option<Desired>) -> Option<Write> {
    match (existing, desired) {
        (None, Some((object, _))) => Some(Write::Create {
            object,
            applied: None,
            application: None,
        }),
        (Some(existing), Some((object, content)))
            if existing.ours && existing.content != content =>
        {
            Some(Write::Update {
                key,
                resource_version: existing.resource_version,
                object,
                applied: None,
            })
        }
        (Some(existing), None) if existing.ours => Some(Write::Delete {
            key,
            precondition: Precondition::ResourceVersion(existing.resource_version),
        }),
        _ => None,
    }
}

impl EndpointsController {
    /// The Endpoints and the EndpointSlices (by name) a selecting Service should have.
    fn desired(
        &self,
        key: &str,
        service_key: &ObjectKey,
    ) -> Option<(Desired, BTreeMap<String, Desired>)> {
        let service = self
            .services
            .get(key)
            .filter(|service| !service.selector.is_empty())?;
        let namespace = &service_key.namespace;
        let pods: Vec<EndpointPod> = self
            .pods_by_namespace
            .get(namespace)
            .into_iter()
            .flatten()
            .filter_map(|k| self.pods.get(k))
            .filter(|pod| selects(&service.selector, &pod.labels))
            .map(|pod| pod.view.clone())
            .collect();
        let subsets = endpoints_for(
            &service_key.name,
            &service.ports,
            &pods,
            service.publish_not_ready,
        );
        let mut labels = service
            .object
            .at("/metadata/labels")
            .cloned()
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({}));
        if let Some(map) = labels.as_object_mut() {
            // Git's provenance belongs to the Service, not to what is derived from it.
            map.remove(MANAGED_BY_LABEL);
            map.insert(MANAGED_LABEL.into(), MANAGER.into());
        }
        let content = subsets_json(&subsets, namespace);
        let content = if content.as_array().is_some_and(Vec::is_empty) {
            Value::Null
        } else {
            content
        };
        let mut endpoints = json!({
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": service_key.name, "namespace": namespace, "labels": labels},
        });
        if !content.is_null() {
            endpoints["subsets"] = content.clone();
        }
        // One slice per distinct set of ports.
        let slices = subsets
            .iter()
            .map(|subset| {
                let name = slice_name(&service_key.name, subset);
                let content = slice_content(subset, namespace);
                let mut slice_labels = labels.clone();
                slice_labels[SERVICE_NAME_LABEL] = json!(service_key.name);
                let mut object = json!({
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": {
                        "name": name, "namespace": namespace, "labels": slice_labels,
                        "ownerReferences": [owner_reference(&service.object)],
                    },
                    "addressType": "IPv4",
                });
                object["endpoints"] = content["endpoints"].clone();
                object["ports"] = content["ports"].clone();
                (name, (object, content))
            })
            .collect();
        Some(((endpoints, content), slices))
    }
}

impl Controller for EndpointsController {
    fn name(&self) -> &'static str {
        "endpoints"
    }

    fn kinds(&self) -> Vec<Kind> {
        vec![
            Kind::Service,
            Kind::Pod,
            Kind::Endpoints,
            Kind::EndpointSlice,
        ]
    }

    fn reset(&mut self) {
        *self = Self::default();
    }

    fn observe(&mut self, event: &WatchEvent, dirty: &mut Dirty) {
        let Some(key) = parse_storage_key(&event.key) else {
            return;
        };
        let service_key = |name: &str| format!("Service/{}/{name}", key.namespace);
        let deleted = event.kind == EventType::Deleted;
        match key.kind {
            Kind::Service => {
                if deleted {
                    self.services.remove(&event.key);
                    if let Some(keys) = self.services_by_namespace.get_mut(&key.namespace) {
                        keys.remove(&event.key);
                    }
                } else {
                    let object = &event.object;
                    self.services.insert(
                        event.key.clone(),
                        CachedService {
                            selector: string_map(object.at("/spec/selector")),
                            ports: service_ports(object),
                            publish_not_ready: object
                                .at("/spec/publishNotReadyAddresses")
                                .and_then(Value::as_bool)
                                .unwrap_or(false),
                            object: json!({
                                "apiVersion": "v1", "kind": "Service",
                                "metadata": {
                                    "name": key.name, "namespace": key.namespace,
                                    "uid": object.at("/metadata/uid"),
                                    "labels": object.at("/metadata/labels"),
                                },
                            }),
                        },
                    );
                    self.services_by_namespace
                        .entry(key.namespace.clone())
                        .or_default()
                        .insert(event.key.clone());
                }
                dirty.mark(event.key.clone(), || because(event));
            }
            Kind::Pod => {
                let old = self.pods.remove(&event.key);
                let new = (!deleted).then(|| CachedPod {
                    labels: string_map(event.object.at("/metadata/labels")),
                    view: endpoint_pod(&event.object),
                });
                if old.as_ref().map(|p| (&p.labels, &p.view))
                    == new.as_ref().map(|p| (&p.labels, &p.view))
                {
                    if let Some(new) = new {
                        self.pods.insert(event.key.clone(), new);
                    }
                    return;
                }
                let labels: Vec<&BTreeMap<String, String>> =
                    old.iter().chain(new.iter()).map(|p| &p.labels).collect();
                self.mark_services_selecting(&key.namespace, &labels, dirty, event);
                let in_namespace = self
                    .pods_by_namespace
                    .entry(key.namespace.clone())
                    .or_default();
                match new {
                    Some(new) => {
                        in_namespace.insert(event.key.clone());
                        self.pods.insert(event.key.clone(), new);
                    }
                    None => {
                        in_namespace.remove(&event.key);
                    }
                }
            }
            Kind::Endpoints => {
                if deleted {
                    self.endpoints.remove(&event.key);
                } else {
                    let content = event.object.get("subsets").cloned().unwrap_or(Value::Null);
                    self.endpoints
                        .insert(event.key.clone(), written(event, content));
                }
                dirty.mark(service_key(&key.name), || because(event));
            }
            Kind::EndpointSlice => {
                let Some(service) = text(
                    &event.object,
                    &format!("/metadata/labels/{}", SERVICE_NAME_LABEL.replace('/', "~1")),
                )
                .map(&service_key) else {
                    return;
                };
                let slices = self.slices.entry(service.clone()).or_default();
                if deleted {
                    slices.remove(&key.name);
                } else {
                    let content = json!({
                        "endpoints": event.object.get("endpoints"),
                        "ports": event.object.get("ports"),
                    });
                    slices.insert(key.name.clone(), written(event, content));
                }
                dirty.mark(service, || because(event));
            }
            _ => {}
        }
    }

    fn reconcile(&mut self, key: &str, _now: jiff::Timestamp) -> Reconciled {
        let Some(service_key) = parse_storage_key(key) else {
            return Reconciled::default();
        };
        let endpoints_key = ObjectKey {
            kind: Kind::Endpoints,
            ..service_key.clone()
        };
        // No Service (or one without a selector): nothing is wanted, so what this controller
        // wrote for it is removed.
        let (endpoints, mut wanted_slices) = self
            .desired(key, &service_key)
            .map_or((None, BTreeMap::new()), |(e, s)| (Some(e), s));
        let existing = self
            .endpoints
            .get(&crate::store::storage_key(&endpoints_key));
        let mut writes: Vec<Write> = converge(existing, endpoints_key, endpoints)
            .into_iter()
            .collect();
        let slices = self.slices.get(key);
        let names: BTreeSet<String> = slices
            .into_iter()
            .flat_map(|s| s.keys().cloned())
            .chain(wanted_slices.keys().cloned())
            .collect();
        for name in names {
            let slice_key = ObjectKey {
                kind: Kind::EndpointSlice,
                namespace: service_key.namespace.clone(),
                name: name.clone(),
            };
            writes.extend(converge(
                slices.and_then(|s| s.get(&name)),
                slice_key,
                wanted_slices.remove(&name),
            ));
        }
        Reconciled {
            batches: if writes.is_empty() {
                Vec::new()
            } else {
                vec![Batch {
                    writes,
                    audit: None,
                }]
            },
            requeue_after: None,
        }
    }
}
