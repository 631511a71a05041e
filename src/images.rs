//! Images and the containerd side of `up`: `shipshape image pack` and `image import`, starting
//! (or finding) containerd for the nodes, and importing the data directory's images into every
//! node's namespace at each start.
//!
//! Imported archives are kept in `DATA/images/`, so they survive a containerd that is not ours
//! (the system's, whose content store we do not own) and a data directory moved elsewhere.
//! A running cluster records its containerd socket and node namespaces in `DATA/runtime.json`,
//! which is how `shipshape image import` reaches it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use shipshape_node::containerd::Containerd;
use shipshape_node::image;
use shipshape_node::kubelet::{KubeletConfig, containerd_namespace};

use crate::cluster::UpArgs;
use crate::workloads::Nodes;

/// What a running cluster's nodes use, for `image import`.
#[derive(Serialize, Deserialize)]
struct RuntimeRecord {
    socket: PathBuf,
    namespaces: Vec<String>,
    /// `up --registry-config`, made absolute: `image pull` uses the same mirrors and
    /// credentials as the nodes.
    #[serde(default)]
    registry_config: Option<PathBuf>,
    /// `up --disable-default-registry-endpoint`.
    #[serde(default)]
    no_default_endpoint: bool,
}

const RUNTIME_RECORD: &str = "runtime.json";

fn images_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("images")
}

/// `shipshape image pack DIR --tag NAME:TAG -o FILE`.
pub fn pack(dir: &Path, tag: &str, out: &Path) -> anyhow::Result<ExitCode> {
    let packed = image::pack(dir, tag, out)?;
    println!(
        "packed {} into {} ({} KiB, manifest {}); import it with `shipshape image import {}` or `up --import {}`",
        packed.name,
        out.display(),
        packed.size / 1024,
        packed.digest,
        out.display(),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Copies `file` into the data directory's images (if it is not there already).
fn keep(file: &Path, data_dir: &Path) -> anyhow::Result<PathBuf> {
    let dir = images_dir(data_dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = file
        .file_name()
        .with_context(|| format!("{} is not a file", file.display()))?;
    let kept = dir.join(name);
    let same = std::fs::canonicalize(file).ok() == std::fs::canonicalize(&kept).ok();
    if !same {
        std::fs::copy(file, &kept)
            .with_context(|| format!("cannot copy {} into {}", file.display(), dir.display()))?;
    }
    Ok(kept)
}

/// `shipshape image import FILE`: keeps the archive and imports it into every node of the
/// running cluster (a stopped cluster imports it at its next start).
pub fn import(file: &Path, data_dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    if !file.is_file() {
        bail!("{}: no such file", file.display());
    }
    let data_dir = crate::data::data_dir(data_dir)?;
    let kept = keep(file, &data_dir)?;
    async_runtime()?.block_on(async move {
        let Some(record) = running_record(&data_dir).await else {
            println!(
                "kept {} in {}; no cluster is running on containerd, so it is imported at the next `shipshape up --runtime containerd`",
                file.display(),
                images_dir(&data_dir).display()
            );
            return Ok(ExitCode::SUCCESS);
        };
        let containerd = Containerd::connect_or_start(Some(&record.socket), &data_dir).await?;
        let imported = image::import(&containerd, &record.namespaces, &kept).await?;
        println!(
            "imported {} into {} node{} ({} KiB)",
            imported.names.join(", "),
            record.namespaces.len(),
            if record.namespaces.len() == 1 { "" } else { "s" },
            imported.bytes / 1024
        );
        Ok(ExitCode::SUCCESS)
    })
}

/// What the running cluster recorded, if one runs: its record names a containerd that answers.
async fn running_record(data_dir: &Path) -> Option<RuntimeRecord> {
    let record: RuntimeRecord =
        serde_json::from_slice(&std::fs::read(data_dir.join(RUNTIME_RECORD)).ok()?).ok()?;
    shipshape_node::containerd::probe(&record.socket, std::time::Duration::from_secs(3))
        .await
        .map(|_| record)
}

/// The running cluster's containerd and nodes, or why there is none to talk to.
async fn running(data_dir: &Path) -> anyhow::Result<(Containerd, RuntimeRecord)> {
    let Some(record) = running_record(data_dir).await else {
        bail!(
            "no cluster is running on containerd with data in {}: start one with `shipshape up`",
            data_dir.display()
        );
    };
    let containerd = Containerd::connect_or_start(Some(&record.socket), data_dir).await?;
    Ok((containerd, record))
}

fn async_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Bytes as people read them (`1.0 MiB`).
fn size_text(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `shipshape image pull REF`: into every node of the running cluster, one download (the
/// nodes share containerd's content), with the cluster's registry configuration.
pub fn pull(reference: &str, data_dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    let image = shipshape_api::image_ref::ImageRef::parse(reference)?;
    let data_dir = crate::data::data_dir(data_dir)?;
    async_runtime()?.block_on(async move {
        let (containerd, record) = running(&data_dir).await?;
        let mut config = match &record.registry_config {
            Some(path) => shipshape_registry::RegistryConfig::load(path)?,
            None => shipshape_registry::RegistryConfig::default(),
        };
        config.no_default_endpoint = record.no_default_endpoint;
        let puller = shipshape_node::pull::ImagePuller::new(Arc::new(config));
        let keyring = shipshape_registry::Keyring::default();
        let bar = indicatif::ProgressBar::new(0).with_style(
            indicatif::ProgressStyle::with_template(
                "{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let started = std::time::Instant::now();
        let mut downloaded = 0u64;
        let mut size = 0u64;
        let mut endpoint = String::new();
        let mut image_id = String::new();
        for namespace in &record.namespaces {
            let progress = Arc::new(shipshape_node::image::PullProgress::default());
            bar.set_message(format!("{image} → {namespace}"));
            bar.set_position(0);
            let pulling = puller.pull(
                &containerd,
                namespace,
                &image,
                &keyring,
                std::time::Instant::now(),
                &progress,
            );
            tokio::pin!(pulling);
            let pulled = loop {
                tokio::select! {
                    pulled = &mut pulling => break pulled,
                    () = tokio::time::sleep(std::time::Duration::from_millis(100)) => {
                        bar.set_length(progress.total.load(Ordering::Relaxed));
                        bar.set_position(progress.done.load(Ordering::Relaxed));
                    }
                }
            };
            let pulled = match pulled {
                Ok(pulled) => pulled,
                Err(error) => {
                    bar.finish_and_clear();
                    bail!("{error}");
                }
            };
            downloaded += pulled.downloaded;
            size = size.max(pulled.size);
            if endpoint.is_empty() {
                endpoint = pulled.endpoint;
            }
            image_id = pulled.image.id;
        }
        bar.finish_and_clear();
        println!(
            "pulled {image} ({image_id}) into {} node{}: {} downloaded{} of {} in {:.1} s",
            record.namespaces.len(),
            if record.namespaces.len() == 1 {
                ""
            } else {
                "s"
            },
            size_text(downloaded),
            if endpoint.is_empty() {
                String::new()
            } else {
                format!(" from {endpoint}")
            },
            size_text(size),
            started.elapsed().as_secs_f64()
        );
        Ok(ExitCode::SUCCESS)
    })
}

/// `shipshape image ls`: each image of the running cluster's nodes, with its digest, size and
/// the nodes that hold it.
pub fn list(data_dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    let data_dir = crate::data::data_dir(data_dir)?;
    async_runtime()?.block_on(async move {
        let (containerd, record) = running(&data_dir).await?;
        let mut images: std::collections::BTreeMap<(String, String), (u64, Vec<String>)> =
            std::collections::BTreeMap::new();
        for namespace in &record.namespaces {
            let node = namespace
                .strip_prefix("shipshape-")
                .unwrap_or(namespace)
                .to_string();
            for listed in image::list(&containerd, namespace).await? {
                let entry = images
                    .entry((listed.name, listed.digest))
                    .or_insert((listed.size, Vec::new()));
                entry.1.push(node.clone());
            }
        }
        let rows: Vec<[String; 4]> = images
            .into_iter()
            .map(|((name, digest), (size, nodes))| {
                let short = digest.get(..19).unwrap_or(&digest).to_string();
                [name, short, size_text(size), nodes.join(",")]
            })
            .collect();
        let header = ["IMAGE", "DIGEST", "SIZE", "NODES"].map(str::to_string);
        let widths: Vec<usize> = (0..4)
            .map(|i| {
                rows.iter()
                    .chain(std::iter::once(&header))
                    .map(|r| r[i].len())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for row in std::iter::once(&header).chain(&rows) {
            println!(
                "{:w0$}   {:w1$}   {:>w2$}   {}",
                row[0],
                row[1],
                row[2],
                row[3],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2]
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Starts (or finds) containerd, imports the kept and `--import`ed images into every node's
/// namespace, records the runtime for `image import`, and describes the kubelets to run.
pub(crate) async fn start_containerd(
    args: &UpArgs,
    nodes: &shipshape_node::SimulatedConfig,
    data_dir: &Path,
    cni_dir: PathBuf,
) -> anyhow::Result<(Containerd, Nodes)> {
    // A bad registry configuration or image GC policy is refused before anything starts.
    let image_gc = shipshape_reconciler::images::ImageGcPolicy::new(
        args.image_gc_high_threshold,
        args.image_gc_low_threshold,
        args.image_minimum_gc_age,
    )
    .map_err(|e| anyhow::anyhow!("--image-gc-low-threshold: {e}"))?;
    let mut registries = match &args.registry_config {
        Some(path) => shipshape_registry::RegistryConfig::load(path)?,
        None => shipshape_registry::RegistryConfig::default(),
    };
    registries.no_default_endpoint = args.disable_default_registry_endpoint;
    let containerd =
        Containerd::connect_or_start(args.containerd_socket.as_deref(), data_dir).await?;
    let names: Vec<String> = (1..=nodes.nodes).map(|i| format!("node-{i}")).collect();
    let namespaces: Vec<String> = names.iter().map(|n| containerd_namespace(n)).collect();
    for file in &args.imports {
        if !file.is_file() {
            bail!("--import {}: no such file", file.display());
        }
        keep(file, data_dir)?;
    }
    let mut archives: Vec<PathBuf> = std::fs::read_dir(images_dir(data_dir))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    archives.sort();
    if !archives.is_empty() {
        eprintln!(
            "importing {} into {} nodes …",
            crate::validate::plural(archives.len(), "image archive"),
            namespaces.len()
        );
    }
    for archive in archives {
        let imported = image::import(&containerd, &namespaces, &archive)
            .await
            .with_context(|| format!("importing {}", archive.display()))?;
        eprintln!(
            "images: {} ({})",
            imported.names.join(", "),
            archive.display()
        );
    }
    let record = RuntimeRecord {
        socket: containerd.socket().to_path_buf(),
        namespaces,
        registry_config: args
            .registry_config
            .as_deref()
            .and_then(|p| std::path::absolute(p).ok()),
        no_default_endpoint: args.disable_default_registry_endpoint,
    };
    std::fs::write(
        data_dir.join(RUNTIME_RECORD),
        serde_json::to_vec_pretty(&record)?,
    )
    .context("cannot record the runtime in the data directory")?;
    let dns = shipshape_reconciler::services::ServiceRange {
        base: args.service_cidr.base,
        prefix: args.service_cidr.prefix,
    }
    .dns();
    let pulls = std::sync::Arc::new(shipshape_node::pull::ImagePuller::new(std::sync::Arc::new(
        registries,
    )));
    // Where containerd keeps content: ours in the data directory, the system's at its default.
    let containerd_root = if containerd.is_own() {
        data_dir.join("containerd/root")
    } else {
        PathBuf::from("/var/lib/containerd")
    };
    let kubelets = names
        .iter()
        .enumerate()
        .filter_map(|(index, name)| {
            Some(KubeletConfig {
                images: pulls.clone(),
                image_gc,
                containerd_root: containerd_root.clone(),
                node: name.clone(),
                subnet: nodes.pod_cidr.node_subnet(index)?,
                cpu_milli: nodes.cpu_milli,
                memory: nodes.memory,
                max_pods: nodes.max_pods,
                lease_duration: nodes.lease_duration,
                data_dir: data_dir.to_path_buf(),
                cni_dir: cni_dir.clone(),
                cluster_dns: dns,
                cluster_domain: args.cluster_domain.clone(),
            })
        })
        .collect();
    Ok((
        containerd.clone(),
        Nodes::Containerd {
            containerd,
            kubelets,
        },
    ))
}

/// The cluster stopped: `image import` must not look for it any more.
pub(crate) fn forget_runtime(data_dir: &Path) {
    let _ = std::fs::remove_file(data_dir.join(RUNTIME_RECORD));
}
