//! The live view DNS answers from: a [`Controller`] over the store's watch that keeps the
//! Services, Endpoints and Pods it needs and, after each batch of changes, builds a new
//! [`Zone`] and swaps it in. A batch of a thousand changes rebuilds once.

use shipshape_api::pointer::At;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use serde_json::Value;
use shipshape_actors::controller::{Controller, Dirty, Reconciled, because};
use shipshape_actors::service_view::{ServiceKind, ServiceView, endpoint_subsets};
use shipshape_actors::store::{EventType, WatchEvent, parse_storage_key};
use shipshape_api::Kind;

use crate::zone::{
    Contribution, EndpointInfo, PodInfo, PortInfo, ServiceInfo, ServiceTarget, Shape, Zone,
    ZoneConfig,
};

/// The zone every query reads; replaced whole, never changed in place.
#[derive(Debug)]
pub struct ZoneCell {
    current: RwLock<Arc<Zone>>,
}

impl ZoneCell {
    /// A cell holding an empty zone (apexes only) until the first list arrives.
    pub fn new(config: &ZoneConfig) -> Arc<Self> {
        let empty = Zone::build(config, 0, [], []);
        Arc::new(Self {
            current: RwLock::new(Arc::new(empty)),
        })
    }

    /// The zone as it is now.
    pub fn load(&self) -> Arc<Zone> {
        match self.current.read() {
            Ok(zone) => zone.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the zone; queries already answering keep the one they started with.
    pub fn store(&self, zone: Zone) {
        let zone = Arc::new(zone);
        match self.current.write() {
            Ok(mut current) => *current = zone,
            Err(poisoned) => *poisoned.into_inner() = zone,
        }
    }
}

const ZONE_KEY: &str = "zone";

/// Follows Services, Endpoints and Pods and keeps the zone current. What each Service and pod
/// publishes is kept and rebuilt only when that object (or a Service's Endpoints) changes; a
/// new zone is assembled from the kept parts.
pub struct DnsView {
    config: ZoneConfig,
    shape: Shape,
    cell: Arc<ZoneCell>,
    serial: u32,
    /// Services by (namespace, name).
    services: BTreeMap<(String, String), ServiceView>,
    /// Ready endpoints by (namespace, Service name).
    endpoints: BTreeMap<(String, String), Vec<EndpointInfo>>,
    /// What each Service publishes.
    service_parts: BTreeMap<(String, String), Contribution>,
    /// Services whose part must be rebuilt.
    stale: BTreeSet<(String, String)>,
    /// What each pod publishes, by storage key.
    pod_parts: BTreeMap<String, Contribution>,
}

impl DnsView {
    /// A view publishing into `cell`.
    pub fn new(config: ZoneConfig, cell: Arc<ZoneCell>) -> Self {
        Self {
            shape: Shape::new(&config),
            config,
            cell,
            serial: 0,
            services: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            service_parts: BTreeMap::new(),
            stale: BTreeSet::new(),
            pod_parts: BTreeMap::new(),
        }
    }

    fn service_info(&self, service: &ServiceView) -> ServiceInfo {
        let target = match &service.kind {
            ServiceKind::Headless => ServiceTarget::Headless,
            ServiceKind::ExternalName(name) => ServiceTarget::ExternalName(name.clone()),
            _ => ServiceTarget::ClusterIp(service.cluster_ips.clone()),
        };
        let endpoint_key = (service.namespace.clone(), service.name.clone());
        ServiceInfo {
            namespace: service.namespace.clone(),
            name: service.name.clone(),
            target,
            ports: service
                .ports
                .iter()
                .map(|port| PortInfo {
                    name: port.name.clone(),
                    protocol: port.protocol.to_ascii_lowercase(),
                    port: port.port,
                })
                .collect(),
            endpoints: self
                .endpoints
                .get(&endpoint_key)
                .cloned()
                .unwrap_or_default(),
        }
    }
}

fn endpoint_infos(object: &Value) -> Vec<EndpointInfo> {
    endpoint_subsets(object)
        .into_iter()
        .flat_map(|subset| {
            let ports: Vec<PortInfo> = subset
                .ports
                .iter()
                .map(|(name, port, protocol)| PortInfo {
                    name: name.clone(),
                    protocol: protocol.to_ascii_lowercase(),
                    port: *port,
                })
                .collect();
            subset
                .addresses
                .into_iter()
                .map(move |address| EndpointInfo {
                    ip: address.ip,
                    hostname: address.hostname,
                    ports: ports.clone(),
                })
        })
        .collect()
}

fn pod_info(object: &Value) -> Option<PodInfo> {
    let ip: IpAddr = object.at("/status/podIP")?.as_str()?.parse().ok()?;
    Some(PodInfo {
        namespace: object.at("/metadata/namespace")?.as_str()?.to_string(),
        ip,
    })
}

impl Controller for DnsView {
    fn name(&self) -> &'static str {
        "cluster-dns"
    }

    fn kinds(&self) -> Vec<Kind> {
        vec![Kind::Service, Kind::Endpoints, Kind::Pod]
    }

    fn reset(&mut self) {
        self.services.clear();
        self.endpoints.clear();
        self.service_parts.clear();
        self.stale.clear();
        self.pod_parts.clear();
    }

    fn observe(&mut self, event: &WatchEvent, dirty: &mut Dirty) {
        let Some(key) = parse_storage_key(&event.key) else {
            return;
        };
        let deleted = event.kind == EventType::Deleted;
        let id = (key.namespace.clone(), key.name.clone());
        let changed = match key.kind {
            Kind::Service => {
                let view = (!deleted).then(|| ServiceView::of(&event.object)).flatten();
                let changed = match view {
                    Some(view) => self.services.insert(id.clone(), view.clone()) != Some(view),
                    None => self.services.remove(&id).is_some(),
                };
                if changed {
                    self.stale.insert(id);
                }
                changed
            }
            Kind::Endpoints => {
                let infos = if deleted {
                    Vec::new()
                } else {
                    endpoint_infos(&event.object)
                };
                let changed = if infos.is_empty() {
                    self.endpoints.remove(&id).is_some()
                } else {
                    self.endpoints.insert(id.clone(), infos.clone()) != Some(infos)
                };
                if changed {
                    self.stale.insert(id);
                }
                changed
            }
            Kind::Pod => {
                let part = (!deleted)
                    .then(|| pod_info(&event.object))
                    .flatten()
                    .map(|info| self.shape.pod(&info));
                match part {
                    Some(part) => {
                        self.pod_parts.insert(event.key.clone(), part.clone()) != Some(part)
                    }
                    None => self.pod_parts.remove(&event.key).is_some(),
                }
            }
            _ => false,
        };
        if changed {
            dirty.mark(ZONE_KEY, || because(event));
        }
    }

    fn listed(&mut self, dirty: &mut Dirty) {
        dirty.mark(ZONE_KEY, || "listed".to_string());
    }

    fn reconcile(&mut self, _key: &str, _now: jiff::Timestamp) -> Reconciled {
        let started = std::time::Instant::now();
        self.serial = self.serial.wrapping_add(1);
        for id in std::mem::take(&mut self.stale) {
            match self.services.get(&id) {
                Some(service) => {
                    let part = self.shape.service(&self.service_info(service));
                    self.service_parts.insert(id, part);
                }
                None => {
                    self.service_parts.remove(&id);
                }
            }
        }
        // Services first: their reverse names win over the pods'.
        let parts = self.service_parts.values().chain(self.pod_parts.values());
        let zone = Zone::assemble(&self.config, self.serial, parts);
        tracing::debug!(
            names = zone.len(),
            serial = self.serial,
            elapsed = ?started.elapsed(),
            "cluster DNS zone rebuilt"
        );
        self.cell.store(zone);
        Reconciled::default()
    }
}
