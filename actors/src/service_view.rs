//! Services and Endpoints as the data plane reads them: the cluster DNS and the service proxy
//! both follow these two kinds, and both need the same few fields typed (addresses parsed,
//! ports numbered, only ready endpoints). One projection keeps them reading the objects alike.

use shipshape_api::pointer::At;
use std::net::IpAddr;

use serde_json::Value;

/// What kind of Service it is (`spec.type`, with `clusterIP: None` as its own case).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceKind {
    /// A virtual address inside the cluster.
    ClusterIp,
    /// A ClusterIP that also answers on every node at a port.
    NodePort,
    /// A NodePort with an address from the load-balancer pool.
    LoadBalancer,
    /// `clusterIP: None`: DNS names the endpoints; no virtual address.
    Headless,
    /// An alias for a name outside the cluster.
    ExternalName(String),
}

/// One port of a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePortView {
    /// Its name (may be empty when there is one port).
    pub name: String,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    /// The port on the virtual address.
    pub port: u16,
    /// The node port, once allocated.
    pub node_port: Option<u16>,
}

/// A Service, as the data plane needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceView {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: ServiceKind,
    /// Its virtual addresses (empty until allocated, and for headless and ExternalName).
    pub cluster_ips: Vec<IpAddr>,
    /// Load-balancer addresses from `status.loadBalancer.ingress`.
    pub load_balancer_ips: Vec<IpAddr>,
    /// Its ports.
    pub ports: Vec<ServicePortView>,
    /// `sessionAffinity: ClientIP`: how long a client sticks to its endpoint, in seconds.
    pub affinity_seconds: Option<u32>,
}

/// A ready endpoint of one subset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointAddress {
    /// The pod's address.
    pub ip: IpAddr,
    /// The pod's hostname, when its subdomain is the Service (`web-0` of a StatefulSet).
    pub hostname: Option<String>,
}

/// Ready addresses that serve the same ports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointSubset {
    /// Ready addresses only: not-ready ones receive no traffic and have no names.
    pub addresses: Vec<EndpointAddress>,
    /// (Service port name, target port number, protocol).
    pub ports: Vec<(String, u16, String)>,
}

fn text<'a>(object: &'a Value, pointer: &str) -> Option<&'a str> {
    object.at(pointer).and_then(Value::as_str)
}

fn port_number(value: &Value) -> Option<u16> {
    value.as_u64().and_then(|n| u16::try_from(n).ok())
}

fn addresses(values: Option<&Value>) -> Vec<IpAddr> {
    values
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str()?.parse().ok())
        .collect()
}

impl ServiceView {
    /// The view of a Service object; `None` when it has no name.
    pub fn of(object: &Value) -> Option<ServiceView> {
        let namespace = text(object, "/metadata/namespace").unwrap_or("default");
        let name = text(object, "/metadata/name")?;
        let spec = &object["spec"];
        let headless = spec["clusterIP"] == "None";
        let kind = match spec["type"].as_str().unwrap_or("ClusterIP") {
            "ExternalName" => {
                ServiceKind::ExternalName(text(spec, "/externalName").unwrap_or("").to_string())
            }
            _ if headless => ServiceKind::Headless,
            "NodePort" => ServiceKind::NodePort,
            "LoadBalancer" => ServiceKind::LoadBalancer,
            _ => ServiceKind::ClusterIp,
        };
        let mut cluster_ips = addresses(spec.get("clusterIPs"));
        if cluster_ips.is_empty()
            && let Some(ip) = text(spec, "/clusterIP").and_then(|ip| ip.parse().ok())
        {
            cluster_ips.push(ip);
        }
        if matches!(kind, ServiceKind::Headless | ServiceKind::ExternalName(_)) {
            cluster_ips.clear();
        }
        let load_balancer_ips = object
            .at("/status/loadBalancer/ingress")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|ingress| text(ingress, "/ip")?.parse().ok())
            .collect();
        let ports = spec["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|port| {
                Some(ServicePortView {
                    name: text(port, "/name").unwrap_or("").to_string(),
                    protocol: text(port, "/protocol").unwrap_or("TCP").to_string(),
                    port: port_number(&port["port"])?,
                    node_port: port_number(&port["nodePort"]),
                })
            })
            .collect();
        let affinity_seconds = (spec["sessionAffinity"] == "ClientIP").then(|| {
            spec.at("/sessionAffinityConfig/clientIP/timeoutSeconds")
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok())
                // Kubernetes' default: three hours.
                .unwrap_or(10_800)
        });
        Some(ServiceView {
            namespace: namespace.to_string(),
            name: name.to_string(),
            kind,
            cluster_ips,
            load_balancer_ips,
            ports,
            affinity_seconds,
        })
    }
}

/// The ready subsets of an Endpoints object.
pub fn endpoint_subsets(object: &Value) -> Vec<EndpointSubset> {
    object["subsets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|subset| EndpointSubset {
            addresses: subset["addresses"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|address| {
                    Some(EndpointAddress {
                        ip: text(address, "/ip")?.parse().ok()?,
                        hostname: text(address, "/hostname").map(str::to_string),
                    })
                })
                .collect(),
            ports: subset["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|port| {
                    Some((
                        text(port, "/name").unwrap_or("").to_string(),
                        port_number(&port["port"])?,
                        text(port, "/protocol").unwrap_or("TCP").to_string(),
                    ))
                })
                .collect(),
        })
        .filter(|subset| !subset.addresses.is_empty())
        .collect()
}

/// Services and their ready subsets as a data-plane component follows them from the store's
/// watch (the service proxy and the ingress both do), keyed by (namespace, name).
#[derive(Debug, Default)]
pub struct ServiceCache {
    /// The Services.
    pub services: std::collections::BTreeMap<(String, String), ServiceView>,
    /// Their ready subsets (a Service with none has no entry).
    pub endpoints: std::collections::BTreeMap<(String, String), Vec<EndpointSubset>>,
}

impl ServiceCache {
    /// Forgets everything (a full list follows).
    pub fn clear(&mut self) {
        self.services.clear();
        self.endpoints.clear();
    }

    /// Takes in one watch event; whether what the data plane sees of Services changed (other
    /// kinds change nothing).
    pub fn observe(&mut self, event: &crate::store::WatchEvent) -> bool {
        let Some(key) = crate::store::parse_storage_key(&event.key) else {
            return false;
        };
        let deleted = event.kind == crate::store::EventType::Deleted;
        let id = (key.namespace, key.name);
        match key.kind {
            shipshape_api::Kind::Service => {
                match (!deleted).then(|| ServiceView::of(&event.object)).flatten() {
                    Some(view) => self.services.insert(id, view.clone()) != Some(view),
                    None => self.services.remove(&id).is_some(),
                }
            }
            shipshape_api::Kind::Endpoints => {
                let subsets = if deleted {
                    Vec::new()
                } else {
                    endpoint_subsets(&event.object)
                };
                if subsets.is_empty() {
                    self.endpoints.remove(&id).is_some()
                } else {
                    self.endpoints.insert(id, subsets.clone()) != Some(subsets)
                }
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn services_read_their_kind_addresses_and_ports() {
        let view = ServiceView::of(&json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.20",
                     "sessionAffinity": "ClientIP",
                     "ports": [{"name": "http", "port": 80, "nodePort": 30080}]},
        }))
        .unwrap();
        assert_eq!(view.kind, ServiceKind::NodePort);
        assert_eq!(view.cluster_ips, ["10.96.0.20".parse::<IpAddr>().unwrap()]);
        assert_eq!(view.ports[0].protocol, "TCP");
        assert_eq!(view.ports[0].node_port, Some(30080));
        assert_eq!(view.affinity_seconds, Some(10_800));
        let headless = ServiceView::of(&json!({
            "metadata": {"name": "db"}, "spec": {"clusterIP": "None"},
        }))
        .unwrap();
        assert_eq!(headless.kind, ServiceKind::Headless);
        assert!(headless.cluster_ips.is_empty());
    }

    #[test]
    fn endpoints_keep_only_ready_addresses() {
        let subsets = endpoint_subsets(&json!({"subsets": [
            {"addresses": [{"ip": "10.244.1.5", "hostname": "db-0"}],
             "notReadyAddresses": [{"ip": "10.244.1.6"}],
             "ports": [{"name": "sql", "port": 5432, "protocol": "TCP"}]},
            {"notReadyAddresses": [{"ip": "10.244.1.7"}], "ports": [{"port": 80}]},
        ]}));
        assert_eq!(subsets.len(), 1);
        assert_eq!(subsets[0].addresses.len(), 1);
        assert_eq!(subsets[0].addresses[0].hostname.as_deref(), Some("db-0"));
        assert_eq!(
            subsets[0].ports,
            [("sql".to_string(), 5432, "TCP".to_string())]
        );
    }
}
