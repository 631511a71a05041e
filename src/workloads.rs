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
use shipshape_node::{SimulatedConfig, SimulatedNodes};

/// The running controllers, scheduler and nodes.
pub(crate) struct Workloads {
    deployment: ActorRef<ControllerActor<DeploymentController>>,
    replica_set: ActorRef<ControllerActor<ReplicaSetController>>,
    scheduler: ActorRef<ControllerActor<Scheduler>>,
    endpoints: ActorRef<ControllerActor<EndpointsController>>,
    garbage: ActorRef<ControllerActor<GarbageCollector>>,
    lifecycle: ActorRef<ControllerActor<NodeLifecycle>>,
    nodes: ActorRef<ControllerActor<SimulatedNodes>>,
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
        nodes: SimulatedConfig,
        eviction_timeout: std::time::Duration,
    ) -> Self {
        Self {
            deployment: spawn(DeploymentController::new(), store),
            replica_set: spawn(ReplicaSetController::new(), store),
            scheduler: spawn(Scheduler::new(), store),
            endpoints: spawn(EndpointsController::new(), store),
            garbage: spawn(GarbageCollector::new(), store),
            lifecycle: spawn(
                NodeLifecycle::new(nodes.lease_duration, eviction_timeout),
                store,
            ),
            nodes: spawn(SimulatedNodes::new(nodes), store),
        }
    }

    /// Stops them all (the store keeps what they wrote).
    pub(crate) async fn stop(self) {
        stop(self.nodes).await;
        stop(self.scheduler).await;
        stop(self.endpoints).await;
        stop(self.lifecycle).await;
        stop(self.garbage).await;
        stop(self.replica_set).await;
        stop(self.deployment).await;
    }
}
