//! The pod start benchmark on real containerd: bound-to-Running latency of one pod against
//! `ctr run` of the same image on the same containerd in the same run, and a hundred pods bound
//! to one node at once. Needs root and containerd; says so and skips otherwise.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kameo::actor::{ActorRef, Spawn};
use serde_json::json;
use shipshape_actors::controller::ControllerActor;
use shipshape_actors::store::{Batch, EventType, Precondition, Write};
use shipshape_actors::store_actor::{Apply, Watch};
use shipshape_actors::{Store, StoreActor};
use shipshape_api::{Kind, ObjectKey};
use shipshape_node::containerd::Containerd;
use shipshape_node::kubelet::{Kubelet, KubeletConfig};

/// The benchmark's node: its own name, bridge and subnet, so it can run beside a cluster (or the
/// end-to-end tests) on the same host without sharing their bridge or addresses.
const BENCH_NODE: &str = "bench-1";
const BENCH_SUBNET: &str = "10.244.255.0/24";

/// What the benchmark measured.
pub(crate) struct PodFigures {
    runs: usize,
    pod_median: Duration,
    ctr_median: Duration,
    parallel: usize,
    parallel_all_running: Duration,
}

impl PodFigures {
    pub(crate) fn print(&self) {
        println!(
            "pod start on containerd (busybox, median of {}): bound to Running {}, `ctr run -d` {}",
            self.runs,
            crate::bench::ms(self.pod_median),
            crate::bench::ms(self.ctr_median)
        );
        println!(
            "  ratio pod / ctr run: {:.2}x (goal: at most 1.5x; a pod also gets a CNI network namespace and a status write)",
            self.pod_median.as_secs_f64() / self.ctr_median.as_secs_f64().max(1e-9)
        );
        if self.parallel > 0 {
            println!(
                "  {} pods bound to one node at once: all Running in {} (goal: within 5 s)",
                self.parallel,
                crate::bench::ms(self.parallel_all_running)
            );
        }
    }
}

pub(crate) fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

/// A root filesystem holding Debian's static busybox and its applets, packed as busybox:1.35.
pub(crate) fn busybox_archive(root: &Path) -> anyhow::Result<PathBuf> {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .context("busybox is not installed: run sudo scripts/setup (busybox-static)")?;
    let rootfs = root.join("busybox-rootfs");
    for dir in ["bin", "tmp", "etc", "proc", "sys", "dev"] {
        std::fs::create_dir_all(rootfs.join(dir))?;
    }
    std::fs::copy(busybox, rootfs.join("bin/busybox"))?;
    let list = Command::new(busybox).arg("--list").output()?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))?;
        }
    }
    let archive = root.join("busybox.tar");
    shipshape_node::image::pack(&rootfs, "busybox:1.35", &archive)?;
    Ok(archive)
}

fn pod(name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "bench"},
        "spec": {
            "nodeName": BENCH_NODE,
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "main", "image": "busybox:1.35", "command": ["sleep", "3600"]}],
        },
    })
}

fn key(name: &str) -> ObjectKey {
    ObjectKey {
        kind: Kind::Pod,
        namespace: "bench".into(),
        name: name.into(),
    }
}

/// What the watcher saw of each pod: uid, when Running, gone.
#[derive(Default, Clone)]
pub(crate) struct Seen {
    pub(crate) uids: HashMap<String, String>,
    pub(crate) running: HashMap<String, Instant>,
    pub(crate) gone: std::collections::HashSet<String>,
}

/// Follows the store's pods: when each first ran, its uid, and which are gone.
pub(crate) async fn watch_pods(
    store: &ActorRef<StoreActor>,
) -> anyhow::Result<tokio::sync::watch::Receiver<Seen>> {
    let watch = store
        .ask(Watch {
            after: u64::MAX / 2,
        })
        .await
        .map_err(|e| anyhow::anyhow!("watch: {e}"))?;
    let (seen_tx, seen) = tokio::sync::watch::channel(Seen::default());
    tokio::spawn(async move {
        let mut live = watch.live;
        while let Ok(event) = live.recv().await {
            if !event.key.starts_with("Pod/") {
                continue;
            }
            let name = event.object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            seen_tx.send_modify(|s| match event.kind {
                EventType::Deleted => {
                    s.gone.insert(name);
                }
                _ => {
                    if let Some(uid) = event.object["metadata"]["uid"].as_str() {
                        s.uids.insert(name.clone(), uid.to_string());
                    }
                    let running =
                        event.object["status"]["containerStatuses"][0]["state"]["running"]
                            .is_object();
                    if running {
                        s.running.entry(name).or_insert_with(Instant::now);
                    }
                }
            });
        }
    });
    Ok(seen)
}

pub(crate) async fn apply(store: &ActorRef<StoreActor>, writes: Vec<Write>) -> anyhow::Result<()> {
    store
        .ask(Apply(Batch {
            writes,
            audit: None,
        }))
        .await
        .map_err(|e| anyhow::anyhow!("store: {e}"))?;
    Ok(())
}

pub(crate) async fn wait_for(
    seen: &mut tokio::sync::watch::Receiver<Seen>,
    what: &str,
    done: impl Fn(&Seen) -> bool,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        if done(&seen.borrow()) {
            return Ok(());
        }
        match tokio::time::timeout_at(deadline, seen.changed()).await {
            Ok(Ok(())) => {}
            _ => bail!("{what} did not happen within 2 minutes"),
        }
    }
}

pub(crate) async fn delete_all(
    store: &ActorRef<StoreActor>,
    seen: &mut tokio::sync::watch::Receiver<Seen>,
    names: &[String],
) -> anyhow::Result<()> {
    let uids = seen.borrow().uids.clone();
    let writes = names
        .iter()
        .filter_map(|n| {
            let uid = uids.get(n)?.clone();
            Some(Write::delete(key(n), Precondition::Uid(uid), true, 0))
        })
        .collect();
    apply(store, writes).await?;
    wait_for(seen, "deleting the benchmark pods", |s| {
        names.iter().all(|n| s.gone.contains(n))
    })
    .await
}

fn ctr(socket: &Path, namespace: &str, args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("ctr")
        .arg("--address")
        .arg(socket)
        .args(["--namespace", namespace])
        .args(args)
        .output()
        .context("ctr (from the containerd package) must be installed")?;
    if !output.status.success() {
        bail!(
            "ctr {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Runs the benchmark, or says why it cannot and returns `None`.
pub(crate) async fn run(
    root: &Path,
    runs: usize,
    parallel: usize,
) -> anyhow::Result<Option<PodFigures>> {
    let cni_dir = match shipshape_node::containerd::check_host() {
        Ok(dir) => dir,
        Err(error) => {
            println!("pod start: skipped ({error})");
            return Ok(None);
        }
    };
    let data = root.join("pods");
    std::fs::create_dir_all(&data)?;
    let archive = busybox_archive(root)?;
    // Our own containerd, so the figures never depend on (or disturb) a system one.
    let containerd = Containerd::start_own(&data).await?;
    let namespace = shipshape_node::kubelet::containerd_namespace(BENCH_NODE);
    let result = async {
        shipshape_node::image::import(&containerd, std::slice::from_ref(&namespace), &archive)
            .await?;
        let store = StoreActor::spawn(StoreActor::new(Store::open(&data.join("shipshape.redb"))?));
        let mut seen = watch_pods(&store).await?;
        let (kubelet, handle) = Kubelet::new(
            KubeletConfig {
                node: BENCH_NODE.into(),
                subnet: BENCH_SUBNET
                    .parse()
                    .map_err(|e: String| anyhow::anyhow!(e))?,
                cpu_milli: 64_000,
                memory: 64 << 30,
                max_pods: (parallel as u32).max(110),
                lease_duration: Duration::from_secs(40),
                data_dir: data.clone(),
                cni_dir,
                cluster_dns: std::net::Ipv4Addr::new(10, 96, 0, 10),
                cluster_domain: "cluster.local".into(),
                images: std::sync::Arc::new(shipshape_node::pull::ImagePuller::new(
                    std::sync::Arc::default(),
                )),
                // The benchmark's image is imported (pinned): collection never takes it.
                image_gc: shipshape_reconciler::images::ImageGcPolicy::default(),
                containerd_root: data.clone(),
            },
            containerd.clone(),
            store.clone(),
        );
        let actor = ControllerActor::start(kubelet, store.clone());
        apply(
            &store,
            vec![Write::Create {
                object: json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}),
                applied: None,
                application: None,
            }],
        )
        .await?;
        let measured = async {
            // Warm up once (first use of the snapshotter, the bridge, the CNI plugins).
            let mut pod_times = Vec::new();
            for i in 0..=runs {
                let name = format!("latency-{i}");
                let started = Instant::now();
                apply(
                    &store,
                    vec![Write::Create {
                        object: pod(&name),
                        applied: None,
                        application: None,
                    }],
                )
                .await?;
                wait_for(&mut seen, "a pod running", |s| {
                    s.running.contains_key(&name)
                })
                .await?;
                let at = seen.borrow().running[&name];
                if i > 0 {
                    pod_times.push(at - started);
                }
                delete_all(&store, &mut seen, &[name]).await?;
            }
            let socket = containerd.socket().to_path_buf();
            let mut ctr_times = Vec::new();
            for i in 0..=runs {
                let id = format!("ctr-bench-{i}");
                let started = Instant::now();
                ctr(
                    &socket,
                    &namespace,
                    &[
                        "run",
                        "-d",
                        "docker.io/library/busybox:1.35",
                        &id,
                        "sleep",
                        "3600",
                    ],
                )?;
                if i > 0 {
                    ctr_times.push(started.elapsed());
                }
                ctr(&socket, &namespace, &["task", "kill", "-s", "SIGKILL", &id])?;
                for _ in 0..50 {
                    if ctr(&socket, &namespace, &["task", "delete", &id]).is_ok() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                ctr(&socket, &namespace, &["container", "delete", &id])?;
            }
            // ctr puts its containers' cgroups under the namespace's name: remove them too.
            shipshape_node::runtime::remove_cgroups(&format!("/{namespace}"));
            let mut parallel_time = Duration::ZERO;
            if parallel > 0 {
                let names: Vec<String> = (0..parallel).map(|i| format!("many-{i}")).collect();
                let started = Instant::now();
                apply(
                    &store,
                    names
                        .iter()
                        .map(|n| Write::Create {
                            object: pod(n),
                            applied: None,
                            application: None,
                        })
                        .collect(),
                )
                .await?;
                wait_for(&mut seen, "all pods running", |s| {
                    names.iter().all(|n| s.running.contains_key(n))
                })
                .await?;
                let last = names
                    .iter()
                    .filter_map(|n| seen.borrow().running.get(n).copied())
                    .max()
                    .unwrap_or(started);
                parallel_time = last - started;
                delete_all(&store, &mut seen, &names).await?;
            }
            Ok::<_, anyhow::Error>(PodFigures {
                runs,
                pod_median: median(pod_times),
                ctr_median: median(ctr_times),
                parallel,
                parallel_all_running: parallel_time,
            })
        }
        .await;
        handle.shutdown(false).await;
        let _ = actor.stop_gracefully().await;
        actor.wait_for_shutdown().await;
        let _ = store.stop_gracefully().await;
        store.wait_for_shutdown().await;
        measured
    }
    .await;
    containerd.stop().await;
    result.map(Some)
}
