//! `shipshape bench`: the control plane's figures measured on this machine, with etcd 3.4 (the
//! store Kubernetes trusts) doing the same writes in the same run, so the ratio means something.
//!
//! Everything runs on loopback and in temporary directories, which are removed afterwards.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine as _;
use clap::Args;
use kameo::actor::Spawn;
use serde_json::json;
use shipshape_actors::gitsync::Outcome;
use shipshape_actors::store::{Batch, Write};
use shipshape_actors::store_actor::{Apply, Watch};
use shipshape_actors::{GitRef, GitSource, Store, StoreActor, SyncOptions};

use crate::cluster::ControlPlane;

/// Sizes of the benchmark.
#[derive(Args)]
pub struct BenchArgs {
    /// Objects in the benchmark commit.
    #[arg(long, default_value_t = 1000)]
    objects: usize,
    /// Single-object writes for the write-rate figures.
    #[arg(long, default_value_t = 2000)]
    writes: usize,
    /// Watchers for the fan-out figure.
    #[arg(long, default_value_t = 100)]
    watchers: usize,
    /// Simulated nodes for the scheduling benchmark (0 skips it).
    #[arg(long, default_value_t = 5000)]
    scale_nodes: usize,
    /// Pods for the scheduling benchmark (in Deployments of 100 replicas).
    #[arg(long, default_value_t = 150_000)]
    scale_pods: usize,
    /// Pod start latency runs on real containerd, against `ctr run` (0 skips; needs root).
    #[arg(long, default_value_t = 5)]
    pod_runs: usize,
    /// Pods started on one node at once, on real containerd (0 skips).
    #[arg(long, default_value_t = 100)]
    parallel_pods: usize,
    /// Commits to the example web Deployment, timed from commit to its new pods running, per
    /// trigger (sync-now and a 1-second poll), on real containerd (0 skips; needs root).
    #[arg(long, default_value_t = 10)]
    commit_runs: usize,
    /// Pulls of a several-layer image from a registry on loopback, against `ctr image pull`
    /// (0 skips; needs root, docker-registry and skopeo).
    #[arg(long, default_value_t = 3)]
    pull_runs: usize,
    /// The size of that image in MiB (in 5 layers).
    #[arg(long, default_value_t = 100)]
    pull_megabytes: usize,
    /// Pods of that image (new to every node) started across 3 nodes at once (0 skips).
    #[arg(long, default_value_t = 20)]
    pull_pods: usize,
    /// Applications in the kustomize monorepo benchmark, each an overlay of one base (0 skips).
    #[arg(long, default_value_t = 1000)]
    kustomize_apps: usize,
    /// Pushes changing one overlay each, timed to applied.
    #[arg(long, default_value_t = 20)]
    kustomize_pushes: usize,
    /// Simulated clusters in the fleet benchmark, in three waves, in this process (0 skips).
    #[arg(long, default_value_t = 100)]
    fleet_clusters: usize,
    /// Service records for the DNS benchmark against BIND (0 skips).
    #[arg(long, default_value_t = 1000)]
    dns_records: usize,
    /// Seconds of dnsperf against each DNS server.
    #[arg(long, default_value_t = 10)]
    dns_seconds: u64,
    /// Seconds of wrk through the ingress and through nginx, plain and TLS, on real
    /// containerd (0 skips; needs root, nginx and wrk).
    #[arg(long, default_value_t = 10)]
    ingress_seconds: u64,
}

/// Runs git in `dir` as the benchmarks' author; a failure carries git's own message.
pub(crate) fn git(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("git")
        .args([
            "-c",
            "user.name=bench",
            "-c",
            "user.email=bench@localhost",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .context("git must be installed")?;
    if !output.status.success() {
        bail!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

fn config_map(name: &str, value: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": name, "namespace": "bench"}, "data": {"value": value}})
}

fn rate(count: usize, elapsed: Duration, unit: &str) -> String {
    format!(
        "{:.0} {unit}/s",
        count as f64 / elapsed.as_secs_f64().max(1e-9)
    )
}

pub(crate) fn ms(elapsed: Duration) -> String {
    format!("{:.0} ms", elapsed.as_secs_f64() * 1000.0)
}

fn bulk_manifest(objects: usize, value: &str) -> String {
    (0..objects)
        .map(|i| {
            format!("---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i}\n  namespace: bench\ndata:\n  value: \"{value}-{i}\"\n")
        })
        .collect()
}

/// Push to applied: commit, then sync now, until every object is stored.
async fn commit_to_applied(root: &Path, objects: usize) -> anyhow::Result<(Duration, Duration)> {
    let repo = root.join("repo");
    std::fs::create_dir_all(repo.join("apps/bulk"))?;
    git(&repo, &["init", "-q"])?;
    let data = root.join("data");
    std::fs::create_dir_all(&data)?;
    let store = Store::open(&data.join("shipshape.redb"))?;
    let source = GitSource {
        url: repo.display().to_string(),
        reference: GitRef::Branch("main".into()),
        path: "apps".into(),
    };
    std::fs::write(
        repo.join("apps/namespaces.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: bench\n",
    )?;
    let plane = ControlPlane::start(&data, store, source)?;
    let mut timings = Vec::new();
    for (round, value) in ["first", "second"].into_iter().enumerate() {
        std::fs::write(
            repo.join("apps/bulk/objects.yaml"),
            bulk_manifest(objects, value),
        )?;
        git(&repo, &["add", "-A"])?;
        let started = Instant::now();
        git(&repo, &["commit", "-q", "-m", value])?;
        let report = plane.sync(SyncOptions::default()).await?;
        let elapsed = started.elapsed();
        let expected = if round == 0 {
            Outcome::Applied {
                created: objects,
                updated: 0,
                pruned: 0,
                unchanged: 0,
            }
        } else {
            Outcome::Applied {
                created: 0,
                updated: objects,
                pruned: 0,
                unchanged: 0,
            }
        };
        let bulk = report.applications.iter().find(|(name, _)| name == "bulk");
        if bulk.map(|(_, o)| o) != Some(&expected) {
            bail!(
                "the benchmark commit was not applied as expected: {:?}",
                report.applications
            );
        }
        timings.push(elapsed);
    }
    plane.stop(true).await;
    Ok((timings[0], timings[1]))
}

struct StoreFigures {
    single: Duration,
    batched: Duration,
    fan_out: Duration,
}

/// Durable writes one per transaction, then 100 per transaction, then fan-out to watchers.
async fn store_writes(root: &Path, writes: usize, watchers: usize) -> anyhow::Result<StoreFigures> {
    let store = StoreActor::spawn(StoreActor::new(Store::open(&root.join("writes.redb"))?));
    let apply = |writes: Vec<Write>| {
        let store = store.clone();
        async move {
            store
                .ask(Apply(Batch {
                    writes,
                    audit: None,
                }))
                .await
                .map_err(|e| anyhow::anyhow!("store write: {e}"))
        }
    };
    apply(vec![Write::Create {
        object: json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}),
        applied: None,
        application: None,
    }])
    .await?;
    let started = Instant::now();
    for i in 0..writes {
        apply(vec![Write::Create {
            object: config_map(&format!("single-{i}"), "v"),
            applied: None,
            application: None,
        }])
        .await?;
    }
    let single = started.elapsed();

    let started = Instant::now();
    for chunk in 0..writes.div_ceil(100) {
        let batch = (0..100)
            .map(|i| Write::Create {
                object: config_map(&format!("batched-{chunk}-{i}"), "v"),
                applied: None,
                application: None,
            })
            .collect();
        apply(batch).await?;
    }
    let batched = started.elapsed();

    let mut receivers = Vec::new();
    for _ in 0..watchers {
        let start = store
            .ask(Watch {
                after: u64::MAX / 2,
            })
            .await
            .map_err(|e| anyhow::anyhow!("watch: {e}"))?;
        receivers.push(start.live);
    }
    let counters: Vec<_> = receivers
        .into_iter()
        .map(|mut live| {
            tokio::spawn(async move {
                let mut seen = 0;
                while seen < writes {
                    match live.recv().await {
                        Ok(_) => seen += 1,
                        Err(_) => break,
                    }
                }
                seen
            })
        })
        .collect();
    let started = Instant::now();
    for i in 0..writes {
        apply(vec![Write::Create {
            object: config_map(&format!("watched-{i}"), "v"),
            applied: None,
            application: None,
        }])
        .await?;
    }
    for counter in counters {
        let seen = counter.await?;
        if seen != writes {
            bail!("a watcher saw {seen} of {writes} events");
        }
    }
    let fan_out = started.elapsed();
    let _ = store.stop_gracefully().await;
    store.wait_for_shutdown().await;
    Ok(StoreFigures {
        single,
        batched,
        fan_out,
    })
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// etcd 3.4 on loopback, stopped (and its data removed) when dropped.
struct Etcd {
    child: std::process::Child,
    client: SocketAddr,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_etcd(root: &Path) -> anyhow::Result<Option<Etcd>> {
    if Command::new("etcd")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        return Ok(None);
    }
    let client = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let peer = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let child = Command::new("etcd")
        .arg("--data-dir")
        .arg(root.join("etcd"))
        .args(["--name", "bench"])
        .arg(format!("--listen-client-urls=http://{client}"))
        .arg(format!("--advertise-client-urls=http://{client}"))
        .arg(format!("--listen-peer-urls=http://{peer}"))
        .arg(format!("--initial-advertise-peer-urls=http://{peer}"))
        .arg(format!("--initial-cluster=bench=http://{peer}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start etcd")?;
    let etcd = Etcd { child, client };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut response) = ureq::get(format!("http://{client}/health")).call()
            && response
                .body_mut()
                .read_to_string()
                .is_ok_and(|b| b.contains("true"))
        {
            return Ok(Some(etcd));
        }
        if Instant::now() > deadline {
            bail!("etcd did not become healthy on {client}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The same single-object writes against etcd, through its v3 JSON gateway, each acknowledged
/// only once durable (etcd fsyncs its WAL before answering).
fn etcd_writes(etcd: &Etcd, writes: usize) -> anyhow::Result<Duration> {
    let agent = ureq::Agent::new_with_defaults();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let started = Instant::now();
    for i in 0..writes {
        let object = serde_json::to_string(&config_map(&format!("single-{i}"), "v"))?;
        let body = json!({"key": b64(&format!("/registry/configmaps/bench/single-{i}")), "value": b64(&object)});
        agent
            .post(format!("http://{}/v3/kv/put", etcd.client))
            .send_json(&body)
            .with_context(|| format!("etcd put {i}"))?;
    }
    Ok(started.elapsed())
}

pub fn run(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    let root = tempfile_dir()?;
    let result = (|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        eprintln!("benchmarking on loopback in {} …", root.path.display());
        let (first, update) = runtime.block_on(commit_to_applied(&root.path, args.objects))?;
        println!(
            "commit of {} objects, push to applied (fetch, read, validate, plan, one durable transaction):",
            args.objects
        );
        println!(
            "  first apply   {:>8}   ({})",
            ms(first),
            rate(args.objects, first, "objects")
        );
        println!(
            "  update all    {:>8}   ({})",
            ms(update),
            rate(args.objects, update, "objects")
        );
        let figures = runtime.block_on(store_writes(&root.path, args.writes, args.watchers))?;
        println!("store writes, each durable before it is acknowledged:");
        println!(
            "  1 object per transaction     {} writes in {:>8}   {}",
            args.writes,
            ms(figures.single),
            rate(args.writes, figures.single, "writes")
        );
        let batched = args.writes.div_ceil(100) * 100;
        println!(
            "  100 objects per transaction  {batched} objects in {:>8}   {}",
            ms(figures.batched),
            rate(batched, figures.batched, "objects")
        );
        println!(
            "watch fan-out: {} watchers x {} events in {}   {}",
            args.watchers,
            args.writes,
            ms(figures.fan_out),
            rate(args.watchers * args.writes, figures.fan_out, "deliveries")
        );
        if args.scale_nodes > 0 && args.scale_pods > 0 {
            let scale = runtime.block_on(crate::scale::run(
                &root.path,
                args.scale_nodes,
                args.scale_pods,
            ))?;
            scale.print();
        }
        if args.pod_runs > 0
            && let Some(pods) = runtime.block_on(crate::podbench::run(
                &root.path,
                args.pod_runs,
                args.parallel_pods,
            ))?
        {
            pods.print();
        }
        if args.pull_runs > 0
            && let Some(pulls) = runtime.block_on(crate::pullbench::run(
                &root.path,
                args.pull_runs,
                args.pull_megabytes,
                args.pull_pods,
            ))?
        {
            pulls.print();
        }
        if args.commit_runs > 0
            && let Some(commits) =
                runtime.block_on(crate::commitbench::run(&root.path, args.commit_runs))?
        {
            commits.print();
        }
        if args.kustomize_apps > 0 {
            runtime
                .block_on(crate::kustomizebench::run(
                    &root.path,
                    args.kustomize_apps,
                    args.kustomize_pushes.max(1),
                ))?
                .print();
        }
        if args.fleet_clusters > 0 {
            runtime
                .block_on(crate::fleetbench::run(&root.path, args.fleet_clusters))?
                .print();
        }
        if args.dns_records > 0 {
            runtime
                .block_on(crate::dnsbench::run(
                    &root.path,
                    args.dns_records,
                    args.dns_seconds.max(1),
                ))?
                .print();
        }
        if args.ingress_seconds > 0
            && let Some(ingress) =
                runtime.block_on(crate::ingressbench::run(&root.path, args.ingress_seconds))?
        {
            ingress.print();
        }
        match start_etcd(&root.path)? {
            Some(etcd) => {
                let etcd_time = etcd_writes(&etcd, args.writes)?;
                drop(etcd);
                println!(
                    "etcd 3.4, same writes (1 per request, loopback): {} writes in {:>8}   {}",
                    args.writes,
                    ms(etcd_time),
                    rate(args.writes, etcd_time, "writes")
                );
                let ratio = etcd_time.as_secs_f64() / figures.single.as_secs_f64().max(1e-9);
                println!(
                    "ratio shipshape / etcd (durable single-object writes per second): {ratio:.2}x"
                );
                println!(
                    "  (shipshape: the Store actor in-process; etcd: its v3 JSON gateway on loopback, so etcd also pays HTTP per write)"
                );
            }
            None => println!(
                "etcd: not installed, no ratio (apt-get install etcd-server, or run scripts/bench)"
            ),
        }
        Ok(ExitCode::SUCCESS)
    })();
    drop(root);
    result
}

/// A temporary directory removed on drop (also on error).
struct TempDir {
    path: std::path::PathBuf,
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn tempfile_dir() -> anyhow::Result<TempDir> {
    let path = std::env::temp_dir().join(format!("shipshape-bench-{}", std::process::id()));
    std::fs::create_dir_all(&path)?;
    Ok(TempDir { path })
}
