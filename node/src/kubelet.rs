//! The kubelet of one real node: registers the node and renews its lease, follows the pods
//! bound to it, and gives each pod a worker ([`crate::pod_worker`]) that makes it run on
//! containerd. It runs as a [`Controller`] over the store's watch like every other actor, so a
//! restarted kubelet lists, adopts what is running, and removes what no longer belongs to it.

use shipshape_api::pointer::At;
use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kameo::actor::ActorRef;
use serde_json::Value;
use shipshape_actors::StoreActor;
use shipshape_actors::controller::{Controller, Dirty, Reconciled, because};
use shipshape_actors::store::{EventType, WatchEvent, parse_storage_key};
use shipshape_api::Kind;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::containerd::Containerd;
use crate::network::{NodeNetwork, namespaces_with_prefix};
use crate::pod_worker::{self, POD_UID_LABEL, netns_name};
use crate::registration::{LEASE_NAMESPACE, NodeInfo, heartbeat, is_ready};
use crate::runtime::NodeRuntime;
use crate::simulated::Cidr;

/// How one real node is set up.
#[derive(Clone, Debug)]
pub struct KubeletConfig {
    /// The node's name (`node-1`); its containerd namespace is `shipshape-node-1`.
    pub node: String,
    /// Its /24 of the pod CIDR.
    pub subnet: Cidr,
    /// Allocatable cpu in millicores.
    pub cpu_milli: u64,
    /// Allocatable memory in bytes.
    pub memory: u64,
    /// Pods it takes (Kubernetes: 110).
    pub max_pods: u32,
    /// How long its lease is valid.
    pub lease_duration: Duration,
    /// The data directory (pod files and logs under `pods/`, address pools under `cni/`).
    pub data_dir: PathBuf,
    /// Where the CNI plugins are.
    pub cni_dir: PathBuf,
    /// The cluster DNS address pods' resolv.conf names.
    pub cluster_dns: Ipv4Addr,
    /// The cluster domain (`cluster.local`).
    pub cluster_domain: String,
    /// Image pulls, shared by every node of the process so one image downloads once.
    pub images: std::sync::Arc<crate::pull::ImagePuller>,
    /// When unused images are removed, and the disk that decides it.
    pub image_gc: shipshape_reconciler::images::ImageGcPolicy,
    /// A directory on the filesystem containerd keeps its content on (its root).
    pub containerd_root: PathBuf,
}

impl KubeletConfig {
    /// The containerd namespace this node's containers live in.
    pub fn namespace(&self) -> String {
        containerd_namespace(&self.node)
    }
}

/// The containerd namespace of node `node`.
pub fn containerd_namespace(node: &str) -> String {
    format!("shipshape-{node}")
}

/// What the pod workers are told to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Keep running pods.
    Run,
    /// Stop following pods and leave their containers running (the next start adopts them).
    Keep,
    /// Stop every pod's containers and remove them, their namespaces and files.
    Teardown,
}

/// What the kubelet and its pod workers share.
pub struct Shared {
    /// The node's configuration.
    pub config: KubeletConfig,
    /// Its containerd namespace.
    pub runtime: NodeRuntime,
    /// Its pod network.
    pub network: NodeNetwork,
    /// The store, for status, events and ConfigMap/Secret reads.
    pub store: ActorRef<StoreActor>,
    /// Tells the workers to stop.
    pub stop: watch::Sender<Stop>,
    /// Whether the node is Ready in the store: a pod the node lifecycle controller marked
    /// not ready is reported again only then, so the two do not take turns rewriting it.
    node_ready: std::sync::atomic::AtomicBool,
    workers: Mutex<JoinSet<()>>,
    /// The node's image garbage collection.
    image_gc: crate::image_gc::ImageGc,
    /// The containerd the node runs on (for image removal).
    containerd: Containerd,
}

impl Shared {
    /// Whether the node is Ready in the store, as this kubelet last saw it.
    pub fn node_ready(&self) -> bool {
        self.node_ready.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Stops a node's pods when shipshape stops.
#[derive(Clone)]
pub struct KubeletHandle(Arc<Shared>);

impl KubeletHandle {
    /// The node's name.
    pub fn node(&self) -> &str {
        &self.0.config.node
    }

    /// The node's containerd namespace (for exec).
    pub fn runtime(&self) -> crate::runtime::NodeRuntime {
        self.0.runtime.clone()
    }

    /// Stops the pod workers: with `keep_workloads` the containers keep running for the next
    /// start to adopt; otherwise every container, namespace and the bridge are removed.
    pub async fn shutdown(&self, keep_workloads: bool) {
        let stop = if keep_workloads {
            Stop::Keep
        } else {
            Stop::Teardown
        };
        let _ = self.0.stop.send(stop);
        let mut workers = match self.0.workers.lock() {
            Ok(mut guard) => std::mem::take(&mut *guard),
            Err(_) => return,
        };
        while workers.join_next().await.is_some() {}
        if !keep_workloads {
            self.0.network.remove_node().await;
            crate::runtime::remove_cgroups(&format!("/shipshape/{}", self.0.config.node));
            // The last node to go takes the common parent with it.
            crate::runtime::remove_cgroups("/shipshape");
        }
    }
}

/// The kubelet of one node on containerd.
pub struct Kubelet {
    shared: Arc<Shared>,
    info: NodeInfo,
    node: Option<Value>,
    lease_rv: Option<u64>,
    /// Bound pods by storage key.
    pods: HashMap<String, Value>,
    /// Each pod worker's feed, by pod uid.
    workers: HashMap<String, watch::Sender<Option<Value>>>,
    /// The uid each pod key was last seen with.
    uids: HashMap<String, String>,
}

const ORPHANS: &str = "orphans";

/// The key image garbage collection runs under: after a re-list, when a pod leaves the node,
/// and every [`IMAGE_GC_PERIOD`] (the kubelet's `ImageGCPeriod`).
const IMAGE_GC: &str = "image-gc";

/// How often images are looked at even when nothing changes (Kubernetes: 5 minutes).
const IMAGE_GC_PERIOD: std::time::Duration = std::time::Duration::from_secs(300);

impl Kubelet {
    /// A kubelet for `config.node` on `containerd`; the handle stops its pods later.
    pub fn new(
        config: KubeletConfig,
        containerd: Containerd,
        store: ActorRef<StoreActor>,
    ) -> (Self, KubeletHandle) {
        let runtime = NodeRuntime::new(containerd.clone(), config.namespace());
        let network = NodeNetwork::new(
            &config.node,
            config.subnet,
            &config.cni_dir,
            &config.data_dir,
        );
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|k| k.trim().to_string())
            .unwrap_or_default();
        let os_image = std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                    .map(|v| v.trim_matches('"').to_string())
            })
            .unwrap_or_else(|| "Linux".into());
        let info = NodeInfo {
            name: config.node.clone(),
            subnet: Some(config.subnet),
            cpu_milli: config.cpu_milli,
            memory: config.memory,
            max_pods: config.max_pods,
            instance_type: "shipshape-containerd",
            kernel,
            os_image,
            runtime: format!("containerd://{}", containerd.version()),
        };
        let (stop, _) = watch::channel(Stop::Run);
        let image_gc =
            crate::image_gc::ImageGc::new(config.image_gc, config.containerd_root.clone());
        let shared = Arc::new(Shared {
            image_gc,
            containerd: containerd.clone(),
            config,
            runtime,
            network,
            store,
            stop,
            node_ready: std::sync::atomic::AtomicBool::new(true),
            workers: Mutex::new(JoinSet::new()),
        });
        let kubelet = Self {
            shared: shared.clone(),
            info,
            node: None,
            lease_rv: None,
            pods: HashMap::new(),
            workers: HashMap::new(),
            uids: HashMap::new(),
        };
        (kubelet, KubeletHandle(shared))
    }

    fn node_key(&self) -> String {
        format!("Node//{}", self.shared.config.node)
    }

    fn spawn_worker(&mut self, uid: &str, pod: Value) {
        let (feed, receiver) = watch::channel(Some(pod));
        let shared = self.shared.clone();
        let uid_owned = uid.to_string();
        if let Ok(mut workers) = self.shared.workers.lock() {
            workers.spawn(pod_worker::run(shared, uid_owned, receiver));
            // Reap the workers that finished, so the set does not grow with every pod ever run.
            while workers.try_join_next().is_some() {}
        }
        self.workers.insert(uid.to_string(), feed);
    }

    fn reconcile_pod(&mut self, key: &str) {
        let current = self.pods.get(key).cloned();
        let uid = current
            .as_ref()
            .and_then(|p| p.at("/metadata/uid"))
            .and_then(Value::as_str)
            .map(str::to_string);
        // A different incarnation under the same name: the old one's worker stops it.
        if let Some(previous) = self.uids.get(key).cloned()
            && Some(&previous) != uid.as_ref()
        {
            if let Some(feed) = self.workers.remove(&previous) {
                let _ = feed.send(None);
            }
            self.uids.remove(key);
        }
        let (Some(pod), Some(uid)) = (current, uid) else {
            return;
        };
        self.uids.insert(key.to_string(), uid.clone());
        match self.workers.get(&uid) {
            Some(feed) if !feed.is_closed() => {
                let _ = feed.send(Some(pod));
            }
            _ => {
                // A deleted pod whose worker already finished stays finished.
                if pod.at("/metadata/deletionTimestamp").is_some()
                    && self.workers.contains_key(&uid)
                {
                    return;
                }
                self.spawn_worker(&uid, pod);
            }
        }
    }

    /// Removes containers and namespaces of pods that are no longer bound to this node
    /// (deleted while shipshape was down).
    fn clean_orphans(&self) {
        // Every pod bound here, whether or not its worker has started yet.
        let known: HashSet<String> = self
            .uids
            .values()
            .cloned()
            .chain(self.pods.values().filter_map(|p| {
                p.at("/metadata/uid")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            }))
            .collect();
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let runtime = &shared.runtime;
            if let Ok(containers) = runtime.list().await {
                for container in containers {
                    let owner = container.labels.get(POD_UID_LABEL);
                    if owner.is_some_and(|uid| !known.contains(uid)) {
                        tracing::info!(id = %container.id, "removing an orphaned container");
                        if let Err(error) = runtime.remove(&container.id).await {
                            tracing::warn!(%error, id = %container.id, "could not remove it");
                        }
                    }
                }
            }
            let prefix = netns_name("");
            for name in namespaces_with_prefix(&prefix) {
                let uid = name.trim_start_matches(&prefix).to_string();
                if known.contains(&uid) {
                    continue;
                }
                // Only this node's: its address pool knows the pod.
                let ipam = shared.config.data_dir.join("cni").join(&shared.config.node);
                if pool_holds(&ipam, &uid) {
                    let _ = shared.network.remove_pod(&uid, &name).await;
                }
            }
        });
    }
}

/// Whether the host-local address pool in `ipam` (the plugin's `dataDir`) has an address
/// reserved for `pod_uid`. host-local keeps one folder per network, and in it a file per
/// address whose first line is the container id the address was given to (the pod's uid).
fn pool_holds(ipam: &std::path::Path, pod_uid: &str) -> bool {
    let entries = |dir: &std::path::Path| {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.path())
            .collect::<Vec<_>>()
    };
    entries(ipam)
        .into_iter()
        .filter(|path| path.is_dir())
        .flat_map(|network| entries(&network))
        .any(|file| {
            std::fs::read_to_string(file).is_ok_and(|text| text.lines().next() == Some(pod_uid))
        })
}

impl Controller for Kubelet {
    fn name(&self) -> &'static str {
        "kubelet"
    }

    fn kinds(&self) -> Vec<Kind> {
        vec![Kind::Node, Kind::Lease, Kind::Pod]
    }

    fn reset(&mut self) {
        self.node = None;
        self.lease_rv = None;
        self.pods.clear();
    }

    fn observe(&mut self, event: &WatchEvent, dirty: &mut Dirty) {
        let Some(key) = parse_storage_key(&event.key) else {
            return;
        };
        let me = &self.shared.config.node;
        match key.kind {
            Kind::Node if &key.name == me => {
                self.node = (event.kind != EventType::Deleted).then(|| event.object.clone());
                let ready = self.node.as_ref().is_some_and(is_ready);
                if !ready {
                    dirty.mark(self.node_key(), || because(event));
                }
                let was = self
                    .shared
                    .node_ready
                    .swap(ready, std::sync::atomic::Ordering::Relaxed);
                if ready && !was {
                    // Ready again: workers report pods marked not ready meanwhile.
                    for pod in self.pods.keys() {
                        dirty.mark(pod.clone(), || "node ready again".into());
                    }
                }
            }
            Kind::Lease if key.namespace == LEASE_NAMESPACE && &key.name == me => {
                self.lease_rv =
                    (event.kind != EventType::Deleted).then_some(event.resource_version);
                if event.kind == EventType::Deleted {
                    dirty.mark(self.node_key(), || because(event));
                }
            }
            Kind::Pod => {
                let bound = event.kind != EventType::Deleted
                    && event.object.at("/spec/nodeName").and_then(Value::as_str)
                        == Some(me.as_str());
                if bound {
                    self.pods.insert(event.key.clone(), event.object.clone());
                    dirty.mark(event.key.clone(), || because(event));
                } else if self.pods.remove(&event.key).is_some()
                    || self.uids.contains_key(&event.key)
                {
                    dirty.mark(event.key.clone(), || because(event));
                    // Its images may be unused now.
                    dirty.mark(IMAGE_GC, || because(event));
                }
            }
            _ => {}
        }
    }

    fn listed(&mut self, dirty: &mut Dirty) {
        dirty.mark(self.node_key(), || "registering".into());
        // Pods that disappeared while the watch was re-listing.
        let gone: Vec<String> = self
            .uids
            .keys()
            .filter(|k| !self.pods.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            dirty.mark(key, || "gone after a re-list".into());
        }
        dirty.mark(ORPHANS, || "listed".into());
        dirty.mark(IMAGE_GC, || "listed".into());
    }

    fn reconcile(&mut self, key: &str, now: jiff::Timestamp) -> Reconciled {
        if key == self.node_key() {
            return heartbeat(
                &self.info,
                self.node.as_ref(),
                self.lease_rv,
                self.shared.config.lease_duration,
                now,
            );
        }
        if key == ORPHANS {
            self.clean_orphans();
            return Reconciled::default();
        }
        if key == IMAGE_GC {
            let shared = self.shared.clone();
            tokio::spawn(async move {
                if let Err(error) = shared
                    .image_gc
                    .collect(&shared.containerd, &shared.runtime)
                    .await
                {
                    tracing::warn!(%error, node = %shared.config.node, "image garbage collection failed");
                }
            });
            return Reconciled {
                requeue_after: Some(IMAGE_GC_PERIOD),
                ..Reconciled::default()
            };
        }
        self.reconcile_pod(key);
        Reconciled::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pods_address_is_found_in_the_host_local_pool() {
        let dir = tempfile::tempdir().expect("tempdir");
        // host-local's layout: DATADIR/<network>/<address> holding "id\r\nifname", beside its
        // lock and last-reserved files.
        let network = dir.path().join("shipshape-ship-node-1-ab12");
        std::fs::create_dir_all(&network).expect("mkdir");
        std::fs::write(network.join("10.244.0.7"), "uid-1\r\neth0").expect("write");
        std::fs::write(network.join("last_reserved_ip.0"), "10.244.0.7").expect("write");
        std::fs::write(network.join("lock"), "").expect("write");
        assert!(pool_holds(dir.path(), "uid-1"));
        assert!(!pool_holds(dir.path(), "uid-2"));
        assert!(!pool_holds(&dir.path().join("missing"), "uid-1"));
    }
}
