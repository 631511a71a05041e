//! What every kubelet writes about its node, simulated or real: the Node object (capacity,
//! addresses, pod CIDR, Ready), Ready again after an absence, and the Lease it renews at a
//! quarter of its duration so the node lifecycle controller knows it is alive.

use std::time::Duration;

use serde_json::{Value, json};
use shipshape_actors::Write;
use shipshape_actors::controller::Reconciled;
use shipshape_actors::controllers::condition_is_true;
use shipshape_actors::store::{Batch, Precondition};
use shipshape_api::{Kind, ObjectKey};

use crate::simulated::Cidr;

/// The namespace node leases live in (Kubernetes' name).
pub const LEASE_NAMESPACE: &str = "kube-node-lease";

/// The version nodes report (the API server's, as a kubelet of the same release would).
pub const KUBELET_VERSION: &str = "v1.37.0-shipshape";

/// What a node says about itself.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    /// Its name (`node-1`).
    pub name: String,
    /// Its /24 of the pod CIDR; the first address is its InternalIP.
    pub subnet: Option<Cidr>,
    /// Allocatable cpu in millicores.
    pub cpu_milli: u64,
    /// Allocatable memory in bytes.
    pub memory: u64,
    /// Pods it takes.
    pub max_pods: u32,
    /// The instance-type label (`shipshape-containerd`).
    pub instance_type: &'static str,
    /// Kernel version (nodeInfo).
    pub kernel: String,
    /// OS image (nodeInfo).
    pub os_image: String,
    /// Container runtime and version (`containerd://1.6.20`).
    pub runtime: String,
}

/// The key of a stored object.
pub fn object_key(kind: Kind, namespace: &str, name: &str) -> ObjectKey {
    ObjectKey {
        kind,
        namespace: namespace.to_string(),
        name: name.to_string(),
    }
}

/// A time to whole seconds, as Kubernetes writes conditions.
pub fn seconds_text(now: jiff::Timestamp) -> String {
    jiff::Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}

fn ready_condition(now: &str) -> Value {
    json!({
        "type": "Ready", "status": "True", "reason": "KubeletReady",
        "message": "kubelet is posting ready status",
        "lastHeartbeatTime": now, "lastTransitionTime": now,
    })
}

/// Whether an object's Ready condition is True.
pub fn is_ready(object: &Value) -> bool {
    condition_is_true(object, "Ready")
}

/// The Node object a kubelet registers.
pub fn node_object(info: &NodeInfo, now: &str) -> Value {
    let cpu = format!("{}m", info.cpu_milli);
    let memory = format!("{}Ki", info.memory / 1024);
    let pods = info.max_pods.to_string();
    let name = &info.name;
    let mut spec = json!({});
    let mut addresses = vec![json!({"type": "Hostname", "address": name})];
    if let Some(subnet) = info.subnet {
        spec = json!({"podCIDR": subnet.to_string(), "podCIDRs": [subnet.to_string()]});
        let gateway = std::net::Ipv4Addr::from(u32::from(subnet.base) + 1);
        addresses.insert(
            0,
            json!({"type": "InternalIP", "address": gateway.to_string()}),
        );
    }
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": std::env::consts::ARCH,
                "node.kubernetes.io/instance-type": info.instance_type,
            },
        },
        "spec": spec,
        "status": {
            "capacity": {"cpu": cpu, "memory": memory, "pods": pods},
            "allocatable": {"cpu": cpu, "memory": memory, "pods": pods},
            "conditions": [ready_condition(now)],
            "addresses": addresses,
            "nodeInfo": {
                "machineID": name, "systemUUID": name, "bootID": name,
                "kernelVersion": info.kernel, "osImage": info.os_image,
                "containerRuntimeVersion": info.runtime, "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": KUBELET_VERSION, "operatingSystem": "linux",
                "architecture": std::env::consts::ARCH,
            },
        },
    })
}

/// One heartbeat: register the node if it is not (or report it Ready again if it was marked
/// otherwise), and create or renew its lease. Asks to run again at a quarter of the lease.
pub fn heartbeat(
    info: &NodeInfo,
    node: Option<&Value>,
    lease_rv: Option<u64>,
    lease_duration: Duration,
    now: jiff::Timestamp,
) -> Reconciled {
    let name = &info.name;
    let time = seconds_text(now);
    let mut writes = Vec::new();
    match node {
        None => writes.push(Write::Create {
            object: node_object(info, &time),
            applied: None,
            application: None,
        }),
        Some(object) if !is_ready(object) => {
            // Back after an absence (or marked NotReady by the node lifecycle controller):
            // report ready again.
            let mut status = object.get("status").cloned().unwrap_or_else(|| json!({}));
            status["conditions"] = json!([ready_condition(&time)]);
            writes.push(Write::UpdateStatus {
                key: object_key(Kind::Node, "", name),
                precondition: None,
                status,
            });
        }
        Some(_) => {}
    }
    let lease_key = object_key(Kind::Lease, LEASE_NAMESPACE, name);
    let micro = now.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    writes.push(match lease_rv {
        None => Write::Create {
            object: json!({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": name, "namespace": LEASE_NAMESPACE},
                "spec": {
                    "holderIdentity": name,
                    "leaseDurationSeconds": lease_duration.as_secs(),
                    "renewTime": micro,
                },
            }),
            applied: None,
            application: None,
        },
        Some(rv) => Write::Patch {
            key: lease_key,
            precondition: Some(Precondition::ResourceVersion(rv)),
            patch: json!({"spec": {"renewTime": micro}}),
        },
    });
    // Leases and heartbeats are not audit records (DESIGN.md).
    Reconciled {
        batches: vec![Batch {
            writes,
            audit: None,
        }],
        requeue_after: Some(lease_duration / 4),
    }
}
