//! The part of the control plane that runs workloads: controllers, the scheduler and the
//! nodes, each a [`ControllerActor`] over the store's watch.

use kameo::actor::ActorRef;
use shipshape_actors::StoreActor;
use shipshape_actors::controller::{Controller, ControllerActor};
use shipshape_actors::controllers::deployment::DeploymentController;
use shipshape_actors::controllers::endpoints::EndpointsController;
use shipshape_actors::controllers::gc::GarbageCollector;
use shipshape_actors::controllers::nodes::NodeLifecycle;
use shipshape_actors::controllers::replicaset::ReplicaSetController;
use shipshape_actors::controllers::scheduler::Scheduler;
use shipshape_actors::controllers::services::ServiceAllocator;
use shipshape_node::containerd::Containerd;
use shipshape_node::kubelet::{Kubelet, KubeletConfig, KubeletHandle};
use shipshape_node::{SimulatedConfig, SimulatedNodes};
use shipshape_reconciler::services::ServiceRange;

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
    scheduler: ActorRef<ControllerActor<Scheduler>>,
    endpoints: ActorRef<ControllerActor<EndpointsController>>,
    garbage: ActorRef<ControllerActor<GarbageCollector>>,
    lifecycle: ActorRef<ControllerActor<NodeLifecycle>>,
    services: ActorRef<ControllerActor<ServiceAllocator>>,
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
    /// Starts every controller, the scheduler and the nodes.
    pub(crate) fn start(
        store: &ActorRef<StoreActor>,
        nodes: Nodes,
        service_range: ServiceRange,
        lease_duration: std::time::Duration,
        eviction_timeout: std::time::Duration,
    ) -> Self {
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
        Self {
            deployment: spawn(DeploymentController::new(), store),
            replica_set: spawn(ReplicaSetController::new(), store),
            scheduler: spawn(Scheduler::new(), store),
            endpoints: spawn(EndpointsController::new(), store),
            garbage: spawn(GarbageCollector::new(), store),
            lifecycle: spawn(NodeLifecycle::new(lease_duration, eviction_timeout), store),
            services: spawn(ServiceAllocator::new(service_range), store),
            nodes,
        }
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
        stop(self.replica_set).await;
        stop(self.deployment).await;
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
