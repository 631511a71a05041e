//! Service addresses: gives each Service its ClusterIP and NodePorts (what the Kubernetes API
//! server does at create time), deciding with [`shipshape_reconciler::services`]. The address is
//! written into the Service's spec, where Git's later updates leave it (the store keeps
//! allocated fields a manifest does not set), so it is stable across syncs and restarts.
//!
//! A Service asking for an address another holds is refused with Kubernetes' message, as a
//! Warning event on it; the older Service keeps the address.
//!
//! LoadBalancer Services get an address from the configured pool (`--lb-pool`) in
//! `status.loadBalancer.ingress`, as k3s' and MetalLB's controllers do; without a pool they stay
//! pending, as on a cluster with no load-balancer provider.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde_json::{Value, json};
use shipshape_api::Kind;
use shipshape_reconciler::services::{
    LoadBalancerPool, ServiceRange, cluster_ip, load_balancer_ip, node_port,
};

use super::{seed, text};
use crate::Write;
use crate::controller::{Controller, Dirty, Reconciled, because};
use crate::events::event;
use crate::store::{Batch, EventType, Precondition, WatchEvent, parse_storage_key};

#[derive(Clone)]
struct Service {
    object: Value,
    rv: u64,
    /// When it was created (the older of two claimants keeps an address).
    created: String,
}

/// Allocates ClusterIPs and NodePorts.
pub struct ServiceAllocator {
    range: ServiceRange,
    pool: Option<LoadBalancerPool>,
    services: BTreeMap<String, Service>,
    /// Keys already told about a conflict (one event per conflict, not per pass).
    warned: BTreeMap<String, String>,
}

impl ServiceAllocator {
    /// Allocates from `range` (the service CIDR) and, for LoadBalancer Services, `pool`.
    pub fn new(range: ServiceRange, pool: Option<LoadBalancerPool>) -> Self {
        Self {
            range,
            pool,
            services: BTreeMap::new(),
            warned: BTreeMap::new(),
        }
    }

    fn wants_cluster_ip(object: &Value) -> bool {
        let kind = object["spec"]["type"].as_str().unwrap_or("ClusterIP");
        kind != "ExternalName" && object["spec"]["clusterIP"] != "None"
    }

    fn wants_node_ports(object: &Value) -> bool {
        matches!(
            object["spec"]["type"].as_str(),
            Some("NodePort" | "LoadBalancer")
        )
    }

    fn wants_load_balancer(&self, object: &Value) -> bool {
        self.pool.is_some() && object["spec"]["type"] == "LoadBalancer"
    }

    /// The load-balancer address in a Service's status.
    fn load_balancer_address(object: &Value) -> Option<Ipv4Addr> {
        object["status"]["loadBalancer"]["ingress"][0]["ip"]
            .as_str()
            .and_then(|ip| ip.parse().ok())
    }

    /// Addresses, ports and load-balancer addresses held by Services older than `key` (or
    /// all others, for a new one).
    fn held(&self, key: &str) -> Held {
        let me = self.services.get(key);
        let mut ips = BTreeSet::new();
        let mut ports = BTreeSet::new();
        let mut balanced = BTreeSet::new();
        for (other_key, other) in &self.services {
            if other_key == key {
                continue;
            }
            // Of two claimants, the one created first (then by name) holds the address.
            let older =
                me.is_none_or(|me| (&other.created, other_key.as_str()) < (&me.created, key));
            if !older {
                continue;
            }
            if let Some(ip) = other.object["spec"]["clusterIP"]
                .as_str()
                .and_then(|ip| ip.parse().ok())
            {
                ips.insert(ip);
            }
            if let Some(ip) = Self::load_balancer_address(&other.object) {
                balanced.insert(ip);
            }
            for port in other.object["spec"]["ports"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if let Some(n) = port["nodePort"]
                    .as_u64()
                    .and_then(|n| u16::try_from(n).ok())
                {
                    ports.insert(n);
                }
            }
        }
        Held {
            ips,
            ports,
            balanced,
        }
    }

    /// The status write giving (or taking away) a load-balancer address, or the reason none
    /// can be given.
    fn load_balancer_status(
        &self,
        object: &Value,
        held: &BTreeSet<Ipv4Addr>,
    ) -> Result<Option<Value>, String> {
        let current = Self::load_balancer_address(object);
        let decided = match self.pool {
            Some(pool) if self.wants_load_balancer(object) => {
                let requested = match object["spec"]["loadBalancerIP"].as_str() {
                    Some(text) if !text.is_empty() => Some(text.parse::<Ipv4Addr>().map_err(|_| {
                        format!("spec.loadBalancerIP: Invalid value: {text:?}: must be a valid IPv4 address")
                    })?),
                    _ => None,
                };
                Some(load_balancer_ip(pool, current, requested, held)?)
            }
            _ => None,
        };
        if decided == current {
            return Ok(None);
        }
        let mut status = object["status"].clone();
        if !status.is_object() {
            status = json!({});
        }
        status["loadBalancer"] = match decided {
            Some(ip) => json!({"ingress": [{"ip": ip.to_string(), "ipMode": "VIP"}]}),
            None => json!({}),
        };
        Ok(Some(status))
    }
}

/// What other Services hold.
struct Held {
    ips: BTreeSet<Ipv4Addr>,
    ports: BTreeSet<u16>,
    balanced: BTreeSet<Ipv4Addr>,
}

impl Controller for ServiceAllocator {
    fn name(&self) -> &'static str {
        "service-allocator"
    }

    fn kinds(&self) -> Vec<Kind> {
        vec![Kind::Service]
    }

    fn reset(&mut self) {
        self.services.clear();
    }

    fn observe(&mut self, event: &WatchEvent, dirty: &mut Dirty) {
        if parse_storage_key(&event.key).is_none() {
            return;
        }
        if event.kind == EventType::Deleted {
            self.services.remove(&event.key);
            self.warned.remove(&event.key);
            // A freed address may settle a conflict.
            for key in self.warned.keys() {
                dirty.mark(key.clone(), || because(event));
            }
            return;
        }
        let object = event.object.clone();
        let has_ports = object["spec"]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|p| p["nodePort"].as_u64().is_some_and(|n| n != 0));
        let balanced =
            self.wants_load_balancer(&object) == Self::load_balancer_address(&object).is_some();
        let done = (!Self::wants_cluster_ip(&object) || object["spec"]["clusterIP"].is_string())
            && (!Self::wants_node_ports(&object) || has_ports)
            && balanced;
        self.services.insert(
            event.key.clone(),
            Service {
                created: text(&object, "/metadata/creationTimestamp")
                    .unwrap_or_default()
                    .to_string(),
                rv: event.resource_version,
                object,
            },
        );
        // Checked when first seen (an address asked for may be taken) and until allocated.
        if !done || event.kind == EventType::Added {
            dirty.mark(event.key.clone(), || because(event));
        }
    }

    fn reconcile(&mut self, key: &str, now: jiff::Timestamp) -> Reconciled {
        let Some(service) = self.services.get(key).cloned() else {
            return Reconciled::default();
        };
        let Some(object_key) = parse_storage_key(key) else {
            return Reconciled::default();
        };
        let object = &service.object;
        let Held {
            ips,
            ports,
            balanced,
        } = self.held(key);
        let namespace = text(object, "/metadata/namespace").unwrap_or_default();
        let name = text(object, "/metadata/name").unwrap_or_default();
        let mut spec = json!({});
        let mut problem = None;
        if Self::wants_cluster_ip(object) {
            let requested = object["spec"]["clusterIP"]
                .as_str()
                .filter(|ip| !ip.is_empty());
            let parsed = match requested.map(str::parse::<Ipv4Addr>) {
                Some(Ok(ip)) => Ok(Some(ip)),
                Some(Err(_)) => Err(format!(
                    "spec.clusterIP: Invalid value: {:?}: must be a valid IPv4 address",
                    requested.unwrap_or_default()
                )),
                None => Ok(None),
            };
            match parsed
                .and_then(|asked| cluster_ip(self.range, asked, &ips, seed(&[namespace, name])))
            {
                Ok(ip) => {
                    spec["clusterIP"] = json!(ip.to_string());
                    spec["clusterIPs"] = json!([ip.to_string()]);
                }
                Err(message) => problem = Some(message),
            }
        }
        if Self::wants_node_ports(object) && problem.is_none() {
            let mut taken = ports;
            let mut new_ports = Vec::new();
            for (index, port) in object["spec"]["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                let asked = port["nodePort"]
                    .as_u64()
                    .and_then(|n| u16::try_from(n).ok());
                let number = port["port"].as_u64().unwrap_or(0).to_string();
                match node_port(
                    asked,
                    &taken,
                    seed(&[namespace, name, &number, &index.to_string()]),
                ) {
                    Ok(n) => {
                        taken.insert(n);
                        let mut port = port.clone();
                        port["nodePort"] = json!(n);
                        new_ports.push(port);
                    }
                    Err(message) => {
                        problem = Some(message);
                        break;
                    }
                }
            }
            if problem.is_none() {
                spec["ports"] = json!(new_ports);
            }
        }
        let unchanged = spec
            .as_object()
            .is_some_and(|fields| fields.iter().all(|(k, v)| object["spec"][k] == *v));
        // The load-balancer address comes once the spec has its own.
        let mut reason = "ClusterIPNotAllocated";
        let mut status = None;
        if problem.is_none() && unchanged {
            match self.load_balancer_status(object, &balanced) {
                Ok(decided) => status = decided,
                Err(message) => {
                    reason = "AllocationFailed";
                    problem = Some(message);
                }
            }
        }
        if let Some(message) = problem {
            if self.warned.get(key) == Some(&message) {
                return Reconciled::default();
            }
            self.warned.insert(key.to_string(), message.clone());
            return Reconciled {
                batches: vec![Batch {
                    writes: vec![event(
                        self.name(),
                        object,
                        "Warning",
                        reason,
                        format!(
                            "Service {namespace}/{name} was not given its addresses: {message}"
                        ),
                        now,
                    )],
                    audit: None,
                }],
                requeue_after: None,
            };
        }
        self.warned.remove(key);
        if unchanged {
            let Some(status) = status else {
                return Reconciled::default();
            };
            return Reconciled {
                batches: vec![Batch {
                    writes: vec![Write::UpdateStatus {
                        key: object_key,
                        precondition: Some(Precondition::ResourceVersion(service.rv)),
                        status,
                    }],
                    audit: None,
                }],
                requeue_after: None,
            };
        }
        let patch = json!({"spec": spec});
        Reconciled {
            batches: vec![Batch {
                writes: vec![Write::Patch {
                    key: object_key,
                    precondition: Some(Precondition::ResourceVersion(service.rv)),
                    patch,
                }],
                audit: None,
            }],
            requeue_after: None,
        }
    }
}
