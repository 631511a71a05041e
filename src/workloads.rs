//! The part of the control plane that runs workloads: controllers, the scheduler and the
//! nodes, each a [`ControllerActor`] over the store's watch.

use kameo::actor::ActorRef;
use shipshape_actors::StoreActor;
use shipshape_actors::controller::{Controller, ControllerActor};
use shipshape_actors::controllers::cronjob::CronJobController;
use shipshape_actors::controllers::daemonset::DaemonSetController;
use shipshape_actors::controllers::deployment::DeploymentController;
use shipshape_actors::controllers::endpoints::EndpointsController;
use shipshape_actors::controllers::gc::GarbageCollector;
use shipshape_actors::controllers::job::JobController;
use shipshape_actors::controllers::nodes::NodeLifecycle;
use shipshape_actors::controllers::replicaset::ReplicaSetController;
use shipshape_actors::controllers::scheduler::Scheduler;
use shipshape_actors::controllers::services::ServiceAllocator;
use shipshape_actors::controllers::statefulset::StatefulSetController;
use shipshape_actors::controllers::volumes::VolumeController;
use shipshape_dns::{DnsServer, DnsView, ZoneCell, ZoneConfig};
use shipshape_ingress::{IngressConfig, IngressController, IngressServer};
use shipshape_node::containerd::Containerd;
use shipshape_node::kubelet::{Kubelet, KubeletConfig, KubeletHandle};
use shipshape_node::proxy::{ProxyConfig, ProxyHandle, ServiceProxy};
use shipshape_node::{SimulatedConfig, SimulatedNodes};
use shipshape_reconciler::services::ServiceRange;

/// How Services are reached: addresses, the cluster DNS and the proxy.
pub(crate) struct ServiceNetwork {
    /// The service CIDR.
    pub(crate) range: ServiceRange,
    /// What the cluster DNS serves.
    pub(crate) zone: ZoneConfig,
    /// Where the cluster DNS listens for people and tests (port 0: any free port).
    pub(crate) dns_listen: std::net::SocketAddr,
    /// Where names outside the cluster go (none: REFUSED).
    pub(crate) dns_upstream: Option<std::net::SocketAddr>,
    /// The pod network, for the proxy's masquerading.
    pub(crate) pod_cidr: shipshape_node::Cidr,
    /// How much faster than the wall clock CronJob schedules run (1: real time).
    pub(crate) cronjob_time_scale: u32,
    /// The data directory (the proxy remembers host settings it changed there).
    pub(crate) data_dir: std::path::PathBuf,
    /// Addresses for LoadBalancer Services (none: they stay pending).
    pub(crate) lb_pool: Option<shipshape_reconciler::services::LoadBalancerPool>,
    /// Where the ingress serves HTTP and HTTPS (each `None`: off).
    pub(crate) ingress: (Option<std::net::SocketAddr>, Option<std::net::SocketAddr>),
}

/// What runs the pods.
pub(crate) enum Nodes {
    /// Simulated nodes (one actor serves them all).
    Simulated(SimulatedConfig),
    /// One kubelet per node on containerd.
    Containerd {
        /// The connection every kubelet shares.
        containerd: Containerd,
        /// One per node.
        kubelets: Vec<KubeletConfig>,
    },
}

enum NodeActors {
    Simulated(ActorRef<ControllerActor<SimulatedNodes>>),
    Kubelets(Vec<(ActorRef<ControllerActor<Kubelet>>, KubeletHandle)>),
}

/// The running controllers, scheduler and nodes.
pub(crate) struct Workloads {
    deployment: ActorRef<ControllerActor<DeploymentController>>,
    replica_set: ActorRef<ControllerActor<ReplicaSetController>>,
    replication: ActorRef<ControllerActor<ReplicaSetController>>,
    scheduler: ActorRef<ControllerActor<Scheduler>>,
    endpoints: ActorRef<ControllerActor<EndpointsController>>,
    garbage: ActorRef<ControllerActor<GarbageCollector>>,
    jobs: ActorRef<ControllerActor<JobController>>,
    daemon_sets: ActorRef<ControllerActor<DaemonSetController>>,
    stateful_sets: ActorRef<ControllerActor<StatefulSetController>>,
    volumes: ActorRef<ControllerActor<VolumeController>>,
    cronjobs: ActorRef<ControllerActor<CronJobController>>,
    lifecycle: ActorRef<ControllerActor<NodeLifecycle>>,
    services: ActorRef<ControllerActor<ServiceAllocator>>,
    dns_view: ActorRef<ControllerActor<DnsView>>,
    dns: DnsServer,
    /// The service proxy, when the nodes are real.
    proxy: Option<(ActorRef<ControllerActor<ServiceProxy>>, ProxyHandle)>,
    /// The ingress controller and its listeners, unless both are off.
    ingress: Option<(ActorRef<ControllerActor<IngressController>>, IngressServer)>,
    nodes: NodeActors,
}

fn spawn<C: Controller>(
    controller: C,
    store: &ActorRef<StoreActor>,
) -> ActorRef<ControllerActor<C>> {
    ControllerActor::start(controller, store.clone())
}

async fn stop<C: Controller>(actor: ActorRef<ControllerActor<C>>) {
    let _ = actor.stop_gracefully().await;
    actor.wait_for_shutdown().await;
}

impl Workloads {
    /// Starts every controller, the scheduler, the nodes, the cluster DNS and (for real nodes)
    /// the service proxy, and the ingress. Fails only if the DNS or the ingress cannot listen.
    pub(crate) fn start(
        store: &ActorRef<StoreActor>,
        nodes: Nodes,
        network: &ServiceNetwork,
        lease_duration: std::time::Duration,
        eviction_timeout: std::time::Duration,
    ) -> anyhow::Result<Self> {
        // Pods reach the DNS on their node's gateway (and at the DNS service address, which
        // the proxy maps to the first gateway); people and tests on the loopback address.
        let gateways: Vec<std::net::Ipv4Addr> = match &nodes {
            Nodes::Simulated(_) => Vec::new(),
            Nodes::Containerd { kubelets, .. } => kubelets
                .iter()
                .map(|k| std::net::Ipv4Addr::from(u32::from(k.subnet.base) + 1))
                .collect(),
        };
        // The ingress binds first: a port in use fails the start before anything runs.
        let ingress = match network.ingress {
            (None, None) => None,
            (http, https) => {
                let started = IngressServer::start(&IngressConfig {
                    http,
                    https,
                    access_log: Some(network.data_dir.join("ingress/access.log")),
                    node_ip: gateways.first().map(|g| std::net::IpAddr::V4(*g)),
                });
                let (server, controller) = started?;
                Some((spawn(controller, store), server))
            }
        };
        let mut listen = vec![network.dns_listen];
        listen.extend(
            gateways
                .iter()
                .map(|g| std::net::SocketAddr::from((*g, 53))),
        );
        let cell = ZoneCell::new(&network.zone);
        let dns = DnsServer::start(cell.clone(), &listen, network.dns_upstream)?;
        let dns_view = spawn(DnsView::new(network.zone.clone(), cell), store);
        let proxy = gateways.first().map(|gateway| {
            let (proxy, handle) = ServiceProxy::new(
                ProxyConfig {
                    pod_cidr: network.pod_cidr,
                    node_prefix: 24,
                    dns: Some((network.range.dns(), *gateway)),
                },
                &network.data_dir.join("route_localnet.before"),
            );
            (spawn(proxy, store), handle)
        });
        let nodes = match nodes {
            Nodes::Simulated(config) => {
                NodeActors::Simulated(spawn(SimulatedNodes::new(config), store))
            }
            Nodes::Containerd {
                containerd,
                kubelets,
            } => NodeActors::Kubelets(
                kubelets
                    .into_iter()
                    .map(|config| {
                        let (kubelet, handle) =
                            Kubelet::new(config, containerd.clone(), store.clone());
                        (spawn(kubelet, store), handle)
                    })
                    .collect(),
            ),
        };
        Ok(Self {
            deployment: spawn(DeploymentController::new(), store),
            replica_set: spawn(ReplicaSetController::new(), store),
            replication: spawn(ReplicaSetController::replication_controllers(), store),
            scheduler: spawn(Scheduler::new(), store),
            endpoints: spawn(EndpointsController::new(), store),
            garbage: spawn(GarbageCollector::new(), store),
            jobs: spawn(JobController::new(), store),
            daemon_sets: spawn(DaemonSetController::new(), store),
            stateful_sets: spawn(StatefulSetController::new(), store),
            volumes: spawn(
                VolumeController::new(network.data_dir.join("volumes")),
                store,
            ),
            cronjobs: spawn(CronJobController::new(network.cronjob_time_scale), store),
            lifecycle: spawn(NodeLifecycle::new(lease_duration, eviction_timeout), store),
            services: spawn(ServiceAllocator::new(network.range, network.lb_pool), store),
            dns_view,
            dns,
            proxy,
            ingress,
            nodes,
        })
    }

    /// Where the cluster DNS answers on loopback.
    pub(crate) fn dns_address(&self) -> Option<std::net::SocketAddr> {
        self.dns.addresses().first().copied()
    }

    /// Where the ingress serves HTTP and HTTPS.
    pub(crate) fn ingress_addresses(
        &self,
    ) -> (Option<std::net::SocketAddr>, Option<std::net::SocketAddr>) {
        self.ingress.as_ref().map_or((None, None), |(_, server)| {
            (server.http_address(), server.https_address())
        })
    }

    /// Runs commands in containers (for pods/exec), when the nodes are real.
    pub(crate) fn exec(
        &self,
        data_dir: &std::path::Path,
    ) -> Option<std::sync::Arc<dyn shipshape_actors::api::exec::PodExec>> {
        match &self.nodes {
            NodeActors::Simulated(_) => None,
            NodeActors::Kubelets(kubelets) => Some(shipshape_node::exec::provider(
                kubelets
                    .iter()
                    .map(|(_, handle)| (handle.node().to_string(), handle.runtime()))
                    .collect(),
                data_dir,
            )),
        }
    }

    /// Stops them all (the store keeps what they wrote). Real nodes stop their pods' containers
    /// and remove them, unless `keep_workloads` leaves them running for the next start.
    pub(crate) async fn stop(self, keep_workloads: bool) {
        stop(self.scheduler).await;
        stop(self.services).await;
        stop(self.endpoints).await;
        stop(self.lifecycle).await;
        stop(self.garbage).await;
        stop(self.cronjobs).await;
        stop(self.jobs).await;
        stop(self.daemon_sets).await;
        stop(self.stateful_sets).await;
        stop(self.volumes).await;
        stop(self.replica_set).await;
        stop(self.replication).await;
        stop(self.deployment).await;
        stop(self.dns_view).await;
        self.dns.stop().await;
        if let Some((controller, server)) = self.ingress {
            server.stop().await;
            stop(controller).await;
        }
        if let Some((proxy, handle)) = self.proxy {
            stop(proxy).await;
            handle.shutdown().await;
        }
        match self.nodes {
            NodeActors::Simulated(actor) => stop(actor).await,
            NodeActors::Kubelets(kubelets) => {
                let shutdowns = kubelets
                    .iter()
                    .map(|(_, handle)| handle.shutdown(keep_workloads));
                futures_util::future::join_all(shutdowns).await;
                for (actor, _) in kubelets {
                    stop(actor).await;
                }
            }
        }
    }
}
