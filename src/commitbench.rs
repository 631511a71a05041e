//! Commit to running, on real containerd: from a commit that changes the example web
//! Deployment's pod template, the time until the first new pod is Running and until the
//! rollout is complete; once with a sync started right after the commit (what a Git host's
//! webhook does), once with a 1-second poll. Runs the same control plane as `shipshape up`,
//! in-process. Needs root, containerd and the CNI plugins, and no other cluster on the host.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Parser;
use serde_json::Value;
use shipshape_actors::store_actor::List;
use shipshape_actors::{SyncNow, SyncOptions};
use shipshape_api::Kind;

use crate::bench::git;
use crate::cluster::{ControlPlane, UpArgs};

/// The example application the benchmark rolls, as `examples-repo/` ships it.
const WEB: [(&str, &str); 3] = [
    (
        "configmap.yaml",
        include_str!("../examples-repo/web/configmap.yaml"),
    ),
    (
        "deployment.yaml",
        include_str!("../examples-repo/web/deployment.yaml"),
    ),
    (
        "service.yaml",
        include_str!("../examples-repo/web/service.yaml"),
    ),
];
const NAMESPACES: &str = include_str!("../examples-repo/namespaces.yaml");
const GREETING: &str = "Hello from shipshape";

/// `up`'s flags, parsed as the command line would give them.
#[derive(Parser)]
pub(crate) struct Up {
    #[command(flatten)]
    pub(crate) args: UpArgs,
}

/// p50 and p99 of some durations (nearest rank); the commit and scale benchmarks both report them.
pub(crate) fn percentiles(values: &[Duration]) -> (Duration, Duration) {
    let mut sorted = values.to_vec();
    sorted.sort();
    let at = |q: f64| {
        let index = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len().max(1)) - 1;
        sorted.get(index).copied().unwrap_or_default()
    };
    (at(0.50), at(0.99))
}

/// What one way of noticing commits measured.
pub(crate) struct Trigger {
    name: &'static str,
    goal: &'static str,
    first_running: Vec<Duration>,
    complete: Vec<Duration>,
}

/// What the benchmark measured.
pub(crate) struct CommitFigures {
    triggers: Vec<Trigger>,
}

impl CommitFigures {
    pub(crate) fn print(&self) {
        let runs = self.triggers.first().map_or(0, |t| t.first_running.len());
        println!(
            "commit to running (examples-repo/web: 2 replicas, maxSurge 1, maxUnavailable 0, readiness every 2 s; {runs} commits each, real containerd):"
        );
        for trigger in &self.triggers {
            let (p50, p99) = percentiles(&trigger.first_running);
            let (c50, c99) = percentiles(&trigger.complete);
            println!(
                "  {:<22} first new pod Running  p50 {:>7}  p99 {:>7}  ({})",
                trigger.name,
                crate::bench::ms(p50),
                crate::bench::ms(p99),
                trigger.goal
            );
            println!(
                "  {:<22} rollout complete       p50 {:>7}  p99 {:>7}  (bounded by readiness probes and old pods stopping)",
                "",
                crate::bench::ms(c50),
                crate::bench::ms(c99)
            );
        }
    }
}

/// Sets the web pods' greeting and commits it.
fn commit_greeting(repo: &Path, greeting: &str) -> anyhow::Result<()> {
    let file = repo.join("apps/web/deployment.yaml");
    let text = WEB[1].1.replace(GREETING, greeting);
    std::fs::write(&file, text)?;
    git(repo, &["commit", "-qam", &format!("web: {greeting}")])
}

/// Where a rollout to `greeting` stands: whether a pod carrying it runs, and whether the
/// Deployment is done (every replica updated and available, no old pod left).
async fn observe(plane: &ControlPlane, greeting: &str) -> anyhow::Result<(bool, bool)> {
    let objects = plane
        .store()
        .ask(List {
            kind: None,
            namespace: Some("demo".into()),
        })
        .await
        .map_err(|e| anyhow::anyhow!("store: {e}"))?;
    let mut running = false;
    let mut pods = 0;
    let mut complete = false;
    for (key, stored) in &objects {
        let object = &stored.object;
        match key.kind {
            Kind::Pod if object["metadata"]["labels"]["app"] == "web" => {
                pods += 1;
                let carries = object
                    .pointer("/spec/containers/0/env/0/value")
                    .and_then(Value::as_str)
                    == Some(greeting);
                running |= carries && object.pointer("/status/phase") == Some(&"Running".into());
            }
            Kind::Deployment if key.name == "web" => {
                let status = &object["status"];
                let number = |field: &str| status[field].as_u64().unwrap_or(0);
                let generation = object["metadata"]["generation"].as_u64().unwrap_or(0);
                complete = object
                    .pointer("/spec/template/spec/containers/0/env/0/value")
                    .and_then(Value::as_str)
                    == Some(greeting)
                    && number("observedGeneration") >= generation
                    && number("updatedReplicas") == 2
                    && number("availableReplicas") == 2
                    && number("replicas") == 2;
            }
            _ => {}
        }
    }
    Ok((running, complete && pods == 2))
}

/// One commit, timed until its first pod runs and its rollout completes.
/// With `sync_now`, the commit is followed by a sync at once (a webhook); otherwise the
/// poller running beside it notices the commit.
async fn one_run(
    plane: &ControlPlane,
    repo: &Path,
    greeting: &str,
    sync_now: bool,
) -> anyhow::Result<(Duration, Duration)> {
    commit_greeting(repo, greeting)?;
    let committed = Instant::now();
    if sync_now {
        plane.sync(SyncOptions::default()).await?;
    }
    let mut first_running = None;
    let deadline = committed + Duration::from_secs(120);
    loop {
        let (running, complete) = observe(plane, greeting).await?;
        if running && first_running.is_none() {
            first_running = Some(committed.elapsed());
        }
        if complete && let Some(first) = first_running {
            return Ok((first, committed.elapsed()));
        }
        if Instant::now() > deadline {
            bail!("the rollout to {greeting:?} did not finish within 2 minutes");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs the benchmark, or says why it cannot and returns `None`.
pub(crate) async fn run(root: &Path, runs: usize) -> anyhow::Result<Option<CommitFigures>> {
    let cni_dir = match shipshape_node::containerd::check_host() {
        Ok(dir) => dir,
        Err(error) => {
            println!("commit to running: skipped ({error})");
            return Ok(None);
        }
    };
    let busy = std::process::Command::new("nft")
        .args(["list", "table", "ip", "shipshape"])
        .output()
        .is_ok_and(|o| o.status.success());
    if busy || Path::new("/sys/class/net/ship-node-1").exists() {
        println!(
            "commit to running: skipped (a cluster is running on this host; stop it first: one containerd cluster per host)"
        );
        return Ok(None);
    }
    let base = root.join("commit");
    let repo = base.join("repo");
    let data = base.join("data");
    std::fs::create_dir_all(repo.join("apps/web"))?;
    std::fs::create_dir_all(&data)?;
    std::fs::write(repo.join("apps/namespaces.yaml"), NAMESPACES)?;
    for (name, text) in WEB {
        std::fs::write(repo.join("apps/web").join(name), text)?;
    }
    git(&repo, &["init", "-q"])?;
    git(&repo, &["add", "."])?;
    git(&repo, &["commit", "-qm", "web"])?;
    let archive = crate::podbench::busybox_archive(&base)?;
    let flags: Vec<std::ffi::OsString> = [
        "--repo".as_ref(),
        repo.as_os_str(),
        "--path".as_ref(),
        "apps".as_ref(),
        "--nodes".as_ref(),
        "2".as_ref(),
        "--dns-listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--ingress-http".as_ref(),
        "off".as_ref(),
        "--ingress-https".as_ref(),
        "off".as_ref(),
        "--import".as_ref(),
        archive.as_os_str(),
    ]
    .into_iter()
    .map(std::ffi::OsStr::to_os_string)
    .collect();
    let cluster = RealCluster::start(&flags, &data, cni_dir).await?;
    let plane = &cluster.plane;
    let result = async {
        // The first rollout starts pods from nothing; it is not what is measured.
        let deadline = Instant::now() + Duration::from_secs(120);
        while !observe(plane, GREETING).await?.1 {
            if Instant::now() > deadline {
                bail!("the example web Deployment did not become available within 2 minutes");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut triggers = Vec::new();
        for (name, goal, poll) in [
            ("sync-now trigger", "goal: p99 under 1 s", None),
            (
                "1 s poll",
                "goal: p99 under 2 s",
                Some(Duration::from_secs(1)),
            ),
        ] {
            // The poll runs on its own clock, as `up`'s does, whatever the benchmark is doing.
            let poller = poll.map(|period| {
                let sync = plane.syncer();
                tokio::spawn(async move {
                    let mut ticker = tokio::time::interval(period);
                    loop {
                        ticker.tick().await;
                        let _ = sync.ask(SyncNow(SyncOptions::default())).await;
                    }
                })
            });
            let mut trigger = Trigger {
                name,
                goal,
                first_running: Vec::new(),
                complete: Vec::new(),
            };
            for run in 0..runs {
                // Commits land at evenly spread points of the poll period: a rollout's length
                // is nearly constant, so without this every commit would meet the poll at the
                // same phase.
                if let Some(period) = poll {
                    tokio::time::sleep(period.mul_f64(run as f64 / runs as f64)).await;
                }
                let greeting = format!("Hello {} {run}", name.split(' ').next().unwrap_or(name));
                let measured = one_run(plane, &repo, &greeting, poll.is_none()).await;
                let (first, complete) = match measured {
                    Ok(times) => times,
                    Err(error) => {
                        if let Some(poller) = &poller {
                            poller.abort();
                        }
                        return Err(error);
                    }
                };
                trigger.first_running.push(first);
                trigger.complete.push(complete);
            }
            if let Some(poller) = poller {
                poller.abort();
            }
            triggers.push(trigger);
        }
        Ok(CommitFigures { triggers })
    }
    .await;
    cluster.stop().await;
    result.map(Some)
}

/// A cluster on real containerd in this process, as `up` starts it with `flags`, synced
/// once: what the benchmarks on real pods run against.
pub(crate) struct RealCluster {
    /// The control plane.
    pub(crate) plane: ControlPlane,
    containerd: shipshape_node::containerd::Containerd,
}

impl RealCluster {
    /// Starts it (stopping what had started if a later step fails).
    pub(crate) async fn start(
        flags: &[std::ffi::OsString],
        data: &Path,
        cni_dir: std::path::PathBuf,
    ) -> anyhow::Result<RealCluster> {
        let up = Up::try_parse_from(std::iter::once("up".into()).chain(flags.iter().cloned()))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let args = up.args;
        let nodes = args.simulated()?;
        let source = crate::cluster::resolve_source(&args)?;
        let store = crate::data::open_store(data)?;
        let mut plane = ControlPlane::start(data, store, source)?;
        let (containerd, real) =
            match crate::images::start_containerd(&args, &nodes, data, cni_dir).await {
                Ok(started) => started,
                Err(error) => {
                    plane.stop(false).await;
                    return Err(error);
                }
            };
        let started = async {
            plane.start_workloads(real, &args, data)?;
            plane.sync(SyncOptions::default()).await?;
            anyhow::Ok(())
        }
        .await;
        match started {
            Ok(()) => Ok(RealCluster { plane, containerd }),
            Err(error) => {
                plane.stop(false).await;
                containerd.stop().await;
                Err(error)
            }
        }
    }

    /// Stops the control plane (removing the pods) and containerd.
    pub(crate) async fn stop(self) {
        self.plane.stop(false).await;
        self.containerd.stop().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let values: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(
            percentiles(&values),
            (Duration::from_millis(50), Duration::from_millis(99))
        );
        let few = [Duration::from_millis(3), Duration::from_millis(1)];
        assert_eq!(
            percentiles(&few),
            (Duration::from_millis(1), Duration::from_millis(3))
        );
    }

    #[test]
    fn the_example_carries_the_greeting_the_benchmark_changes() {
        assert!(WEB[1].1.contains(GREETING));
    }
}
