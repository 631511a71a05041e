//! A fleet of N clusters in one process (each its own store, mirror and control plane, no
//! nodes), pulling one bare repository through libgit2's local transport, in three waves (10%,
//! 30%, 60%) with no soak. Timed: a commit from its push to every cluster of each wave applied,
//! so the per-wave overhead of the status round trip shows. Counted: the Git requests per
//! cluster per idle poll. The Git host is in-process on purpose: `git daemon` on the same two
//! cores forks a process per request, and a hundred clusters' fetches then measure it, not
//! the fleet (the end-to-end test runs the fleet over `git daemon`).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use shipshape_actors::SyncOptions;
use shipshape_actors::gitsync::{GitRef, GitSource};

use crate::bench::git;
use crate::cluster::ControlPlane;

/// How often each cluster polls.
const POLL: Duration = Duration::from_millis(1000);

/// What the benchmark measured.
pub(crate) struct FleetFigures {
    clusters: usize,
    waves: [usize; 3],
    /// From the push to the last cluster of each wave applying the commit.
    done: [Duration; 3],
    /// Git requests (advertisement, fetch, push) per cluster per poll while nothing changes.
    idle_requests: Vec<f64>,
    /// Git requests (advertisement, fetch, push) per cluster from the push to the last apply.
    rollout_requests: Vec<f64>,
}

impl FleetFigures {
    pub(crate) fn print(&self) {
        println!(
            "fleet of {} clusters in one process, 3 waves ({}/{}/{}), soak 0, polling every {} ms:",
            self.clusters,
            self.waves[0],
            self.waves[1],
            self.waves[2],
            POLL.as_millis()
        );
        let mut before = Duration::ZERO;
        for (wave, done) in self.done.iter().enumerate() {
            // The first wave waits for no status: its time is the next poll, the fetch every
            // cluster makes of the new commit at once, and the apply.
            let what = if wave == 0 {
                "(no status to wait for: the next poll, the fetch, the apply)"
            } else {
                "(the status round trip; goal: under 2 s per wave)"
            };
            println!(
                "  wave {wave} applied {:>8} after the push   overhead {:>8}  {what}",
                crate::bench::ms(*done),
                crate::bench::ms(done.saturating_sub(before))
            );
            before = *done;
        }
        let [advertisement, fetch, push] =
            [0, 1, 2].map(|i| self.idle_requests.get(i).copied().unwrap_or(0.0));
        println!(
            "  Git requests per cluster per idle poll   {:.2}  ({advertisement:.2} ref advertisement, {fetch:.2} fetch, {push:.2} push)",
            advertisement + fetch + push
        );
        let [advertisement, fetch, push] =
            [0, 1, 2].map(|i| self.rollout_requests.get(i).copied().unwrap_or(0.0));
        println!(
            "  Git requests per cluster for the rollout {:.2}  ({advertisement:.2} ref advertisement, {fetch:.2} fetch, {push:.2} push)",
            advertisement + fetch + push
        );
    }
}

const FLEET: &str = "apiVersion: shipshape.dev/v1alpha1\nkind: Fleet\nrollout:\n  waves:\n  - name: w0\n    clusterSelector: {matchLabels: {wave: w0}}\n  - name: w1\n    clusterSelector: {matchLabels: {wave: w1}}\n  - name: w2\n    clusterSelector: {matchLabels: {wave: w2}}\n";

fn config_map(version: usize) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\n  namespace: default\ndata:\n  version: \"{version}\"\n"
    )
}

/// Waits until each of `total` clusters reported `commit` applied; when each did.
async fn wait_all(
    on: &mut tokio::sync::mpsc::UnboundedReceiver<(usize, String, Instant)>,
    commit: String,
    total: usize,
) -> anyhow::Result<Vec<Instant>> {
    let mut at: Vec<Option<Instant>> = vec![None; total];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    while at.iter().any(Option::is_none) {
        match tokio::time::timeout_at(deadline, on.recv()).await {
            Ok(Some((i, id, when))) if id == commit => at[i] = Some(when),
            Ok(Some(_)) => {}
            _ => bail!(
                "{} of {total} clusters applied {} within 300 s",
                at.iter().filter(|a| a.is_some()).count(),
                &commit[..commit.len().min(7)]
            ),
        }
    }
    Ok(at.into_iter().flatten().collect())
}

/// Runs the benchmark with `clusters` clusters.
pub(crate) async fn run(root: &Path, clusters: usize) -> anyhow::Result<FleetFigures> {
    let base = root.join("fleet");
    std::fs::create_dir_all(&base)?;
    git(&base, &["init", "-q", "--bare", "origin.git"])?;
    git(&base, &["clone", "-q", "origin.git", "work"])?;
    let work = base.join("work");
    std::fs::write(work.join("fleet.yaml"), FLEET)?;
    std::fs::create_dir_all(work.join("apps/web"))?;
    std::fs::write(work.join("apps/web/cm.yaml"), config_map(1))?;
    git(&work, &["add", "-A"])?;
    git(&work, &["commit", "-qm", "v1"])?;
    git(&work, &["push", "-q", "origin", "HEAD:main"])?;
    let sizes = [
        (clusters / 10).max(1),
        (clusters * 3 / 10).max(1),
        clusters
            .saturating_sub((clusters / 10).max(1) + (clusters * 3 / 10).max(1))
            .max(1),
    ];
    let wave_of = |i: usize| {
        if i < sizes[0] {
            0
        } else if i < sizes[0] + sizes[1] {
            1
        } else {
            2
        }
    };
    let total = sizes.iter().sum::<usize>();
    let mut planes = Vec::new();
    for i in 0..total {
        let data = base.join(format!("data-{i}"));
        std::fs::create_dir_all(&data)?;
        let mut store = crate::data::open_store(&data)?;
        crate::cluster::remember_identity(
            &mut store,
            Some(shipshape_api::fleet::ClusterIdentity {
                name: format!("c{i}"),
                labels: [("wave".to_string(), format!("w{}", wave_of(i)))].into(),
            }),
        )?;
        let source = GitSource {
            url: base.join("origin.git").display().to_string(),
            reference: GitRef::Branch("main".into()),
            path: "apps".into(),
        };
        planes.push(Arc::new(ControlPlane::start(&data, store, source)?));
    }
    // Every cluster polls on its own, as separate machines would.
    let polls = Arc::new(AtomicUsize::new(0));
    let (seen, mut on) = tokio::sync::mpsc::unbounded_channel::<(usize, String, Instant)>();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (i, plane) in planes.iter().enumerate() {
        let plane = Arc::clone(plane);
        let polls = Arc::clone(&polls);
        let seen = seen.clone();
        let stop = Arc::clone(&stop);
        tasks.push(tokio::spawn(async move {
            let mut last = None;
            while !stop.load(Ordering::Relaxed) {
                if let Ok(report) = plane.sync(SyncOptions::default()).await
                    && !report.waiting
                    && last.as_ref() != Some(&report.commit.id)
                {
                    last = Some(report.commit.id.clone());
                    let _ = seen.send((i, report.commit.id.clone(), Instant::now()));
                }
                polls.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(POLL).await;
            }
        }));
    }
    drop(seen);
    let result = async {
        let head = |dir: &Path| -> anyhow::Result<String> {
            let output = Command::new("git")
                .args(["rev-parse", "HEAD"])
                .current_dir(dir)
                .output()?;
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
        };
        wait_all(&mut on, head(&work)?, total).await?;
        // Idle: nothing moves; count what the Git host sees per poll.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let requests = || {
            let metrics = &shipshape_actors::metrics::METRICS;
            ["advertisement", "fetch", "push"].map(|r| metrics.git_requests_of(r))
        };
        let (before, counted) = (requests(), polls.load(Ordering::Relaxed));
        tokio::time::sleep(Duration::from_secs(4)).await;
        let after = requests();
        let polled = (polls.load(Ordering::Relaxed) - counted).max(1) as f64;
        let idle_requests = after
            .iter()
            .zip(before)
            .map(|(a, b)| (a - b) as f64 / polled);
        let idle_requests: Vec<f64> = idle_requests.collect();
        std::fs::write(work.join("apps/web/cm.yaml"), config_map(2))?;
        git(&work, &["commit", "-qam", "v2"])?;
        let before = requests();
        let pushed = Instant::now();
        git(&work, &["push", "-q", "origin", "HEAD:main"])?;
        let applied = wait_all(&mut on, head(&work)?, total).await?;
        let after = requests();
        let rollout_requests = after
            .iter()
            .zip(before)
            .map(|(a, b)| (a - b) as f64 / total as f64)
            .collect();
        let mut done = [Duration::ZERO; 3];
        for (i, when) in applied.iter().enumerate() {
            let wave = wave_of(i);
            done[wave] = done[wave].max(when.duration_since(pushed));
        }
        Ok(FleetFigures {
            clusters: total,
            waves: sizes,
            done,
            idle_requests,
            rollout_requests,
        })
    }
    .await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    for plane in planes {
        if let Ok(plane) = Arc::try_unwrap(plane) {
            plane.stop(false).await;
        }
    }
    result
}
