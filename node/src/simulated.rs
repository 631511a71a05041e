//! The simulated kubelet: nodes that register, renew their leases, and report the pods bound
//! to them Running (and Ready) after a delay, without running anything. A test instrument for
//! scale tests and for trying shipshape without root; it can be told to crash a pod or to let
//! a node vanish (stop renewing its lease and reporting), which is how node loss is tested.
//!
//! One [`SimulatedNodes`] serves many nodes: five thousand kubelets each following every pod
//! would cost five thousand copies of the pod stream for nothing, since a simulated node does
//! no work of its own.

use shipshape_api::pointer::At;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use foldhash::HashMap;

use serde_json::{Value, json};
use shipshape_actors::Write;
use shipshape_actors::controller::{Controller, Dirty, Reconciled, because};
use shipshape_actors::store::{Batch, EventType, Precondition, WatchEvent, parse_storage_key};
use shipshape_api::Kind;

use shipshape_actors::events::event;
use shipshape_api::object::ObjectKey;

use crate::pod_worker::{
    DEADLINE_EXCEEDED, DEADLINE_MESSAGE, active_deadline, active_deadline_left,
};
use crate::registration::{LEASE_NAMESPACE, NodeInfo, heartbeat, is_ready, seconds_text};

/// A block of addresses: `10.244.0.0/16`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    /// The first address.
    pub base: Ipv4Addr,
    /// The prefix length.
    pub prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (address, prefix) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not a CIDR (e.g. 10.244.0.0/16)"))?;
        let base: Ipv4Addr = address
            .parse()
            .map_err(|_| format!("{address:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 24)
            .ok_or_else(|| format!("{text:?}: the prefix must be a number up to 24"))?;
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        Ok(Cidr {
            base: Ipv4Addr::from(u32::from(base) & mask),
            prefix,
        })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

impl Cidr {
    /// The `index`th /24 inside this block (one per node), if there is one.
    pub fn node_subnet(&self, index: usize) -> Option<Cidr> {
        let subnets = 1usize << (24 - self.prefix);
        if index >= subnets {
            return None;
        }
        let base = u32::from(self.base) + (u32::try_from(index).ok()? << 8);
        Some(Cidr {
            base: Ipv4Addr::from(base),
            prefix: 24,
        })
    }

    fn host(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) + n)
    }
}

/// How the simulated nodes behave.
#[derive(Clone, Debug)]
pub struct SimulatedConfig {
    /// How many nodes (`node-1` … `node-N`).
    pub nodes: usize,
    /// Each node's allocatable cpu in millicores.
    pub cpu_milli: u64,
    /// Each node's allocatable memory in bytes.
    pub memory: u64,
    /// Pods per node (Kubernetes' default is 110).
    pub max_pods: u32,
    /// The pod CIDR the nodes' /24s come from.
    pub pod_cidr: Cidr,
    /// How long a bound pod takes to become Running.
    pub start_delay: Duration,
    /// How long a lease is valid (Kubernetes: 40 s); nodes renew at a quarter of it.
    pub lease_duration: Duration,
}

struct SimNode {
    subnet: Option<Cidr>,
    /// The Node object as last seen (None until registered).
    object: Option<Value>,
    lease_rv: Option<u64>,
    vanished: bool,
    used_ips: BTreeSet<u32>,
}

struct SimPod {
    node: String,
    uid: String,
    object_rv: u64,
    seen_bound: Instant,
    /// The readiness last reported (None: not reported Running yet).
    reported: Option<bool>,
    terminating: bool,
    ip: Option<u32>,
    crashes: u32,
    crashed_until: Option<Instant>,
    containers: Vec<(String, String)>,
    /// Its QoS class (kept in every status the simulated kubelet writes, as a kubelet does).
    qos: &'static str,
    /// Its `spec.activeDeadlineSeconds`.
    active_deadline: Option<u64>,
    /// Its `status.startTime`, once reported Running (the active deadline counts from it).
    start_time: Option<jiff::Timestamp>,
    /// Failed past its active deadline: nothing more is reported (it never restarts).
    deadline_exceeded: bool,
}

/// The simulated kubelets of a set of nodes.
pub struct SimulatedNodes {
    config: SimulatedConfig,
    nodes: BTreeMap<String, SimNode>,
    pods: HashMap<String, SimPod>,
}

fn node_key(name: &str) -> String {
    format!("Node//{name}")
}

impl SimulatedNodes {
    /// `config.nodes` nodes, registered once the actor lists the store.
    pub fn new(config: SimulatedConfig) -> Self {
        let mut this = Self {
            config,
            nodes: BTreeMap::new(),
            pods: HashMap::default(),
        };
        this.reset();
        this
    }

    /// Makes a node vanish: it stops renewing its lease and reporting its pods, as a machine
    /// that lost power would.
    pub fn vanish(&mut self, node: &str) {
        if let Some(node) = self.nodes.get_mut(node) {
            node.vanished = true;
        }
    }

    /// Crashes a pod's containers once: it turns not ready, counts a restart, and is ready
    /// again after the start delay.
    pub fn crash(&mut self, pod_key: &str, dirty: &mut Dirty) {
        if let Some(pod) = self.pods.get_mut(pod_key)
            && pod.reported.is_some()
        {
            pod.crashes += 1;
            pod.crashed_until = Some(Instant::now() + self.config.start_delay);
            dirty.mark(pod_key.to_string(), || "crash requested".into());
        }
    }

    fn reconcile_node(&mut self, name: &str, now: jiff::Timestamp) -> Reconciled {
        let Some(node) = self.nodes.get(name) else {
            return Reconciled::default();
        };
        if node.vanished {
            return Reconciled::default();
        }
        let info = NodeInfo {
            name: name.to_string(),
            subnet: node.subnet,
            cpu_milli: self.config.cpu_milli,
            memory: self.config.memory,
            max_pods: self.config.max_pods,
            instance_type: "shipshape-simulated",
            kernel: "simulated".into(),
            os_image: "shipshape simulated node".into(),
            runtime: "simulated://1".into(),
        };
        heartbeat(
            &info,
            node.object.as_ref(),
            node.lease_rv,
            self.config.lease_duration,
            now,
        )
    }

    fn reconcile_pod(&mut self, key: &str, now: jiff::Timestamp) -> Reconciled {
        let start_delay = self.config.start_delay;
        let Some(pod) = self.pods.get_mut(key) else {
            return Reconciled::default();
        };
        let Some(node) = self.nodes.get_mut(&pod.node) else {
            return Reconciled::default();
        };
        if node.vanished {
            return Reconciled::default();
        }
        let Some(pod_key) = parse_storage_key(key) else {
            return Reconciled::default();
        };
        if pod.deadline_exceeded && !pod.terminating {
            return Reconciled::default();
        }
        if pod.terminating {
            // Nothing runs, so nothing needs its grace period: the pod is gone at once.
            return Reconciled {
                batches: vec![Batch {
                    writes: vec![Write::Delete {
                        key: pod_key,
                        precondition: Precondition::Uid(pod.uid.clone()),
                    }],
                    audit: None,
                }],
                requeue_after: None,
            };
        }
        let now_instant = Instant::now();
        let crashed = pod.crashed_until.filter(|until| *until > now_instant);
        if crashed.is_none() {
            pod.crashed_until = None;
        }
        let started_at = pod.seen_bound + start_delay;
        let (ready, mut wait) = match crashed {
            Some(until) => (false, Some(until - now_instant)),
            None if pod.reported.is_none() && started_at > now_instant => {
                // Still "pulling and starting": report nothing yet.
                return Reconciled {
                    batches: Vec::new(),
                    requeue_after: Some(started_at - now_instant),
                };
            }
            None => (true, None),
        };
        // Started (as far as anyone can tell) now, unless reported before.
        let start = *pod.start_time.get_or_insert(now);
        match active_deadline_left(pod.active_deadline, start, now) {
            Some(left) if left.is_zero() => {
                pod.deadline_exceeded = true;
                return Reconciled {
                    batches: vec![deadline_exceeded(pod, pod_key, node.subnet, start, now)],
                    requeue_after: None,
                };
            }
            Some(left) => wait = Some(wait.map_or(left, |w| w.min(left))),
            None => {}
        }
        if pod.reported == Some(ready) {
            return Reconciled {
                batches: Vec::new(),
                requeue_after: wait,
            };
        }
        let ip = match (pod.ip, node.subnet) {
            (Some(ip), _) => Some(ip),
            (None, Some(_)) => {
                let free = (2..255).find(|n| !node.used_ips.contains(n));
                if let Some(n) = free {
                    node.used_ips.insert(n);
                    pod.ip = Some(n);
                }
                free
            }
            (None, None) => None,
        };
        let time = seconds_text(now);
        let start_time = seconds_text(start);
        let pod_ip = node.subnet.zip(ip).map(|(s, n)| s.host(n).to_string());
        let host_ip = node.subnet.map(|s| s.host(1).to_string());
        let ready_text = if ready { "True" } else { "False" };
        let containers: Vec<Value> = pod
            .containers
            .iter()
            .map(|(name, image)| {
                let mut status = json!({
                    "name": name, "image": image, "imageID": "",
                    "containerID": format!("simulated://{}-{name}", pod.uid),
                    "ready": ready, "started": true, "restartCount": pod.crashes,
                    "state": {"running": {"startedAt": time}},
                });
                if pod.crashes > 0 {
                    status["lastState"] = json!({"terminated": {
                        "exitCode": 137, "reason": "Error",
                        "startedAt": time, "finishedAt": time,
                    }});
                }
                status
            })
            .collect();
        let mut status = json!({
            "phase": "Running",
            "startTime": start_time,
            "qosClass": pod.qos,
            "conditions": [
                {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": time},
                {"type": "Initialized", "status": "True", "lastTransitionTime": time},
                {"type": "Ready", "status": ready_text, "lastTransitionTime": time},
                {"type": "ContainersReady", "status": ready_text, "lastTransitionTime": time},
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": time},
            ],
            "containerStatuses": containers,
        });
        if let (Some(pod_ip), Some(host_ip)) = (pod_ip, host_ip) {
            status["podIP"] = json!(pod_ip);
            status["podIPs"] = json!([{"ip": pod_ip}]);
            status["hostIP"] = json!(host_ip);
            status["hostIPs"] = json!([{"ip": host_ip}]);
        }
        pod.reported = Some(ready);
        Reconciled {
            batches: vec![Batch {
                writes: vec![Write::UpdateStatus {
                    key: pod_key,
                    precondition: Some(Precondition::Uid(pod.uid.clone())),
                    status,
                }],
                audit: None,
            }],
            requeue_after: wait,
        }
    }
}

impl Controller for SimulatedNodes {
    fn name(&self) -> &'static str {
        "kubelet-simulated"
    }

    fn kinds(&self) -> Vec<Kind> {
        vec![Kind::Node, Kind::Lease, Kind::Pod]
    }

    fn reset(&mut self) {
        let vanished: BTreeSet<String> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.vanished)
            .map(|(name, _)| name.clone())
            .collect();
        self.nodes = (0..self.config.nodes)
            .map(|i| {
                let name = format!("node-{}", i + 1);
                let node = SimNode {
                    subnet: self.config.pod_cidr.node_subnet(i),
                    object: None,
                    lease_rv: None,
                    vanished: vanished.contains(&name),
                    used_ips: BTreeSet::new(),
                };
                (name, node)
            })
            .collect();
        self.pods.clear();
    }

    fn observe(&mut self, event: &WatchEvent, dirty: &mut Dirty) {
        let Some(key) = parse_storage_key(&event.key) else {
            return;
        };
        match key.kind {
            Kind::Node => {
                if let Some(node) = self.nodes.get_mut(&key.name) {
                    node.object = (event.kind != EventType::Deleted).then(|| event.object.clone());
                    let ready = node.object.as_ref().is_some_and(is_ready);
                    if !ready {
                        dirty.mark(node_key(&key.name), || because(event));
                    }
                }
            }
            Kind::Lease if key.namespace == LEASE_NAMESPACE => {
                if let Some(node) = self.nodes.get_mut(&key.name) {
                    node.lease_rv =
                        (event.kind != EventType::Deleted).then_some(event.resource_version);
                    if event.kind == EventType::Deleted {
                        dirty.mark(node_key(&key.name), || because(event));
                    }
                }
            }
            Kind::Pod => {
                let object = &event.object;
                let bound = object
                    .at("/spec/nodeName")
                    .and_then(Value::as_str)
                    .filter(|n| self.nodes.contains_key(*n));
                if event.kind == EventType::Deleted || bound.is_none() {
                    if let Some(pod) = self.pods.remove(&event.key)
                        && let (Some(ip), Some(node)) = (pod.ip, self.nodes.get_mut(&pod.node))
                    {
                        node.used_ips.remove(&ip);
                    }
                    return;
                }
                let Some(node_name) = bound else { return };
                let ip = object
                    .at("/status/podIP")
                    .and_then(Value::as_str)
                    .and_then(|ip| ip.parse::<Ipv4Addr>().ok());
                let terminating = object.at("/metadata/deletionTimestamp").is_some();
                let running = object.at("/status/phase").and_then(Value::as_str) == Some("Running");
                let ready = is_ready(object);
                let pod = self
                    .pods
                    .entry(event.key.clone())
                    .or_insert_with(|| SimPod {
                        node: node_name.to_string(),
                        uid: String::new(),
                        object_rv: 0,
                        seen_bound: Instant::now(),
                        reported: None,
                        terminating: false,
                        ip: None,
                        crashes: 0,
                        crashed_until: None,
                        containers: Vec::new(),
                        qos: "BestEffort",
                        active_deadline: None,
                        start_time: None,
                        deadline_exceeded: false,
                    });
                let uid = object
                    .at("/metadata/uid")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                // A pod's spec does not change after it is made: read it once per incarnation.
                if pod.uid != uid {
                    pod.uid = uid.to_string();
                    pod.containers = containers(object);
                    pod.qos = shipshape_api::qos::qos_class(&object["spec"]);
                }
                pod.object_rv = event.resource_version;
                pod.terminating = terminating;
                // activeDeadlineSeconds may be set or shortened on a running pod.
                pod.active_deadline = active_deadline(object);
                if pod.start_time.is_none() {
                    pod.start_time = object
                        .at("/status/startTime")
                        .and_then(Value::as_str)
                        .and_then(|t| t.parse().ok());
                }
                if object.at("/status/reason").and_then(Value::as_str) == Some(DEADLINE_EXCEEDED) {
                    pod.deadline_exceeded = true;
                }
                if pod.reported.is_none() && running {
                    pod.reported = Some(ready);
                }
                if pod.ip.is_none()
                    && let (Some(ip), Some(node)) = (ip, self.nodes.get_mut(node_name))
                    && let Some(subnet) = node.subnet
                {
                    let n = u32::from(ip).wrapping_sub(u32::from(subnet.base));
                    if n < 256 {
                        node.used_ips.insert(n);
                        pod.ip = Some(n);
                    }
                }
                let deadline_pending = pod.active_deadline.is_some() && !pod.deadline_exceeded;
                if terminating || pod.reported.is_none() || deadline_pending {
                    dirty.mark(event.key.clone(), || because(event));
                }
            }
            _ => {}
        }
    }

    fn listed(&mut self, dirty: &mut Dirty) {
        // Register (or re-register) every node, and start renewing its lease.
        for name in self.nodes.keys() {
            dirty.mark(node_key(name), || "registering".into());
        }
    }

    fn reconcile(&mut self, key: &str, now: jiff::Timestamp) -> Reconciled {
        match key.strip_prefix("Node//") {
            Some(name) => self.reconcile_node(name, now),
            None => self.reconcile_pod(key, now),
        }
    }
}

/// The status (and event) of a simulated pod past its active deadline, as a kubelet reports
/// one: Failed with reason DeadlineExceeded, its containers terminated, nothing ready.
fn deadline_exceeded(
    pod: &SimPod,
    key: ObjectKey,
    subnet: Option<Cidr>,
    start: jiff::Timestamp,
    now: jiff::Timestamp,
) -> Batch {
    let time = seconds_text(now);
    let started = seconds_text(start);
    let containers: Vec<Value> = pod
        .containers
        .iter()
        .map(|(name, image)| {
            json!({
                "name": name, "image": image, "imageID": "",
                "containerID": format!("simulated://{}-{name}", pod.uid),
                "ready": false, "started": false, "restartCount": pod.crashes,
                "state": {"terminated": {
                    "exitCode": 137, "reason": "Error", "startedAt": started, "finishedAt": time,
                }},
            })
        })
        .collect();
    let not_ready = json!({"status": "False", "reason": "PodFailed", "lastTransitionTime": time});
    let condition = |kind: &str, mut body: Value| {
        body["type"] = json!(kind);
        body
    };
    let mut status = json!({
        "phase": "Failed",
        "reason": DEADLINE_EXCEEDED,
        "message": DEADLINE_MESSAGE,
        "startTime": started,
        "qosClass": pod.qos,
        "conditions": [
            {"type": "PodReadyToStartContainers", "status": "False", "lastTransitionTime": time},
            {"type": "Initialized", "status": "True", "lastTransitionTime": started},
            condition("Ready", not_ready.clone()),
            condition("ContainersReady", not_ready),
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": started},
        ],
        "containerStatuses": containers,
    });
    let pod_ip = subnet.zip(pod.ip).map(|(s, n)| s.host(n).to_string());
    if let (Some(pod_ip), Some(subnet)) = (pod_ip, subnet) {
        let host_ip = subnet.host(1).to_string();
        status["podIP"] = json!(pod_ip);
        status["podIPs"] = json!([{"ip": pod_ip}]);
        status["hostIP"] = json!(host_ip);
        status["hostIPs"] = json!([{"ip": host_ip}]);
    }
    let object = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": key.name, "namespace": key.namespace, "uid": pod.uid},
    });
    Batch {
        writes: vec![
            event(
                "kubelet",
                &object,
                "Normal",
                DEADLINE_EXCEEDED,
                DEADLINE_MESSAGE.to_string(),
                now,
            ),
            Write::UpdateStatus {
                key,
                precondition: Some(Precondition::Uid(pod.uid.clone())),
                status,
            },
        ],
        audit: None,
    }
}

/// A pod's containers' names and images, as its statuses list them.
fn containers(pod: &Value) -> Vec<(String, String)> {
    pod.at("/spec/containers")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .map(|c| {
                    let field = |f: &str| {
                        c.get(f)
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string()
                    };
                    (field("name"), field("image"))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_simulated_pod_fails_at_its_active_deadline_and_stays_failed() {
        let mut nodes = SimulatedNodes::new(SimulatedConfig {
            nodes: 1,
            cpu_milli: 1000,
            memory: 1 << 30,
            max_pods: 110,
            pod_cidr: "10.244.0.0/16".parse().expect("cidr"),
            start_delay: Duration::ZERO,
            lease_duration: Duration::from_secs(40),
        });
        let key = "Pod/demo/batch";
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "batch", "namespace": "demo", "uid": "u1"},
            "spec": {"nodeName": "node-1", "activeDeadlineSeconds": 3,
                     "containers": [{"name": "main", "image": "busybox"}]},
        });
        let mut dirty = Dirty::default();
        let seen = |object: &Value| WatchEvent {
            resource_version: 1,
            kind: EventType::Modified,
            key: key.into(),
            object: object.clone(),
        };
        nodes.observe(&seen(&pod), &mut dirty);
        let start: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().expect("timestamp");
        let at = |seconds: i64| {
            start
                .checked_add(jiff::SignedDuration::from_secs(seconds))
                .expect("timestamp")
        };
        let status_of = |reconciled: &Reconciled| {
            reconciled
                .batches
                .iter()
                .flat_map(|b| &b.writes)
                .find_map(|w| match w {
                    Write::UpdateStatus { status, .. } => Some(status.clone()),
                    _ => None,
                })
        };
        let running = nodes.reconcile(key, start);
        let status = status_of(&running).expect("a Running status");
        assert_eq!(status["phase"], "Running");
        assert_eq!(running.requeue_after, Some(Duration::from_secs(3)));
        let early = nodes.reconcile(key, at(2));
        assert!(early.batches.is_empty());
        assert_eq!(early.requeue_after, Some(Duration::from_secs(1)));
        let failed = nodes.reconcile(key, at(3));
        let status = status_of(&failed).expect("a Failed status");
        assert_eq!(status["phase"], "Failed");
        assert_eq!(status["reason"], "DeadlineExceeded");
        assert_eq!(status["message"], DEADLINE_MESSAGE);
        assert_eq!(status["startTime"], "2026-01-01T00:00:00Z");
        assert!(status["containerStatuses"][0]["state"]["terminated"].is_object());
        let event = failed
            .batches
            .iter()
            .flat_map(|b| &b.writes)
            .find_map(|w| match w {
                Write::Create { object, .. } if object["kind"] == "Event" => Some(object.clone()),
                _ => None,
            });
        assert_eq!(
            event.map(|e| (e["reason"].clone(), e["involvedObject"]["uid"].clone())),
            Some((json!("DeadlineExceeded"), json!("u1")))
        );
        assert_eq!(failed.requeue_after, None);
        // Never reported again (nor restarted), even after the simulated kubelet lists anew.
        assert!(nodes.reconcile(key, at(60)).batches.is_empty());
        nodes.reset();
        let mut stored = pod.clone();
        stored["status"] = status;
        nodes.observe(&seen(&stored), &mut dirty);
        assert!(nodes.reconcile(key, at(120)).batches.is_empty());
    }

    #[test]
    fn gives_each_node_its_own_slash_24() {
        let cidr: Cidr = "10.244.0.0/16".parse().expect("cidr");
        assert_eq!(
            cidr.node_subnet(0).map(|c| c.to_string()),
            Some("10.244.0.0/24".into())
        );
        assert_eq!(
            cidr.node_subnet(3).map(|c| c.to_string()),
            Some("10.244.3.0/24".into())
        );
        assert_eq!(cidr.node_subnet(256), None, "a /16 holds 256 nodes");
        assert!("10.244.0.0".parse::<Cidr>().is_err());
        assert!("10.244.0.0/28".parse::<Cidr>().is_err());
    }
}
