//! The scale benchmark: Kubernetes' published limits (5,000 nodes, 150,000 pods) on simulated
//! nodes, through the real store, controllers and scheduler. Prints scheduling throughput, time
//! to converge and peak memory; every write is durable before it is acknowledged.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kameo::actor::{ActorRef, Spawn};
use serde_json::json;
use shipshape_actors::controller::{Controller, ControllerActor};
use shipshape_actors::controllers::deployment::DeploymentController;
use shipshape_actors::controllers::replicaset::ReplicaSetController;
use shipshape_actors::controllers::scheduler::Scheduler;
use shipshape_actors::store::{Batch, EventType, Write};
use shipshape_actors::store_actor::{Apply, Watch};
use shipshape_actors::{Store, StoreActor};
use shipshape_node::{SimulatedConfig, SimulatedNodes};

/// Replicas per Deployment in the benchmark.
const REPLICAS: usize = 100;

/// How often the benchmark writes as a user would while the cluster scales.
const PROBE_EVERY: Duration = Duration::from_millis(100);

/// The most user writes timed (a bound on the probe's objects in a run that never converges).
const PROBE_LIMIT: usize = 10_000;

/// What the scale benchmark measured.
pub(crate) struct ScaleFigures {
    nodes: usize,
    pods: usize,
    registered: Duration,
    scheduled: Duration,
    converged: Duration,
    /// Durable writes from the first Deployment to convergence (lease renewals included).
    writes: usize,
    /// Objects the committer copied from its cache of recent writes, and parsed from disk.
    copied: u64,
    parsed: u64,
    /// How long each user write during the scale-up took to become durable.
    probes: Vec<Duration>,
    peak_rss: Option<u64>,
}

impl ScaleFigures {
    pub(crate) fn print(&self) {
        let throughput = self.pods as f64 / self.scheduled.as_secs_f64().max(1e-9);
        println!(
            "scale: {} simulated nodes, {} pods in {} Deployments of {REPLICAS} (every write durable):",
            self.nodes,
            self.pods,
            self.pods.div_ceil(REPLICAS)
        );
        println!(
            "  nodes registered          {:>9.1} s",
            self.registered.as_secs_f64()
        );
        println!(
            "  all pods scheduled        {:>9.1} s   {throughput:.0} pods/s (target 10000: {:.2}x)",
            self.scheduled.as_secs_f64(),
            throughput / 10_000.0
        );
        println!(
            "  converged (all Running)   {:>9.1} s   (target under 60 s)",
            self.converged.as_secs_f64()
        );
        println!(
            "  durable writes            {:>9}     ({:.1} per pod: create, bind, status, owners' status, leases)",
            self.writes,
            self.writes as f64 / self.pods.max(1) as f64
        );
        let (p50, p99) = crate::commitbench::percentiles(&self.probes);
        println!(
            "  a user's write meanwhile  {:>6.0} / {:.0} ms p50 / p99 over {} writes (Kubernetes' SLO: p99 under 1000 ms)",
            p50.as_secs_f64() * 1000.0,
            p99.as_secs_f64() * 1000.0,
            self.probes.len()
        );
        println!(
            "  objects copied, parsed    {:>9} {:>9}   (a write copies its object from the last writes or parses it from disk)",
            self.copied, self.parsed
        );
        match self.peak_rss {
            Some(bytes) => println!(
                "  peak memory (RSS)         {:>9.0} MiB (target under 4096 MiB)",
                bytes as f64 / (1024.0 * 1024.0)
            ),
            None => println!("  peak memory: unknown (no /proc/self/status)"),
        }
    }
}

fn spawn<C: Controller>(
    controller: C,
    store: &ActorRef<StoreActor>,
) -> ActorRef<ControllerActor<C>> {
    ControllerActor::start(controller, store.clone())
}

/// The process's peak resident memory, from the kernel.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Counts, from the watch, nodes registered, pods bound and pods running.
#[derive(Clone, Debug, Default)]
struct Counts {
    nodes: usize,
    bound: usize,
    running: usize,
    /// Every durable write the watch reported.
    writes: usize,
}

pub(crate) async fn run(root: &Path, nodes: usize, pods: usize) -> anyhow::Result<ScaleFigures> {
    let data = root.join("scale");
    std::fs::create_dir_all(&data)?;
    let store = Store::open(&data.join("shipshape.redb"))?;
    let reads = store.object_reads();
    let store = StoreActor::spawn(StoreActor::new(store));
    let cidr_prefix = 24 - (usize::BITS - nodes.max(1).saturating_sub(1).leading_zeros()).min(16);
    let config = SimulatedConfig {
        nodes,
        cpu_milli: 32_000,
        memory: 256 << 30,
        max_pods: 110,
        // Simulated nodes send no traffic: a block large enough for 5,000 /24s is only numbers.
        pod_cidr: format!("10.0.0.0/{cidr_prefix}")
            .parse()
            .map_err(|e: String| anyhow::anyhow!(e))?,
        start_delay: Duration::ZERO,
        lease_duration: Duration::from_secs(40),
    };
    let watch = store
        .ask(Watch {
            after: u64::MAX / 2,
        })
        .await
        .map_err(|e| anyhow::anyhow!("watch: {e}"))?;
    let (counts_tx, mut counts_rx) = tokio::sync::watch::channel(Counts::default());
    let counter = tokio::spawn(async move {
        let mut live = watch.live;
        let mut nodes_seen = 0;
        let mut bound = std::collections::HashSet::new();
        let mut running = std::collections::HashSet::new();
        let mut writes = 0;
        loop {
            let event = match live.recv().await {
                Ok(event) => event,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    return Err("the benchmark's own watcher fell behind");
                }
                Err(_) => return Ok(()),
            };
            writes += 1;
            if event.key.starts_with("Node/") && event.kind == EventType::Added {
                nodes_seen += 1;
            } else if event.key.starts_with("Pod/") && event.kind != EventType::Deleted {
                if event.object["spec"]["nodeName"].is_string() {
                    bound.insert(event.key.clone());
                }
                if event.object["status"]["phase"] == "Running" {
                    running.insert(event.key.clone());
                }
            } else {
                continue;
            }
            let _ = counts_tx.send(Counts {
                nodes: nodes_seen,
                bound: bound.len(),
                running: running.len(),
                writes,
            });
        }
    });

    let started = Instant::now();
    let kubelets = spawn(SimulatedNodes::new(config), &store);
    let wait = async |counts_rx: &mut tokio::sync::watch::Receiver<Counts>,
                      done: &dyn Fn(&Counts) -> bool|
           -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(900);
        loop {
            if done(&counts_rx.borrow()) {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, counts_rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => bail!("the benchmark's watcher stopped"),
                Err(_) => bail!(
                    "no convergence within 15 minutes: {:?}",
                    *counts_rx.borrow()
                ),
            }
        }
    };
    wait(&mut counts_rx, &|c| c.nodes >= nodes).await?;
    let registered = started.elapsed();

    let deployments = spawn(DeploymentController::new(), &store);
    let sets = spawn(ReplicaSetController::new(), &store);
    let scheduler = spawn(Scheduler::new(), &store);
    store
        .ask(Apply(Batch {
            writes: vec![Write::Create {
                object: json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "scale"}}),
                applied: None,
                application: None,
            }],
            audit: None,
        }))
        .await
        .context("namespace")?;
    let started = Instant::now();
    // A user's write while the cluster scales: one small object every 100 ms, timed from
    // sending to durable, as Kubernetes' API latency SLO times mutating calls.
    let probes = Arc::new(Mutex::new(Vec::new()));
    let probe = {
        let (store, latencies) = (store.clone(), probes.clone());
        tokio::spawn(async move {
            for i in 0..PROBE_LIMIT {
                tokio::time::sleep(PROBE_EVERY).await;
                let sent = Instant::now();
                let written = store
                    .ask(Apply(Batch {
                        writes: vec![Write::Create {
                            object: json!({
                                "apiVersion": "v1", "kind": "ConfigMap",
                                "metadata": {"name": format!("probe-{i}"), "namespace": "scale"},
                                "data": {"sent": i.to_string()},
                            }),
                            applied: None,
                            application: None,
                        }],
                        audit: None,
                    }))
                    .await;
                if written.is_err() {
                    break;
                }
                if let Ok(mut latencies) = latencies.lock() {
                    latencies.push(sent.elapsed());
                }
            }
        })
    };
    let writes_before = counts_rx.borrow().writes;
    let count = pods.div_ceil(REPLICAS);
    for chunk in (0..count).collect::<Vec<_>>().chunks(100) {
        let writes = chunk
            .iter()
            .map(|i| {
                let replicas = REPLICAS.min(pods - i * REPLICAS);
                Write::Create {
                    object: json!({
                        "apiVersion": "apps/v1", "kind": "Deployment",
                        "metadata": {"name": format!("app-{i}"), "namespace": "scale"},
                        "spec": {
                            "replicas": replicas,
                            "selector": {"matchLabels": {"app": format!("app-{i}")}},
                            "template": {
                                "metadata": {"labels": {"app": format!("app-{i}")}},
                                "spec": {"containers": [{
                                    "name": "app", "image": "busybox:1.35",
                                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                                }]},
                            },
                        },
                    }),
                    applied: None,
                    application: None,
                }
            })
            .collect();
        store
            .ask(Apply(Batch {
                writes,
                audit: None,
            }))
            .await
            .context("creating the benchmark's Deployments")?;
    }
    wait(&mut counts_rx, &|c| c.bound >= pods).await?;
    let scheduled = started.elapsed();
    probe.abort();
    let probes = probes.lock().map(|p| p.clone()).unwrap_or_default();
    wait(&mut counts_rx, &|c| c.running >= pods).await?;
    let converged = started.elapsed();
    let writes = counts_rx.borrow().writes - writes_before;
    let peak_rss = peak_rss();

    // Each actor finishes what it is writing before the store goes, so none reports a write
    // to a store that has stopped.
    let _ = kubelets.stop_gracefully().await;
    kubelets.wait_for_shutdown().await;
    let _ = scheduler.stop_gracefully().await;
    scheduler.wait_for_shutdown().await;
    let _ = sets.stop_gracefully().await;
    sets.wait_for_shutdown().await;
    let _ = deployments.stop_gracefully().await;
    deployments.wait_for_shutdown().await;
    let _ = store.stop_gracefully().await;
    store.wait_for_shutdown().await;
    counter.abort();
    Ok(ScaleFigures {
        nodes,
        pods,
        registered,
        scheduled,
        converged,
        writes,
        copied: reads.copied.load(std::sync::atomic::Ordering::Relaxed),
        parsed: reads.parsed.load(std::sync::atomic::Ordering::Relaxed),
        probes,
        peak_rss,
    })
}
