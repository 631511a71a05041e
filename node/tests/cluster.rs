//! The whole control plane in one process on simulated nodes: Deployment, ReplicaSet,
//! scheduler, garbage collector and node lifecycle over a real store, with nodes that crash
//! pods and vanish on request.

use std::time::{Duration, Instant};

use kameo::actor::{ActorRef, Spawn};
use serde_json::{Value, json};
use shipshape_actors::controller::{Controller, ControllerActor, Poke};
use shipshape_actors::controllers::deployment::DeploymentController;
use shipshape_actors::controllers::gc::GarbageCollector;
use shipshape_actors::controllers::nodes::NodeLifecycle;
use shipshape_actors::controllers::replicaset::ReplicaSetController;
use shipshape_actors::controllers::scheduler::Scheduler;
use shipshape_actors::store::{Batch, Precondition, parse_storage_key};
use shipshape_actors::store_actor::{Apply, Get, List};
use shipshape_actors::{Store, StoreActor, Write};
use shipshape_api::Kind;
use shipshape_node::{SimulatedConfig, SimulatedNodes};

fn spawn<C: Controller>(
    controller: C,
    store: &ActorRef<StoreActor>,
) -> ActorRef<ControllerActor<C>> {
    ControllerActor::start(controller, store.clone())
}

async fn create(store: &ActorRef<StoreActor>, object: Value) {
    store
        .ask(Apply(Batch {
            writes: vec![Write::Create {
                object,
                applied: None,
                application: None,
            }],
            audit: None,
        }))
        .await
        .expect("created");
}

/// Simulated nodes named `node-1` …, 2 cpus and 4 GiB each, starting pods after 50 ms.
fn simulated_nodes(nodes: usize, lease_duration: Duration) -> SimulatedNodes {
    SimulatedNodes::new(SimulatedConfig {
        nodes,
        cpu_milli: 2000,
        memory: 4 << 30,
        max_pods: 110,
        pod_cidr: "10.244.0.0/16".parse().expect("cidr"),
        start_delay: Duration::from_millis(50),
        lease_duration,
    })
}

/// Deletes the object at storage key `key` (`Pod/demo/web-x`) if its uid is still `uid`.
async fn delete(store: &ActorRef<StoreActor>, key: &str, uid: &str) {
    store
        .ask(Apply(Batch {
            writes: vec![Write::Delete {
                key: parse_storage_key(key).expect("key"),
                precondition: Precondition::Uid(uid.to_string()),
            }],
            audit: None,
        }))
        .await
        .expect("deleted");
}

async fn pods(store: &ActorRef<StoreActor>) -> Vec<Value> {
    store
        .ask(List {
            kind: Some(Kind::Pod),
            namespace: Some("demo".into()),
        })
        .await
        .expect("lists")
        .into_iter()
        .map(|(_, stored)| stored.object)
        .collect()
}

fn running_on(pods: &[Value], node: &str) -> usize {
    pods.iter()
        .filter(|p| p["spec"]["nodeName"] == node && p["status"]["phase"] == "Running")
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .count()
}

async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) => assert!(Instant::now() < deadline, "{what} never happened: {last}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_run_survive_crashes_and_node_loss_and_go_with_their_deployment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = StoreActor::spawn(StoreActor::new(
        Store::open(&dir.path().join("db.redb")).expect("store"),
    ));
    let lease = Duration::from_secs(1);
    let _deployments = spawn(DeploymentController::new(), &store);
    let _sets = spawn(ReplicaSetController::new(), &store);
    let _scheduler = spawn(Scheduler::new(), &store);
    let _gc = spawn(GarbageCollector::new(), &store);
    let _lifecycle = spawn(NodeLifecycle::new(lease, Duration::from_secs(2)), &store);
    let nodes = spawn(simulated_nodes(3, lease), &store);

    create(
        &store,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}}),
    )
    .await;
    create(
        &store,
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "demo"},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                             "spec": {"containers": [{"name": "web", "image": "busybox:1.35"}]}},
            },
        }),
    )
    .await;

    // Three pods, one per node (the scheduler spreads a set's pods).
    eventually("three running pods, one per node", async || {
        let pods = pods(&store).await;
        let per_node: Vec<usize> = ["node-1", "node-2", "node-3"]
            .iter()
            .map(|n| running_on(&pods, n))
            .collect();
        if per_node == [1, 1, 1] {
            Ok(())
        } else {
            Err(format!("{per_node:?}"))
        }
    })
    .await;

    // A crashed container counts a restart and becomes ready again.
    let victim = pods(&store).await.into_iter().next().expect("a pod");
    let victim_key = format!(
        "Pod/demo/{}",
        victim["metadata"]["name"].as_str().expect("name")
    );
    let key = victim_key.clone();
    nodes
        .ask(Poke(Box::new(move |nodes: &mut SimulatedNodes, dirty| {
            nodes.crash(&key, dirty)
        })))
        .await
        .expect("poked");
    eventually("the crashed pod ready again with one restart", async || {
        let key = parse_storage_key(&victim_key).expect("key");
        let pod = store.ask(Get(key)).await.expect("get").expect("pod").object;
        let status = &pod["status"]["containerStatuses"][0];
        if status["restartCount"] == 1 && status["ready"] == true {
            Ok(())
        } else {
            Err(status.to_string())
        }
    })
    .await;

    // node-1 vanishes: it is marked unreachable, and its pod is replaced on another node.
    nodes
        .ask(Poke(Box::new(|nodes: &mut SimulatedNodes, _| {
            nodes.vanish("node-1")
        })))
        .await
        .expect("poked");
    eventually(
        "node-1 unreachable and its pod replaced elsewhere",
        async || {
            let node = store
                .ask(Get(parse_storage_key("Node//node-1").expect("key")))
                .await
                .expect("get")
                .expect("node")
                .object;
            let tainted = node["spec"]["taints"].as_array().is_some_and(|t| {
                t.iter()
                    .any(|t| t["key"] == "node.kubernetes.io/unreachable")
            });
            let pods = pods(&store).await;
            let elsewhere = running_on(&pods, "node-2") + running_on(&pods, "node-3");
            let evicted = pods.iter().any(|p| {
                p["spec"]["nodeName"] == "node-1" && !p["metadata"]["deletionTimestamp"].is_null()
            });
            // Marked not ready before the eviction, so Services stopped counting on it.
            let marked = pods.iter().any(|p| {
                p["spec"]["nodeName"] == "node-1"
                    && p["status"]["conditions"].as_array().is_some_and(|c| {
                        c.iter().any(|c| {
                            c["type"] == "Ready"
                                && c["status"] == "False"
                                && c["reason"] == "NodeNotReady"
                        })
                    })
            });
            if tainted && evicted && marked && elsewhere == 3 {
                Ok(())
            } else {
                Err(format!(
                    "tainted {tainted}, evicted {evicted}, marked not ready {marked}, running elsewhere {elsewhere}"
                ))
            }
        },
    )
    .await;

    // Deleting the Deployment removes its ReplicaSet and, through it, its pods.
    let deployment = store
        .ask(Get(parse_storage_key("Deployment/demo/web").expect("key")))
        .await
        .expect("get")
        .expect("deployment");
    delete(&store, "Deployment/demo/web", deployment.uid()).await;
    eventually(
        "the ReplicaSet gone and every pod terminating or gone",
        async || {
            let sets = store
                .ask(List {
                    kind: Some(Kind::ReplicaSet),
                    namespace: None,
                })
                .await
                .expect("lists");
            let pods = pods(&store).await;
            let live = pods
                .iter()
                .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                .count();
            if sets.is_empty() && live == 0 {
                Ok(())
            } else {
                Err(format!("{} sets, {live} live pods", sets.len()))
            }
        },
    )
    .await;
}

/// A ReplicationController (core/v1, common in older repositories) keeps its replicas
/// running, replaces a deleted pod, reports its status, and takes its pods with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replication_controller_keeps_its_replicas_and_takes_its_pods_with_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = StoreActor::spawn(StoreActor::new(
        Store::open(&dir.path().join("db.redb")).expect("store"),
    ));
    let lease = Duration::from_secs(5);
    let _controllers = spawn(ReplicaSetController::replication_controllers(), &store);
    let _scheduler = spawn(Scheduler::new(), &store);
    let _gc = spawn(GarbageCollector::new(), &store);
    let _nodes = spawn(simulated_nodes(2, lease), &store);
    create(
        &store,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}}),
    )
    .await;
    create(
        &store,
        json!({
            "apiVersion": "v1", "kind": "ReplicationController",
            "metadata": {"name": "nginx", "namespace": "demo"},
            "spec": {
                "replicas": 3,
                "selector": {"app": "nginx"},
                "template": {"metadata": {"labels": {"app": "nginx"}},
                             "spec": {"containers": [{"name": "nginx", "image": "nginx"}]}},
            },
        }),
    )
    .await;
    let running = async || {
        let pods = pods(&store).await;
        let live: Vec<Value> = pods
            .into_iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .collect();
        let owned = live.iter().all(|p| {
            p["metadata"]["ownerReferences"][0]["kind"] == "ReplicationController"
                && p["metadata"]["ownerReferences"][0]["name"] == "nginx"
        });
        let running = live
            .iter()
            .filter(|p| p["status"]["phase"] == "Running")
            .count();
        (live, owned, running)
    };
    let first = eventually("three running pods of the controller", async || {
        let (live, owned, running) = running().await;
        let controller = store
            .ask(Get(
                parse_storage_key("ReplicationController/demo/nginx").expect("key")
            ))
            .await
            .expect("get")
            .expect("controller");
        let ready = &controller.object["status"]["readyReplicas"];
        if owned && running == 3 && live.len() == 3 && *ready == 3 {
            Ok(live)
        } else {
            Err(format!(
                "{} live, owned {owned}, {running} running, ready {ready}",
                live.len()
            ))
        }
    })
    .await;

    let victim = &first[0];
    let name = victim["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_string();
    let uid = victim["metadata"]["uid"].as_str().expect("uid");
    delete(&store, &format!("Pod/demo/{name}"), uid).await;
    eventually("a replacement for the deleted pod", async || {
        let (live, owned, running) = running().await;
        let replaced = live.iter().all(|p| p["metadata"]["name"] != name.as_str());
        if owned && replaced && running == 3 && live.len() == 3 {
            Ok(())
        } else {
            Err(format!(
                "{} live, {running} running, replaced {replaced}",
                live.len()
            ))
        }
    })
    .await;

    let controller = store
        .ask(Get(
            parse_storage_key("ReplicationController/demo/nginx").expect("key")
        ))
        .await
        .expect("get")
        .expect("controller");
    delete(&store, "ReplicationController/demo/nginx", controller.uid()).await;
    eventually(
        "every pod of the controller terminating or gone",
        async || {
            let (live, _, _) = running().await;
            if live.is_empty() {
                Ok(())
            } else {
                Err(format!("{} live pods", live.len()))
            }
        },
    )
    .await;
}
