//! The image pull benchmark: a several-layer image of about `megabytes` MiB in a CNCF
//! distribution registry on loopback (Debian's `docker-registry`, pushed with `skopeo`), pulled
//! by the kubelet's pull and by `ctr image pull` on one containerd of our own, in the same run,
//! alternating which goes first, each from an empty content store (the image removed with
//! containerd's collector run in between), both unpacking into overlayfs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use shipshape_node::containerd::{Containerd, find_program};

/// Layers of the benchmark image (downloaded in parallel by the kubelet's pull).
const LAYERS: usize = 5;

/// The containerd namespace the pulls go into.
const NAMESPACE: &str = "shipshape-pullbench";

/// What the pull benchmark measured.
pub(crate) struct PullFigures {
    runs: usize,
    layers: usize,
    bytes: u64,
    ours: Duration,
    ctr: Duration,
    /// Pods of the image, not yet on any node, started across the nodes at once.
    fan_out: Option<FanOut>,
}

/// Many pods of one new image on several nodes.
struct FanOut {
    pods: usize,
    nodes: usize,
    all_running: Duration,
    /// Bytes the pods' pulls downloaded in all (their Pulled events): the image once.
    downloaded: u64,
}

impl PullFigures {
    pub(crate) fn print(&self) {
        let mib = self.bytes as f64 / (1024.0 * 1024.0);
        let rate = |d: Duration| mib / d.as_secs_f64().max(1e-9);
        println!(
            "image pull ({} layers, {mib:.0} MiB, registry on loopback, median of {}): shipshape {} ({:.0} MiB/s), `ctr image pull` {} ({:.0} MiB/s)",
            self.layers + 1,
            self.runs,
            crate::bench::ms(self.ours),
            rate(self.ours),
            crate::bench::ms(self.ctr),
            rate(self.ctr)
        );
        println!(
            "  ratio shipshape / ctr image pull: {:.2}x (goal: at most 1.0x; both fetch, verify and unpack every layer)",
            self.ours.as_secs_f64() / self.ctr.as_secs_f64().max(1e-9)
        );
        if let Some(fan_out) = &self.fan_out {
            println!(
                "  {} pods of that image (new to every node) on {} nodes: all Running in {}, {:.1} MiB downloaded ({:.2}x the image: one download, shared content)",
                fan_out.pods,
                fan_out.nodes,
                crate::bench::ms(fan_out.all_running),
                fan_out.downloaded as f64 / (1024.0 * 1024.0),
                fan_out.downloaded as f64 / (self.bytes as f64).max(1.0)
            );
        }
    }
}

/// A registry process, killed when dropped.
struct Registry {
    child: Child,
    address: String,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_registry(dir: &Path) -> anyhow::Result<Registry> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("no free loopback port")?
        .port();
    let address = format!("127.0.0.1:{port}");
    let config = dir.join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {address}\n",
            dir.join("registry").display()
        ),
    )?;
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("docker-registry cannot start")?;
    let registry = Registry { child, address };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&registry.address).is_err() {
        if Instant::now() > deadline {
            bail!(
                "the registry did not listen on {} within 10 s",
                registry.address
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(registry)
}

/// Bytes that do not compress (a registry image's layers usually are compressed data).
fn noise(out: &Path, bytes: usize, seed: u64) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut state = seed | 1;
    let mut file = std::io::BufWriter::new(std::fs::File::create(out)?);
    let mut chunk = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        for word in chunk.chunks_exact_mut(8) {
            // xorshift64: fast, and enough to defeat any compression.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        let take = left.min(chunk.len());
        file.write_all(&chunk[..take])?;
        left -= take;
    }
    file.flush()?;
    Ok(())
}

/// Builds the benchmark image (busybox, so pods can run it, then `LAYERS` layers of noise) and
/// pushes it; returns its reference.
fn push_image(dir: &Path, registry: &Registry, megabytes: usize) -> anyhow::Result<String> {
    let per_layer = (megabytes << 20) / LAYERS;
    crate::podbench::busybox_archive(dir)?;
    let mut roots: Vec<PathBuf> = vec![dir.join("busybox-rootfs")];
    for layer in 0..LAYERS {
        let root = dir.join(format!("layer-{layer}"));
        std::fs::create_dir_all(root.join("data"))?;
        noise(
            &root.join(format!("data/part-{layer}")),
            per_layer,
            0x9e37_79b9_7f4a_7c15 ^ layer as u64,
        )?;
        roots.push(root);
    }
    let archive = dir.join("big.tar");
    let borrowed: Vec<&Path> = roots.iter().map(PathBuf::as_path).collect();
    shipshape_node::image::pack_layers(&borrowed, "bench/big:1", &archive)?;
    let reference = format!("{}/bench/big:1", registry.address);
    let output = Command::new("skopeo")
        .args(["copy", "-q", "--dest-tls-verify=false"])
        .arg(format!("oci-archive:{}", archive.display()))
        .arg(format!("docker://{reference}"))
        .output()
        .context("skopeo cannot run")?;
    if !output.status.success() {
        bail!(
            "skopeo copy: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    for root in roots.iter().skip(1) {
        let _ = std::fs::remove_dir_all(root);
    }
    let _ = std::fs::remove_file(archive);
    Ok(reference)
}

/// Removes the image and waits for containerd's collector, so the next pull starts from empty.
fn remove_image(socket: &Path, reference: &str) {
    let _ = Command::new("ctr")
        .arg("--address")
        .arg(socket)
        .args(["-n", NAMESPACE, "image", "rm", "--sync", reference])
        .output();
}

fn ctr_pull(socket: &Path, reference: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let output = Command::new("ctr")
        .arg("--address")
        .arg(socket)
        .args(["-n", NAMESPACE, "image", "pull", "--plain-http", reference])
        .output()
        .context("ctr cannot run")?;
    let took = started.elapsed();
    if !output.status.success() {
        bail!(
            "ctr image pull: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(took)
}

/// Runs the benchmark `runs` times, or says why it is skipped (`None`).
pub(crate) async fn run(
    root: &Path,
    runs: usize,
    megabytes: usize,
    pods: usize,
) -> anyhow::Result<Option<PullFigures>> {
    if let Err(error) = shipshape_node::containerd::check_host() {
        println!("image pull: skipped ({error})");
        return Ok(None);
    }
    for program in ["docker-registry", "skopeo", "ctr"] {
        if find_program(program).is_none() {
            println!("image pull: skipped ({program} is not installed: run sudo scripts/setup)");
            return Ok(None);
        }
    }
    let dir = root.join("pull");
    std::fs::create_dir_all(&dir)?;
    let registry = start_registry(&dir)?;
    let reference = push_image(&dir, &registry, megabytes.max(LAYERS))?;
    let containerd = Containerd::start_own(&dir).await?;
    let socket = containerd.socket().to_path_buf();
    let result = async {
        let config = shipshape_registry::RegistryConfig::parse(
            &format!(
                "mirrors:\n  \"{0}\":\n    endpoint: [\"http://{0}\"]\n",
                registry.address
            ),
            Path::new("registries.yaml"),
        )?;
        let puller = Arc::new(shipshape_node::pull::ImagePuller::new(Arc::new(config)));
        let image = shipshape_api::image_ref::ImageRef::parse(&reference)?;
        let keyring = shipshape_registry::Keyring::default();
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        let mut bytes = 0;
        for run in 0..runs.max(1) {
            for ours_now in [run % 2 == 0, run % 2 == 1] {
                if ours_now {
                    let started = Instant::now();
                    let pulled = puller
                        .pull(
                            &containerd,
                            NAMESPACE,
                            &image,
                            &keyring,
                            started,
                            &Arc::default(),
                        )
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    ours.push(started.elapsed());
                    bytes = pulled.size;
                    if pulled.downloaded < pulled.size {
                        bail!(
                            "the pull found content left from the last one ({} of {} bytes downloaded)",
                            pulled.downloaded,
                            pulled.size
                        );
                    }
                } else {
                    theirs.push(ctr_pull(&socket, &reference)?);
                }
                remove_image(&socket, &reference);
            }
        }
        let fan_out = if pods > 0 {
            Some(fan_out(&dir, &containerd, puller, &reference, pods).await?)
        } else {
            None
        };
        Ok::<_, anyhow::Error>(PullFigures {
            runs: runs.max(1),
            layers: LAYERS,
            bytes,
            ours: crate::podbench::median(ours),
            ctr: crate::podbench::median(theirs),
            fan_out,
        })
    }
    .await;
    containerd.stop().await;
    drop(registry);
    let _ = std::fs::remove_dir_all(&dir);
    result.map(Some)
}

/// The fan-out nodes: names, bridges and subnets of their own, apart from the cluster tests'
/// and the pod benchmark's.
const FAN_OUT_NODES: [(&str, &str); 3] = [
    ("pull-1", "10.244.252.0/24"),
    ("pull-2", "10.244.253.0/24"),
    ("pull-3", "10.244.254.0/24"),
];

/// `pods` pods of `reference` (on no node yet) bound across three kubelets at once: the time
/// until all run, and the bytes their pulls downloaded.
async fn fan_out(
    dir: &Path,
    containerd: &Containerd,
    puller: Arc<shipshape_node::pull::ImagePuller>,
    reference: &str,
    pods: usize,
) -> anyhow::Result<FanOut> {
    use kameo::actor::Spawn as _;
    use shipshape_actors::controller::ControllerActor;
    use shipshape_actors::store::Write;
    use shipshape_actors::store_actor::List;
    use shipshape_node::kubelet::{Kubelet, KubeletConfig};
    let cni_dir = shipshape_node::containerd::check_host()?;
    let data = dir.join("fan-out");
    std::fs::create_dir_all(&data)?;
    let store = shipshape_actors::StoreActor::spawn(shipshape_actors::StoreActor::new(
        shipshape_actors::Store::open(&data.join("shipshape.redb"))?,
    ));
    let mut seen = crate::podbench::watch_pods(&store).await?;
    let mut nodes = Vec::new();
    for (node, subnet) in FAN_OUT_NODES {
        let (kubelet, handle) = Kubelet::new(
            KubeletConfig {
                node: node.into(),
                subnet: subnet.parse().map_err(|e: String| anyhow::anyhow!(e))?,
                cpu_milli: 64_000,
                memory: 64 << 30,
                max_pods: 110,
                lease_duration: Duration::from_secs(40),
                data_dir: data.clone(),
                cni_dir: cni_dir.clone(),
                cluster_dns: std::net::Ipv4Addr::new(10, 96, 0, 10),
                cluster_domain: "cluster.local".into(),
                images: puller.clone(),
                image_gc: shipshape_reconciler::images::ImageGcPolicy::default(),
                containerd_root: dir.to_path_buf(),
            },
            containerd.clone(),
            store.clone(),
        );
        nodes.push((ControllerActor::start(kubelet, store.clone()), handle));
    }
    let names: Vec<String> = (0..pods).map(|i| format!("fan-out-{i}")).collect();
    let measured = async {
        crate::podbench::apply(
            &store,
            vec![Write::Create {
                object: serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}),
                applied: None,
                application: None,
            }],
        )
        .await?;
        let started = Instant::now();
        let writes = names
            .iter()
            .enumerate()
            .map(|(i, name)| Write::Create {
                object: serde_json::json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": name, "namespace": "bench"},
                    "spec": {
                        "nodeName": FAN_OUT_NODES[i % FAN_OUT_NODES.len()].0,
                        "terminationGracePeriodSeconds": 0,
                        "containers": [{"name": "main", "image": reference,
                            "imagePullPolicy": "IfNotPresent", "command": ["sleep", "3600"]}],
                    },
                }),
                applied: None,
                application: None,
            })
            .collect();
        crate::podbench::apply(&store, writes).await?;
        crate::podbench::wait_for(&mut seen, "every fan-out pod running", |s| {
            names.iter().all(|n| s.running.contains_key(n))
        })
        .await?;
        let last = names
            .iter()
            .filter_map(|n| seen.borrow().running.get(n).copied())
            .max()
            .unwrap_or(started);
        let events = store
            .ask(List {
                kind: Some(shipshape_api::Kind::Event),
                namespace: Some("bench".into()),
            })
            .await
            .map_err(|e| anyhow::anyhow!("store: {e}"))?;
        // "Successfully pulled image … Image size: N bytes, M downloaded from …"
        let downloaded: u64 = events
            .iter()
            .filter(|(_, e)| e.object["reason"] == "Pulled")
            .filter_map(|(_, e)| {
                let message = e.object["message"].as_str()?;
                let (_, after) = message.split_once(" bytes, ")?;
                after.split_whitespace().next()?.parse::<u64>().ok()
            })
            .sum();
        crate::podbench::delete_all(&store, &mut seen, &names).await?;
        Ok::<_, anyhow::Error>(FanOut {
            pods,
            nodes: FAN_OUT_NODES.len(),
            all_running: last - started,
            downloaded,
        })
    }
    .await;
    for (actor, handle) in nodes {
        handle.shutdown(false).await;
        let _ = actor.stop_gracefully().await;
        actor.wait_for_shutdown().await;
    }
    let _ = store.stop_gracefully().await;
    store.wait_for_shutdown().await;
    measured
}
