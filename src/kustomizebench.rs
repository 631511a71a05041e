//! A kustomize monorepo: N applications, each an overlay of one shared base (a Deployment, a
//! Service and a generated ConfigMap), synced into the store by the same control plane as
//! `shipshape up` (no nodes: what is timed is render, validate, plan and apply). Timed: the
//! first sync of everything; pushes that change one overlay, from the commit to the sync
//! answering with it applied; and a push that changes the base, so every application renders
//! again.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;
use shipshape_actors::SyncOptions;
use shipshape_actors::gitsync::{GitRef, GitSource, Outcome};

use crate::bench::git;
use crate::cluster::ControlPlane;
use crate::commitbench::percentiles;

/// What the benchmark measured.
pub(crate) struct KustomizeFigures {
    applications: usize,
    first: Duration,
    one_overlay: Vec<Duration>,
    base: Duration,
}

impl KustomizeFigures {
    pub(crate) fn print(&self) {
        let (p50, p99) = percentiles(&self.one_overlay);
        println!(
            "kustomize monorepo ({} applications, each an overlay of one base; 3 objects each):",
            self.applications
        );
        println!(
            "  first render, validate and apply of all   {:>8}",
            crate::bench::ms(self.first)
        );
        println!(
            "  push changing one overlay, to applied    p50 {:>7}  p99 {:>7}  ({} pushes; goal: under 200 ms)",
            crate::bench::ms(p50),
            crate::bench::ms(p99),
            self.one_overlay.len()
        );
        println!(
            "  push changing the base (all re-render)   {:>8}",
            crate::bench::ms(self.base)
        );
    }
}

const BASE: &str = "resources:\n- deployment.yaml\n- service.yaml\nconfigMapGenerator:\n- name: settings\n  literals:\n  - mode=fast\n";
const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: web\n        image: nginx:1.27\n        envFrom:\n        - configMapRef:\n            name: settings\n";
const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector: {app: web}\n  ports:\n  - port: 80\n";

fn overlay(app: usize, replicas: usize) -> String {
    format!(
        "resources:\n- ../../base\nnamePrefix: app{app}-\nlabels:\n- pairs: {{team: t{app}}}\nreplicas:\n- name: web\n  count: {replicas}\n"
    )
}

/// Commits, syncs, and checks that exactly `expected` applications were applied.
async fn push(
    plane: &ControlPlane,
    repo: &Path,
    message: &str,
    expected: usize,
) -> anyhow::Result<Duration> {
    git(repo, &["commit", "-qam", message])?;
    let started = Instant::now();
    let report = plane.sync(SyncOptions::default()).await?;
    let took = started.elapsed();
    let applied = report
        .applications
        .iter()
        .filter(|(_, outcome)| matches!(outcome, Outcome::Applied { .. }))
        .count();
    if let Some((name, Outcome::Failed(problems))) = report
        .applications
        .iter()
        .find(|(_, o)| matches!(o, Outcome::Failed(_)))
    {
        bail!("{name} failed: {}", problems.join("; "));
    }
    if applied != expected {
        bail!("{message}: {applied} applications applied, {expected} expected");
    }
    Ok(took)
}

/// Runs the benchmark with `applications` overlays and `pushes` one-overlay pushes.
pub(crate) async fn run(
    root: &Path,
    applications: usize,
    pushes: usize,
) -> anyhow::Result<KustomizeFigures> {
    let base = root.join("kustomize");
    let repo = base.join("repo");
    let data = base.join("data");
    std::fs::create_dir_all(repo.join("base"))?;
    std::fs::create_dir_all(&data)?;
    std::fs::write(repo.join("base/kustomization.yaml"), BASE)?;
    std::fs::write(repo.join("base/deployment.yaml"), DEPLOYMENT)?;
    std::fs::write(repo.join("base/service.yaml"), SERVICE)?;
    for app in 0..applications {
        let dir = repo.join(format!("apps/app{app}"));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("kustomization.yaml"), overlay(app, 1))?;
    }
    git(&repo, &["init", "-q"])?;
    git(&repo, &["add", "."])?;
    git(&repo, &["commit", "-qm", "monorepo"])?;
    let source = GitSource {
        url: repo.display().to_string(),
        reference: GitRef::DefaultBranch,
        path: "apps".into(),
    };
    let store = crate::data::open_store(&data)?;
    let plane = ControlPlane::start(&data, store, source)?;
    let result = async {
        let started = Instant::now();
        let report = plane.sync(SyncOptions::default()).await?;
        let first = started.elapsed();
        let applied = report
            .applications
            .iter()
            .filter(|(_, o)| matches!(o, Outcome::Applied { .. }))
            .count();
        if applied != applications {
            bail!(
                "the first sync applied {applied} of {applications} applications: {:?}",
                report
                    .applications
                    .iter()
                    .find(|(_, o)| !matches!(o, Outcome::Applied { .. }))
            );
        }
        let mut one_overlay = Vec::new();
        for run in 0..pushes {
            let app = (run * 7919) % applications.max(1);
            std::fs::write(
                repo.join(format!("apps/app{app}/kustomization.yaml")),
                overlay(app, 2 + run),
            )?;
            one_overlay
                .push(push(&plane, &repo, &format!("app{app}: {} replicas", 2 + run), 1).await?);
        }
        std::fs::write(
            repo.join("base/deployment.yaml"),
            DEPLOYMENT.replace("nginx:1.27", "nginx:1.28"),
        )?;
        let base = push(&plane, &repo, "base: nginx 1.28", applications).await?;
        Ok(KustomizeFigures {
            applications,
            first,
            one_overlay,
            base,
        })
    }
    .await;
    plane.stop(false).await;
    result
}
