//! The scale benchmark: Kubernetes' published limits (5,000 nodes, 150,000 pods) on simulated
//! nodes, through the real store, controllers and scheduler. Prints scheduling throughput, time
//! to converge and peak memory; every write is durable before it is acknowledged.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
    /// CPU time the process used from the first Deployment until every pod was bound.
    cpu: Option<Duration>,
}

/// A duration as people read it, never rounded to zero: `12.3 s`, `48 ms`, `730 µs`.
fn figure(duration: std::time::Duration) -> String {
    if duration >= std::time::Duration::from_secs(1) {
        format!("{:.1} s", duration.as_secs_f64())
    } else if duration >= std::time::Duration::from_millis(1) {
        format!("{} ms", duration.as_millis())
    } else {
        format!("{} µs", duration.as_micros().max(1))
    }
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
            "  nodes registered          {:>11}",
            figure(self.registered)
        );
        println!(
            "  all pods scheduled        {:>11}   {throughput:.0} pods/s (target 10000: {:.2}x)",
            figure(self.scheduled),
            throughput / 10_000.0
        );
        println!(
            "  converged (all Running)   {:>11}   (target under 60 s)",
            figure(self.converged)
        );
        println!(
            "  durable writes            {:>9}     ({:.1} per pod: create, bind, status, owners' status, leases)",
            self.writes,
            self.writes as f64 / self.pods.max(1) as f64
        );
        let (p50, p99) = crate::commitbench::percentiles(&self.probes);
        println!(
            "  a user's write meanwhile  {:>11} p50, {} p99 over {} writes (Kubernetes' SLO: p99 under 1000 ms)",
            figure(p50),
            figure(p99),
            self.probes.len()
        );
        println!(
            "  objects copied, parsed    {:>9} {:>9}   (a write copies its object from the last writes or parses it from disk)",
            self.copied, self.parsed
        );
        if let Some(cpu) = self.cpu {
            println!(
                "  CPU time per pod          {:>9.0} µs   ({:.2} cores busy while scheduling; steadier than pods/s on a noisy host)",
                cpu.as_secs_f64() * 1e6 / self.pods.max(1) as f64,
                cpu.as_secs_f64() / self.scheduled.as_secs_f64().max(1e-9)
            );
        }
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

/// CPU time (user and system) the process has used, from the kernel. `/proc` counts it in
/// USER_HZ, which Linux fixes at 100 a second.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((user + system) * 10))
}

/// Counts, from the watch, nodes registered, pods bound and pods running. The counter
/// updates them and the benchmark looks every [`LOOK_EVERY`]: signalling the benchmark on
/// every event cost 2% of the run's CPU.
#[derive(Debug, Default)]
struct Counts {
    nodes: AtomicUsize,
    bound: AtomicUsize,
    running: AtomicUsize,
    /// Every durable write the watch reported.
    writes: AtomicUsize,
    /// Why the counter stopped, if it did.
    stopped: std::sync::OnceLock<&'static str>,
}

/// How often the benchmark looks at the counts (the resolution of its times).
const LOOK_EVERY: Duration = Duration::from_millis(2);

impl Counts {
    fn get(field: &AtomicUsize) -> usize {
        field.load(Ordering::Relaxed)
    }
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
    let counts = Arc::new(Counts::default());
    let counter = {
        let counts = counts.clone();
        tokio::spawn(async move {
            let mut live = watch.live;
            let mut bound = std::collections::HashSet::new();
            let mut running = std::collections::HashSet::new();
            loop {
                let event = match live.recv().await {
                    Ok(event) => event,
                    Err(error) => {
                        let _ = counts.stopped.set(match error {
                            tokio::sync::broadcast::error::RecvError::Lagged(_) => {
                                "the benchmark's own watcher fell behind"
                            }
                            _ => "the benchmark's watcher stopped",
                        });
                        return;
                    }
                };
                counts.writes.fetch_add(1, Ordering::Relaxed);
                if event.key.starts_with("Node/") && event.kind == EventType::Added {
                    counts.nodes.fetch_add(1, Ordering::Relaxed);
                } else if event.key.starts_with("Pod/") && event.kind != EventType::Deleted {
                    let count = |seen: &mut std::collections::HashSet<String>,
                                 field: &AtomicUsize| {
                        // A pod counts once however often it is written.
                        if !seen.contains(&event.key) {
                            seen.insert(event.key.clone());
                            field.fetch_add(1, Ordering::Relaxed);
                        }
                    };
                    if event.object["spec"]["nodeName"].is_string() {
                        count(&mut bound, &counts.bound);
                    }
                    if event.object["status"]["phase"] == "Running" {
                        count(&mut running, &counts.running);
                    }
                }
            }
        })
    };

    let started = Instant::now();
    let kubelets = spawn(SimulatedNodes::new(config), &store);
    let wait = async |done: &dyn Fn(&Counts) -> bool| -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(900);
        while !done(&counts) {
            if let Some(why) = counts.stopped.get() {
                bail!("{why}");
            }
            if Instant::now() > deadline {
                bail!("no convergence within 15 minutes: {counts:?}");
            }
            tokio::time::sleep(LOOK_EVERY).await;
        }
        Ok(())
    };
    wait(&|c| Counts::get(&c.nodes) >= nodes).await?;
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
    let cpu_before = cpu_time();
    // A user's write while the cluster scales: one small object every 100 ms, timed from
    // sending to durable, as Kubernetes' API latency SLO times mutating calls. The first is
    // sent at once and the last is finished, not cut off, so even a run that schedules
    // faster than the interval times at least one.
    let probes = Arc::new(Mutex::new(Vec::new()));
    let stop_probing = Arc::new(AtomicBool::new(false));
    let probe = {
        let (store, latencies, stop) = (store.clone(), probes.clone(), stop_probing.clone());
        tokio::spawn(async move {
            for i in 0..PROBE_LIMIT {
                if i > 0 {
                    tokio::time::sleep(PROBE_EVERY).await;
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                }
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
                if stop.load(Ordering::Relaxed) {
                    break;
                }
            }
        })
    };
    let writes_before = Counts::get(&counts.writes);
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
    wait(&|c| Counts::get(&c.bound) >= pods).await?;
    let scheduled = started.elapsed();
    let cpu = cpu_time()
        .zip(cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    stop_probing.store(true, Ordering::Relaxed);
    let _ = probe.await;
    let probes = probes.lock().map(|p| p.clone()).unwrap_or_default();
    wait(&|c| Counts::get(&c.running) >= pods).await?;
    let converged = started.elapsed();
    let writes = Counts::get(&counts.writes) - writes_before;
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
        copied: reads.copied.load(Ordering::Relaxed),
        parsed: reads.parsed.load(Ordering::Relaxed),
        probes,
        peak_rss,
        cpu,
    })
}
